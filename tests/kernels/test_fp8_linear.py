"""fp8 matmuls as removable hooks (kernels/fp8_linear.py), run for real on the CPU (torch._scaled_mm with row-wise
scales): the error of a tiny Wan transformer forward with them on, exact removal, skipped shapes, and every reason
they cannot run where they cannot."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import WanTransformer3DModel

from reel.engine.accel import SpeedConfig, apply_load_time, remove_load_time
from reel.kernels.attention import BackendError
from reel.kernels.fp8_linear import apply_fp8_linear, fp8_reasons, quantize_rows, remove_fp8_linear


def _tiny_wan(head_dim: int = 16, ffn: int = 64) -> WanTransformer3DModel:
    """A tiny Wan transformer whose block linears _scaled_mm takes (features multiples of 16) by default."""
    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=head_dim,
                                 in_channels=4, out_channels=4, text_dim=32, freq_dim=32, ffn_dim=ffn, num_layers=2,
                                 rope_max_seq_len=64).eval()


def _inputs():
    torch.manual_seed(1)
    return torch.randn(2, 4, 3, 16, 16), torch.tensor([500.0, 300.0]), torch.randn(2, 7, 32)  # latents, t, text


def _psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    return 10 * math.log10(float(ref.abs().max()) ** 2 / float((out - ref).pow(2).mean()))


def test_quantize_rows_round_trips_within_fp8_precision():
    x = torch.randn(32, 64) * torch.logspace(-2, 2, 32)[:, None]  # rows of very different magnitude
    q, scale = quantize_rows(x)  # (32, 64) fp8, (32, 1)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (32, 1)
    rel = (q.float() * scale - x).abs() / x.abs().amax(1, keepdim=True)
    assert float(rel.max()) < 2 ** -4  # e4m3: 3 mantissa bits, each row scaled to its own amax


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_transformer_forward_is_close_and_removal_is_exact(dtype):
    tr = _tiny_wan().to(dtype)
    x, t, text = (v.to(dtype) for v in _inputs())
    with torch.no_grad():
        ref = tr(x, t, text, return_dict=False)[0]  # (2, 4, 3, 16, 16)
        counts = apply_fp8_linear(tr)
        out = tr(x, t, text, return_dict=False)[0]
    assert counts == {"layers": 20, "skipped": 0}  # 2 blocks x (4 self-attn + 4 cross-attn + 2 feed-forward)
    assert all("forward" not in vars(m) for m in (tr.patch_embedding, tr.proj_out, tr.condition_embedder))
    rel = float((out.float() - ref.float()).norm() / ref.float().norm())
    psnr = _psnr(out.float(), ref.float())
    print(f"fp8 matmuls, tiny Wan forward, {dtype}: relative error {rel:.4f}, PSNR {psnr:.1f} dB")
    assert 0 < rel < 0.05 and psnr > 35, (rel, psnr)
    assert out.dtype == dtype
    assert remove_fp8_linear(tr) == 20
    assert all("forward" not in vars(m) for m in tr.modules())
    with torch.no_grad():
        assert torch.equal(tr(x, t, text, return_dict=False)[0], ref)


def test_layers_whose_shapes_scaled_mm_cannot_take_are_skipped_and_counted():
    tr = _tiny_wan(head_dim=12, ffn=48)  # inner dim 24: no block linear has both features multiples of 16
    x, t, text = _inputs()
    with torch.no_grad():
        ref = tr(x, t, text, return_dict=False)[0]
        assert apply_fp8_linear(tr) == {"layers": 0, "skipped": 20}
        assert torch.equal(tr(x, t, text, return_dict=False)[0], ref)


def test_fp8_reasons_and_the_speed_setting():
    assert fp8_reasons(torch.device("cpu"), torch.float32) == []  # runs on the CPU (slowly)
    reasons = fp8_reasons(torch.device("cuda"), torch.float16)
    assert any("needs bf16 activations on CUDA" in r for r in reasons)
    assert "runs on CUDA" in fp8_reasons(torch.device("mps"), torch.float16)[0]
    tr = _tiny_wan()
    cpu = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32, transformer=tr, vae=None)
    assert "fp8_matmul" not in apply_load_time(cpu, SpeedConfig())  # lossy: never on by default
    applied = apply_load_time(cpu, SpeedConfig(fp8_matmul=True, cpu_fast_paths="off"))
    assert applied["fp8_matmul"].startswith("20 linear layers as fp8 matmuls (lossy), 0 skipped")
    assert "CPU: slow" in applied["fp8_matmul"]
    assert remove_load_time(cpu) == {"compile": 0, "fp8_matmul": 20}
    mps = SimpleNamespace(device=torch.device("mps"), dtype=torch.float16, transformer=tr, vae=None)
    with pytest.raises(BackendError, match="fp8_matmul = true cannot run here: runs on CUDA"):
        apply_load_time(mps, SpeedConfig(fp8_matmul=True, attention="sdpa", cpu_fast_paths="off"))
