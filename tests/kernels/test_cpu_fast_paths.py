"""CPU fast paths (kernels/channel_norm.py, kernels/wan_cpu.py, rotary_complex) against diffusers' own math:
parity with the stock modules, and removal that leaves diffusers' own modules exactly as they were."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reel.kernels.channel_norm import (
    FAST_VAE_NORM_HOOK,
    apply_fast_vae_norms,
    channel_normalize,
    channel_normalize_reference,
    remove_fast_vae_norms,
)
from reel.kernels.hooks import has_hook
from reel.kernels.rotary import rotary_complex, rotary_reference
from reel.kernels.wan_cpu import WanSelfAttnProcessorCPU, apply_cpu_attention, remove_cpu_attention

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


def _wan_norms(vae):
    return [m for m in vae.modules() if type(m).__name__ == "WanRMS_norm"]


def test_fast_vae_norms_decode_the_same_frames(tiny_model):
    from diffusers import AutoencoderKLWan

    stock = AutoencoderKLWan.from_pretrained(tiny_model / "vae").eval()
    fast = AutoencoderKLWan.from_pretrained(tiny_model / "vae").eval()
    n = apply_fast_vae_norms(fast)
    assert n == len(_wan_norms(fast)) > 0 and all(has_hook(m, FAST_VAE_NORM_HOOK) for m in _wan_norms(fast))
    assert apply_fast_vae_norms(fast) == 0  # hooked already: nothing to do
    z = torch.randn(1, stock.config.z_dim, 3, 4, 4, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(fast.decode(z).sample, stock.decode(z).sample, rtol=1e-5, atol=1e-5)
    other = AutoencoderKLWan.from_pretrained(tiny_model / "vae")  # instances only: a fresh load is diffusers' own
    assert all("forward" not in vars(norm) for norm in _wan_norms(other))


def test_fast_vae_norms_come_off_again(tiny_model):
    """Removing the hooks gives diffusers' forward back: bit-identical frames, no instance `forward` left."""
    from diffusers import AutoencoderKLWan

    stock = AutoencoderKLWan.from_pretrained(tiny_model / "vae").eval()
    vae = AutoencoderKLWan.from_pretrained(tiny_model / "vae").eval()
    z = torch.randn(1, stock.config.z_dim, 3, 4, 4, generator=g)
    n = apply_fast_vae_norms(vae)
    with torch.no_grad():
        vae.decode(z)
        assert remove_fast_vae_norms(vae) == n and remove_fast_vae_norms(vae) == 0
        assert torch.equal(vae.decode(z).sample, stock.decode(z).sample)
    for norm in _wan_norms(vae):
        assert "forward" not in vars(norm) and not has_hook(norm, FAST_VAE_NORM_HOOK)
    assert apply_fast_vae_norms(vae) == n  # and it goes on again


def _transformer_inputs(cfg):
    x = torch.randn(2, cfg.in_channels, 3, 8, 8, generator=g)  # (B, C, F', H', W')
    text = torch.randn(2, 7, cfg.text_dim, generator=g)
    return x, torch.tensor([500.0, 20.0]), text


def test_cpu_attention_processor_gives_the_same_transformer_output(tiny_model):
    from diffusers import WanTransformer3DModel

    stock = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    fast = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    assert apply_cpu_attention(fast) == len(fast.blocks)
    assert all(isinstance(b.attn1.processor, WanSelfAttnProcessorCPU) for b in fast.blocks)
    assert not any(isinstance(b.attn2.processor, WanSelfAttnProcessorCPU) for b in fast.blocks)  # cross stays
    x, t, text = _transformer_inputs(stock.config)
    with torch.no_grad():
        out = fast(x, t, text, return_dict=False)[0]
        ref = stock(x, t, text, return_dict=False)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert apply_cpu_attention(fast) == 0  # already switched: nothing to do


def test_cpu_attention_comes_off_again(tiny_model):
    """Removing the processors puts diffusers' own processor objects back: bit-identical output."""
    from diffusers import WanTransformer3DModel

    stock = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    tr = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    before = dict(tr.attn_processors)  # name -> processor object
    n = apply_cpu_attention(tr)
    assert remove_cpu_attention(tr) == n and remove_cpu_attention(tr) == 0
    assert all(tr.attn_processors[name] is p for name, p in before.items())
    assert all("_attention_backend" not in vars(p) for p in before.values())  # nothing left on diffusers' objects
    assert all("forward" not in vars(m) for m in tr.modules())
    x, t, text = _transformer_inputs(stock.config)
    with torch.no_grad():
        assert torch.equal(tr(x, t, text, return_dict=False)[0], stock(x, t, text, return_dict=False)[0])


def test_wan_load_leaves_diffusers_modules_and_the_engine_adds_the_fast_paths(tiny_model):
    """models/wan.py loads diffusers' own modules; engine/accel.py adds the fast paths and takes them off again."""
    from reel.engine.accel import apply_cpu_fast_paths, remove_cpu_fast_paths
    from reel.models import wan
    from reel.models.registry import FAMILIES

    comps = wan.load(tiny_model, torch.device("cpu"), torch.float32)
    assert not any(isinstance(b.attn1.processor, WanSelfAttnProcessorCPU) for b in comps.transformer.blocks)
    assert all("forward" not in vars(m) for m in comps.vae.modules())
    counts = apply_cpu_fast_paths(comps, FAMILIES["wan"])
    assert counts == {"vae_norms": len(_wan_norms(comps.vae)), "self_attention": len(comps.transformer.blocks)}
    assert all(isinstance(b.attn1.processor, WanSelfAttnProcessorCPU) for b in comps.transformer.blocks)
    assert remove_cpu_fast_paths(comps, FAMILIES["wan"]) == counts
    assert all("forward" not in vars(m) for m in (*comps.vae.modules(), *comps.transformer.modules()))
    assert not any(isinstance(b.attn1.processor, WanSelfAttnProcessorCPU) for b in comps.transformer.blocks)
