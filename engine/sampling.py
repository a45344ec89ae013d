"""reel's denoising loop: one denoiser contract, samplers as functions.

    latents = denoise(velocity_fn, noise, scheduler, steps, cond, uncond, guidance, on_step=...)

`velocity_fn(latents, t, embeds)` is the model (flow velocity). Conditional and unconditional passes
share one forward batch; the scheduler (a diffusers flow-matching scheduler) takes the steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StepState:
    """What the per-step callback sees."""

    shot_ids: tuple[str, ...]  # shots in this batch
    step: int  # 1-based step just finished
    total: int  # steps in the loop
    timestep: float  # the scheduler's timestep for this step (0..1000)
    latents_shape: tuple[int, ...]  # (B, C, F', H', W')
    seconds: float  # wall time since the loop began


StepCallback = Callable[[StepState], None]


def guided_velocity(velocity_fn: VelocityFn, latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                    uncond: torch.Tensor | None, guidance: float) -> torch.Tensor:
    """Classifier-free guidance with cond and uncond in one forward batch (skipped when guidance <= 1)."""
    if uncond is None or guidance <= 1.0:
        return velocity_fn(latents, t, cond)
    b = latents.shape[0]
    both = velocity_fn(torch.cat([latents, latents]), t, torch.cat([cond, uncond]))  # (2B, C, F', H', W')
    v_cond, v_uncond = both[:b], both[b:]
    return v_uncond + guidance * (v_cond - v_uncond)


@torch.no_grad()
def denoise(velocity_fn: VelocityFn, noise: torch.Tensor, scheduler, steps: int, cond: torch.Tensor,
            uncond: torch.Tensor | None, guidance: float, shot_ids: tuple[str, ...] = (),
            on_step: StepCallback | None = None,
            before_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Run the flow-matching ODE from noise (B, C, F', H', W') to clean latents, fp32 throughout.

    `before_step(i)` runs before the model call of 0-based step i (per-step LoRA strength lives there)."""
    device = noise.device
    scheduler.set_timesteps(steps, device=device)
    scheduler.set_begin_index(0)
    latents = noise  # (B, C, F', H', W') fp32
    start = time.perf_counter()
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        if before_step is not None:
            before_step(i)
        v = guided_velocity(velocity_fn, latents, t, cond, uncond, guidance)  # (B, C, F', H', W')
        latents = scheduler.step(v, t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(StepState(shot_ids, i + 1, len(timesteps), float(t), tuple(latents.shape),
                              time.perf_counter() - start))
    return latents
