"""SkyReels-V2 text-to-video: a Wan 2.1 transformer with per-frame timesteps, and diffusion forcing for long shots.

SkyReels-V2 folders are SkyReelsV2DiffusionForcingPipeline ("DF": the transformer takes a timestep per latent
frame) or SkyReelsV2Pipeline (one timestep per sample), both with Wan 2.1's UMT5 text encoder and VAE. Where the
arithmetic is Wan's (prompt encoding, latent shapes, noise, the streamed VAE decode, samplers, LoRA key formats)
this module calls models/wan.py; it differs in the model call (velocity: per-frame timesteps, the fps flag of
`inject_sample_info` transformers) and adds render_long, SkyReelsV2DiffusionForcingPipeline's long-video loop
(num_frames > base_num_frames) with the engine's denoiser and reel's samplers:

    chunk 0      `window` frames from noise
    chunk k > 0  the last `overlap` frames' latents of the shot so far, held at timestep 0 (clean), then fresh
                 noise; only the fresh frames are stepped (the pipeline's timestep matrix with its defaults
                 ar_step = 0, causal_block_size = the transformer's num_frame_per_block, addnoise_condition = 0)

Each chunk's new latent frames are decoded at once through one causal VAE cache kept across chunks, so the pixels
equal the pipeline's single whole-shot `vae.decode`, while only one window of latents and pixels is ever held.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from reel.models import wan
from reel.models.diffusion_forcing import ChunkPlan as ChunkPlan  # the DF loop, shared with opted-in Wan folders
from reel.models.diffusion_forcing import long_chunks as long_chunks
from reel.models.diffusion_forcing import render_chunks
from reel.models.common import freeze, quiet_loading, scheduler_config
from reel.models.common import decode_audio as decode_audio  # no sound (registry audio off)
from reel.models.common import to_uint8_frames as to_uint8_frames  # the family contract's, shared
from reel.models.samplers import Sampler
from reel.models.single_file import load_transformer
from reel.models.wan import decode_stream as decode_stream  # the same Wan 2.1 VAE, streamed latent frame by frame
from reel.models.wan import embed_key as embed_key  # nothing but prompt and weights decides the embeddings
from reel.models.wan import encode_prompts as encode_prompts  # the pipelines' _get_t5_prompt_embeds is Wan's
from reel.models.wan import initial_noise as initial_noise  # prepare_latents' randn_tensor on the CPU generator
from reel.models.wan import latent_shape as latent_shape  # (C, F', H', W') of the Wan VAE

DF_PIPELINES = ("SkyReelsV2DiffusionForcingPipeline",)  # folders whose transformer takes per-frame timesteps
DEFAULT_FPS_FLAG = 1  # the DF pipeline's fps default 24 -> fps embedding row 1 (row 0 is 16 fps)


@dataclass
class SkyReelsComponents:
    """The loaded parts of a SkyReels-V2 folder, placed on one device."""

    path: Path
    tokenizer: object
    text_encoder: torch.nn.Module
    transformer: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype  # transformer and text encoder dtype; the VAE stays fp32
    diffusion_forcing: bool = True  # a DF folder: per-frame timesteps, long shots (render_long)
    transformer_2: None = None  # models/wan.py's samplers and experts read these: SkyReels has one transformer
    expand_timesteps: bool = False

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.scale_factor_temporal)

    @property
    def spatial_factor(self) -> int:
        return int(self.vae.config.scale_factor_spatial)


def load(path: str | Path, device: torch.device, dtype: torch.dtype) -> SkyReelsComponents:
    """Tokenizer, UMT5 text encoder, SkyReels transformer (its folder or a single file named in reel.json), the
    Wan VAE (fp32) and the scheduler config from a local folder; never a hub. A DF folder is one whose
    model_index.json names SkyReelsV2DiffusionForcingPipeline."""
    from diffusers import AutoencoderKLWan, SkyReelsV2Transformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    quiet_loading()
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    text_encoder = UMT5EncoderModel.from_pretrained(path / "text_encoder", local_files_only=True, dtype=dtype)
    transformer = load_transformer(SkyReelsV2Transformer3DModel, path, dtype)
    vae = AutoencoderKLWan.from_pretrained(path / "vae", local_files_only=True, dtype=torch.float32)
    freeze((text_encoder, transformer, vae), device)
    return SkyReelsComponents(path, tokenizer, text_encoder, transformer, vae, scheduler_config(path), device, dtype,
                              diffusion_forcing=index.get("_class_name") in DF_PIPELINES)


def make_sampler(components: SkyReelsComponents, name: str, shift: float, *, shape: tuple | None = None,
                 image: dict | None = None, seeds: list[int] | None = None) -> Sampler:
    """"default": the folder's scheduler with the given shift (`from_config(..., flow_shift=shift)`); for a DF
    folder with UniPC (the shipped ones) that is `df_unipc`, the DF pipeline's exact arithmetic. "unipc", "euler",
    "lcm" (consistency, re-noising from `seeds`) and a plain folder's "default" are Wan's (models/wan.py).
    `shape`, `image`: unused (text-to-video only)."""
    cfg = components.scheduler_config
    if name == "default" and components.diffusion_forcing and cfg.get("_class_name") == "UniPCMultistepScheduler":
        from diffusers import UniPCMultistepScheduler

        return df_unipc(lambda: UniPCMultistepScheduler.from_config(cfg, flow_shift=shift))
    return wan.make_sampler(components, name, shift, seeds=seeds)


def df_unipc(make_scheduler) -> Sampler:
    """diffusers' UniPC `step`, each result written into the latents in place, as SkyReelsV2DiffusionForcingPipeline
    writes `latents[:, :, idx] = scheduler.step(..., latents[:, :, idx])` (and SkyReels' original code alike).

    Why in place: UniPC keeps the sample it was given as `last_sample` for the next step's corrector; the pipeline
    hands it a view of its latents and then overwrites them, so at step 1 the corrector reads the step-0 *result*
    where textbook UniPC reads the step-0 input. reel's "unipc" (models/samplers.unipc) is textbook; this one
    reproduces the DF pipeline's frames bit for bit (tests/models/test_skyreels.py). Like samplers.diffusers_steps
    it reads the device on every step (diffusers' own step). The callback gets a copy of the latents."""
    def sample(denoiser, x: torch.Tensor, steps: int, callback=None) -> torch.Tensor:
        scheduler = make_scheduler()
        scheduler.set_timesteps(steps, device=x.device)
        scheduler.set_begin_index(0)
        host = scheduler.timesteps.tolist()  # read once, before the loop
        x = x.clone()  # (B, *latent): written in place below, never the caller's tensor
        for i, t in enumerate(scheduler.timesteps):
            x.copy_(scheduler.step(denoiser(x, t, i), t, x, return_dict=False)[0])
            if callback is not None:
                callback(i, float(host[i]), x.clone())
        return x
    return sample


def batch_conditioning(components: SkyReelsComponents, cond, *, guidance: float, fps: int, batch: int):
    """A DF folder's transformer reads the frame rate as a flag (0 for 16 fps, else 1: the DF pipeline's
    `fps_embeds`); it joins the conditioning as a plain per-batch value. Plain folders take the text alone."""
    if not components.diffusion_forcing:
        return cond
    return {**(cond if isinstance(cond, dict) else {"embeds": cond}), "fps": 0 if fps == 16 else 1}


def experts(components: SkyReelsComponents) -> dict[str, torch.nn.Module]:
    """The one transformer LoRAs attach to."""
    return {"high": components.transformer}


def per_frame_timesteps(t: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """t as the DF transformer takes it, one per latent frame: (batch, frames). t is 0-d, (B,) or per frame
    (B, F); B may divide `batch` (the engine's guidance stacks cond and uncond rows: the rows repeat)."""
    if t.dim() == 0:
        return t.reshape(1, 1).expand(batch, frames)
    if t.dim() == 1:
        t = t[:, None].expand(t.shape[0], frames)  # (B, F)
    if t.shape[1] != frames or batch % t.shape[0]:
        raise ValueError(f"timesteps of shape {tuple(t.shape)} do not fit latents of {batch} rows x {frames} latent "
                         "frames: pass t as a scalar, (B,) or (B, F)")
    return t.repeat(batch // t.shape[0], 1)  # (batch, F)


def velocity(components: SkyReelsComponents, latents: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
    """The denoiser contract: flow velocity (fp32, latents' shape) for latents (B, C, F', H', W').

    DF folders: t is 0-d, (B,) or per latent frame (B, F'), and the transformer runs with
    enable_diffusion_forcing and the fps flag, as SkyReelsV2DiffusionForcingPipeline calls it. Plain folders:
    one timestep per sample, as SkyReelsV2Pipeline calls it. `cond`: the text embedding (B, L, D) or a dict with
    "embeds" (and "fps" from batch_conditioning)."""
    c = cond if isinstance(cond, dict) else {"embeds": cond}
    b, frames = latents.shape[0], latents.shape[2]
    t = t.to(components.device)
    kwargs = {}
    if components.diffusion_forcing:
        timestep = per_frame_timesteps(t, b, frames)  # (B, F')
        # one fps flag for the whole batch: diffusers 0.42.1 repeats the fps projection (len(fps), 6, D) F' times
        # and adds it to (B, F', 6, D), right only for len(fps) == 1 (it broadcasts over the rows then)
        kwargs = {"enable_diffusion_forcing": True, "fps": [int(c.get("fps", DEFAULT_FPS_FLAG))]}
    elif t.dim() == 2:
        raise ValueError(f"{components.path}: a SkyReelsV2Pipeline transformer takes one timestep per sample, not "
                         "one per frame — use a SkyReels-V2 DF (SkyReelsV2DiffusionForcingPipeline) folder")
    else:
        timestep = t.expand(b)  # (B,)
    out = components.transformer(hidden_states=latents.to(components.dtype), timestep=timestep,
                                 encoder_hidden_states=c["embeds"], return_dict=False, **kwargs)[0]
    return out.float()  # (B, C, F', H', W')


def image_condition(components: SkyReelsComponents, image, frames: int, height: int, width: int, *,
                    seed: int | None = None) -> dict:
    """reel runs SkyReels-V2 text-to-video only (its I2V pipelines are not wired); the spec refuses images first."""
    raise ValueError("SkyReels-V2 (SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Pipeline) is text-to-video only in "
                     "reel: it takes no input image")


def decode_preview(components: SkyReelsComponents, decoder: torch.nn.Module,
                   latents: torch.Tensor) -> Iterator[torch.Tensor]:
    """No tiny preview decoder is trained for SkyReels (registry preview_decoder off): previews use the VAE."""
    raise ValueError("SkyReels-V2 previews decode with the model's VAE: no tiny preview decoder reads its latents")


def lora_to_diffusers(state: dict) -> dict:
    """diffusers, ComfyUI/original Wan (`diffusion_model.`) and musubi/kohya (`lora_unet_`) LoRAs -> diffusers
    keys, with diffusers' SkyReels loader (it converts with the Wan converters)."""
    from diffusers.loaders.lora_pipeline import SkyReelsV2LoraLoaderMixin

    return SkyReelsV2LoraLoaderMixin.lora_state_dict(state)


def meta_inputs(config: dict, *, batch: int, latent: tuple[int, int, int], text_len: int,
                expand_timesteps: bool = False) -> dict:
    """Wan's forward kwargs on the meta device with a DF transformer's per-frame timesteps (B, F') (their per-token
    modulation is part of the activation peak) and, where the config injects sample info (SkyReels-V2-DF-1.3B),
    the fps flag. `expand_timesteps`: unused."""
    from reel.models.common import meta_tensor

    kw = wan.meta_inputs(config, batch=batch, latent=latent, text_len=text_len)
    kw["timestep"] = meta_tensor(batch, latent[0], dtype=torch.float32)  # (B, F')
    kw["enable_diffusion_forcing"] = True
    if config.get("inject_sample_info"):
        kw["fps"] = [DEFAULT_FPS_FLAG]  # one flag for the batch, as velocity passes it
    return kw


def pipeline_kwargs(components: SkyReelsComponents, *, negative_prompt: str, fps: int) -> dict:
    """The pipelines' extras for a short text-to-video shot: the negative prompt, and for DF folders the fps."""
    if not components.diffusion_forcing:
        return {"negative_prompt": negative_prompt}
    return {"negative_prompt": negative_prompt, "fps": fps}


# -- long shots: diffusion forcing (models/diffusion_forcing.py) ----------------------------------------------

def _check_long(components: SkyReelsComponents, frames: int, window: int, overlap: int, image) -> None:
    """ValueError for what render_long cannot do, naming the field and the fix."""
    if not components.diffusion_forcing:
        raise ValueError(f"{components.path}: long shots need a SkyReels-V2 DF folder (model_index.json "
                         "SkyReelsV2DiffusionForcingPipeline); this SkyReelsV2Pipeline folder renders at most "
                         f"one window — set frames <= {window} or use a DF model")
    if image is not None:
        raise ValueError("long shots are text-to-video only for SkyReels-V2: drop `image` / `continue_from`")
    t = components.temporal_factor
    for key, value in (("frames", frames), ("window_frames", window), ("overlap_frames", overlap)):
        if value < 1 or (value - 1) % t:
            raise ValueError(f"{key} = {value}: must be {t}k + 1 (the VAE packs {t} frames per latent frame after "
                             "the first)")
    if not 1 <= overlap < window:
        raise ValueError(f"overlap_frames = {overlap}: must be at least 1 and below window_frames = {window}")


@torch.no_grad()
def render_long(components: SkyReelsComponents, denoiser, *, frames: int, height: int, width: int, window: int,
                overlap: int, steps: int, shift: float, seed: int, scheduler: str, image: dict | None = None,
                on_step=None) -> Iterator[torch.Tensor]:
    """A shot of `frames` frames as SkyReelsV2DiffusionForcingPipeline renders num_frames > base_num_frames
    (= `window`) with overlap_history = `overlap` and its defaults (ar_step 0, addnoise_condition 0,
    causal_block_size = the transformer's num_frame_per_block): yields pixel chunks (1, 3, f, H, W) in [0, 1],
    `frames` in all, one per diffusion chunk. Up to `window` frames it is the pipeline's short shot.

    Noise: one CPU generator seeded with `seed` draws each chunk's full (1, C, size, H', W') noise in chunk order,
    prefix frames included (then overwritten) — the pipeline's own draws from one generator, so a seed locks the
    whole shot and matches the pipeline's frames. Each chunk runs `make_sampler(scheduler, shift)` over its fresh
    frames; `denoiser(x, t, i)` gets the whole chunk with t per latent frame (1, F'). `on_step(chunk, i, t, x)`:
    0-based chunk and step, t a float, x the chunk's latents (1, C, size, H', W')."""
    _check_long(components, frames, window, overlap, image)
    yield from render_chunks(components, denoiser, make_sampler=make_sampler, latent_shape=latent_shape,
                             block=int(components.transformer.config.num_frame_per_block), frames=frames,
                             height=height, width=width, window=window, overlap=overlap, steps=steps, shift=shift,
                             seed=seed, scheduler=scheduler, on_step=on_step)
