"""Triton kernels against their torch references on the CPU (TRITON_INTERPRET=1), fp32 and bf16."""

from __future__ import annotations

import os

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"  # before triton compiles anything: run kernels on the CPU
pytest.importorskip("triton", reason="triton is in the dev extra; install it to test the kernels")

from reel.kernels.modulate import (  # noqa: E402
    gated_residual_reference,
    gated_residual_triton,
    ln_modulate_reference,
    ln_modulate_triton,
)
from reel.kernels.rmsnorm import rms_norm_reference, rms_norm_triton  # noqa: E402
from reel.kernels.rotary import rotary_reference, rotary_triton  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 3e-2}  # absolute, used with close() below


def close(out: torch.Tensor, ref: torch.Tensor, dtype) -> None:
    """fp32: 1e-5; bf16: one rounding step apart at most (2^-7 relative, 2 ulp of slack)."""
    assert out.dtype == ref.dtype == dtype
    rtol = 1e-5 if dtype == torch.float32 else 2 ** -6
    torch.testing.assert_close(out.float(), ref.float(), rtol=rtol, atol=TOL[dtype] / 3)
g = torch.Generator().manual_seed(0)


def rand(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [12, 64, 100])
def test_rms_norm(dtype, d):
    x, w = rand(3, 7, d, dtype=dtype), rand(d, dtype=dtype)
    ref = rms_norm_reference(x, w, 1e-6)
    assert torch.allclose(ref.float(), torch.nn.RMSNorm(d, eps=1e-6, elementwise_affine=False)(x.float()).mul(w.float())
                          .to(dtype).float(), atol=TOL[dtype])
    close(rms_norm_triton(x, w, 1e-6), ref, dtype)
    close(rms_norm_triton(x, None, 1e-6), rms_norm_reference(x, None, 1e-6), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_token", [False, True])
def test_ln_modulate_and_gated_residual(dtype, per_token):
    b, s, d = 2, 9, 48
    x = rand(b, s, d, dtype=dtype)
    rows = s if per_token else 1
    shift, scale, gate = rand(b, rows, d), rand(b, rows, d), rand(b, rows, d)
    ref = ln_modulate_reference(x, shift, scale, 1e-6)
    close(ln_modulate_triton(x, shift, scale, 1e-6), ref, dtype)
    y = rand(b, s, d, dtype=dtype)
    ref = gated_residual_reference(x, y, gate)
    close(gated_residual_triton(x, y, gate), ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_matches_wan_rotary_embedding(dtype):
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    heads, dh = 3, 24
    rope = WanRotaryPosEmbed(dh, (1, 2, 2), 64)
    latents = torch.zeros(1, 4, 3, 8, 8)  # (B, C, F', H', W') -> 3 * 4 * 4 = 48 tokens
    cos, sin = rope(latents)  # (1, S, 1, Dh)
    x = rand(2, cos.shape[1], heads, dh, dtype=dtype)
    ref = rotary_reference(x, cos, sin)
    close(rotary_triton(x, cos, sin), ref, dtype)


def test_fused_wan_transformer_matches_stock_on_cpu_interpreter(tiny_model):
    from diffusers import WanTransformer3DModel

    from reel.kernels.wan_fused import apply_fused_kernels, fused_reasons

    assert "needs a CUDA device" in " ".join(fused_reasons(torch.device("cpu"))) or not torch.cuda.is_available()
    stock = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    fused = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    assert apply_fused_kernels(fused, interpret_ok=True) == 2
    x = rand(2, 4, 3, 8, 8)  # (B, C, F', H', W')
    text = rand(2, 16, 32)
    t = torch.tensor([700.0, 300.0])
    with torch.no_grad():
        a = stock(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        b = fused(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_fused_kernels_come_off_again_and_chain_with_diffusers_hooks(tiny_model):
    """The block hooks run under diffusers' First-Block-Cache (its hooks wrap them) and, removed, leave diffusers'
    own blocks and processor objects: bit-identical output, no instance `forward`. Stacked over the CPU
    processor, each comes off on its own."""
    from diffusers import WanTransformer3DModel
    from diffusers.hooks import FirstBlockCacheConfig

    from reel.kernels.hooks import has_hook
    from reel.kernels.wan_cpu import WanSelfAttnProcessorCPU, apply_cpu_attention, remove_cpu_attention
    from reel.kernels.wan_fused import FUSED_BLOCK_HOOK, FusedWanSelfAttnProcessor, apply_fused_kernels, \
        remove_fused_kernels

    stock = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    tr = WanTransformer3DModel.from_pretrained(tiny_model / "transformer").eval()
    before = dict(tr.attn_processors)
    x, text, t = rand(2, 4, 3, 8, 8), rand(2, 16, 32), torch.tensor([700.0, 300.0])

    def run(model):
        with torch.no_grad(), model.cache_context("cond", step_index=0, num_inference_steps=2):
            return model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]

    # 1. fused over the CPU processor, under First-Block-Cache: the stock model's output
    assert apply_cpu_attention(tr) == 2 and apply_fused_kernels(tr, interpret_ok=True) == 2
    assert all(has_hook(b, FUSED_BLOCK_HOOK) for b in tr.blocks)
    for model in (stock, tr):
        model.enable_cache(FirstBlockCacheConfig(threshold=0.05))
    torch.testing.assert_close(run(tr), run(stock), rtol=1e-4, atol=1e-4)
    for model in (stock, tr):
        model.disable_cache()
    # 2. the CPU processor comes out from under the fused one; then the fused path comes off
    assert remove_cpu_attention(tr) == 2
    assert all(type(b.attn1.processor) is FusedWanSelfAttnProcessor for b in tr.blocks)
    assert all(b.attn1.processor.replaced is before[f"blocks.{i}.attn1.processor"] for i, b in enumerate(tr.blocks))
    assert remove_fused_kernels(tr) == 2 and remove_fused_kernels(tr) == 0
    assert all(tr.attn_processors[name] is p for name, p in before.items())
    assert not any(isinstance(p, WanSelfAttnProcessorCPU) for p in tr.attn_processors.values())
    assert all("forward" not in vars(b) and not has_hook(b, FUSED_BLOCK_HOOK) for b in tr.blocks)
    with torch.no_grad():
        a = stock(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        b = tr(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
    assert torch.equal(b, a)


def test_each_triton_kernel_is_built_once_per_process():
    """A @triton.jit function built per call recompiled on every op (1.4x slower renders on an H200)."""
    from reel.kernels import modulate, rmsnorm, rotary

    x, w = rand(2, 5, 16), rand(16)
    cos, sin = rand(1, 5, 1, 8), rand(1, 5, 1, 8)
    first = (rmsnorm._kernel(), modulate._kernels(), rotary._kernel())
    for _ in range(2):
        rms_norm_triton(x, w, 1e-6)
        ln_modulate_triton(x, rand(2, 1, 16), rand(2, 1, 16), 1e-6)
        gated_residual_triton(x, x, rand(2, 1, 16))
        rotary_triton(rand(2, 5, 2, 8), cos, sin)
    again = (rmsnorm._kernel(), modulate._kernels(), rotary._kernel())
    for built, reused in zip(first, again):
        assert all(a is b for a, b in zip(built, reused))  # the same JITFunction objects: compiled once
    for builder in (rmsnorm._kernel, modulate._kernels, rotary._kernel):
        assert builder.cache_info().misses == 1
