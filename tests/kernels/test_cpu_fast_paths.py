"""CPU fast paths (kernels/channel_norm.py, kernels/wan_cpu.py, rotary_complex) against diffusers' own math."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reel.kernels.channel_norm import channel_normalize, channel_normalize_reference, use_fast_vae_norms
from reel.kernels.rotary import rotary_complex, rotary_reference
from reel.kernels.wan_cpu import WanSelfAttnProcessorCPU, use_cpu_fast_paths

g = torch.Generator().manual_seed(0)


@pytest.mark.parametrize("dim", [1, -1])
def test_channel_normalize_matches_f_normalize(dim):
    x = torch.randn(2, 16, 3, 8, 8, generator=g)
    x[0, :, 0] = 0.0  # all-zero vectors: both clamp the norm at eps and return zeros
    out = channel_normalize(x, dim)
    torch.testing.assert_close(out, channel_normalize_reference(x, dim), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out, F.normalize(x, dim=dim), rtol=1e-6, atol=1e-7)
    assert torch.equal(out[0, :, 0], torch.zeros_like(out[0, :, 0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_complex_matches_the_reference(dtype):
    x = torch.randn(2, 10, 3, 16, generator=g).to(dtype)  # (B, S, H, Dh)
    angle = torch.rand(1, 10, 1, 8, generator=g) * 6
    cos, sin = angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1)  # (1, S, 1, Dh)
    out, ref = rotary_complex(x, cos, sin), rotary_reference(x, cos, sin)
    assert out.dtype == ref.dtype == dtype
    torch.testing.assert_close(out.float(), ref.float(), rtol=1e-6 if dtype == torch.float32 else 2**-7, atol=1e-6)


def test_fast_vae_norms_decode_the_same_frames(tiny_model):
    from diffusers import AutoencoderKLWan

    stock = AutoencoderKLWan.from_pretrained(tiny_model / "vae").eval()
    fast = AutoencoderKLWan.from_pretrained(tiny_model / "vae").eval()
    assert use_fast_vae_norms(fast) > 0
    z = torch.randn(1, stock.config.z_dim, 3, 4, 4, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(fast.decode(z).sample, stock.decode(z).sample, rtol=1e-5, atol=1e-5)
    other = AutoencoderKLWan.from_pretrained(tiny_model / "vae")  # instances only: a fresh load is diffusers' own
    norm = next(m for m in other.modules() if type(m).__name__ == "WanRMS_norm")
    assert "forward" not in vars(norm)


def test_cpu_attention_processor_gives_the_same_transformer_output(tiny_model):
    from diffusers import WanTransformer3DModel

    stock = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    fast = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    assert use_cpu_fast_paths(fast) == len(fast.blocks)
    assert all(isinstance(b.attn1.processor, WanSelfAttnProcessorCPU) for b in fast.blocks)
    assert not any(isinstance(b.attn2.processor, WanSelfAttnProcessorCPU) for b in fast.blocks)  # cross stays
    cfg = stock.config
    x = torch.randn(2, cfg.in_channels, 3, 8, 8, generator=g)  # (B, C, F', H', W')
    text = torch.randn(2, 7, cfg.text_dim, generator=g)
    t = torch.tensor([500.0, 20.0])
    with torch.no_grad():
        out = fast(x, t, text, return_dict=False)[0]
        ref = stock(x, t, text, return_dict=False)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert use_cpu_fast_paths(fast) == 0  # already switched: nothing to do


def test_wan_load_uses_the_fast_paths_on_the_cpu(tiny_model):
    from reel.models import wan

    comps = wan.load(tiny_model, torch.device("cpu"), torch.float32)
    assert all(isinstance(b.attn1.processor, WanSelfAttnProcessorCPU) for b in comps.transformer.blocks)
    norms = [m for m in comps.vae.modules() if type(m).__name__ == "WanRMS_norm"]
    assert norms and all("forward" in vars(m) for m in norms)
