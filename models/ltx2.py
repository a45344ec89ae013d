"""LTX-2 text-to-video and image-to-video WITH its generated sound: load a local diffusers folder, encode prompts
(Gemma 3 + the text connectors), run the joint audio-video transformer, decode the picture (video VAE) and the
sound (audio VAE + vocoder) — with LTX2Pipeline's and LTX2ImageToVideoPipeline's numerics inside reel's loop.

Layout. reel's samplers step ONE latents tensor per shot, elementwise. A shot's latents here are flat:

    (N,) = video (C, F', H', W') flattened  ++  audio (Ca, L, M') flattened       N = C*F'*H'*W' + Ca*L*M'

each part in the order LTX2Pipeline draws its noise (randn((B, C, F', H', W')) then randn((B, Ca, L, M'))), so a
seed locks the sound as well as the picture. A flat vector does not say its grid, so `latent_shape` records each
shape's `Layout` in the components (`_layouts`, a memo keyed by the shape; the engine calls latent_shape before
it samples or decodes a batch); velocity / decode_stream / decode_audio read it back. L, the audio latent frames,
is round(frames / fps * sample_rate / hop / 4) as the pipeline counts it, with fps = the folder's frame rate
(reel.json "fps", else 24): latent_shape has no fps argument. A batch at another fps gets its video positions
from that fps (velocity reads cond["frame_rate"]) but a sound track counted, and fitted by decode_audio, for the
folder's fps: the engine must render LTX-2 films at the folder's fps (or the contract must pass fps to
latent_shape) for the sound to last as long as the clip.

What the pipelines do that this module reproduces:
- Text: Gemma 3 on the stripped, LEFT-padded prompt with its mask; every hidden state stacked and flattened,
  then the connectors (video and audio text streams + the connectors' binary mask). `encode_prompts` returns
  {"video": (N, L, D), "audio": (N, L, D), "mask": (N, L)}; the connectors see one prompt per row, so a prompt's
  embeddings do not depend on its batch.
- Schedule: the folder's FlowMatchEulerDiscreteScheduler with sigmas linspace(1, 1/steps, steps) and the dynamic
  shift mu from the VIDEO token count (calculate_shift with LTX-2's defaults 1024 / 4096 / 0.95 / 2.05). The
  pipeline steps the audio latents with a deep copy of the same scheduler, same sigmas and mu: one elementwise
  sampler over the flat vector steps both exactly.
- Guidance: the pipeline guides in x0 space with separate video and audio scales and, by default, STG, modality
  isolation and a 0.7 rescale. reel's engine guides the model output with one scale (engine/sampling.py guided);
  for one scale and none of the extras the x0-space rule is algebraically the same (v = v_c + (g-1)(v_c - v_u)),
  so reel renders what LTX2Pipeline renders with audio_guidance_scale = guidance_scale, stg_scale = 0,
  modality_scale = 1 and guidance_rescale = 0 (`pipeline_kwargs` says so). The pipeline's other defaults are
  NOT reproduced (they need a family-owned guidance rule in the engine).
- Timesteps: t for both streams, sigma = t (use_cross_timestep = reel.json "use_cross_timestep", default True as
  in the pipeline); image-to-video: the first latent frame's video tokens get timestep 0 and are never stepped.
- Decode: picture as LTX2Pipeline (decode-timestep noise for a timestep-conditioned VAE drawn after the audio
  noise from the shot's generator, then denormalised); sound: audio latents denormalised (packed), unpacked,
  audio VAE -> mel -> vocoder, clamped to [-1, 1] and padded with silence (or cut) to frames / fps seconds
  (the causal audio VAE gives 4L - 3 mel frames, a few ms short of the clip).
- Image-to-video: the image (optionally H.264 re-compressed at reel.json "image_crf", default the pipeline's
  resolve_default_image_crf; PyAV, else the same libx264 round trip through ffmpeg) resized bilinearly,
  encoded to the posterior MODE (no random draw), normalised; it replaces latent frame 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reel.models.common import (
    cpu_generator,
    fold_alpha,
    flow_unipc,
    freeze,
    meta_tensor,
    quiet_loading,
    scheduler_config,
)
from reel.models.samplers import Sampler, consistency, diffusers_schedule, euler, unipc
from reel.models.single_file import load_transformer
from reel.models.common import VaeRatios
from reel.models.common import to_uint8_frames as to_uint8_frames  # the family contract's, shared
from reel.models.common import render_long as render_long  # no long-shot scheme (registry long_shots "")

IMAGE_PIPELINES = ("LTX2ImageToVideoPipeline",)  # folders whose every shot starts from an image
AUDIO_LATENT_DOWNSAMPLE = 4  # AutoencoderKLLTX2Audio.temporal_compression_ratio (hard-coded in diffusers)
# LTX2Pipeline's calculate_shift defaults when the scheduler config lacks them
SHIFT_DEFAULTS = {"base_image_seq_len": 1024, "max_image_seq_len": 4096, "base_shift": 0.95, "max_shift": 2.05}


@dataclass(frozen=True)
class Layout:
    """Where a shot's video and audio latents sit in its flat latent vector, and the clip they stand for."""

    video: tuple[int, int, int, int]  # (C, F', H', W')
    audio: tuple[int, int, int]  # (Ca, L, M')
    frames: int
    fps: float

    @property
    def n_video(self) -> int:
        c, f, h, w = self.video
        return c * f * h * w

    @property
    def n_audio(self) -> int:
        ca, length, m = self.audio
        return ca * length * m

    @property
    def shape(self) -> tuple[int]:
        return (self.n_video + self.n_audio,)

    def split(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) -> video (B, C, F', H', W'), audio (B, Ca, L, M') (views)."""
        b = flat.shape[0]
        return flat[:, :self.n_video].reshape(b, *self.video), flat[:, self.n_video:].reshape(b, *self.audio)

    @staticmethod
    def join(video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """video (B, C, F', H', W') and audio (B, Ca, L, M') -> (B, N)."""
        return torch.cat([video.flatten(1), audio.flatten(1)], dim=1)


@dataclass
class LTX2Components(VaeRatios):
    """The loaded parts of an LTX-2 folder, placed on one device."""

    path: Path
    tokenizer: object  # Gemma tokenizer, left padding
    text_encoder: torch.nn.Module  # Gemma3ForConditionalGeneration (every hidden state is read)
    connectors: torch.nn.Module  # LTX2TextConnectors: video and audio text streams
    transformer: torch.nn.Module  # LTX2VideoTransformer3DModel (joint audio-video)
    vae: torch.nn.Module  # AutoencoderKLLTX2Video, fp32
    audio_vae: torch.nn.Module  # AutoencoderKLLTX2Audio, fp32
    vocoder: torch.nn.Module  # LTX2Vocoder / LTX2VocoderWithBWE, fp32
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype  # transformer, connectors and text encoder dtype; VAEs and vocoder stay fp32
    frame_rate: float = 24.0  # the folder's fps: the audio length latent_shape counts
    decode_timestep: float = 0.0  # timestep-conditioned video VAEs only
    decode_noise_scale: float | None = None  # None: equal to decode_timestep (the pipeline's rule)
    use_cross_timestep: bool = True  # LTX2Pipeline's default
    image_crf: int | None = None  # None: diffusers' resolve_default_image_crf(text_encoder)
    pipeline: str = "LTX2Pipeline"  # model_index.json `_class_name`
    _layouts: dict = field(default_factory=dict)  # memo: latent shape -> Layout (filled by latent_shape)

    @property
    def patch(self) -> tuple[int, int]:
        """(temporal, spatial) patch size of the transformer's video input."""
        return int(self.transformer.config.patch_size_t), int(self.transformer.config.patch_size)

    @property
    def sample_rate(self) -> int:
        """Samples per second of the sound track: the vocoder's output rate."""
        return int(self.vocoder.config.output_sampling_rate)

    @property
    def audio_latents_per_second(self) -> float:
        """Audio latent frames per second, as LTX2Pipeline counts them (sample rate / hop / 4)."""
        cfg = self.audio_vae.config
        return cfg.sample_rate / cfg.mel_hop_length / float(self.audio_vae.temporal_compression_ratio)


def _class_from_index(index: dict, name: str, fallback: str, module):
    """The class model_index.json names for a component (what the pipeline itself loads)."""
    entry = index.get(name) or [None, None]
    return getattr(module, entry[1] or "", None) or getattr(module, fallback)


def _reel_json(path: Path) -> dict:
    reel = path / "reel.json"
    return json.loads(reel.read_text()) if reel.is_file() else {}


def load(path: str | Path, device: torch.device, dtype: torch.dtype) -> LTX2Components:
    """Every component of a local LTX-2 folder (never a hub): tokenizer, Gemma 3, connectors, transformer (folder
    or the single file reel.json names) in `dtype`; video VAE, audio VAE and vocoder in fp32."""
    import transformers
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2 import vocoder as vocoders

    from reel.models.registry import resolve_model

    quiet_loading()
    path = Path(path)
    info = resolve_model(str(path))
    index = json.loads((path / "model_index.json").read_text())
    tok_cls = _class_from_index(index, "tokenizer", "AutoTokenizer", transformers)
    te_cls = _class_from_index(index, "text_encoder", "Gemma3ForConditionalGeneration", transformers)
    voc_cls = _class_from_index(index, "vocoder", "LTX2Vocoder", vocoders)
    tokenizer = tok_cls.from_pretrained(path / "tokenizer", local_files_only=True)
    tokenizer.padding_side = "left"  # LTX2Pipeline: Gemma expects left padding
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    local = {"local_files_only": True}
    text_encoder = te_cls.from_pretrained(path / "text_encoder", dtype=dtype, **local)
    connectors = LTX2TextConnectors.from_pretrained(path / "connectors", dtype=dtype, **local)
    transformer = load_transformer(LTX2VideoTransformer3DModel, path, dtype)  # folder or single file
    vae = AutoencoderKLLTX2Video.from_pretrained(path / "vae", dtype=torch.float32, **local)
    audio_vae = AutoencoderKLLTX2Audio.from_pretrained(path / "audio_vae", dtype=torch.float32, **local)
    vocoder = voc_cls.from_pretrained(path / "vocoder", dtype=torch.float32, **local)
    freeze((text_encoder, connectors, transformer, vae, audio_vae, vocoder), device)
    d, extra = info.defaults, _reel_json(path)
    noise_scale = d.get("decode_noise_scale")
    crf = extra.get("image_crf")
    return LTX2Components(path, tokenizer, text_encoder, connectors, transformer, vae, audio_vae, vocoder,
                          scheduler_config(path), device, dtype, frame_rate=float(d.get("fps", 24)),
                          decode_timestep=float(d.get("decode_timestep", 0.0)),
                          decode_noise_scale=None if noise_scale is None else float(noise_scale),
                          use_cross_timestep=bool(extra.get("use_cross_timestep", True)),
                          image_crf=None if crf is None else int(crf), pipeline=info.pipeline)


# ---- layout ------------------------------------------------------------------------------------------------

def audio_frames(components: LTX2Components, frames: int, fps: float) -> int:
    """L: audio latent frames of a clip of `frames` at `fps` (LTX2Pipeline: round(duration * latents per s))."""
    return round(frames / fps * components.audio_latents_per_second)


def latent_shape(components: LTX2Components, frames: int, height: int, width: int) -> tuple[int]:
    """(N,) = C*F'*H'*W' + Ca*L*M': one shot's flat video-then-audio latents (module docstring). Records the
    shape's Layout in the components' memo (velocity and the decoders read it)."""
    t, s = components.temporal_factor, components.spatial_factor
    pt, p = components.patch
    if frames < 1 or (frames - 1) % t:
        k = (frames - 1) // t
        raise ValueError(f"frames={frames}: LTX-2 needs {t}k+1 frames — try {max(1, k * t + 1)} or {(k + 1) * t + 1}")
    if height % (s * p) or width % (s * p):
        raise ValueError(f"{width}x{height}: LTX-2 needs width and height that are multiples of {s * p}")
    f = (frames - 1) // t + 1
    if f % pt:
        raise ValueError(f"frames={frames}: {f} latent frames do not divide into temporal patches of {pt}")
    acfg = components.audio_vae.config
    length = audio_frames(components, frames, components.frame_rate)
    if length < 1:
        raise ValueError(f"frames={frames} at {components.frame_rate} fps is too short for LTX-2's sound track "
                         "(no audio latent frame): use more frames")
    layout = Layout(video=(int(components.transformer.config.in_channels), f, height // s, width // s),
                    audio=(int(acfg.latent_channels), length,
                           int(acfg.mel_bins) // int(components.audio_vae.mel_compression_ratio)),
                    frames=frames, fps=components.frame_rate)
    _remember_split(layout)
    components._layouts[layout.shape] = layout  # the latest for this shape (the engine calls it per batch)
    return layout.shape


def layout_of(components: LTX2Components, latents: torch.Tensor) -> Layout:
    """The Layout latent_shape recorded for latents (B, N)."""
    layout = components._layouts.get(tuple(latents.shape[1:]))
    if layout is None:
        raise ValueError(f"LTX-2 latents of shape {tuple(latents.shape[1:])} were not made by latent_shape for these "
                         "components: call ltx2.latent_shape(components, frames, height, width) first")
    return layout


def embed_key(components: LTX2Components) -> str:
    """Nothing but the prompt and the weights decides LTX-2's embeddings."""
    return ""


def batch_conditioning(components: LTX2Components, cond: dict, *, guidance: float, fps: int, batch: int) -> dict:
    """The batch's frame rate (a Python float, shared by the batch): the video rotary positions' fps."""
    return {**cond, "frame_rate": float(fps)}


def experts(components: LTX2Components) -> dict[str, torch.nn.Module]:
    """One (joint audio-video) transformer."""
    return {"high": components.transformer}


# ---- text ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def encode_prompts(components: LTX2Components, prompts: list[str], max_sequence_length: int) -> dict[str, torch.Tensor]:
    """LTX2Pipeline._get_gemma_prompt_embeds then its connectors, one prompt per row:
    {"video": (N, L, D), "audio": (N, L, Da), "mask": (N, L) int64 (the connectors' binary mask)}."""
    tok = components.tokenizer([p.strip() for p in prompts], padding="max_length", max_length=max_sequence_length,
                               truncation=True, add_special_tokens=True, return_tensors="pt")
    ids, mask = tok.input_ids.to(components.device), tok.attention_mask.to(components.device)  # (N, L)
    out = components.text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    hidden = torch.stack(out.hidden_states, dim=-1).flatten(2, 3).to(components.dtype)  # (N, L, D * (layers + 1))
    video, audio, binary = components.connectors(hidden, mask, padding_side=components.tokenizer.padding_side)
    return {"video": video, "audio": audio, "mask": binary}


# ---- noise and sampling --------------------------------------------------------------------------------------

def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device, *,
                  image: dict | None = None) -> torch.Tensor:
    """(1, N) starting latents from the shot's own CPU generator, video then audio as LTX2Pipeline draws them (the
    seed locks picture and sound; randn fills a tensor in order, so only the parts' sizes matter). Image-to-video
    (`image`: this shot's image_condition dict): latent frame 0 becomes the image's latents; the pipeline's draws
    are unchanged (it encodes the image to its posterior mode)."""
    n_video, n_audio = _split_of(shape)
    g = cpu_generator(seed)
    video = torch.randn((1, n_video), generator=g, dtype=torch.float32)  # (1, C*F'*H'*W')
    audio = torch.randn((1, n_audio), generator=g, dtype=torch.float32)  # (1, Ca*L*M')
    noise = torch.cat([video, audio], dim=1)  # (1, N)
    if image is not None:
        noise[image["keep"].cpu()] = image["image_latents"][:1].cpu().float().flatten()  # frame 0, (c, h, w) order
    return noise.to(device)


# (n_video, n_audio) of every latent length latent_shape made: initial_noise gets a shape, not the components
_SPLITS: dict[int, tuple[int, int]] = {}


def _remember_split(layout: Layout) -> None:
    n, split = layout.shape[0], (layout.n_video, layout.n_audio)
    if _SPLITS.setdefault(n, split) != split:
        raise ValueError(f"two LTX-2 shot sizes give flat latents of the same length {n} with a different "
                         f"video/audio split ({_SPLITS[n]} and {split}): render this shot with 8 frames more or less")


def _split_of(shape: tuple[int, ...]) -> tuple[int, int]:
    split = _SPLITS.get(int(shape[0])) if len(shape) == 1 else None
    if split is None:
        raise ValueError(f"LTX-2 latent shape {tuple(shape)} was not made by ltx2.latent_shape: call it first")
    return split


def _video_tokens(layout: Layout, comps: LTX2Components) -> int:
    pt, p = comps.patch
    _, f, h, w = layout.video
    return (f // pt) * (h // p) * (w // p)


def make_sampler(components: LTX2Components, name: str, shift: float, *, shape: tuple | None = None,
                 image: dict | None = None, seeds: list[int] | None = None) -> Sampler:
    """"default" (LTX2Pipeline's schedule: the folder's FlowMatchEulerDiscreteScheduler, sigmas linspace(1, 1/steps),
    mu from the video token count; needs `shape`; `shift` unused), "euler" / "unipc" (fixed `shift`) or "lcm"
    (consistency, re-noising from `seeds`). One sampler steps video and audio: their schedules are the same.
    `image` (image-to-video): the first latent frame's video elements are never stepped."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift

    if name == "lcm":
        if seeds is None:
            raise ValueError("the consistency (lcm) sampler re-noises from each shot's seed: pass seeds=")
        sampler = consistency(shift, list(seeds))
    elif name == "default":
        if shape is None:
            raise ValueError("LTX-2's default scheduler needs the latent shape for its shift: pass "
                             "shape=latent_shape(...)")
        cfg = {k: v for k, v in components.scheduler_config.items() if not k.startswith("_")}
        config = FlowMatchEulerDiscreteScheduler.from_config(cfg).config
        if tuple(shape) not in components._layouts:
            raise ValueError(f"LTX-2 latent shape {tuple(shape)} was not made by ltx2.latent_shape: call it first")
        tokens = _video_tokens(components._layouts[tuple(shape)], components)
        mu = calculate_shift(tokens, *(config.get(k, v) for k, v in SHIFT_DEFAULTS.items()))

        def pipeline_sigmas(scheduler, steps: int, device) -> None:  # LTX2Pipeline: linspace(1, 1/steps) and mu
            scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), device=device, mu=mu)

        sampler = euler(diffusers_schedule(lambda: FlowMatchEulerDiscreteScheduler.from_config(cfg), pipeline_sigmas))
    elif name == "euler":
        sampler = euler(diffusers_schedule(lambda: FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000,
                                                                                   shift=shift)))
    elif name == "unipc":
        sampler = unipc(lambda: flow_unipc(shift))
    else:
        raise ValueError(f"unknown scheduler {name!r}; use 'default', 'euler', 'unipc' or 'lcm'")
    return keep_elements(sampler, image["keep"]) if image is not None else sampler


def keep_elements(sampler: Sampler, keep: torch.Tensor) -> Sampler:
    """Step only the elements where keep (1, N) is False; the kept ones (an encoded first image) go into every model
    call unchanged — LTX2ImageToVideoPipeline steps latent frames 1.. only."""
    def sample(denoiser, x: torch.Tensor, steps: int, callback=None) -> torch.Tensor:
        mask = keep[0].to(x.device)  # (N,) bool
        free = ~mask

        def whole(rest: torch.Tensor) -> torch.Tensor:
            full = x.clone()  # (B, N): the kept elements as they came in
            full[:, free] = rest
            return full

        def rest_denoiser(rest: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
            return denoiser(whole(rest), t, i)[:, free]

        def rest_callback(i, t, rest):
            callback(i, t, whole(rest))

        rest = sampler(rest_denoiser, x[:, free], steps, rest_callback if callback is not None else None)
        return whole(rest)
    return sample


# ---- the model -----------------------------------------------------------------------------------------------

def _pack_video(video: torch.Tensor, comps: LTX2Components) -> torch.Tensor:
    from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline

    pt, p = comps.patch
    return LTX2Pipeline._pack_latents(video, p, pt)  # (B, C, F', H', W') -> (B, S, C*pt*p*p)


def _unpack_video(tokens: torch.Tensor, comps: LTX2Components, layout: Layout) -> torch.Tensor:
    from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline

    pt, p = comps.patch
    _, f, h, w = layout.video
    return LTX2Pipeline._unpack_latents(tokens, f // pt, h // p, w // p, p, pt)  # (B, S, D) -> (B, C, F', H', W')


def _pack_audio(audio: torch.Tensor) -> torch.Tensor:
    from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline

    return LTX2Pipeline._pack_audio_latents(audio)  # (B, Ca, L, M') -> (B, L, Ca*M')


def _unpack_audio(tokens: torch.Tensor, layout: Layout) -> torch.Tensor:
    from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline

    _, length, m = layout.audio
    return LTX2Pipeline._unpack_audio_latents(tokens, length, num_mel_bins=m)  # (B, L, Ca*M') -> (B, Ca, L, M')


def velocity(components: LTX2Components, latents: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
    """The joint transformer's flow prediction for flat latents (B, N) at timestep t, as LTX2Pipeline's loop calls it:
    cond {"video": (B, L, D), "audio": (B, L, Da), "mask": (B, L)} (+ "cond_mask" (B, S) image-to-video, +
    "frame_rate" from batch_conditioning). Returns (B, N) fp32: video then audio velocity."""
    layout = layout_of(components, latents)
    fps = float(cond.get("frame_rate", layout.fps))  # the video positions' fps (the pipeline's frame_rate)
    comps, dtype = components, components.dtype
    video, audio = layout.split(latents.to(comps.device, torch.float32))
    b, (_, f, h, w) = latents.shape[0], layout.video
    pt, p = comps.patch
    timestep = t.to(comps.device).expand(b)  # (B,)
    video_t = timestep
    if "cond_mask" in cond:  # image tokens are clean: timestep 0 there
        video_t = timestep.unsqueeze(-1) * (1 - cond["cond_mask"].to(comps.device, torch.float32))  # (B, S)
    mask = cond["mask"].to(comps.device)
    out_v, out_a = comps.transformer(
        hidden_states=_pack_video(video, comps).to(dtype), audio_hidden_states=_pack_audio(audio).to(dtype),
        encoder_hidden_states=cond["video"].to(dtype), audio_encoder_hidden_states=cond["audio"].to(dtype),
        timestep=video_t, audio_timestep=timestep, sigma=timestep, encoder_attention_mask=mask,
        audio_encoder_attention_mask=mask, num_frames=f // pt, height=h // p, width=w // p, fps=fps,
        audio_num_frames=layout.audio[1], use_cross_timestep=comps.use_cross_timestep, return_dict=False)
    return Layout.join(_unpack_video(out_v.float(), comps, layout), _unpack_audio(out_a.float(), layout))


# ---- decoding ------------------------------------------------------------------------------------------------

def _decode_noise(layout: Layout, batch: int, seeds: list[int] | None) -> torch.Tensor:
    """The decode-timestep noise (B, C, F', H', W'): with `seeds`, the draw after the shot's video and audio draws
    (the pipeline's order); without, a generator seeded with 0."""
    out = []
    for i in range(batch):
        g = cpu_generator(seeds[i] if seeds else 0)
        if seeds:  # replay the starting draws of initial_noise
            torch.randn((1, layout.n_video), generator=g)
            torch.randn((1, layout.n_audio), generator=g)
        out.append(torch.randn((1, *layout.video), generator=g, dtype=torch.float32))
    return torch.cat(out)


@torch.no_grad()
def decode_stream(components: LTX2Components, latents: torch.Tensor, *, seeds: list[int] | None = None,
                  frames: int | None = None) -> Iterator[torch.Tensor]:
    """The picture only: pixel chunks (B, 3, f, H, W) in [0, 1] (1 frame, then temporal-factor frames). The LTX-2
    decoder is not causal: the clip decodes in one call, then is yielded in chunks. `frames`: unused."""
    layout = layout_of(components, latents)
    vae = components.vae
    z = layout.split(latents.to(components.device, torch.float32))[0]  # (B, C, F', H', W')
    z = z.to(components.dtype).to(torch.float32)  # the pipeline's cast to the prompt dtype
    timestep = None
    if vae.config.timestep_conditioning:
        b = z.shape[0]
        scale = components.decode_timestep if components.decode_noise_scale is None else components.decode_noise_scale
        timestep = torch.full((b,), components.decode_timestep, device=z.device, dtype=z.dtype)  # (B,)
        z = (1 - scale) * z + scale * _decode_noise(layout, b, seeds).to(z.device)
    mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
    std = vae.latents_std.view(1, -1, 1, 1, 1).to(z.device, z.dtype)
    z = z * std / vae.config.scaling_factor + mean  # (B, C, F', H', W') denormalised
    video = vae.decode(z.to(vae.dtype), timestep, return_dict=False)[0]  # (B, 3, F, H, W) in ~[-1, 1]
    video = (video.float() * 0.5 + 0.5).clamp(0.0, 1.0)
    step = components.temporal_factor
    yield video[:, :, :1]
    for i in range(1, video.shape[2], step):
        yield video[:, :, i:i + step]


@torch.no_grad()
def decode_audio(components: LTX2Components, latents: torch.Tensor, *,
                 seeds: list[int] | None = None) -> tuple[torch.Tensor, int]:
    """Each shot's sound from the same latents decode_stream reads: ((B, channels, samples) float32 in [-1, 1] on
    the CPU, sample rate). As LTX2Pipeline: denormalise (packed), unpack, audio VAE -> mel, vocoder; then exactly
    round(frames / fps * rate) samples (silence after the vocoder's last sample). `seeds`: unused (no draws)."""
    layout = layout_of(components, latents)
    avae = components.audio_vae
    audio = layout.split(latents.to(components.device, torch.float32))[1]  # (B, Ca, L, M')
    packed = _pack_audio(audio)  # (B, L, Ca*M')
    packed = packed * avae.latents_std.to(packed.device, packed.dtype) + avae.latents_mean.to(packed.device,
                                                                                             packed.dtype)
    mel = avae.decode(_unpack_audio(packed, layout).to(avae.dtype), return_dict=False)[0]  # (B, 2, 4L-3, mels)
    wave = components.vocoder(mel.to(components.vocoder.dtype)).float().clamp(-1.0, 1.0).cpu()  # (B, ch, samples)
    rate = components.sample_rate
    return _fit(wave, round(layout.frames / layout.fps * rate)), rate


def _fit(wave: torch.Tensor, samples: int) -> torch.Tensor:
    """(B, ch, n) cut or padded with silence to (B, ch, samples)."""
    if wave.shape[-1] >= samples:
        return wave[..., :samples].contiguous()
    return torch.nn.functional.pad(wave, (0, samples - wave.shape[-1]))


def decode_preview(components: LTX2Components, decoder: torch.nn.Module,
                   latents: torch.Tensor) -> Iterator[torch.Tensor]:
    """LTX-2 has no tiny preview decoder (registry preview_decoder is off): previews decode with the VAE."""
    raise ValueError("LTX-2 previews decode with the model's VAE: no tiny preview decoder reads LTX-2 latents")


# ---- image-to-video ------------------------------------------------------------------------------------------

def h264_roundtrip(image, crf: int):
    """(H, W, 3) uint8 -> the same image after one H.264 frame at `crf` (libx264 veryfast, yuv420p, even size), as
    diffusers' apply_image_conditioning_crf does with PyAV, here through imageio-ffmpeg's ffmpeg: the training-time
    compression LTX-2 expects of a first frame. Pixels may differ from PyAV's by its own libx264 build."""
    import subprocess
    import tempfile

    import imageio_ffmpeg
    import numpy as np

    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    frame = np.ascontiguousarray(image[:h, :w])
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory() as tmp:
        clip = f"{tmp}/frame.mp4"
        subprocess.run([ffmpeg, "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "1",
                        "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
                        clip], input=frame.tobytes(), check=True, capture_output=True)
        raw = subprocess.run([ffmpeg, "-v", "error", "-i", clip, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                             check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8)[: h * w * 3].reshape(h, w, 3).copy()


def _crf(components: LTX2Components) -> int:
    from diffusers.pipelines.ltx2.utils import resolve_default_image_crf

    return components.image_crf if components.image_crf is not None else resolve_default_image_crf(
        components.text_encoder)


@torch.no_grad()
def image_condition(components: LTX2Components, image, frames: int, height: int, width: int, *,
                    seed: int | None = None) -> dict:
    """The first frame of an image-to-video shot, as LTX2ImageToVideoPipeline prepares it. `image`: (H, W, 3) uint8.
    Returns batch-first tensors: "image_latents" (1, C, 1, H', W') normalised posterior mode (initial_noise puts it
    in latent frame 0), "cond_mask" (1, S) 1 on frame 0's video tokens (merge into cond and uncond), "keep"
    (1, N) bool, frame 0's elements of the flat latents (make_sampler(image=) never steps them). `seed`: unused."""
    import PIL.Image
    from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf
    from diffusers.video_processor import VideoProcessor

    crf = _crf(components)
    if crf:
        try:
            image = apply_image_conditioning_crf(image, crf)
        except ImportError:  # no PyAV: the same libx264 round trip through the ffmpeg reel encodes with
            image = h264_roundtrip(image, crf)
    vae = components.vae
    processor = VideoProcessor(vae_scale_factor=components.spatial_factor, resample="bilinear")
    x = processor.preprocess(PIL.Image.fromarray(image), height=height, width=width)  # (1, 3, H, W) in [-1, 1]
    x = x.to(components.device, components.dtype).to(vae.dtype)  # the pipeline casts to the prompt dtype first
    mode = vae.encode(x.unsqueeze(2)).latent_dist.mode().float()  # (1, C, 1, H', W')
    mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(mode.device, mode.dtype)
    std = vae.latents_std.view(1, -1, 1, 1, 1).to(mode.device, mode.dtype)
    layout = components._layouts[latent_shape(components, frames, height, width)]
    c, f, h, w = layout.video
    mask = torch.zeros((1, 1, f, h, w), device=components.device, dtype=torch.float32)
    mask[:, :, 0] = 1.0
    keep = torch.zeros((1, layout.shape[0]), dtype=torch.bool)
    keep[:, :layout.n_video] = mask.cpu().bool().expand(1, c, f, h, w).reshape(1, -1)
    return {"image_latents": (mode - mean) / std, "cond_mask": _pack_video(mask, components).squeeze(-1),
            "keep": keep}


# ---- LoRAs, estimator, pipeline arguments --------------------------------------------------------------------

def lora_to_diffusers(state: dict) -> dict:
    """An LTX-2 LoRA state dict -> diffusers keys (`transformer.` + lora_A/lora_B), with diffusers'
    LTX2LoraLoaderMixin (ComfyUI / LTX-2 trainer `diffusion_model.` keys renamed from the original model's names);
    kohya-style `lora_down`/`lora_up` pairs with an `.alpha` are renamed first (alpha / rank folded into lora_B).
    kohya `lora_unet_` files and LoRAs of the text connectors are refused (reel attaches LoRAs to the transformer)."""
    from diffusers.loaders.lora_pipeline import LTX2LoraLoaderMixin

    state = dict(state)
    if any(k.startswith("lora_unet_") for k in state):
        raise ValueError("kohya `lora_unet_` keys are not supported for LTX-2 (diffusers has no converter for them); "
                         "export the LoRA in diffusers or ComfyUI format")
    if any(".lora_down." in k for k in state):
        state = _kohya_pairs(state)
    out = LTX2LoraLoaderMixin.lora_state_dict(state)
    connector = sorted(k for k in out if k.startswith("connectors."))
    if connector:
        raise ValueError(f"this LoRA also trains LTX-2's text connectors ({connector[0]}, ...): reel attaches LoRAs "
                         "to the transformer only — export a transformer-only LoRA")
    return out


def _kohya_pairs(state: dict) -> dict:
    """lora_down/lora_up (+ .alpha) -> lora_A/lora_B with alpha / rank folded into lora_B."""
    renamed = {}
    for key, value in state.items():
        if key.endswith(".alpha"):
            continue
        if ".lora_up." in key:
            base = key.split(".lora_up.")[0]
            rank = state[key.replace(".lora_up.", ".lora_down.")].shape[0]
            renamed[key.replace(".lora_up.", ".lora_B.")] = fold_alpha(value, rank, state.get(f"{base}.alpha"))
        else:
            renamed[key.replace(".lora_down.", ".lora_A.")] = value
    return renamed


def meta_inputs(config: dict, *, batch: int, latent: tuple[int, int, int], text_len: int,
                expand_timesteps: bool = False) -> dict:
    """The transformer's forward kwargs on the meta device for `batch` shots of latent (F', H', W') and their sound
    (audio latent frames for (F'-1)*temporal+1 frames at 24 fps, 25 audio latents per second at 16 kHz / hop 160)."""
    f, h, w = latent
    temporal = int((config.get("vae_scale_factors") or (8, 32, 32))[0])
    rate = int(config.get("audio_sampling_rate", 16000)) / int(config.get("audio_hop_length", 160)) / 4
    length = max(1, round(((f - 1) * temporal + 1) / 24 * rate))
    text = int(config["caption_channels"])
    return {"hidden_states": meta_tensor(batch, f * h * w, config["in_channels"]),  # (B, S, C), patch 1
            "audio_hidden_states": meta_tensor(batch, length, config["audio_in_channels"]),  # (B, L, Ca*M')
            "encoder_hidden_states": meta_tensor(batch, text_len, text),  # (B, L_text, D)
            "audio_encoder_hidden_states": meta_tensor(batch, text_len, text),
            "timestep": meta_tensor(batch, dtype=torch.float32), "sigma": meta_tensor(batch, dtype=torch.float32),
            "encoder_attention_mask": meta_tensor(batch, text_len),
            "audio_encoder_attention_mask": meta_tensor(batch, text_len),
            "num_frames": f, "height": h, "width": w, "fps": 24.0, "audio_num_frames": length,
            "use_cross_timestep": True}


def pipeline_kwargs(components: LTX2Components, *, negative_prompt: str, fps: int) -> dict:
    """What LTX2Pipeline / LTX2ImageToVideoPipeline take to render what reel renders: one guidance scale for video
    and audio (audio_guidance_scale None = guidance_scale), no STG, no modality guidance, no rescale; the frame rate,
    cross timestep, decode timestep and noise scale (and the image CRF for image-to-video) of the folder."""
    kwargs = {"negative_prompt": negative_prompt, "frame_rate": fps, "audio_guidance_scale": None,
              "stg_scale": 0.0, "audio_stg_scale": 0.0, "modality_scale": 1.0, "audio_modality_scale": 1.0,
              "guidance_rescale": 0.0, "audio_guidance_rescale": 0.0, "spatio_temporal_guidance_blocks": None,
              "use_cross_timestep": components.use_cross_timestep, "decode_timestep": components.decode_timestep,
              "decode_noise_scale": components.decode_noise_scale}
    if components.pipeline in IMAGE_PIPELINES:
        kwargs["image_crf"] = _crf(components)
    return kwargs
