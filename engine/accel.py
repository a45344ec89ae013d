"""Opt-in speed-ups, each an `apply_x(module, config)`-style wrapper with a parity or quality test.

    speed = SpeedConfig(step_cache=0.05, cfg_skip_last=0.25, attention="auto", threads=2)
    apply_load_time(components, speed)         # attention backend, threads, compile, offload, VAE tiling
    with step_cache_session(transformer, speed) as step:   # First-Block-Cache per trajectory
        ...

From the spec's `[speed]` table or the CLI (flags win):
    step_cache      First-Block-Cache threshold (diffusers' hook): reuse the blocks' residual when the first
                    block's output barely changed since the last computed step (0.05-0.1 typical; off by default)
    cfg_skip_last   fraction of the final steps that skip the unconditional pass (guidance off there)
    attention       auto | sdpa | flash-attn | xformers | sageattention (kernels/attention.py)
    compile         torch.compile the transformer (slow first call; for long renders)
    threads         CPU threads for torch (default: torch's own choice)
    offload         none | model | group: keep weights on the CPU and move them in per model or per block (CUDA)
    vae_tiling      decode in spatial tiles (CUDA, large frames): bounded VRAM, whole clip at once
    fused_kernels   auto | on | off: Triton RMSNorm, rotary and adaLN kernels (CUDA with triton; auto uses
                    them when they can run, on fails with the reasons when they cannot)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SpeedSection(BaseModel):
    """The `[speed]` table of a film spec (validated, strict)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    step_cache: float | None = Field(None, gt=0.0, le=1.0)
    cfg_skip_last: float = Field(0.0, ge=0.0, le=1.0)
    attention: str = "auto"
    compile: bool = False
    threads: int | None = Field(None, ge=1, le=512)
    offload: Literal["none", "model", "group"] = "none"
    vae_tiling: bool = False
    fused_kernels: Literal["auto", "on", "off"] = "auto"


@dataclass(frozen=True)
class SpeedConfig:
    step_cache: float | None = None
    cfg_skip_last: float = 0.0
    attention: str = "auto"
    compile: bool = False
    threads: int | None = None
    offload: str = "none"
    vae_tiling: bool = False
    fused_kernels: str = "auto"  # Triton RMSNorm/rotary/adaLN (kernels/): auto = on CUDA when triton is there

    def cfg_steps(self, steps: int) -> int:
        """How many leading steps run the unconditional pass."""
        return steps - int(round(steps * self.cfg_skip_last))


def apply_threads(speed: SpeedConfig) -> None:
    import torch

    if speed.threads:
        torch.set_num_threads(speed.threads)


def apply_load_time(components, speed: SpeedConfig) -> dict:
    """Speed-ups applied once after loading; returns what was applied (for manifests and logs)."""
    from kernels.attention import apply_backend, select_backend

    tr = components.transformer
    applied = {}
    head_dim = int(tr.config.attention_head_dim)
    name, passed = select_backend(speed.attention, components.device, components.dtype, head_dim)
    apply_backend(tr, name)
    applied["attention"] = name
    if passed:
        applied["attention_passed_over"] = passed
    if speed.offload != "none":
        applied["offload"] = apply_offload(components, speed.offload)
    if speed.vae_tiling:
        components.vae.enable_tiling()
        applied["vae_tiling"] = True
    if speed.fused_kernels != "off":
        from kernels.attention import BackendError
        from kernels.wan_fused import apply_fused_kernels, fused_reasons

        reasons = fused_reasons(components.device)
        if type(tr).__name__ != "WanTransformer3DModel":
            reasons.append(f"the fused kernels cover Wan transformers, not {type(tr).__name__}")
        if not reasons:
            applied["fused_kernels"] = apply_fused_kernels(tr)
        elif speed.fused_kernels == "on":
            raise BackendError("fused_kernels = on cannot run here: " + "; ".join(reasons))
    if speed.compile:
        tr.compile()  # nn.Module.compile: in place, torch.compile under the hood
        applied["compile"] = True
    return applied


def apply_offload(components, kind: str) -> str:
    """CUDA memory savers: weights stay in CPU memory and move to the GPU when used."""
    import torch

    if components.device.type != "cuda":
        return "skipped (CPU run: weights are already in CPU memory)"
    if kind == "group":
        from diffusers.hooks import apply_group_offloading

        for module in (components.transformer, components.text_encoder):
            apply_group_offloading(module, onload_device=components.device, offload_device=torch.device("cpu"),
                                   offload_type="block_level", num_blocks_per_group=1)
        return "group (block level)"
    from accelerate import cpu_offload_with_hook

    hook = None
    for module in (components.text_encoder, components.transformer, components.vae):
        module.to("cpu")
        _, hook = cpu_offload_with_hook(module, components.device, prev_module_hook=hook)
    return "model"


@contextlib.contextmanager
def step_cache_session(transformer, speed: SpeedConfig):
    """Enable First-Block-Cache for one trajectory (state reset at start); yields `context(step, total, cfg)`
    returning the cache context to run each model call in (a no-op context when the cache is off)."""
    if speed.step_cache is None:
        yield lambda step, total, batched_cfg: contextlib.nullcontext()
        return
    from diffusers.hooks import FirstBlockCacheConfig

    current = getattr(transformer, "_cache_config", None)
    if current is not None and getattr(current, "threshold", None) != speed.step_cache:
        transformer.disable_cache()
    if not transformer.is_cache_enabled:
        transformer.enable_cache(FirstBlockCacheConfig(threshold=speed.step_cache))
    transformer._reset_stateful_cache()
    try:
        yield lambda step, total, batched_cfg: transformer.cache_context(
            "cfg" if batched_cfg else "cond", step_index=step, num_inference_steps=total)
    finally:
        transformer._reset_stateful_cache()
