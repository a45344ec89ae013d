"""CogVideoX's planned DDIM and DPM samplers (models/cogvideox_samplers.py) against diffusers' own `step`, driven as
CogVideoXPipeline drives it: bit-identical (torch.equal) on the CPU."""

from __future__ import annotations

import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

from reel.models.cogvideox_samplers import ddim, dpm
from reel.models.common import cpu_generator

# CogVideoX-2b's scheduler config
CONFIG = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False,
          "num_train_timesteps": 1000, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
          "set_alpha_to_one": True, "snr_shift_scale": 3.0, "steps_offset": 0, "timestep_spacing": "trailing"}
VARIANTS = [{}, {"snr_shift_scale": 1.0}, {"set_alpha_to_one": False},
            {"prediction_type": "epsilon", "rescale_betas_zero_snr": False},
            {"timestep_spacing": "leading", "rescale_betas_zero_snr": False}]


def denoiser(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
    """A fixed linear map of x (B, F', C, H', W') and t."""
    mix = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) / 2  # (C, C)
    return torch.einsum("oc,bfc...->bfo...", mix, x) + t.float() / 1000


def generators(x: torch.Tensor) -> list[torch.Generator]:
    return [cpu_generator(7 + k) for k in range(x.shape[0])]


def pipeline_ddim(config: dict, x: torch.Tensor, steps: int) -> torch.Tensor:
    scheduler = CogVideoXDDIMScheduler.from_config(config)
    scheduler.set_timesteps(steps, device=x.device)
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(denoiser(x, t, i), t, x, eta=0.0, return_dict=False)[0]
    return x


def pipeline_dpm(config: dict, x: torch.Tensor, steps: int) -> torch.Tensor:
    scheduler = CogVideoXDPMScheduler.from_config(config)
    scheduler.set_timesteps(steps, device=x.device)
    gens, old_x0 = generators(x), None
    for i, t in enumerate(scheduler.timesteps):
        back = scheduler.timesteps[i - 1] if i > 0 else None
        x, old_x0 = scheduler.step(denoiser(x, t, i), old_x0, t, back, x, eta=0.0, generator=gens, return_dict=False)
    return x


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("steps", [1, 2, 3, 6, 10, 50])
@pytest.mark.parametrize("batch", [1, 2])
def test_ddim_and_dpm_are_bit_identical_to_diffusers(variant, steps, batch):
    config = {**CONFIG, **VARIANTS[variant]}
    x = torch.randn(batch, 3, 4, 4, 4, generator=torch.Generator().manual_seed(steps))  # (B, F', C, H', W')
    assert torch.equal(ddim(config)(denoiser, x, steps), pipeline_ddim(config, x, steps))
    assert torch.equal(dpm(config, generators)(denoiser, x, steps), pipeline_dpm(config, x, steps))


def test_callbacks_get_the_timesteps_as_floats():
    scheduler = CogVideoXDPMScheduler.from_config(CONFIG)
    scheduler.set_timesteps(4)
    for sampler in (ddim(CONFIG), dpm(CONFIG, generators)):
        seen = []
        sampler(denoiser, torch.zeros(1, 3, 4, 4, 4), 4, lambda i, t, x: seen.append(t))
        assert seen == [float(t) for t in scheduler.timesteps.tolist()]
