"""Parity with diffusers' WanPipeline: same weights, seed and settings give the same frames (CPU fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reel.engine.sampling import guided, sample
from reel.models import wan

PROMPT = "a red circle moving left on a black background"
NEGATIVE = "a blue square"


def reel_frames(comps, seed, steps, guidance, scheduler_name, shift, frames=9, size=32, length=16):
    cond = wan.encode_prompts(comps, [PROMPT], length)  # (1, L, D)
    uncond = wan.encode_prompts(comps, [NEGATIVE], length) if guidance > 1 else None
    noise = wan.initial_noise(wan.latent_shape(comps, frames, size, size), seed, comps.device)
    sampler = wan.make_sampler(comps, scheduler_name, shift)
    latents = sample(sampler, guided(lambda x, t, e: wan.velocity(comps, x, t, e), cond, uncond, guidance),
                     noise, steps)
    chunks = list(wan.decode_stream(comps, latents))  # [(1, 3, f, H, W)]
    video = torch.cat(chunks, dim=2)  # (1, 3, F, H, W)
    return video[0].permute(1, 2, 3, 0).numpy(), latents  # (F, H, W, 3) in [0, 1]


@pytest.fixture(scope="module")
def pipe_and_comps(tiny_model):
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(tiny_model, local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    comps = wan.load(tiny_model, torch.device("cpu"), torch.float32)
    return pipe, comps


@pytest.mark.parametrize("scheduler_name,guidance,steps", [("unipc", 4.0, 6), ("euler", 3.0, 5), ("unipc", 1.0, 3)])
def test_frames_match_wanpipeline(pipe_and_comps, scheduler_name, guidance, steps):
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    pipe, comps = pipe_and_comps
    shift = 3.0
    if scheduler_name == "euler":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    else:
        pipe.scheduler = UniPCMultistepScheduler.from_config(comps.scheduler_config, flow_shift=shift)
    ref = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=32, width=32, num_frames=9,
               num_inference_steps=steps, guidance_scale=guidance, max_sequence_length=16,
               generator=torch.Generator("cpu").manual_seed(1234), output_type="np").frames[0]  # (F, H, W, 3)
    ours, _ = reel_frames(comps, 1234, steps, guidance, scheduler_name, shift)
    assert ours.shape == ref.shape == (9, 32, 32, 3)
    assert float(np.abs(ours - ref).max()) <= 1e-3
    assert float(ref.std()) > 0.01  # the comparison is not between two blank videos


def test_streamed_decode_equals_whole_clip_decode(pipe_and_comps):
    _, comps = pipe_and_comps
    latents = torch.randn((2, 4, 3, 8, 8), generator=torch.Generator().manual_seed(0))  # (B, C, F', H', W')
    streamed = torch.cat(list(wan.decode_stream(comps, latents)), dim=2)  # (B, 3, 9, 32, 32)
    z = wan._denormalise(comps.vae, latents)
    whole = (comps.vae.decode(z).sample / 2 + 0.5).clamp(0, 1)
    assert streamed.shape == whole.shape == (2, 3, 9, 32, 32)
    assert torch.equal(streamed, whole)


def test_noise_is_drawn_per_shot_on_cpu():
    a = wan.initial_noise((4, 3, 8, 8), 42, torch.device("cpu"))
    b = wan.initial_noise((4, 3, 8, 8), 42, torch.device("cpu"))
    assert torch.equal(a, b)
    expected = torch.randn((1, 4, 3, 8, 8), generator=torch.Generator("cpu").manual_seed(42))
    assert torch.equal(a, expected)
