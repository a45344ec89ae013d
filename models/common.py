"""What every model family needs once: quiet local loading, frozen modules, CPU noise, uint8 frames, the
flow-matching UniPC scheduler, kohya alpha folding, per-channel latent statistics, the CPU bf16 probe.

    quiet_loading()                                   # diffusers' and transformers' progress bars off
    freeze([text_encoder, transformer, vae], device)  # on the device, eval mode, no gradients
    noise = cpu_noise((C, F, H, W), seed, device)     # (1, C, F, H, W), the same on any device
    frames = to_uint8_frames(chunk)                   # (B, 3, f, H, W) in [0, 1] -> (B, f, H, W, 3) uint8

Each helper keeps the exact arithmetic the families had, so frames stay bit-identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch


def quiet_loading() -> None:
    """No progress bars from diffusers' and transformers' from_pretrained (reel shows its own progress)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def freeze(modules: Iterable[torch.nn.Module | None], device: torch.device) -> None:
    """Move each module (None skipped) to `device`, in eval mode, with gradients off: inference only."""
    for module in modules:
        if module is not None:
            module.to(device).eval().requires_grad_(False)


def scheduler_config(path: Path) -> dict:
    """The folder's scheduler/scheduler_config.json."""
    return json.loads((Path(path) / "scheduler" / "scheduler_config.json").read_text())


def cpu_generator(seed: int) -> torch.Generator:
    """The shot's own generator: on the CPU, so a seed draws the same numbers whatever the device."""
    return torch.Generator("cpu").manual_seed(seed)


def cpu_noise(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """Starting noise (1, *shape) drawn on the CPU from the shot's own generator, then moved: same on any device."""
    return torch.randn((1, *shape), generator=cpu_generator(seed), dtype=torch.float32).to(device)


def to_uint8_frames(chunk: torch.Tensor):
    """(B, 3, f, H, W) in [0, 1] -> (B, f, H, W, 3) uint8, rounded like diffusers' numpy_to_pil."""
    return (chunk.permute(0, 2, 3, 4, 1) * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def flow_unipc(shift: float):
    """diffusers' UniPC multistep scheduler for flow-matching models, with the timestep shift `shift`."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                   num_train_timesteps=1000, flow_shift=shift)


def fold_alpha(up: torch.Tensor, rank: int, alpha) -> torch.Tensor:
    """A kohya lora_up weight with alpha / rank folded in (what peft's lora_B holds); no alpha: unchanged."""
    if alpha is None:
        return up
    return (up.float() * (float(alpha) / rank)).to(up.dtype)


def channel_stats(values, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A VAE's per-channel latent mean or std (a config list or a tensor) as (1, C, 1, 1, 1) on like's device.

    dtype None: a list becomes fp32 (torch's default), a tensor keeps its dtype."""
    if isinstance(values, torch.Tensor):
        t = values.to(like.device) if dtype is None else values.to(like.device, dtype)
    else:
        t = torch.tensor(values, device=like.device) if dtype is None else \
            torch.tensor(values, dtype=dtype, device=like.device)
    return t.view(1, -1, 1, 1, 1)


def cpu_bf16_fast(device: torch.device) -> bool:
    """True on a CPU whose oneDNN runs bf16 natively (AVX512-BF16 / AMX), where bf16 convolutions are fast."""
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN: stay in fp32
        return False


def meta_tensor(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """A tensor with a shape and no data (the meta device): the estimator's model inputs."""
    return torch.empty(shape, device="meta", dtype=dtype)


class VaeRatios:
    """A Components mixin: pixel frames per latent frame and pixels per latent pixel, as VAEs that state
    `temporal_compression_ratio` / `spatial_compression_ratio` give them (LTX, LTX-2, HunyuanVideo, 1.5)."""

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.temporal_compression_ratio)

    @property
    def spatial_factor(self) -> int:
        return int(self.vae.spatial_compression_ratio)


def decode_audio(components, latents: torch.Tensor, *, seeds: list[int] | None = None) -> tuple[torch.Tensor, int]:
    """The family contract's decode_audio for families without sound (registry `audio` off)."""
    raise ValueError(f"{type(components).__name__[:-len('Components')] or 'this'} models make no sound track: "
                     "only a family with the registry's audio flag (LTX-2) decodes audio")


def render_long(components, denoiser, *, frames: int, height: int, width: int, window: int, overlap: int, steps: int,
                shift: float, seed: int, scheduler: str, image: dict | None = None, on_step=None):
    """The family contract's render_long for families without a long-shot scheme (registry `long_shots` "")."""
    raise ValueError(f"{type(components).__name__[:-len('Components')] or 'this'} models have no long-shot scheme: "
                     "only a family with the registry's long_shots flag (SkyReels-V2 diffusion forcing) renders "
                     "shots longer than its window")
