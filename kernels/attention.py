"""Attention backends: a registry of names, each with a `validate()` that returns every reason it
cannot run here (vLLM's selector pattern). The kernels themselves are diffusers' attention dispatcher
backends; reel picks one and says why the others were passed over.

    name, passed_over = select_backend("auto", device, dtype, head_dim)   # first valid in priority order
    select_backend("flash-attn", ...)   # forced: raises BackendError listing every reason if it can't run

Priority for "auto": flash-attn, xformers, sdpa. sageattention (8-bit QK, slightly lossy) is used only
when asked for by name. No probing happens at import time.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch

HALF = (torch.float16, torch.bfloat16)


class BackendError(ValueError):
    """A forced backend that cannot run; the message lists every reason."""


@dataclass(frozen=True)
class Backend:
    name: str  # reel's name (CLI / spec)
    diffusers_name: str  # diffusers.models.attention_dispatch.AttentionBackendName value
    package: str | None  # import name that must be installed
    install: str  # what to install
    checks: tuple[Callable[[torch.device, torch.dtype, int], str | None], ...] = ()

    def validate(self, device: torch.device, dtype: torch.dtype, head_dim: int) -> list[str]:
        """Every reason this backend cannot run for (device, dtype, head_dim); empty if it can."""
        reasons = []
        if self.package and importlib.util.find_spec(self.package) is None:
            reasons.append(f"{self.package} is not installed ({self.install})")
        reasons += [r for check in self.checks if (r := check(device, dtype, head_dim))]
        return reasons


def _needs_cuda(device, dtype, head_dim):
    return None if device.type == "cuda" else f"needs a CUDA device (running on {device.type})"


def _needs_half(device, dtype, head_dim):
    return None if dtype in HALF else f"needs fp16 or bf16 (model runs in {str(dtype).replace('torch.', '')})"


def _head_dim_at_most(limit: int):
    def check(device, dtype, head_dim):
        return None if head_dim <= limit and head_dim % 8 == 0 else \
            f"head size {head_dim} unsupported (multiple of 8, at most {limit})"
    return check


def _sm_at_least(major: int):
    def check(device, dtype, head_dim):
        if device.type != "cuda" or not torch.cuda.is_available():
            return None  # the CUDA check already said so
        cap = torch.cuda.get_device_capability(device)
        return None if cap[0] >= major else f"needs compute capability >= {major}.0 (GPU has {cap[0]}.{cap[1]})"
    return check


def _sage_head_dim(device, dtype, head_dim):
    return None if head_dim in (64, 96, 128) else f"head size {head_dim} unsupported (64, 96 or 128)"


BACKENDS: dict[str, Backend] = {
    "flash-attn": Backend("flash-attn", "flash", "flash_attn", "pip install flash-attn",
                          (_needs_cuda, _needs_half, _head_dim_at_most(256), _sm_at_least(8))),
    "xformers": Backend("xformers", "xformers", "xformers", "pip install 'reel[cuda]'",
                        (_needs_cuda, _needs_half, _head_dim_at_most(256))),
    "sageattention": Backend("sageattention", "sage", "sageattention", "pip install sageattention",
                             (_needs_cuda, _needs_half, _sage_head_dim, _sm_at_least(8))),
    "sdpa": Backend("sdpa", "native", None, "built into torch"),
}
AUTO_ORDER = ("flash-attn", "xformers", "sdpa")


def select_backend(requested: str, device: torch.device, dtype: torch.dtype,
                   head_dim: int) -> tuple[str, dict[str, list[str]]]:
    """(chosen backend name, {backend passed over: its reasons})."""
    if requested != "auto" and requested not in BACKENDS:
        raise BackendError(f"--attention {requested}: unknown backend — use auto or one of {', '.join(BACKENDS)}")
    if requested != "auto":
        reasons = BACKENDS[requested].validate(device, dtype, head_dim)
        if reasons:
            raise BackendError(f"--attention {requested} cannot run here: " + "; ".join(reasons))
        return requested, {}
    passed = {}
    for name in AUTO_ORDER:
        reasons = BACKENDS[name].validate(device, dtype, head_dim)
        if not reasons:
            return name, passed
        passed[name] = reasons
    raise BackendError("no attention backend can run: " + str(passed))  # sdpa always can; defensive


def apply_backend(transformer: torch.nn.Module, name: str) -> None:
    """Route the transformer's attention through the chosen backend (sdpa is diffusers' default)."""
    if name != "sdpa":
        transformer.set_attention_backend(BACKENDS[name].diffusers_name)
