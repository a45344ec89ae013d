"""Wan 2.x text-to-video: load a local diffusers folder, encode prompts, run the transformer, decode.

The pieces reel's own denoising loop needs, with WanPipeline's exact numerics (prompt cleaning,
zero-padded text embeddings, latent normalisation, causal frame-by-frame VAE decode), so reel's
frames match diffusers' WanPipeline on the same weights and seed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch


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

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.scale_factor_temporal)

    @property
    def spatial_factor(self) -> int:
        return int(self.vae.config.scale_factor_spatial)


def load(path: str | Path, device: torch.device, dtype: torch.dtype) -> WanComponents:
    """Load tokenizer, text encoder, transformer, VAE and scheduler config from a local folder.

    Never contacts a hub (local_files_only). VAE in fp32 on every device (its decode is the most
    precision-sensitive part and small next to the transformer).
    """
    import diffusers
    import transformers
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    text_encoder = UMT5EncoderModel.from_pretrained(path / "text_encoder", local_files_only=True, dtype=dtype)
    transformer = WanTransformer3DModel.from_pretrained(path / "transformer", local_files_only=True, dtype=dtype)
    vae = AutoencoderKLWan.from_pretrained(path / "vae", local_files_only=True, dtype=torch.float32)
    for module in (text_encoder, transformer, vae):
        module.to(device).eval().requires_grad_(False)
    scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    return WanComponents(path, tokenizer, text_encoder, transformer, vae, scheduler_config, device, dtype)


def make_scheduler(components: WanComponents, name: str, shift: float, shape=None):
    """A fresh flow-matching scheduler: "unipc" (Wan's default), "euler", or "default" (the folder's own
    scheduler class), with the given shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    cfg = dict(components.scheduler_config)
    if name == "default":
        name = "euler" if cfg.get("_class_name") == "FlowMatchEulerDiscreteScheduler" else "unipc"
    if name == "unipc":
        if cfg.get("_class_name") == "UniPCMultistepScheduler":
            return UniPCMultistepScheduler.from_config(cfg, flow_shift=shift)
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                       num_train_timesteps=1000, flow_shift=shift)
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    raise ValueError(f"unknown scheduler {name!r}; use 'unipc' or 'euler'")


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
    channels = int(components.transformer.config.in_channels)
    return (channels, (frames - 1) // t + 1, height // s, width // s)


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """Starting noise drawn on the CPU from the shot's own generator, then moved: same on any device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((1, *shape), generator=generator, dtype=torch.float32).to(device)  # (1, C, F', H', W')


def velocity(components: WanComponents, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """The denoiser contract: flow velocity for latents (B, C, F', H', W') at timestep t, text (B, L, D)."""
    timestep = t.expand(latents.shape[0]).to(components.device)  # (B,)
    out = components.transformer(hidden_states=latents.to(components.dtype), timestep=timestep,
                                 encoder_hidden_states=embeds, return_dict=False)[0]
    return out.float()  # (B, C, F', H', W')


def _denormalise(vae, latents: torch.Tensor) -> torch.Tensor:
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, dtype=latents.dtype, device=latents.device).view(1, z, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=latents.dtype, device=latents.device).view(1, z, 1, 1, 1)
    return latents * std + mean


@torch.no_grad()
def decode_stream(components: WanComponents, latents: torch.Tensor) -> Iterator[torch.Tensor]:
    """Decode latents (B, C, F', H', W') one latent frame at a time, yielding pixel chunks in [0, 1].

    Yields (B, 3, f, H, W) float32 chunks: 1 frame for the first latent frame, `temporal_factor` after.
    The VAE's causal cache carries across chunks, so the frames equal a whole-clip `vae.decode` while
    only one chunk of pixels is ever held in memory.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    vae = components.vae
    z = _denormalise(vae, latents.to(components.device, torch.float32))  # (B, C, F', H', W')
    vae.clear_cache()
    try:
        x = vae.post_quant_conv(z)
        for i in range(x.shape[2]):
            vae._conv_idx = [0]
            out = vae.decoder(x[:, :, i:i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=(i == 0))
            if vae.config.patch_size is not None:
                out = unpatchify(out, patch_size=vae.config.patch_size)
            out = out.clamp(-1.0, 1.0)  # (B, 3, f, H, W)
            yield (out / 2 + 0.5).clamp(0.0, 1.0)
    finally:
        vae.clear_cache()


def to_uint8_frames(chunk: torch.Tensor):
    """(B, 3, f, H, W) in [0, 1] -> (B, f, H, W, 3) uint8, rounded like diffusers' numpy_to_pil."""
    return (chunk.permute(0, 2, 3, 4, 1) * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


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
    zc = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, device=z.device).view(1, zc, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=z.device).view(1, zc, 1, 1, 1)
    return ((z - mean) / std)[0]  # (C, F', H', W')


# diffusers module path inside a Wan block -> ComfyUI / original Wan name (for LoRA export)
COMFY_NAMES = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v", "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}
