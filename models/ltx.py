"""LTX-Video 0.9.x text-to-video and image-to-video: load a local diffusers folder, encode prompts, run the
transformer, decode — with LTXPipeline's and LTXImageToVideoPipeline's exact numerics inside reel's loop.

Layout: during the loop a shot's latents stay unpacked, (C, F', H', W') like Wan's, so the starting noise for
seed s is exactly what LTXPipeline draws (`randn_tensor((B, C, F', H', W'))` from manual_seed(s)) and every
sampler steps them elementwise. `velocity` packs them into the transformer's tokens (B, S, C) and unpacks
its output; packing is a pure permutation, so nothing changes numerically.

What the pipelines do that this module reproduces (numbers in brackets: reel's defaults for LTX):
- T5 embeddings of the padded prompt, computed WITHOUT the attention mask, plus a bool mask that the
  transformer turns into an attention bias (`encode_prompts` returns {"embeds", "mask"}).
- "default" scheduler: the folder's FlowMatchEulerDiscreteScheduler with sigmas linspace(1, 1/steps, steps)
  and the dynamic shift `mu` computed from the latent grid size (calculate_shift), so `shift` is unused.
- rope_interpolation_scale = (temporal ratio / frame rate, spatial ratio, spatial ratio). The frame rate is
  the batch's fps, which `batch_conditioning` puts in the conditioning ("frame_rate"); without it,
  `components.frame_rate`, the folder's default fps (reel.json "fps", else the family's 24) — LTXPipeline's
  own default is 25. The components never change while a render runs.
- Decode: denormalise (latents_mean/std, scaling_factor); a timestep-conditioned VAE (0.9.1+) gets
  reel.json "decode_timestep" [0.0] and "decode_noise_scale" [= decode_timestep], noise mixed in as the
  pipeline does. The LTX VAE decoder is not causal, so the whole clip is decoded at once and then yielded
  in chunks (1 frame, then temporal-ratio frames), the same chunking as Wan's stream.
- Image-to-video: the first latent frame is the VAE-encoded image (a posterior sample drawn from the shot's
  generator before the noise, as the pipeline draws it); its tokens get timestep 0 and are never stepped.

`initial_noise(..., image=)` takes the image's conditioning (image-to-video draws the image's posterior sample
first), and `decode_stream(..., seeds=)` the shots' seeds (without them, the decode noise of a timestep-
conditioned VAE with a non-zero decode_noise_scale comes from a generator seeded with 0 instead of the
shot's). On CUDA the pipelines mix that decode noise in bf16; here it is mixed in fp32 (the only known
CUDA-side difference).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from reel.models.common import (
    channel_stats,
    cpu_generator,
    cpu_noise,
    fold_alpha,
    flow_unipc,
    freeze,
    meta_tensor,
    quiet_loading,
    scheduler_config,
)
from reel.models.samplers import Sampler, consistency, diffusers_schedule, euler, keep_first_frame, unipc
from reel.models.single_file import load_transformer
from reel.models.common import VaeRatios
from reel.models.common import to_uint8_frames as to_uint8_frames  # the family contract's, shared
from reel.models.common import decode_audio as decode_audio  # no sound (registry audio off)
from reel.models.common import render_long as render_long  # no long-shot scheme (registry long_shots "")

IMAGE_PIPELINES = ("LTXImageToVideoPipeline",)  # folders whose every shot starts from an image


@dataclass
class LTXComponents(VaeRatios):
    """The loaded parts of an LTX folder, placed on one device."""

    path: Path
    tokenizer: object
    text_encoder: torch.nn.Module
    transformer: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype  # transformer and text encoder dtype; the VAE stays fp32
    frame_rate: float = 24.0  # frames per second the rope positions are scaled for
    decode_timestep: float = 0.0  # timestep-conditioned VAEs only
    decode_noise_scale: float | None = None  # None: equal to decode_timestep (the pipeline's rule)
    pipeline: str = "LTXPipeline"  # model_index.json `_class_name`

    @property
    def patch(self) -> tuple[int, int]:
        """(temporal, spatial) patch size of the transformer."""
        return int(self.transformer.config.patch_size_t), int(self.transformer.config.patch_size)


def load(path: str | Path, device: torch.device, dtype: torch.dtype) -> LTXComponents:
    """Load tokenizer, T5 encoder, transformer, VAE (fp32) and scheduler config from a local folder.

    Never contacts a hub (local_files_only). The frame rate for the rope scale and the decode timestep
    come from the folder's reel.json when it has them.
    """
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from transformers import AutoTokenizer, T5EncoderModel

    from reel.models.registry import resolve_model

    quiet_loading()
    path = Path(path)
    info = resolve_model(str(path))
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    text_encoder = T5EncoderModel.from_pretrained(path / "text_encoder", local_files_only=True, dtype=dtype)
    transformer = load_transformer(LTXVideoTransformer3DModel, path, dtype)  # folder or single file
    vae = AutoencoderKLLTXVideo.from_pretrained(path / "vae", local_files_only=True, dtype=torch.float32)
    freeze((text_encoder, transformer, vae), device)
    d = info.defaults
    noise_scale = d.get("decode_noise_scale")
    return LTXComponents(path, tokenizer, text_encoder, transformer, vae, scheduler_config(path), device, dtype,
                         frame_rate=float(d.get("fps", 24)), decode_timestep=float(d.get("decode_timestep", 0.0)),
                         decode_noise_scale=None if noise_scale is None else float(noise_scale),
                         pipeline=info.pipeline)


def _pack(latents: torch.Tensor, comps: LTXComponents) -> torch.Tensor:
    from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline

    pt, p = comps.patch
    return LTXPipeline._pack_latents(latents, p, pt)  # (B, C, F', H', W') -> (B, S, C*pt*p*p)


def _unpack(tokens: torch.Tensor, comps: LTXComponents, grid: tuple[int, int, int]) -> torch.Tensor:
    from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline

    pt, p = comps.patch
    f, h, w = grid
    return LTXPipeline._unpack_latents(tokens, f // pt, h // p, w // p, p, pt)  # (B, S, D) -> (B, C, F', H', W')


def make_sampler(components: LTXComponents, name: str, shift: float, *, shape: tuple | None = None,
                 image: dict | None = None, seeds: list[int] | None = None) -> Sampler:
    """A flow-matching sampler: "default" (the folder's FlowMatchEulerDiscreteScheduler schedule with the
    pipeline's sigmas and LTX's resolution-dependent shift; needs `shape`, the latent shape; `shift` is unused),
    "euler" or "unipc" (fixed `shift`), or "lcm" (consistency sampling for a few-step preview LoRA, fixed
    `shift`, re-noising from each shot's `seeds`; the others draw no noise). `image`: the `image_condition` dict
    of an image-to-video batch (the first latent frame, the image, is never stepped; "lcm" keeps reel's earlier
    preview arithmetic, which steps it)."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    if name == "lcm":  # consistency sampling for a few-step preview LoRA, re-noising from each shot's seed
        if seeds is None:
            raise ValueError("the consistency (lcm) sampler re-noises from each shot's seed: pass seeds=")
        return consistency(shift, list(seeds))
    if name == "default":
        if shape is None:
            raise ValueError("LTX's default scheduler needs the latent shape (C, F', H', W') for its shift: "
                             "pass shape=latent_shape(...)")
        cfg = {k: v for k, v in components.scheduler_config.items() if not k.startswith("_")}
        config = FlowMatchEulerDiscreteScheduler.from_config(cfg).config
        _, f, h, w = shape
        mu = calculate_shift(f * h * w, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                             config.get("base_shift", 0.5), config.get("max_shift", 1.15))

        def pipeline_sigmas(scheduler, steps: int, device) -> None:  # LTXPipeline: linspace(1, 1/steps) and mu
            scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), device=device, mu=mu)

        sampler = euler(diffusers_schedule(lambda: FlowMatchEulerDiscreteScheduler.from_config(cfg), pipeline_sigmas))
    elif name == "euler":
        sampler = euler(diffusers_schedule(lambda: FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000,
                                                                                   shift=shift)))
    elif name == "unipc":
        sampler = unipc(lambda: flow_unipc(shift))
    else:
        raise ValueError(f"unknown scheduler {name!r}; use 'default', 'euler' or 'unipc'")
    return keep_first_frame(sampler) if image is not None else sampler


@torch.no_grad()
def encode_prompts(components: LTXComponents, prompts: list[str], max_sequence_length: int) -> dict[str, torch.Tensor]:
    """T5 embeddings exactly as LTXPipeline._get_t5_prompt_embeds: {"embeds": (N, L, D), "mask": (N, L) bool}."""
    tok = components.tokenizer(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                               add_special_tokens=True, return_tensors="pt")
    ids = tok.input_ids.to(components.device)  # (N, L)
    embeds = components.text_encoder(ids)[0].to(components.dtype)  # (N, L, D): the encoder sees no mask
    return {"embeds": embeds, "mask": tok.attention_mask.bool().to(components.device)}


def latent_shape(components: LTXComponents, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(C, F', H', W') of one shot's latents (unpacked; the transformer sees them as F'*H'*W' tokens)."""
    t, s = components.temporal_factor, components.spatial_factor
    pt, p = components.patch
    if frames < 1 or (frames - 1) % t:
        k = (frames - 1) // t
        raise ValueError(f"frames={frames}: LTX needs {t}k+1 frames — try {max(1, k * t + 1)} or {(k + 1) * t + 1}")
    if height % (s * p) or width % (s * p):
        raise ValueError(f"{width}x{height}: LTX needs width and height that are multiples of {s * p}")
    f = (frames - 1) // t + 1
    if f % pt:
        raise ValueError(f"frames={frames}: {f} latent frames do not divide into temporal patches of {pt}")
    return (int(components.transformer.config.in_channels), f, height // s, width // s)


def embed_key(components: LTXComponents) -> str:
    """Nothing but the prompt and the weights decides LTX's embeddings."""
    return ""


def batch_conditioning(components: LTXComponents, cond: dict, *, guidance: float, fps: int, batch: int) -> dict:
    """The batch's frame rate, which scales the rotary positions: {"frame_rate": fps as a Python float}, one value
    for the whole batch (a float, not a tensor: velocity reads it on every step without touching a tensor)."""
    return {**cond, "frame_rate": float(fps)}


def experts(components: LTXComponents) -> dict[str, torch.nn.Module]:
    """One transformer."""
    return {"high": components.transformer}


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device, *,
                  image: dict | None = None) -> torch.Tensor:
    """Starting latents (1, C, F', H', W') drawn on the CPU from the shot's own generator, then moved.

    Text-to-video: LTXPipeline's noise for generator=manual_seed(seed). Image-to-video (`image`: this shot's
    `image_condition` dict): LTXImageToVideoPipeline's draws — first the image's posterior sample, then the
    noise — with latent frame 0 replaced by the normalised image latents.
    """
    if image is None:
        return cpu_noise(shape, seed, device)
    generator = cpu_generator(seed)
    c, _, h, w = shape
    eps = torch.randn((1, c, 1, h, w), generator=generator, dtype=torch.float32)  # the posterior sample's noise
    noise = torch.randn((1, *shape), generator=generator, dtype=torch.float32)  # (1, C, F', H', W')
    first = image["image_mean"][:1].cpu().float() + image["image_std"][:1].cpu().float() * eps  # (1, C, 1, H', W')
    return torch.cat([first, noise[:, :, 1:]], dim=2).to(device)


def velocity(components: LTXComponents, latents: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
    """The denoiser contract: the transformer's flow prediction for latents (B, C, F', H', W') at timestep t,
    text cond {"embeds": (B, L, D), "mask": (B, L)} (+ "cond_mask" (B, S) for image-to-video, + "frame_rate", a
    float from batch_conditioning; every shot of a batch shares its fps)."""
    b, _, f, h, w = latents.shape
    x = _pack(latents.to(components.device, components.dtype), components)  # (B, S, C)
    timestep = t.to(components.device).expand(b)  # (B,)
    if "cond_mask" in cond:  # conditioned (image) tokens are clean: timestep 0 there
        mask = cond["cond_mask"].to(components.device, torch.float32)  # (B, S)
        timestep = timestep.unsqueeze(-1) * (1 - mask)  # (B, S)
    frame_rate = float(cond.get("frame_rate", components.frame_rate))  # a Python float: nothing read from a tensor
    rope_scale = (components.temporal_factor / frame_rate, components.spatial_factor, components.spatial_factor)
    out = components.transformer(hidden_states=x, encoder_hidden_states=cond["embeds"].to(components.dtype),
                                 timestep=timestep, encoder_attention_mask=cond["mask"].to(components.device),
                                 num_frames=f, height=h, width=w, rope_interpolation_scale=rope_scale,
                                 return_dict=False)[0]  # (B, S, C)
    return _unpack(out.float(), components, (f, h, w))  # (B, C, F', H', W')


def _stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's latent mean and std, (1, C, 1, 1, 1) each, in like's device and dtype."""
    return channel_stats(vae.latents_mean, like, like.dtype), channel_stats(vae.latents_std, like, like.dtype)


def _decode_noise(shape: tuple[int, ...], seeds: list[int] | None, image: bool) -> torch.Tensor:
    """Noise for a timestep-conditioned decode, (B, C, F', H', W'): with `seeds`, the draw that follows the
    shot's starting draws in its generator (the pipelines' order; `image`: an image-to-video folder, whose
    shots also drew the image's posterior sample); without, a generator seeded with 0."""
    out = []
    for i in range(shape[0]):
        g = cpu_generator(seeds[i] if seeds else 0)
        if seeds:  # replay the starting draws of initial_noise
            if image:
                torch.randn((1, shape[1], 1, *shape[3:]), generator=g)
            torch.randn((1, *shape[1:]), generator=g)
        out.append(torch.randn((1, *shape[1:]), generator=g))
    return torch.cat(out)


@torch.no_grad()
def decode_stream(components: LTXComponents, latents: torch.Tensor, *, seeds: list[int] | None = None,
                  frames: int | None = None) -> Iterator[torch.Tensor]:
    """Decode latents (B, C, F', H', W') into pixels, yielding (B, 3, f, H, W) float32 chunks in [0, 1].

    The LTX decoder is not causal: the whole clip is decoded in one call (VAE tiling, if enabled, applies),
    then yielded as 1 frame followed by `temporal_factor`-frame chunks. `seeds` (one per shot) make the
    decode noise of a timestep-conditioned VAE equal LTXPipeline's; decoders that inject noise draw it from
    the global RNG, which is forked and seeded here so decoding is deterministic. `frames`: unused.
    """
    vae = components.vae
    z = latents.to(components.device, torch.float32)
    mean, std = _stats(vae, z)
    z = z * std / vae.config.scaling_factor + mean  # (B, C, F', H', W') denormalised
    z = z.to(components.dtype).to(torch.float32)  # the pipeline's round trip through the transformer dtype
    timestep = None
    if vae.config.timestep_conditioning:
        b = z.shape[0]
        scale = components.decode_timestep if components.decode_noise_scale is None else components.decode_noise_scale
        timestep = torch.full((b,), components.decode_timestep, device=z.device, dtype=z.dtype)  # (B,)
        if scale:
            noise = _decode_noise(tuple(z.shape), seeds, components.pipeline in IMAGE_PIPELINES).to(z.device)
            z = (1 - scale) * z + scale * noise
    devices = [z.device.index or 0] if z.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=any(vae.config.decoder_inject_noise)):
        if any(vae.config.decoder_inject_noise):
            torch.manual_seed(seeds[0] if seeds else 0)
        video = vae.decode(z.to(vae.dtype), timestep, return_dict=False)[0]  # (B, 3, F, H, W) in ~[-1, 1]
    video = (video.float() * 0.5 + 0.5).clamp(0.0, 1.0)
    step = components.temporal_factor
    yield video[:, :, :1]
    for i in range(1, video.shape[2], step):
        yield video[:, :, i:i + step]


# original LTX-Video module names -> diffusers names (top level of the transformer)
_ORIGINAL_NAMES = {".patchify_proj.": ".proj_in.", ".adaln_single.": ".time_embed."}


def lora_to_diffusers(state: dict) -> dict:
    """An LTX LoRA state dict -> diffusers keys (`transformer.` + lora_A/lora_B).

    Reads diffusers/peft files and ComfyUI / LTX-Video-Trainer files (`diffusion_model.` keys) through
    diffusers' LTXVideoLoraLoaderMixin; kohya-style `lora_down`/`lora_up` pairs with an `.alpha` are
    renamed first (alpha / rank folded into lora_B), and the original model's top-level names
    (patchify_proj, adaln_single) are mapped to diffusers'. kohya `lora_unet_` files are not supported.
    """
    from diffusers.loaders.lora_pipeline import LTXVideoLoraLoaderMixin

    state = dict(state)
    if any(k.startswith("lora_unet_") for k in state):
        raise ValueError("kohya `lora_unet_` keys are not supported for LTX-Video; export the LoRA in diffusers "
                         "or ComfyUI format")
    if any(".lora_down." in k for k in state):
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
        state = renamed
    state = LTXVideoLoraLoaderMixin.lora_state_dict(state)
    out = {}
    for key, value in state.items():
        for old, new in _ORIGINAL_NAMES.items():
            key = key.replace(old, new)
        out[key] = value
    return out


@torch.no_grad()
def image_condition(components: LTXComponents, image, frames: int, height: int, width: int, *,
                    seed: int | None = None) -> dict:
    """The first frame of an image-to-video shot, encoded as LTXImageToVideoPipeline does.

    `image`: (H, W, 3) uint8, resized to height x width by diffusers' VideoProcessor when it differs.
    Returns batch-first tensors: "image_mean"/"image_std" (1, C, 1, H', W'), the VAE posterior in normalised
    latent units (give the dict to `initial_noise`, which draws the posterior sample from the shot's seed),
    and "cond_mask" (1, S), 1 on the first latent frame's tokens (merge the dict into the cond and uncond
    that `velocity` gets, and pass it to `make_sampler(image=...)`). `seed`: unused (initial_noise draws the
    posterior sample from the shot's seed).
    """
    import PIL.Image
    from diffusers.video_processor import VideoProcessor

    vae = components.vae
    processor = VideoProcessor(vae_scale_factor=components.spatial_factor)
    x = processor.preprocess(PIL.Image.fromarray(image), height=height, width=width)  # (1, 3, H, W) in [-1, 1]
    x = x.to(components.device, components.dtype).to(vae.dtype)  # the pipeline casts to the text dtype first
    posterior = vae.encode(x.unsqueeze(2)).latent_dist  # over (1, C, 1, H', W')
    mean, std = _stats(vae, posterior.mean)
    c, f, h, w = latent_shape(components, frames, height, width)
    mask = torch.zeros((1, 1, f, h, w), device=components.device, dtype=torch.float32)
    mask[:, :, 0] = 1.0
    return {"image_mean": (posterior.mean - mean) / std, "image_std": posterior.std / std,  # (1, C, 1, H', W')
            "cond_mask": _pack(mask, components).squeeze(-1)}  # (1, S)


def decode_preview(components: LTXComponents, decoder: torch.nn.Module,
                   latents: torch.Tensor) -> Iterator[torch.Tensor]:
    """LTX has no tiny preview decoder (registry preview_decoder is off): previews decode with the VAE."""
    raise ValueError("LTX-Video previews decode with the model's VAE: no tiny preview decoder reads LTX latents")


def meta_inputs(config: dict, *, batch: int, latent: tuple[int, int, int], text_len: int,
                expand_timesteps: bool = False) -> dict:
    """The transformer's forward kwargs for `batch` sequences of latent (F', H', W'), on the meta device."""
    f, h, w = latent
    return {"hidden_states": meta_tensor(batch, f * h * w, config["in_channels"]),  # (B, F'*H'*W', C) packed, patch 1
            "encoder_hidden_states": meta_tensor(batch, text_len, config["caption_channels"]),  # (B, L, 4096)
            "timestep": meta_tensor(batch, dtype=torch.float32), "encoder_attention_mask": meta_tensor(batch, text_len),
            "num_frames": f, "height": h, "width": w, "rope_interpolation_scale": (8 / 25, 32.0, 32.0)}


def pipeline_kwargs(components: LTXComponents, *, negative_prompt: str, fps: int) -> dict:
    """LTXPipeline's extra arguments: the negative prompt, the frame rate its positions are scaled for, and the
    folder's decode timestep and noise scale (reel.json)."""
    return {"negative_prompt": negative_prompt, "frame_rate": fps, "decode_timestep": components.decode_timestep,
            "decode_noise_scale": components.decode_noise_scale}
