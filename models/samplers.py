"""Samplers as functions over a noise schedule, with one denoiser contract (k-diffusion's design).

    denoiser(x, t, i) -> model output        x (B, *latent), t the model's timestep (0-d, on x's device), i the
                                             0-based step
    sampler(denoiser, x, steps, callback) -> x   callback(i, t, x) after each step, t as a Python float

A family's `make_sampler` (models/family.py) picks a schedule and one of these:
    euler(schedule)                     flow-matching Euler over sigmas: x += (sigma_next - sigma) * v
    unipc(make_scheduler)               diffusers' UniPCMultistepScheduler for flow matching, its coefficients
                                        planned on the CPU before the loop (models/unipc_flow.py)
    consistency(shift, seeds)           multistep consistency (LCM) for a distilled preview LoRA
    diffusers_steps(make_scheduler)     a diffusers scheduler's own `step`, where a config asks for what unipc
                                        does not reproduce
and may wrap it: keep_first_frame (LTX image-to-video: frame 0 is never stepped), pin_first_frame (Wan 2.2
TI2V: the image's latent frame goes back in front after the last step, as WanImageToVideoPipeline does; it
wraps the sampler, not the denoiser, because the pipeline pins after its loop and a denoiser cannot move the
final step exactly there). euler, unipc and diffusers_steps keep diffusers' arithmetic, consistency the arithmetic
of reel's earlier consistency scheduler, so frames stay bit-identical.

No host-device synchronisation after the first step: euler, unipc and consistency read nothing back from the
device in their loops (schedules, coefficients and the consistency noise are made on the CPU and moved before
the loop), and the callback gets each timestep from a CPU copy. diffusers_steps is the exception: diffusers'
UniPC `step` copies sigmas to the device and solves a small system there on every step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from reel.models.unipc_flow import Update, plan_unipc, unsupported

Denoiser = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
OnStep = Callable[[int, float, torch.Tensor], None]  # (0-based step, its timestep, latents after it)
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
        sigmas, timesteps = schedule(steps, torch.device("cpu"))  # (N+1,), (N,): made on the CPU, then moved once
        host = timesteps.tolist()
        sigmas, timesteps = sigmas.to(x.device), timesteps.to(x.device)
        for i, t in enumerate(timesteps):
            v = denoiser(x, t, i)  # (B, *latent) velocity
            x = (x.to(torch.float32) + (sigmas[i + 1] - sigmas[i]) * v).to(v.dtype)
            if callback is not None:
                callback(i, host[i], x)
        return x
    return sample


def consistency_sigmas(steps: int, shift: float) -> torch.Tensor:
    """The consistency sampler's noise levels: (steps + 1,), from 1 (shifted) down to 0."""
    return torch.cat([shifted_sigmas(steps, shift), torch.zeros(1)])


def consistency(shift: float, seeds: list[int], start: int = 0) -> Sampler:
    """Multistep consistency sampling (LCM) for a flow model distilled with guidance folded in.

    Each step predicts the clean latents x0 = x - sigma * v, then re-noises them to the next level with fresh
    noise from each shot's own CPU generator (a shot's preview does not depend on its batch). `start`: begin at
    that 0-based step, from latents already at its noise level consistency_sigmas(steps, shift)[start].
    The re-noising draws of every step are made before the loop and moved to the device in one copy (pinned, not
    blocking, on CUDA): memory for (steps - 1) latents more, the price of a loop that never waits on the host."""
    def sample(denoiser: Denoiser, x: torch.Tensor, steps: int, callback: OnStep | None = None) -> torch.Tensor:
        sigmas = consistency_sigmas(steps, shift)  # (steps + 1,)
        host, timesteps = sigmas.tolist(), sigmas[:-1] * 1000  # (steps,)
        host_t, timesteps = timesteps.tolist(), timesteps.to(x.device)
        noise = iter(_consistency_noise(seeds, host, start, x))  # (S, B, *latent), in the steps' order
        for i, t in enumerate(timesteps):
            if i < start:
                continue
            sigma, nxt = host[i], host[i + 1]
            x0 = x - sigma * denoiser(x, t, i)  # (B, *latent)
            if nxt == 0.0:
                x = x0
            else:
                x = (1 - nxt) * x0 + nxt * next(noise)
            if callback is not None:
                callback(i, host_t[i], x)
        return x
    return sample


def _consistency_noise(seeds: list[int], sigmas: list[float], start: int, x: torch.Tensor) -> torch.Tensor:
    """Every re-noising draw of a consistency run, in the order the steps draw them, on x's device: (S, B, *latent)
    for the steps start.. that re-noise (S may be 0)."""
    generators = [torch.Generator("cpu").manual_seed((s + 0x5EED) % (2**63)) for s in seeds]
    draws = [torch.cat([torch.randn((1, *x.shape[1:]), generator=g) for g in generators])  # (B, *latent)
             for i in range(start, len(sigmas) - 1) if sigmas[i + 1] != 0.0]
    if not draws:
        return x.new_empty((0, *x.shape))
    noise = torch.stack(draws)  # (S, B, *latent)
    if x.device.type == "cuda":
        return noise.pin_memory().to(x.device, non_blocking=True)
    return noise.to(x.device)


def diffusers_steps(make_scheduler: Callable[[], object], begin_index: bool = True, **step_kwargs) -> Sampler:
    """A fresh diffusers scheduler per call, driven by its own `step` (multistep state lives inside it).
    `begin_index`: start its step index at 0 (schedulers that count steps, like UniPC). diffusers' steps read
    values back from the device (UniPC: sigma copies, linalg.solve); prefer a sampler of our own where one exists."""
    def sample(denoiser: Denoiser, x: torch.Tensor, steps: int, callback: OnStep | None = None) -> torch.Tensor:
        scheduler = make_scheduler()
        scheduler.set_timesteps(steps, device=x.device)
        if begin_index:
            scheduler.set_begin_index(0)
        host = scheduler.timesteps.tolist()  # read once, before the loop
        for i, t in enumerate(scheduler.timesteps):
            x = scheduler.step(denoiser(x, t, i), t, x, return_dict=False, **step_kwargs)[0]
            if callback is not None:
                callback(i, float(host[i]), x)
        return x
    return sample


def unipc(make_scheduler: Callable[[], object]) -> Sampler:
    """diffusers' UniPCMultistepScheduler for flow matching (`make_scheduler()` builds a fresh one), bit-identical
    to its `step` on the CPU, with no host-device synchronisation in the loop: every coefficient is planned on the
    CPU before it (models/unipc_flow.py), the loop is device arithmetic in diffusers' order of operations.

    Covers flow sigmas (karras too) with flow_prediction, predict_x0 and solver_type bh2, any solver_order (orders
    above 2 solve their small systems on the CPU), lower_order_final, disable_corrector, either final_sigmas_type.
    A config asking for anything else (VP sigmas, predict_x0 = false, bh1, thresholding, a solver_p, dynamic
    shifting; unipc_flow.unsupported lists it) falls back to diffusers_steps(make_scheduler), which syncs."""
    if unsupported(make_scheduler().config):
        return diffusers_steps(make_scheduler)

    def sample(denoiser: Denoiser, x: torch.Tensor, steps: int, callback: OnStep | None = None) -> torch.Tensor:
        plan = plan_unipc(make_scheduler(), steps, x.dtype, x.device)
        history: list[torch.Tensor] = []  # converted model outputs (x0 predictions), newest last
        last = x
        for i, t in enumerate(plan.timesteps):
            step = plan.steps[i]
            m = x - step.sigma * denoiser(x, t, i)  # (B, *latent) convert_model_output: x0 = x - sigma * v
            if step.corrector is not None:  # UniC: correct x with this step's model output
                x = _unipc_update(step.corrector, last, history, m)
            history = (history + [m])[-plan.solver_order:]
            last = x
            x = _unipc_update(step.predictor, x, history, None)  # UniP: the next step's x
            if callback is not None:
                callback(i, plan.host_timesteps[i], x)
        return x
    return sample


def _unipc_update(u: Update, x: torch.Tensor, history: list[torch.Tensor],
                  model_t: torch.Tensor | None) -> torch.Tensor:
    """One B(h) update with diffusers' expressions (multistep_uni_p_bh_update, or with `model_t`
    multistep_uni_c_bh_update), x (B, *latent) the sample it starts from, `history` the x0 predictions so far."""
    m0 = history[-1]
    d1s = [(history[-(k + 2)] - m0) / rk for k, rk in enumerate(u.rks)]  # each (B, *latent)
    x_t_ = u.ratio * x - u.alpha_h_phi_1 * m0
    if model_t is None:  # predictor
        res = torch.einsum("k,bkc...->bc...", u.rhos, torch.stack(d1s, dim=1)) if d1s else 0
    else:  # corrector
        corr = torch.einsum("k,bkc...->bc...", u.rhos[:-1], torch.stack(d1s, dim=1)) if d1s else 0
        res = corr + u.rhos[-1] * (model_t - m0)
    return (x_t_ - u.alpha_b_h * res).to(x.dtype)


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
