"""Samplers as functions over a noise schedule, with one denoiser contract (k-diffusion's design).

    denoiser(x, t, i) -> model output        x (B, *latent), t the model's timestep (0-d), i the 0-based step
    sampler(denoiser, x, steps, callback) -> x   callback(i, t, x) after each step

A family's `make_sampler` (models/family.py) picks a schedule and one of these:
    euler(schedule)                     flow-matching Euler over sigmas: x += (sigma_next - sigma) * v
    consistency(shift, seeds)           multistep consistency (LCM) for a distilled preview LoRA
    diffusers_steps(make_scheduler)     a diffusers scheduler's own `step` (UniPC, CogVideoX's DDIM), where
                                        parity with the pipelines needs its multistep state
and may wrap it: keep_first_frame (LTX image-to-video: frame 0 is never stepped), pin_first_frame (Wan 2.2
TI2V: the image's latent frame goes back in front after the last step, as WanImageToVideoPipeline does; it
wraps the sampler, not the denoiser, because the pipeline pins after its loop and a denoiser cannot move the
final step exactly there). euler and diffusers_steps keep diffusers' arithmetic, consistency the arithmetic of
reel's earlier consistency scheduler, so frames stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
OnStep = Callable[[int, torch.Tensor, torch.Tensor], None]
Sampler = Callable[[Denoiser, torch.Tensor, int, OnStep | None], torch.Tensor]
Schedule = Callable[[int, torch.device], tuple[torch.Tensor, torch.Tensor]]  # steps -> (sigmas (N+1,), timesteps (N,))


def shift_sigmas(sigmas, shift: float):
    """The flow-matching timestep shift (SD3 / Wan): sigma -> shift * sigma / (1 + (shift - 1) * sigma)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def shifted_sigmas(steps: int, shift: float) -> torch.Tensor:
    """Flow-matching noise levels from 1 down to (not including) 0, with the timestep shift: (steps,) fp32."""
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
    return shift_sigmas(s, shift).float()


def _default_set_timesteps(scheduler, steps: int, device: torch.device) -> None:
    scheduler.set_timesteps(steps, device=device)


def diffusers_schedule(make_scheduler: Callable[[], object],
                       set_timesteps: Callable[[object, int, torch.device], None] = _default_set_timesteps) -> Schedule:
    """The sigmas and timesteps a diffusers flow-matching scheduler computes (its spacing, shift and terminal);
    `set_timesteps(scheduler, steps, device)` calls it as a pipeline does (its own sigmas, mu, ...)."""
    def schedule(steps: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        scheduler = make_scheduler()
        if scheduler.config.get("stochastic_sampling"):
            raise ValueError("a FlowMatchEulerDiscreteScheduler with stochastic_sampling = true is not supported: "
                             "choose scheduler = \"unipc\" or \"euler\"")
        set_timesteps(scheduler, steps, device)
        return scheduler.sigmas, scheduler.timesteps
    return schedule


def euler(schedule: Schedule) -> Sampler:
    """Flow-matching Euler, as FlowMatchEulerDiscreteScheduler.step computes it (fp32, the same rounding)."""
    def sample(denoiser: Denoiser, x: torch.Tensor, steps: int, callback: OnStep | None = None) -> torch.Tensor:
        sigmas, timesteps = schedule(steps, x.device)  # (N+1,), (N,)
        for i, t in enumerate(timesteps):
            v = denoiser(x, t, i)  # (B, *latent) velocity
            x = (x.to(torch.float32) + (sigmas[i + 1] - sigmas[i]) * v).to(v.dtype)
            if callback is not None:
                callback(i, t, x)
        return x
    return sample


def consistency_sigmas(steps: int, shift: float) -> torch.Tensor:
    """The consistency sampler's noise levels: (steps + 1,), from 1 (shifted) down to 0."""
    return torch.cat([shifted_sigmas(steps, shift), torch.zeros(1)])


def consistency(shift: float, seeds: list[int], start: int = 0) -> Sampler:
    """Multistep consistency sampling (LCM) for a flow model distilled with guidance folded in.

    Each step predicts the clean latents x0 = x - sigma * v, then re-noises them to the next level with fresh
    noise from each shot's own CPU generator (a shot's preview does not depend on its batch). `start`: begin at
    that 0-based step, from latents already at its noise level consistency_sigmas(steps, shift)[start]."""
    def sample(denoiser: Denoiser, x: torch.Tensor, steps: int, callback: OnStep | None = None) -> torch.Tensor:
        generators = [torch.Generator("cpu").manual_seed((s + 0x5EED) % (2**63)) for s in seeds]
        sigmas = consistency_sigmas(steps, shift)  # (steps + 1,)
        timesteps = (sigmas[:-1] * 1000).to(x.device)  # (steps,)
        for i, t in enumerate(timesteps):
            if i < start:
                continue
            sigma, nxt = float(sigmas[i]), float(sigmas[i + 1])
            x0 = x - sigma * denoiser(x, t, i)  # (B, *latent)
            if nxt == 0.0:
                x = x0
            else:
                noise = torch.cat([torch.randn((1, *x0.shape[1:]), generator=g) for g in generators]).to(x0.device)
                x = (1 - nxt) * x0 + nxt * noise
            if callback is not None:
                callback(i, t, x)
        return x
    return sample


def diffusers_steps(make_scheduler: Callable[[], object], begin_index: bool = True, **step_kwargs) -> Sampler:
    """A fresh diffusers scheduler per call, driven by its own `step` (multistep state lives inside it).
    `begin_index`: start its step index at 0 (schedulers that count steps, like UniPC)."""
    def sample(denoiser: Denoiser, x: torch.Tensor, steps: int, callback: OnStep | None = None) -> torch.Tensor:
        scheduler = make_scheduler()
        scheduler.set_timesteps(steps, device=x.device)
        if begin_index:
            scheduler.set_begin_index(0)
        for i, t in enumerate(scheduler.timesteps):
            x = scheduler.step(denoiser(x, t, i), t, x, return_dict=False, **step_kwargs)[0]
            if callback is not None:
                callback(i, t, x)
        return x
    return sample


def keep_first_frame(sampler: Sampler, frame_dim: int = 2) -> Sampler:
    """Step latent frames 1.. only; frame 0 (an encoded first image) goes into every model call unchanged."""
    def sample(denoiser: Denoiser, x: torch.Tensor, steps: int, callback: OnStep | None = None) -> torch.Tensor:
        first = x.narrow(frame_dim, 0, 1)  # (B, C, 1, H', W')

        def rest_denoiser(rest: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
            out = denoiser(torch.cat([first, rest], dim=frame_dim), t, i)
            return out.narrow(frame_dim, 1, out.shape[frame_dim] - 1)

        def rest_callback(i, t, rest):
            callback(i, t, torch.cat([first, rest], dim=frame_dim))

        rest = x.narrow(frame_dim, 1, x.shape[frame_dim] - 1)
        rest = sampler(rest_denoiser, rest, steps, rest_callback if callback is not None else None)
        return torch.cat([first, rest], dim=frame_dim)
    return sample


def pin_first_frame(sampler: Sampler, condition: torch.Tensor, mask: torch.Tensor) -> Sampler:
    """After the last step, frame 0 becomes the image's latents: (1 - mask) * condition + mask * x."""
    def sample(denoiser: Denoiser, x: torch.Tensor, steps: int, callback: OnStep | None = None) -> torch.Tensor:
        out = sampler(denoiser, x, steps, callback)
        m = mask.to(out.device, out.dtype)  # (1, 1, F', H', W'), 0 on the image's frame
        return (1 - m) * condition.to(out.device, out.dtype) + m * out
    return sample
