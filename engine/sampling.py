"""reel's denoising loop: the guided denoiser and per-step hooks around a family's sampler.

    denoiser = guided(lambda x, t, c: family.velocity(comps, x, t, c), cond, uncond, guidance)
    latents = sample(family.make_sampler(comps, "unipc", shift), denoiser, noise, steps, on_step=progress.step)

One denoiser contract, `denoiser(x, t, i) -> model output` (models/samplers.py), and samplers as functions over
a noise schedule (k-diffusion's design). Classifier-free guidance runs cond and uncond in one forward batch;
per-step LoRA strength and the step cache's context wrap the denoiser; the sampler never sees them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from reel.models.samplers import Denoiser, Sampler, consistency, shifted_sigmas

__all__ = ["Cond", "StepState", "cat_cond", "cfg_combine", "consistency", "guided", "sample", "shifted_sigmas",
           "with_step_hook"]

VelocityFn = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]  # (x, t, cond) -> model output


@dataclass(frozen=True)
class StepState:
    """What the per-step callback sees: plain Python values, none read from the device (on a GPU the host queues
    the steps ahead of the device, so a step is "finished" and `seconds` counted when it is queued, not run)."""

    shot_ids: tuple[str, ...]  # shots in this batch
    step: int  # 1-based step just finished (queued, on an asynchronous device)
    total: int  # steps in the loop
    timestep: float  # the scheduler's timestep for this step (0..1000), from the sampler's CPU copy of its schedule
    latents_shape: tuple[int, ...]  # (B, C, F', H', W')
    seconds: float  # host wall time since the loop began


StepCallback = Callable[[StepState], None]


Cond = torch.Tensor | dict  # text conditioning: a tensor, or a dict of tensors, each with a leading batch dim
# (a dict may also hold plain Python values shared by the whole batch, such as LTX's frame rate)


def cat_cond(parts: list[Cond]) -> Cond:
    """Concatenate conditionings along the batch (tensors, or dicts of tensors key by key; a dict's plain Python
    values are the batch's own and must be equal in every part)."""
    if isinstance(parts[0], dict):
        out = {}
        for k, v in parts[0].items():
            if isinstance(v, torch.Tensor):
                out[k] = torch.cat([p[k] for p in parts])
            elif any(p[k] != v for p in parts[1:]):
                raise ValueError(f"conditioning {k!r} differs between the parts of one batch ({[p[k] for p in parts]})"
                                 " — it is one value per batch: batch only shots that share it")
            else:
                out[k] = v
        return out
    return torch.cat(parts)


def cfg_combine(v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + guidance * (cond - uncond)."""
    return v_uncond + guidance * (v_cond - v_uncond)


def guided(velocity_fn: VelocityFn, cond: Cond, uncond: Cond | None, guidance: float, *, cfg_steps: int | None = None,
           context: Callable[[int, bool], contextlib.AbstractContextManager] | None = None) -> Denoiser:
    """The denoiser with classifier-free guidance, cond and uncond in one forward batch (2B rows).

    No uncond, or guidance <= 1: one pass. `cfg_steps`: only steps i < cfg_steps run the uncond pass.
    `context(i, batched_cfg)`: a context each model call runs in (the step cache's)."""
    def denoiser(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        use_cfg = uncond is not None and guidance > 1.0 and (cfg_steps is None or i < cfg_steps)
        with context(i, use_cfg) if context is not None else contextlib.nullcontext():
            if not use_cfg:
                return velocity_fn(x, t, cond)
            b = x.shape[0]
            both = velocity_fn(torch.cat([x, x]), t, cat_cond([cond, uncond]))  # (2B, *latent)
            return cfg_combine(both[:b], both[b:], guidance)
    return denoiser


def with_step_hook(denoiser: Denoiser, before_step: Callable[[int], None]) -> Denoiser:
    """Run `before_step(i)` before the model call of step i (per-step LoRA strength lives there)."""
    def hooked(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        before_step(i)
        return denoiser(x, t, i)
    return hooked


@torch.no_grad()
def sample(sampler: Sampler, denoiser: Denoiser, noise: torch.Tensor, steps: int, *,
           on_step: StepCallback | None = None, shot_ids: tuple[str, ...] = ()) -> torch.Tensor:
    """Run `sampler` from noise (B, *latent) to clean latents in `steps` steps; `on_step` after each step.

    Nothing here reads the device: the sampler hands the callback its timestep as a Python float."""
    start = time.perf_counter()

    def callback(i: int, t: float, x: torch.Tensor) -> None:
        on_step(StepState(shot_ids, i + 1, steps, t, tuple(x.shape), time.perf_counter() - start))

    return sampler(denoiser, noise, steps, callback if on_step is not None else None)
