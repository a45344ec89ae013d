"""CogVideoX's DDIM and DPM samplers with their per-step numbers made before the loop, so the loop never reads
the device (diffusers' `step` compares a device timestep on the host and indexes a CPU table with it).

    sampler = ddim(scheduler_config)                       # CogVideoXDDIMScheduler's step
    sampler = dpm(scheduler_config, generators_for)        # CogVideoXDPMScheduler's step, as the pipeline drives it

Each step's alphas are looked up with the host's copy of the timesteps and turned into the 0-d CPU coefficients
diffusers' `step` computes, by the same ops in the same order (bit-identical on the CPU); a 0-d CPU tensor
multiplies a CUDA tensor as a scalar argument, without a copy. `generators_for(x)` gives one CPU generator per
shot in the state the pipeline's generator has when its loop begins; the DPM step noise is drawn from them before
the loop in the pipeline's order (two draws per step), pinned on CUDA and copied without blocking on each step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from reel.models.samplers import Denoiser, OnStep, Sampler


def _x0(config, alpha_prod_t: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The predicted clean sample, as the schedulers' step computes it for each prediction_type."""
    beta_prod_t = 1 - alpha_prod_t
    if config.prediction_type == "epsilon":
        return (x - beta_prod_t ** (0.5) * v) / alpha_prod_t ** (0.5)
    if config.prediction_type == "sample":
        return v
    if config.prediction_type == "v_prediction":
        return (alpha_prod_t**0.5) * x - (beta_prod_t**0.5) * v
    raise ValueError(f"prediction_type {config.prediction_type!r} must be epsilon, sample or v_prediction")


def _schedule(scheduler, steps: int, device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """(timesteps (N,) int64 on `device`, the same as Python ints), from set_timesteps on the CPU."""
    scheduler.set_timesteps(steps, device="cpu")
    host = scheduler.timesteps.tolist()
    return scheduler.timesteps.to(device), host


def _prev_alpha(scheduler, t: int) -> tuple[int, torch.Tensor]:
    """(the previous timestep, its alpha_cumprod or the final one), as step() finds them."""
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return prev, scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod


def ddim(config: dict) -> Sampler:
    """CogVideoXDDIMScheduler's step (eta has no effect there), planned on the CPU."""
    from diffusers import CogVideoXDDIMScheduler

    def sample(denoiser: Denoiser, x: torch.Tensor, steps: int, callback: OnStep | None = None) -> torch.Tensor:
        scheduler = CogVideoXDDIMScheduler.from_config(config)
        timesteps, host = _schedule(scheduler, steps, x.device)
        mix = []  # per step: (alpha_prod_t, a_t, b_t), 0-d fp32 on the CPU
        for t in host:
            alpha_prod_t = scheduler.alphas_cumprod[t]
            _, alpha_prod_t_prev = _prev_alpha(scheduler, t)
            a_t = ((1 - alpha_prod_t_prev) / (1 - alpha_prod_t)) ** 0.5
            mix.append((alpha_prod_t, a_t, alpha_prod_t_prev**0.5 - alpha_prod_t**0.5 * a_t))
        for i, t in enumerate(timesteps):
            alpha_prod_t, a_t, b_t = mix[i]
            x0 = _x0(scheduler.config, alpha_prod_t, x, denoiser(x, t, i))  # (B, *latent)
            x = a_t * x + b_t * x0
            if callback is not None:
                callback(i, float(host[i]), x)
        return x
    return sample


def _dpm_plan(scheduler, host: list[int]) -> list[dict]:
    """Per step: the alphas, multipliers and noise scale CogVideoXDPMScheduler.step computes, and whether it
    takes the second-order branch (a previous x0 prediction and a previous timestep >= 0)."""
    plan = []
    for i, t in enumerate(host):
        prev, alpha_prod_t_prev = _prev_alpha(scheduler, t)
        alpha_prod_t = scheduler.alphas_cumprod[t]
        back = scheduler.alphas_cumprod[host[i - 1]] if i > 0 else None
        h, r, _, _ = scheduler.get_variables(alpha_prod_t, alpha_prod_t_prev, back)
        mult = list(scheduler.get_mult(h, r, alpha_prod_t, alpha_prod_t_prev, back))
        noise_scale = (1 - alpha_prod_t_prev) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5
        plan.append({"alpha": alpha_prod_t, "mult": mult, "noise": noise_scale, "second": i > 0 and prev >= 0})
    return plan


def _dpm_noise(plan: list[dict], generators: list[torch.Generator], x: torch.Tensor) -> list[torch.Tensor]:
    """Every step's noise in the order the pipeline draws it (each step draws once, the second-order steps twice
    and use the second draw), on the CPU: one (B, *latent) tensor per step, in x's dtype, pinned on CUDA."""
    def draw() -> torch.Tensor:
        return torch.cat([torch.randn((1, *x.shape[1:]), generator=g, dtype=x.dtype) for g in generators])

    out = []
    for step in plan:
        noise = draw()
        if step["second"]:
            noise = draw()
        out.append(noise.pin_memory() if x.device.type == "cuda" else noise)
    return out


def dpm(config: dict, generators_for: Callable[[torch.Tensor], list[torch.Generator]]) -> Sampler:
    """CogVideoXDPMScheduler as the pipeline drives it (the previous x0 prediction and timestep carried from step
    to step), planned on the CPU; its step noise from `generators_for(noise)`, one CPU generator per shot."""
    from diffusers import CogVideoXDPMScheduler

    def sample(denoiser: Denoiser, x: torch.Tensor, steps: int, callback: OnStep | None = None) -> torch.Tensor:
        scheduler = CogVideoXDPMScheduler.from_config(config)
        timesteps, host = _schedule(scheduler, steps, x.device)
        plan = _dpm_plan(scheduler, host)
        noises = _dpm_noise(plan, generators_for(x), x)
        old_x0 = None
        for i, t in enumerate(timesteps):
            step, noise = plan[i], noises[i].to(x.device, non_blocking=True)  # pinned on CUDA: no wait
            x0 = _x0(scheduler.config, step["alpha"], x, denoiser(x, t, i))  # (B, *latent)
            m = step["mult"]
            if step["second"]:
                denoised_d = m[2] * x0 - m[3] * old_x0
                x = m[0] * x - m[1] * denoised_d + step["noise"] * noise
            else:
                x = m[0] * x - m[1] * x0 + step["noise"] * noise
            old_x0 = x0
            if callback is not None:
                callback(i, float(host[i]), x)
        return x
    return sample
