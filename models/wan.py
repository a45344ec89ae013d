"""Wan 2.x text-to-video: load a local diffusers folder, encode prompts, run the transformer, decode.

The pieces reel's own denoising loop needs, with WanPipeline's exact numerics (prompt cleaning,
zero-padded text embeddings, latent normalisation, causal frame-by-frame VAE decode), so reel's
frames match diffusers' WanPipeline on the same weights and seed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch

from reel.models.common import (
    channel_stats,
    cpu_noise,
    flow_unipc,
    freeze,
    meta_tensor,
    quiet_loading,
    scheduler_config,
)
from reel.models.samplers import (Sampler, consistency, consistency_sigmas, diffusers_schedule, euler,
                                  pin_first_frame, unipc)
from reel.models.single_file import load_transformer
from reel.models.common import cpu_bf16_fast as cpu_bf16_fast  # the family contract's, shared
from reel.models.common import to_uint8_frames as to_uint8_frames  # the family contract's, shared
from reel.models.common import decode_audio as decode_audio  # no sound (registry audio off)
from reel.models.common import render_long as _no_long_shots  # without reel.json's opt-in



@dataclass
class WanComponents:
    """The loaded parts of a Wan folder, placed on one device."""

    path: Path
    tokenizer: object
    text_encoder: torch.nn.Module
    transformer: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype  # transformer and text encoder dtype; the VAE stays fp32
    transformer_2: torch.nn.Module | None = None  # Wan 2.2 A14B: the low-noise expert
    boundary_ratio: float | None = None  # below boundary_ratio * 1000 the low-noise expert runs
    expand_timesteps: bool = False  # Wan 2.2 TI2V: per-token timesteps, first frame from the image
    image_encoder: torch.nn.Module | None = None  # Wan 2.1 I2V: CLIP vision tower
    image_processor: object = None
    diffusion_forcing: bool = False  # reel.json "long_shots": "diffusion-forcing": long shots in chunks (opt-in)

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.scale_factor_temporal)

    @property
    def spatial_factor(self) -> int:
        return int(self.vae.config.scale_factor_spatial)


def load(path: str | Path, device: torch.device, dtype: torch.dtype) -> WanComponents:
    """Load tokenizer, text encoder, transformer, VAE and scheduler config from a local folder.

    Never contacts a hub (local_files_only). VAE weights in fp32 on every device (its decode is the most
    precision-sensitive part and small next to the transformer); only the CPU bf16 speed mode decodes
    under bf16 autocast (engine/runtime.py). The modules are diffusers' own: the CPU fast paths (vectorised
    VAE channel norms and self-attention rotary) are opt-in hooks the engine adds (engine/accel.py,
    `[speed] cpu_fast_paths`).
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    quiet_loading()
    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    text_encoder = UMT5EncoderModel.from_pretrained(path / "text_encoder", local_files_only=True, dtype=dtype)
    transformer = load_transformer(WanTransformer3DModel, path, dtype)  # its folder, or a single file (reel.json)
    vae = AutoencoderKLWan.from_pretrained(path / "vae", local_files_only=True, dtype=torch.float32)
    index = json.loads((path / "model_index.json").read_text())
    transformer_2 = image_encoder = image_processor = None
    if (index.get("transformer_2") or [None])[0]:
        transformer_2 = load_transformer(WanTransformer3DModel, path, dtype, "transformer_2")
    if (index.get("image_encoder") or [None])[0]:
        from transformers import AutoImageProcessor, CLIPVisionModel

        image_encoder = CLIPVisionModel.from_pretrained(path / "image_encoder", local_files_only=True, dtype=dtype)
        image_processor = AutoImageProcessor.from_pretrained(path / "image_processor", local_files_only=True)
    freeze((text_encoder, transformer, vae, transformer_2, image_encoder), device)
    reel = json.loads((path / "reel.json").read_text()) if (path / "reel.json").is_file() else {}
    return WanComponents(path, tokenizer, text_encoder, transformer, vae, scheduler_config(path), device, dtype,
                         transformer_2=transformer_2, boundary_ratio=index.get("boundary_ratio"),
                         expand_timesteps=bool(index.get("expand_timesteps")), image_encoder=image_encoder,
                         image_processor=image_processor,
                         diffusion_forcing=reel.get("long_shots") == "diffusion-forcing")


def make_sampler(components: WanComponents, name: str, shift: float, *, shape: tuple | None = None,
                 image: dict | None = None, seeds: list[int] | None = None) -> Sampler:
    """A flow-matching sampler: "unipc" (Wan's default: diffusers' UniPC, as samplers.unipc plans it), "euler",
    "default" (the folder's own scheduler class), or "lcm" (consistency sampling for a few-step preview LoRA,
    re-noising from each shot's `seeds`), with the given shift. For Wan 2.2 TI2V with an image, the image's
    latent frame goes back in front after the last step, as WanImageToVideoPipeline does (not for "lcm", which
    keeps reel's earlier preview arithmetic). For Wan 2.2 A14B each step's expert is chosen from a CPU copy of
    the schedule (no read from the device per step). `shape`: unused."""
    sampler, host_timesteps = _sampler(components, name, shift, seeds)
    if components.transformer_2 is not None:
        sampler = _route_experts(sampler, host_timesteps, components.boundary_ratio * 1000)
    if image is not None and components.expand_timesteps and name != "lcm":
        return pin_first_frame(sampler, image["condition"], image["first_frame_mask"])
    return sampler


def _sampler(components: WanComponents, name: str, shift: float,
             seeds: list[int] | None) -> tuple[Sampler, Callable[[int], list[float]]]:
    """(the sampler, steps -> its timesteps as Python floats, computed on the CPU)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if name == "lcm":
        if seeds is None:
            raise ValueError("the consistency (lcm) sampler re-noises from each shot's seed: pass seeds=")
        return consistency(shift, list(seeds)), lambda steps: (consistency_sigmas(steps, shift)[:-1] * 1000).tolist()
    cfg = dict(components.scheduler_config)
    if name == "default":
        name = "euler" if cfg.get("_class_name") == "FlowMatchEulerDiscreteScheduler" else "unipc"
    if name == "unipc":
        def make():
            if cfg.get("_class_name") == "UniPCMultistepScheduler":
                return UniPCMultistepScheduler.from_config(cfg, flow_shift=shift)
            return flow_unipc(shift)

        def unipc_timesteps(steps: int) -> list[float]:
            scheduler = make()
            scheduler.set_timesteps(steps, device="cpu")
            return scheduler.timesteps.tolist()

        return unipc(make), unipc_timesteps
    if name == "euler":
        schedule = diffusers_schedule(lambda: FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift))
        return euler(schedule), lambda steps: schedule(steps, torch.device("cpu"))[1].tolist()
    raise ValueError(f"unknown scheduler {name!r}; use 'unipc', 'euler' or 'lcm'")


# Wan 2.2 A14B: whether the model call running now belongs to the low-noise expert (set by _route_experts;
# None outside such a sampler, where velocity compares the timestep itself)
_LOW_NOISE: ContextVar[bool | None] = ContextVar("reel_wan_low_noise", default=None)


def _route_experts(sampler: Sampler, host_timesteps: Callable[[int], list[float]], boundary: float) -> Sampler:
    """Run each step's model call with its expert chosen on the host: timestep < boundary -> the low-noise one."""
    def sample(denoiser, x: torch.Tensor, steps: int, callback=None) -> torch.Tensor:
        low = [t < boundary for t in host_timesteps(steps)]

        def routed(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
            token = _LOW_NOISE.set(low[i])
            try:
                return denoiser(x, t, i)
            finally:
                _LOW_NOISE.reset(token)

        return sampler(routed, x, steps, callback)
    return sample


@torch.no_grad()
def encode_prompts(components: WanComponents, prompts: list[str], max_sequence_length: int) -> torch.Tensor:
    """Text embeddings exactly as WanPipeline computes them: (N, L, D), rows past each prompt zeroed."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    cleaned = [prompt_clean(p) for p in prompts]
    tok = components.tokenizer(cleaned, padding="max_length", max_length=max_sequence_length, truncation=True,
                               add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = tok.input_ids.to(components.device), tok.attention_mask.to(components.device)  # (N, L)
    seq_lens = mask.gt(0).sum(dim=1)  # (N,)
    hidden = components.text_encoder(ids, mask).last_hidden_state  # (N, L, D)
    keep = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < seq_lens[:, None]  # (N, L)
    return (hidden * keep[..., None]).to(components.dtype)  # (N, L, D)


def latent_shape(components: WanComponents, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(C, F', H', W') of one shot's latents."""
    t, s = components.temporal_factor, components.spatial_factor
    channels = int(components.vae.config.z_dim)  # the I2V transformer takes more channels: noise + condition
    return (channels, (frames - 1) // t + 1, height // s, width // s)


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device, *,
                  image: dict | None = None) -> torch.Tensor:
    """Starting noise (1, C, F', H', W') drawn on the CPU from the shot's own generator, then moved: same on any
    device. `image`: unused (an image-to-video shot's noise is the same draw; the image joins the conditioning)."""
    return cpu_noise(shape, seed, device)


def embed_key(components: WanComponents) -> str:
    """Nothing but the prompt and the weights decides Wan's embeddings."""
    return ""


def batch_conditioning(components: WanComponents, cond, *, guidance: float, fps: int, batch: int):
    """Wan's conditioning is the same for any batch: guidance runs as two passes, positions ignore the fps."""
    return cond


def experts(components: WanComponents) -> dict[str, torch.nn.Module]:
    """The transformer, and Wan 2.2 A14B's low-noise expert."""
    if components.transformer_2 is None:
        return {"high": components.transformer}
    return {"high": components.transformer, "low": components.transformer_2}


def velocity(components: WanComponents, latents: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
    """The denoiser contract: flow velocity for latents (B, C, F', H', W') at timestep t.

    `cond` is the text embedding (B, L, D), or a dict with "embeds" and the image conditioning
    ("condition", "image_embeds", "first_frame_mask") of image-to-video shots."""
    c = cond if isinstance(cond, dict) else {"embeds": cond}
    model = components.transformer
    if components.transformer_2 is not None:  # Wan 2.2 A14B: the low-noise expert below the boundary
        low = _LOW_NOISE.get()
        if low is None:  # called outside make_sampler's loop: compare t itself (a read from the device)
            low = float(t) < components.boundary_ratio * 1000
        model = components.transformer_2 if low else model
    x = latents
    if t.dim() == 2:  # diffusion forcing (render_long): a timestep per latent frame (B, F')
        return _velocity_per_frame(components, model, latents, t, c)
    timestep = t.expand(latents.shape[0]).to(components.device)  # (B,)
    if components.expand_timesteps:  # Wan 2.2 TI2V: a timestep per token; 0 on the image's frame
        mask = c.get("first_frame_mask", torch.ones_like(latents[:1, :1]))  # (1, 1, F', H', W')
        if "condition" in c:
            x = (1 - mask) * c["condition"] + mask * latents
        p = model.config.patch_size
        per_token = (mask[0][0][:, ::p[1], ::p[2]] * t).flatten()  # (F' * H'/2 * W'/2,)
        timestep = per_token.unsqueeze(0).expand(latents.shape[0], -1).to(components.device)
    elif "condition" in c:  # Wan 2.1 I2V: mask and image latents as extra channels
        x = torch.cat([latents, c["condition"].to(latents.dtype)], dim=1)  # (B, C + 4 + C, F', H', W')
    out = model(hidden_states=x.to(components.dtype), timestep=timestep, encoder_hidden_states=c["embeds"],
                encoder_hidden_states_image=c.get("image_embeds"), return_dict=False)[0]
    return out.float()  # (B, C, F', H', W')


def _velocity_per_frame(components: WanComponents, model, latents: torch.Tensor, t: torch.Tensor, c: dict):
    """Per-frame timesteps (B, F') as per-token ones (B, F' * H'/p * W'/p), the input Wan 2.2 TI2V's transformer
    takes (any WanTransformer3DModel accepts it): only for folders that opted into diffusion forcing."""
    if not components.diffusion_forcing:
        raise ValueError(f"{components.path}: a timestep per frame is diffusion forcing, which this Wan folder has "
                         "not opted into — put \"long_shots\": \"diffusion-forcing\" in its reel.json")
    if "condition" in c:
        raise ValueError(f"{components.path}: diffusion forcing runs text-to-video Wan folders only")
    p = model.config.patch_size
    h, w = latents.shape[3] // p[1], latents.shape[4] // p[2]
    per_token = t.to(components.device)[:, :, None, None].expand(-1, -1, h, w).flatten(1)  # (B, F' * h * w)
    out = model(hidden_states=latents.to(components.dtype), timestep=per_token.expand(latents.shape[0], -1),
                encoder_hidden_states=c["embeds"], return_dict=False)[0]
    return out.float()  # (B, C, F', H', W')


def render_long(components: WanComponents, denoiser, *, frames: int, height: int, width: int, window: int,
                overlap: int, steps: int, shift: float, seed: int, scheduler: str, image: dict | None = None,
                on_step=None) -> Iterator[torch.Tensor]:
    """Long shots by diffusion forcing (models/diffusion_forcing.py) for a text-to-video Wan folder whose reel.json
    opts in ("long_shots": "diffusion-forcing"): Wan transformers take per-token timesteps, but only SkyReels-V2
    DF was trained for clean overlap frames beside noisy ones — see benchmarks/RESULTS.md "seams" for what the
    built-in model does with it. Other Wan folders refuse, as the contract's families without a scheme do."""
    from reel.models.diffusion_forcing import render_chunks

    if not components.diffusion_forcing:
        return _no_long_shots(components, denoiser, frames=frames, height=height, width=width, window=window,
                              overlap=overlap, steps=steps, shift=shift, seed=seed, scheduler=scheduler, image=image,
                              on_step=on_step)
    if image is not None or components.expand_timesteps or components.image_encoder is not None:
        raise ValueError(f"{components.path}: Wan long shots are text-to-video only (a T2V folder, no `image` or "
                         "`continue_from`) — render the shot within one window, or as several shots")
    return render_chunks(components, denoiser, make_sampler=make_sampler, latent_shape=latent_shape, block=1,
                         frames=frames, height=height, width=width, window=window, overlap=overlap, steps=steps,
                         shift=shift, seed=seed, scheduler=scheduler, on_step=on_step)


@torch.no_grad()
def image_condition(components: WanComponents, image, frames: int, height: int, width: int, *,
                    seed: int | None = None) -> dict:
    """What an image-to-video shot adds to its conditioning, as WanImageToVideoPipeline computes it:
    the image's VAE latents (+ the frame mask) and, for Wan 2.1 I2V, its CLIP embedding. Batch of one.
    `seed`: unused (the image latents are the posterior mode, as the pipeline takes them)."""
    from diffusers.video_processor import VideoProcessor
    from PIL import Image

    pil = Image.fromarray(image)
    proc = VideoProcessor(vae_scale_factor=components.spatial_factor)
    pixels = proc.preprocess(pil, height=height, width=width).to(components.device, torch.float32)  # (1, 3, H, W)
    vae, t = components.vae, components.temporal_factor
    lat_f, lat_h, lat_w = (frames - 1) // t + 1, height // components.spatial_factor, width // components.spatial_factor
    out = {}
    if components.image_encoder is not None:
        clip_in = components.image_processor(images=pil, return_tensors="pt").to(components.device)
        hidden = components.image_encoder(**clip_in, output_hidden_states=True).hidden_states[-2]  # (1, N, D)
        out["image_embeds"] = hidden.to(components.dtype)
    video = pixels.unsqueeze(2)  # (1, 3, 1, H, W)
    if not components.expand_timesteps:
        video = torch.cat([video, video.new_zeros(1, 3, frames - 1, height, width)], dim=2)  # (1, 3, F, H, W)
    z = vae.encode(video.to(vae.dtype)).latent_dist.mode()  # (1, C, F' or 1, H', W')
    mean = channel_stats(vae.config.latents_mean, z)  # (1, C, 1, 1, 1)
    inv_std = 1.0 / channel_stats(vae.config.latents_std, z)
    z = ((z.float() - mean) * inv_std).float()
    if components.expand_timesteps:
        mask = torch.ones(1, 1, lat_f, lat_h, lat_w, device=z.device)
        mask[:, :, 0] = 0
        out.update(condition=z, first_frame_mask=mask)
        return out
    mask = torch.ones(1, 1, frames, lat_h, lat_w, device=z.device)
    mask[:, :, 1:] = 0
    first = torch.repeat_interleave(mask[:, :, 0:1], dim=2, repeats=t)
    mask = torch.cat([first, mask[:, :, 1:]], dim=2).view(1, -1, t, lat_h, lat_w).transpose(1, 2)  # (1, t, F', H', W')
    out["condition"] = torch.cat([mask, z], dim=1)  # (1, t + C, F', H', W')
    return out


def _denormalise(vae, latents: torch.Tensor) -> torch.Tensor:
    mean = channel_stats(vae.config.latents_mean, latents, latents.dtype)  # (1, C, 1, 1, 1)
    std = channel_stats(vae.config.latents_std, latents, latents.dtype)
    return latents * std + mean


@torch.no_grad()
def decode_stream(components: WanComponents, latents: torch.Tensor, *, seeds: list[int] | None = None,
                  frames: int | None = None) -> Iterator[torch.Tensor]:
    """Decode latents (B, C, F', H', W') one latent frame at a time, yielding pixel chunks in [0, 1].
    `seeds`, `frames`: unused (the decode draws no noise; F' says the frame count).

    Yields (B, 3, f, H, W) float32 chunks: 1 frame for the first latent frame, `temporal_factor` after.
    The VAE's causal cache carries across chunks, so the frames equal a whole-clip `vae.decode` while
    only one chunk of pixels is ever held in memory.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    vae = components.vae
    z = _denormalise(vae, latents.to(components.device, torch.float32))  # (B, C, F', H', W')
    if vae.use_tiling:  # memory saver: spatial tiles over the whole clip, then handed out in chunks
        video = (vae.decode(z).sample.float() / 2 + 0.5).clamp(0.0, 1.0)  # (B, 3, F, H, W)
        for start in range(0, video.shape[2], components.temporal_factor):
            yield video[:, :, start:start + components.temporal_factor]
        return
    vae.clear_cache()
    try:
        x = vae.post_quant_conv(z)
        for i in range(x.shape[2]):
            vae._conv_idx = [0]
            out = vae.decoder(x[:, :, i:i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=(i == 0))
            if vae.config.patch_size is not None:
                out = unpatchify(out, patch_size=vae.config.patch_size)
            out = out.float().clamp(-1.0, 1.0)  # (B, 3, f, H, W); fp32 even when decoded under autocast
            yield (out / 2 + 0.5).clamp(0.0, 1.0)
    finally:
        vae.clear_cache()


@torch.no_grad()
def decode_preview(components: WanComponents, decoder: torch.nn.Module,
                   latents: torch.Tensor) -> Iterator[torch.Tensor]:
    """Previews: a tiny decoder (models/preview_decoder.py) on the whole clip instead of the VAE; on a CPU
    with native bf16 it runs under bf16 autocast (speed and accuracy: benchmarks/RESULTS.md, previews).

    Same input as decode_stream (normalised latents (B, C, F', H', W')); yields one (B, 3, F, H, W) chunk in [0, 1].
    """
    z = _denormalise(components.vae, latents.to(components.device, torch.float32))  # (B, C, F', H', W')
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16_fast(components.device)):
        frames = decoder(z).float()  # (B, 3, F, H, W); a draft decoder: bf16 on such CPUs (RESULTS.md)
    yield (frames.clamp(-1.0, 1.0) / 2 + 0.5).clamp(0.0, 1.0)


def lora_to_diffusers(state: dict) -> dict:
    """Any supported Wan LoRA state dict (diffusers, ComfyUI/lightx2v, kohya/musubi) -> diffusers keys."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    return WanLoraLoaderMixin.lora_state_dict(state)


@torch.no_grad()
def encode_video(components: WanComponents, frames) -> torch.Tensor:
    """(F, H, W, 3) uint8 frames -> normalised latents (C, F', H', W'), the posterior mode (deterministic)."""
    vae = components.vae
    x = torch.from_numpy(frames).to(components.device, torch.float32)  # (F, H, W, 3)
    x = (x / 127.5 - 1.0).permute(3, 0, 1, 2)[None]  # (1, 3, F, H, W) in [-1, 1]
    z = vae.encode(x).latent_dist.mode()  # (1, C, F', H', W')
    mean, std = channel_stats(vae.config.latents_mean, z), channel_stats(vae.config.latents_std, z)  # (1, C, 1, 1, 1)
    return ((z - mean) / std)[0]  # (C, F', H', W')


# diffusers module path inside a Wan block -> ComfyUI / original Wan name (for LoRA export)
COMFY_NAMES = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}


def meta_inputs(config: dict, *, batch: int, latent: tuple[int, int, int], text_len: int,
                expand_timesteps: bool = False) -> dict:
    """The transformer's forward kwargs for `batch` sequences of latent (F', H', W'), on the meta device
    (engine/estimate_meta.py measures FLOPs and activations with them)."""
    f, h, w = latent
    tokens = f * (h // config["patch_size"][1]) * (w // config["patch_size"][2])
    kw = {"hidden_states": meta_tensor(batch, config["in_channels"], f, h, w),  # (B, C_in, F', H', W')
          "timestep": meta_tensor(batch, tokens, dtype=torch.float32) if expand_timesteps
          else meta_tensor(batch, dtype=torch.float32),
          "encoder_hidden_states": meta_tensor(batch, text_len, config["text_dim"])}  # (B, L, D_text)
    if config.get("image_dim"):
        kw["encoder_hidden_states_image"] = meta_tensor(batch, 257, config["image_dim"])  # (B, 257, D_clip)
    return kw


def pipeline_kwargs(components: WanComponents, *, negative_prompt: str, fps: int) -> dict:
    """WanPipeline's extra arguments for a text-to-video shot: the negative prompt (its fps is the encoder's)."""
    return {"negative_prompt": negative_prompt}
