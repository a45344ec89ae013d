"""Channel L2 normalisation for the Wan VAE's RMS norms, fast on the CPU, as a removable diffusers hook.

    y = channel_normalize(x, dim=1)        # == torch.nn.functional.normalize(x, dim=1), up to rounding
    n = apply_fast_vae_norms(vae)          # hook every WanRMS_norm in an AutoencoderKLWan; returns how many
    remove_fast_vae_norms(vae)             # diffusers' own norms again

diffusers' `WanRMS_norm` calls `F.normalize(x, dim=1)` on (B, C, F, H, W) activations. On the CPU that
goes through `linalg_vector_norm` along the strided channel axis, which does not vectorise: it was the largest
part of the built-in model's VAE decode on the CPU. Summing squares along the same axis is a plain reduction that
does vectorise, with the same values within 2 fp32 ulps (render timings: benchmarks/RESULTS.md).
Each norm gets a `FastVaeNormHook` in its diffusers HookRegistry (kernels/hooks.py): only the instances
passed in change, so a WanPipeline beside reel stays an unmodified reference. engine/accel.py applies it
for `[speed] cpu_fast_paths` (auto: CPU renders).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.hooks import ModelHook

from reel.kernels.hooks import add_hook, remove_hook

FAST_VAE_NORM_HOOK = "reel_fast_vae_norm"


def channel_normalize(x: torch.Tensor, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """x / max(||x||_2 along dim, eps), the contract of F.normalize; x in any shape, fp32 math."""
    return x / x.pow(2).sum(dim, keepdim=True).sqrt().clamp_min(eps)


def channel_normalize_reference(x: torch.Tensor, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
    return F.normalize(x, dim=dim, eps=eps)


class FastVaeNormHook(ModelHook):
    """WanRMS_norm.forward with channel_normalize: low-precision inputs are normalised in fp32, as there."""

    def new_forward(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        low = x.dtype in (torch.float16, torch.bfloat16) or "float8_" in str(x.dtype) or "float4_" in str(x.dtype)
        normalized = channel_normalize(x.float() if low else x, dim=1 if module.channel_first else -1).to(x.dtype)
        return normalized * module.scale * module.gamma + module.bias


def _wan_norms(vae: torch.nn.Module) -> list[torch.nn.Module]:
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    return [m for m in vae.modules() if isinstance(m, WanRMS_norm)]


def apply_fast_vae_norms(vae: torch.nn.Module) -> int:
    """Hook every diffusers WanRMS_norm inside `vae` that has no such hook yet; returns how many were hooked."""
    return sum(add_hook(norm, FastVaeNormHook(), FAST_VAE_NORM_HOOK) for norm in _wan_norms(vae))


def remove_fast_vae_norms(vae: torch.nn.Module) -> int:
    """Take the hook off every WanRMS_norm inside `vae`; returns how many had it."""
    return sum(remove_hook(norm, FAST_VAE_NORM_HOOK) for norm in _wan_norms(vae))
