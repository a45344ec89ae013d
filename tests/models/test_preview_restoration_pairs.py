"""The restoration pairs of scripts/train_preview_decoder.py: preview latents made from real world clips.

They stand for the clip (the VAE draws them close to it) but are not its clean latents (the preview LoRA
finished the sampling), they are reproducible from the seed, and a start past the preview's steps is refused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scripts.train_preview_decoder import psnr, restoration_pairs


@pytest.fixture(scope="module")
def pairs():
    return restoration_pairs(4, seed=5, starts=(3,), batch=4)


def test_restoration_latents_stand_for_their_clips_but_are_previews(pairs):
    from diffusers import AutoencoderKLWan

    from scripts.train_preview_decoder import WEIGHTS
    from scripts.train_shapes.vae import to_tensor, to_uint8

    lat, clips, specs = pairs
    assert lat.shape == (4, 8, 5, 16, 16) and clips.shape == (4, 17, 64, 64, 3) and len(specs) == 4
    vae = AutoencoderKLWan.from_pretrained(WEIGHTS / "vae", local_files_only=True).eval()
    with torch.no_grad():
        clean = vae.encode(to_tensor(clips)).latent_dist.mode()  # (4, 8, 5, 16, 16)
        drawn = to_uint8(vae.decode(lat).sample)  # (4, 17, 64, 64, 3)
    change = float((lat - clean).norm() / clean.norm())
    assert 0.05 < change < 0.4, change  # the preview LoRA re-drew the clip, it did not replace it
    assert psnr(drawn, clips) > 22.0, psnr(drawn, clips)  # measured 28 dB
    assert psnr(drawn, clips) > psnr(drawn, np.roll(clips, 1, axis=0)) + 10  # each pair is its own clip


def test_restoration_pairs_repeat_from_their_seed(pairs):
    again, _, _ = restoration_pairs(4, seed=5, starts=(3,), batch=4)
    assert torch.equal(again, pairs[0])


def test_a_restoration_step_is_the_engines_consistency_step(pairs):
    """From the last start, a pair is one consistency step (the engine's preview sampler: same sigma, timestep
    scale and x0 formula) from the clip's noised latents, denormalised as decode_preview expects."""
    from reel.models import wan
    from reel.models.samplers import consistency_sigmas
    from reel.models.shapes.world import caption
    from scripts.train_preview_decoder import preview_components, preview_settings
    from scripts.train_shapes.vae import to_tensor

    lat, clips, specs = pairs
    comps, _ = preview_components()
    _, steps, shift = preview_settings()
    vae, zc = comps.vae, comps.vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, zc, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, zc, 1, 1, 1)
    sigma = float(consistency_sigmas(steps, shift)[steps - 1])
    t = torch.tensor(sigma * 1000, dtype=torch.float32)  # the timestep the model sees at that level
    with torch.no_grad():
        z0 = (vae.encode(to_tensor(clips)).latent_dist.mode() - mean) / std  # (4, z, 5, 16, 16)
        noise = torch.cat([wan.initial_noise(tuple(z0.shape[1:]), 5 * 100_000 + i, comps.device) for i in range(4)])
        x = (1 - sigma) * z0 + sigma * noise  # the engine's per-shot noise, seeds seed * 100_000 + index
        cond = wan.encode_prompts(comps, [caption(s) for s in specs], 32)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=wan.cpu_bf16_fast(comps.device)):
            v = wan.velocity(comps, x, t, cond).float()
        expected = (x - sigma * v) * std + mean  # the last step ends clean: x0 = x - sigma * v
    assert torch.allclose(lat, expected, atol=1e-4), (lat - expected).abs().max()


def test_a_start_past_the_preview_steps_is_refused():
    with pytest.raises(ValueError, match="only 4 steps"):
        restoration_pairs(1, seed=0, starts=(4,))
