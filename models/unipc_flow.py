"""UniPC for flow matching, planned on the CPU: every per-step number diffusers' UniPCMultistepScheduler computes
inside `step` (sigmas, alphas, lambdas, h, rks, B(h), the predictor's and corrector's rhos), computed before the
loop with the same torch ops in the same order, so the loop itself is device arithmetic only (no host reads).

    plan = plan_unipc(scheduler, steps, x.dtype, x.device)   # a fresh diffusers scheduler; CPU work only
    plan.timesteps          # (N,) int64 on x.device: the model's timesteps, as scheduler.timesteps
    plan.steps[i]           # StepPlan: this step's orders and 0-d coefficients (on x.device)

`unsupported(config)` lists what a config asks for that this plan does not reproduce (models/samplers.py `unipc`
falls back to diffusers' own `step` then). Bit-identical to diffusers on the CPU; on CUDA the coefficients come
from the CPU's log/expm1/solve where diffusers runs them on the GPU, so they may differ in the last bit there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def unsupported(config) -> list[str]:
    """What a UniPCMultistepScheduler config asks for that plan_unipc does not reproduce (empty: all covered)."""
    reasons = []
    if not config.get("use_flow_sigmas"):
        reasons.append("use_flow_sigmas is false (VP sigmas)")
    if config.get("prediction_type") != "flow_prediction":
        reasons.append(f"prediction_type {config.get('prediction_type')!r} (not flow_prediction)")
    if not config.get("predict_x0", True):
        reasons.append("predict_x0 is false")
    if config.get("solver_type", "bh2") != "bh2":
        reasons.append(f"solver_type {config.get('solver_type')!r} (not bh2)")
    if config.get("thresholding"):
        reasons.append("thresholding")
    if config.get("solver_p") is not None:
        reasons.append("a solver_p")
    if config.get("use_dynamic_shifting"):
        reasons.append("use_dynamic_shifting (needs mu)")
    return reasons


@dataclass(frozen=True)
class Update:
    """One UniPC B(h) update (predictor or corrector), as multistep_uni_{p,c}_bh_update computes it:
    x_t = (ratio * x - alpha_h_phi_1 * m0) - alpha_b_h * (residual), residual from rks and rhos."""

    order: int
    ratio: torch.Tensor  # 0-d fp32: sigma_t / sigma_s0
    alpha_h_phi_1: torch.Tensor  # 0-d fp32: alpha_t * h_phi_1
    alpha_b_h: torch.Tensor  # 0-d fp32: alpha_t * B(h)
    rks: tuple[torch.Tensor, ...]  # order - 1 0-d fp32 tensors: (lambda_si - lambda_s0) / h, newest history first
    rhos: torch.Tensor | None  # predictor: (order - 1,) or None (order 1); corrector: (order,); in the latents' dtype


@dataclass(frozen=True)
class StepPlan:
    sigma: torch.Tensor  # 0-d fp32 on the CPU (as diffusers' convert_model_output reads it): x0 = x - sigma * v
    corrector: Update | None  # None: no corrector on this step (the first, or disable_corrector)
    predictor: Update


@dataclass(frozen=True)
class UniPCPlan:
    timesteps: torch.Tensor  # (N,) int64 on the device
    host_timesteps: tuple[float, ...]  # the same, as Python floats (progress reads these)
    solver_order: int
    steps: tuple[StepPlan, ...]


def _alpha_sigma_lambda(sigma: torch.Tensor) -> torch.Tensor:
    """lambda = log(alpha) - log(sigma) with flow sigmas (alpha = 1 - sigma), diffusers' op order."""
    alpha_t, sigma_t = 1 - sigma, sigma
    return torch.log(alpha_t) - torch.log(sigma_t)


def _bh(sigmas: torch.Tensor, t: int, s0: int, history: list[int], order: int):
    """The shared part of diffusers' B(h) updates: sigmas[t] is the target, sigmas[s0] the start, `history` the
    indices of the older model outputs (newest first). Returns (ratio, alpha_h_phi_1, alpha_b_h, rks, R, b);
    solver_type bh2, predict_x0."""
    sigma_t, sigma_s0 = sigmas[t], sigmas[s0]  # 0-d fp32
    alpha_t = 1 - sigma_t
    lambda_t, lambda_s0 = _alpha_sigma_lambda(sigma_t), _alpha_sigma_lambda(sigma_s0)
    h = lambda_t - lambda_s0
    rks = [(_alpha_sigma_lambda(sigmas[si]) - lambda_s0) / h for si in history[:order - 1]]
    all_rks = torch.stack([*rks, torch.ones(())])  # (order,)
    hh = -h  # predict_x0
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial_i = 1
    b_h = torch.expm1(hh)  # bh2
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(torch.pow(all_rks, i - 1))
        b.append(h_phi_k * factorial_i / b_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    return sigma_t / sigma_s0, alpha_t * h_phi_1, alpha_t * b_h, rks, torch.stack(rows), torch.stack(b)


def _update(sigmas, t, s0, history, order, dtype, corrector: bool) -> Update:
    ratio, a_phi, a_bh, rks, rows, b = _bh(sigmas, t, s0, history, order)
    if corrector:  # multistep_uni_c_bh_update: order 1 simplified, else the full system
        rhos = torch.ones(1, dtype=dtype) * 0.5 if order == 1 else torch.linalg.solve(rows, b).to(dtype)
    elif order == 1:
        rhos = None
    else:  # multistep_uni_p_bh_update: order 2 simplified, else the system without its last row and column
        rhos = torch.ones(1, dtype=dtype) * 0.5 if order == 2 else torch.linalg.solve(rows[:-1, :-1], b[:-1]).to(dtype)
    return Update(order, ratio, a_phi, a_bh, tuple(rks), rhos)


def _orders(config, n: int) -> list[tuple[int, int | None]]:
    """(predictor order, corrector order or None) per step: step()'s this_order, lower_order_final and the
    warm-up (lower_order_nums), the corrector on every step after the first unless disable_corrector says no."""
    order, out, warm, previous = int(config.get("solver_order", 2)), [], 0, None
    disabled = set(config.get("disable_corrector") or [])
    for i in range(n):
        corrector = previous if i > 0 and (i - 1) not in disabled else None
        this = min(order, n - i) if config.get("lower_order_final", True) else order
        this = min(this, warm + 1)
        out.append((this, corrector))
        previous, warm = this, min(warm + 1, order)
    return out


def _place(plans: list[StepPlan], device: torch.device) -> tuple[StepPlan, ...]:
    """The plans with their update coefficients on `device`: all of them in one copy, before the loop (the
    conversion sigma stays on the CPU, where diffusers reads it from). The CPU takes the same path (a no-op copy),
    so the CPU tests check the packing a GPU uses."""
    updates = [u for p in plans for u in (p.corrector, p.predictor) if u is not None]
    scalars = torch.stack([s for u in updates for s in (u.ratio, u.alpha_h_phi_1, u.alpha_b_h, *u.rks)])  # (K,)
    rhos = [u.rhos for u in updates if u.rhos is not None]
    moved = iter(scalars.to(device).unbind())
    moved_rhos = iter(torch.cat(rhos).to(device).split([len(r) for r in rhos]) if rhos else ())

    def place(u: Update | None) -> Update | None:
        if u is None:
            return None
        ratio, a_phi, a_bh = next(moved), next(moved), next(moved)
        rks = tuple(next(moved) for _ in u.rks)
        return Update(u.order, ratio, a_phi, a_bh, rks, next(moved_rhos) if u.rhos is not None else None)

    out = []
    for p in plans:  # the same order as `updates`: corrector, then predictor
        corrector = place(p.corrector)
        out.append(StepPlan(p.sigma, corrector, place(p.predictor)))
    return tuple(out)


def plan_unipc(scheduler, steps: int, dtype: torch.dtype, device: torch.device) -> UniPCPlan:
    """Every step's coefficients for a fresh diffusers UniPCMultistepScheduler (its config must pass
    `unsupported`), for latents of `dtype` on `device`. Runs set_timesteps on the CPU; no device reads."""
    config = scheduler.config
    scheduler.set_timesteps(steps, device="cpu")
    sigmas = scheduler.sigmas.to(torch.float32)  # (N+1,) on the CPU, as diffusers keeps them
    n = len(scheduler.timesteps)
    plans = []
    for i, (p, c) in enumerate(_orders(config, n)):
        corrector = None if c is None else _update(sigmas, i, i - 1, [i - 2 - k for k in range(c - 1)], c, dtype,
                                                   corrector=True)
        predictor = _update(sigmas, i + 1, i, [i - 1 - k for k in range(p - 1)], p, dtype, corrector=False)
        plans.append(StepPlan(sigmas[i], corrector, predictor))
    timesteps = scheduler.timesteps  # (N,) int64 on the CPU
    return UniPCPlan(timesteps.to(device), tuple(float(t) for t in timesteps.tolist()), int(config["solver_order"]),
                     _place(plans, device))
