"""reel's denoising loop: one denoiser contract, samplers as functions.

    latents = denoise(velocity_fn, noise, scheduler, steps, cond, uncond, guidance, on_step=...)

`velocity_fn(latents, t, embeds)` is the model (flow velocity). Conditional and unconditional passes
share one forward batch; the scheduler (a diffusers flow-matching scheduler) takes the steps.
"""

from __future__ import annotations

import contextlib
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


Cond = torch.Tensor | dict  # text conditioning: a tensor, or a dict of tensors, each with a leading batch dim


def cat_cond(parts: list[Cond]) -> Cond:
    """Concatenate conditionings along the batch (tensors, or dicts of tensors key by key)."""
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def guided_velocity(velocity_fn: VelocityFn, latents: torch.Tensor, t: torch.Tensor, cond: Cond,
                    uncond: Cond | None, guidance: float) -> torch.Tensor:
    """Classifier-free guidance with cond and uncond in one forward batch (skipped when guidance <= 1)."""
    if uncond is None or guidance <= 1.0:
        return velocity_fn(latents, t, cond)
    b = latents.shape[0]
    both = velocity_fn(torch.cat([latents, latents]), t, cat_cond([cond, uncond]))  # (2B, C, F', H', W')
    v_cond, v_uncond = both[:b], both[b:]
    return v_uncond + guidance * (v_cond - v_uncond)


@torch.no_grad()
def denoise(velocity_fn: VelocityFn, noise: torch.Tensor, scheduler, steps: int, cond: Cond,
            uncond: Cond | None, guidance: float, shot_ids: tuple[str, ...] = (),
            on_step: StepCallback | None = None,
            before_step: Callable[[int], None] | None = None,
            cfg_steps: int | None = None,
            call_context: Callable[[int, int, bool], object] | None = None) -> torch.Tensor:
    """Run the flow-matching ODE from noise (B, C, F', H', W') to clean latents, fp32 throughout.

    `before_step(i)` runs before the model call of 0-based step i (per-step LoRA strength lives there);
    `cfg_steps`: only the first cfg_steps steps run the unconditional pass (None: all);
    `call_context(i, total, batched_cfg)` wraps each model call (the step cache's context)."""
    device = noise.device
    scheduler.set_timesteps(steps, device=device)
    scheduler.set_begin_index(0)
    latents = noise  # (B, C, F', H', W') fp32
    start = time.perf_counter()
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        if before_step is not None:
            before_step(i)
        use_cfg = uncond is not None and guidance > 1.0 and (cfg_steps is None or i < cfg_steps)
        context = call_context(i, len(timesteps), use_cfg) if call_context else contextlib.nullcontext()
        with context:
            v = guided_velocity(velocity_fn, latents, t, cond, uncond if use_cfg else None, guidance)
        latents = scheduler.step(v, t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(StepState(shot_ids, i + 1, len(timesteps), float(t), tuple(latents.shape),
                              time.perf_counter() - start))
    return latents


def shifted_sigmas(steps: int, shift: float) -> torch.Tensor:
    """Flow-matching noise levels from 1 down to (not including) 0, with the timestep shift: (steps,)."""
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
    return (shift * s / (1 + (shift - 1) * s)).float()


class ConsistencyScheduler:
    """Multistep consistency sampling (LCM) for a flow model distilled with guidance folded in.

    Each step predicts the clean latents x0 = x - sigma * v, then re-noises them to the next level
    with fresh noise drawn from each shot's own CPU generator (so a shot's preview does not depend
    on its batch). Same `set_timesteps` / `step` surface as diffusers' schedulers.
    """

    order = 1

    def __init__(self, shift: float, seeds: list[int]):
        self.shift = shift
        self.generators = [torch.Generator("cpu").manual_seed((s + 0x5EED) % (2**63)) for s in seeds]
        self.sigmas = torch.zeros(0)
        self.timesteps = torch.zeros(0)
        self._index = 0

    def set_timesteps(self, steps: int, device=None) -> None:
        self.sigmas = torch.cat([shifted_sigmas(steps, self.shift), torch.zeros(1)])  # (steps + 1,)
        self.timesteps = (self.sigmas[:-1] * 1000).to(device)
        self._index = 0

    def set_begin_index(self, index: int = 0) -> None:
        self._index = index

    def step(self, velocity: torch.Tensor, t, latents: torch.Tensor, return_dict: bool = False):
        sigma, nxt = float(self.sigmas[self._index]), float(self.sigmas[self._index + 1])
        x0 = latents - sigma * velocity  # (B, C, F', H', W')
        self._index += 1
        if nxt == 0.0:
            return (x0,)
        noise = torch.cat([torch.randn((1, *x0.shape[1:]), generator=g) for g in self.generators]).to(x0.device)
        return ((1 - nxt) * x0 + nxt * noise,)
