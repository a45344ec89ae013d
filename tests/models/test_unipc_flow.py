"""reel's flow-matching UniPC (models/samplers.py `unipc`, coefficients from models/unipc_flow.py) against diffusers'
UniPCMultistepScheduler driven the way WanPipeline drives it: bit-identical (torch.equal) on the CPU."""

from __future__ import annotations

import pytest
import torch
from diffusers import UniPCMultistepScheduler

from reel.models.common import flow_unipc
from reel.models.samplers import unipc
from reel.models.unipc_flow import plan_unipc, unsupported

# Wan 2.1's scheduler/scheduler_config.json (the flow_shift is replaced per shot, as models/wan.py does)
WAN_CONFIG = {
    "_class_name": "UniPCMultistepScheduler", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
    "disable_corrector": [], "dynamic_thresholding_ratio": 0.995, "final_sigmas_type": "zero", "flow_shift": 3.0,
    "lower_order_final": True, "num_train_timesteps": 1000, "predict_x0": True, "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False, "sample_max_value": 1.0, "solver_order": 2, "solver_p": None,
    "solver_type": "bh2", "steps_offset": 0, "thresholding": False, "timestep_spacing": "linspace",
    "trained_betas": None, "use_beta_sigmas": False, "use_dynamic_shifting": False, "use_exponential_sigmas": False,
    "use_flow_sigmas": True, "use_karras_sigmas": False,
}


def fake_denoiser(out_dtype: torch.dtype | None = None, channels: int = 4):
    """A fixed random linear map of x and t: (B, C, F, H, W) -> same shape, fp32 or `out_dtype`."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(channels, channels, generator=g) / channels**0.5  # (C, C)
    bias = torch.randn(1, channels, 1, 1, 1, generator=g)

    def denoiser(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        v = torch.einsum("oc,bc...->bo...", mix, x.float()) + t.float() / 1000 * bias  # (B, C, F, H, W)
        return v if out_dtype is None else v.to(out_dtype)
    return denoiser


def diffusers_loop(scheduler, denoiser, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The reference: the scheduler's own step, as WanPipeline calls it (no begin index)."""
    scheduler.set_timesteps(steps, device=x.device)
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(denoiser(x, t, i), t, x, return_dict=False)[0]
    return x


def start(steps: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(steps)).to(dtype)  # (B, C, F, H, W)


MAKERS = {
    "wan folder": lambda shift: UniPCMultistepScheduler.from_config(WAN_CONFIG, flow_shift=shift),
    "flow_unipc": flow_unipc,
}
LATENTS = [(torch.float32, None), (torch.bfloat16, None), (torch.bfloat16, torch.float32)]  # (latents, model output)


@pytest.mark.parametrize("maker", sorted(MAKERS))
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("steps", [1, 2, 3, 6, 10])
def test_bit_identical_to_diffusers(maker, shift, steps):
    make = MAKERS[maker]
    assert unsupported(make(shift).config) == []
    for dtype, out_dtype in LATENTS:
        x = start(steps, dtype)
        ours = unipc(lambda: make(shift))(fake_denoiser(out_dtype), x, steps, None)
        ref = diffusers_loop(make(shift), fake_denoiser(out_dtype), x, steps)
        assert ours.dtype == ref.dtype == dtype
        assert torch.equal(ours, ref), (dtype, out_dtype)


@pytest.mark.parametrize("extra", [{"solver_order": 1}, {"solver_order": 3}, {"lower_order_final": False},
                                   {"disable_corrector": [0, 2]}, {"final_sigmas_type": "sigma_min"},
                                   {"use_karras_sigmas": True}])
def test_other_covered_configs_are_bit_identical_too(extra):
    def make():
        return UniPCMultistepScheduler.from_config({**WAN_CONFIG, **extra}, flow_shift=3.0)

    assert unsupported(make().config) == []
    for steps in (1, 2, 3, 6, 10):
        x = start(steps, torch.float32)
        ours = unipc(make)(fake_denoiser(), x, steps, None)
        assert torch.equal(ours, diffusers_loop(make(), fake_denoiser(), x, steps)), steps


VP = {"use_flow_sigmas": False, "prediction_type": "epsilon", "final_sigmas_type": "sigma_min"}


@pytest.mark.parametrize("extra,reason", [({"solver_type": "bh1", "final_sigmas_type": "sigma_min"}, "bh1"),
                                          ({"predict_x0": False, **VP}, "predict_x0"),
                                          ({"thresholding": True}, "thresholding"),
                                          (VP, "flow_sigmas")])
def test_what_it_does_not_reproduce_falls_back_to_diffusers_step(extra, reason):
    def make():
        return UniPCMultistepScheduler.from_config({**WAN_CONFIG, **extra}, flow_shift=3.0)

    assert any(reason in r for r in unsupported(make().config))
    x = start(6, torch.float32)
    ours = unipc(make)(fake_denoiser(), x, 6, None)  # diffusers' own step, through diffusers_steps
    assert torch.isfinite(ours).all() and torch.equal(ours, diffusers_loop(make(), fake_denoiser(), x, 6))


def test_callback_gets_the_schedules_timesteps_as_floats_and_the_model_gets_tensors():
    scheduler = flow_unipc(5.0)
    scheduler.set_timesteps(6)
    seen, given = [], []

    def denoiser(x, t, i):
        given.append(t)
        return fake_denoiser()(x, t, i)

    unipc(lambda: flow_unipc(5.0))(denoiser, start(6, torch.float32), 6, lambda i, t, x: seen.append((i, t)))
    assert seen == [(i, float(t)) for i, t in enumerate(scheduler.timesteps.tolist())]
    assert all(isinstance(t, float) for _, t in seen)
    assert torch.equal(torch.stack(given), scheduler.timesteps)  # int64, as diffusers gives the model


def test_plan_orders_follow_warmup_lower_order_final_and_disable_corrector():
    make = lambda: UniPCMultistepScheduler.from_config({**WAN_CONFIG, "disable_corrector": [1]})  # noqa: E731
    plan = plan_unipc(make(), 5, torch.float32, torch.device("cpu"))
    assert [s.predictor.order for s in plan.steps] == [1, 2, 2, 2, 1]  # warm-up, then lower_order_final
    assert [s.corrector.order if s.corrector else None for s in plan.steps] == [None, 1, None, 2, 2]
    assert plan.timesteps.dtype == torch.int64 and len(plan.host_timesteps) == 5


def test_a_device_plan_moves_every_coefficient_and_keeps_the_conversion_sigma_on_the_cpu():
    plan = plan_unipc(flow_unipc(3.0), 6, torch.bfloat16, torch.device("meta"))  # stands in for a GPU
    assert plan.timesteps.device.type == "meta"
    for step in plan.steps:
        assert step.sigma.device.type == "cpu" and step.sigma.dim() == 0
        for u in (step.corrector, step.predictor):
            if u is not None:
                assert all(c.device.type == "meta" and c.dim() == 0 for c in (u.ratio, u.alpha_h_phi_1, u.alpha_b_h,
                                                                              *u.rks))
                assert u.rhos is None or (u.rhos.device.type == "meta" and u.rhos.dtype == torch.bfloat16)
