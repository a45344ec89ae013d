"""fp8 matmuls as removable module swaps (kernels/fp8_linear.py), run for real on the CPU (torch._scaled_mm with
row-wise scales): the error of a tiny Wan transformer forward with them on, exact removal (the original nn.Linear
objects back), skipped shapes, LoRA on top, dtype casts that leave the fp8 copy alone, and every reason they cannot
run where they cannot."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import WanTransformer3DModel

from reel.engine.accel import SpeedConfig, apply_load_time, remove_load_time
from reel.kernels.attention import BackendError
from reel.kernels.fp8_linear import (Fp8Linear, _gpu_reasons, apply_fp8_linear, fp8_reasons, quantize_rows,
                                     remove_fp8_linear)


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
    originals = {name: m for name, m in tr.named_modules() if isinstance(m, torch.nn.Linear)}
    keys = set(tr.state_dict())
    with torch.no_grad():
        ref = tr(x, t, text, return_dict=False)[0]  # (2, 4, 3, 16, 16)
        counts = apply_fp8_linear(tr)
        out = tr(x, t, text, return_dict=False)[0]
    assert counts == {"layers": 20, "skipped": 0}  # 2 blocks x (4 self-attn + 4 cross-attn + 2 feed-forward)
    assert apply_fp8_linear(tr) == {"layers": 0, "skipped": 0}  # swapped already
    swapped = {name for name, m in tr.named_modules() if isinstance(m, Fp8Linear)}
    assert len(swapped) == 20 and all(name.startswith("blocks.") for name in swapped)
    assert all(tr.get_submodule(name).weight is originals[name].weight for name in swapped)  # shared Parameters
    assert set(tr.state_dict()) == keys  # the same keys: the fp8 copy is not part of the checkpoint
    assert all("forward" not in vars(m) for m in tr.modules())  # a module per layer, no forward assigned
    rel = float((out.float() - ref.float()).norm() / ref.float().norm())
    psnr = _psnr(out.float(), ref.float())
    print(f"fp8 matmuls, tiny Wan forward, {dtype}: relative error {rel:.4f}, PSNR {psnr:.1f} dB")
    assert 0 < rel < 0.05 and psnr > 35, (rel, psnr)
    assert out.dtype == dtype
    assert remove_fp8_linear(tr) == 20
    assert all(tr.get_submodule(name) is m for name, m in originals.items())  # the very same modules
    assert all("forward" not in vars(m) for m in tr.modules())
    with torch.no_grad():
        assert torch.equal(tr(x, t, text, return_dict=False)[0], ref)


def test_a_model_cast_after_the_swap_keeps_the_fp8_weights():
    """`.to(bfloat16)` (or layerwise casting) casts floating-point buffers: the fp8 copy and its scales are stored as
    integers, so the cast leaves them alone and the layers still run."""
    tr = _tiny_wan()
    x, t, text = _inputs()
    apply_fp8_linear(tr)
    layer = tr.blocks[0].attn1.to_q
    bits, scales = layer.w_bits.clone(), layer.scale_bits.clone()
    tr.to(torch.bfloat16)
    assert torch.equal(layer.w_bits, bits) and torch.equal(layer.scale_bits, scales)
    with torch.no_grad():
        out = tr(x.bfloat16(), t.bfloat16(), text.bfloat16(), return_dict=False)[0]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_a_lora_loaded_over_the_fp8_layers_runs_and_removal_reaches_under_it(tmp_path):
    """The engine loads character LoRAs after the speed-ups: peft wraps the Fp8Linear (an nn.Linear) as its base
    layer; removal puts the original Linear back under peft's layer."""
    from safetensors.torch import load_file

    from tests.lora_files import random_lora, write_lora

    tr = _tiny_wan()
    x, t, text = _inputs()
    original = tr.blocks[0].attn1.to_q
    path = write_lora(random_lora(tr, seed=3), tmp_path / "hero.safetensors", "diffusers")
    apply_fp8_linear(tr)
    tr.load_lora_adapter(load_file(str(path)), adapter_name="hero", prefix="transformer")
    assert isinstance(tr.blocks[0].attn1.to_q.base_layer, Fp8Linear)
    with torch.no_grad():
        with_fp8 = tr(x, t, text, return_dict=False)[0]
        assert remove_fp8_linear(tr) > 0
        assert tr.blocks[0].attn1.to_q.base_layer is original
        plain = tr(x, t, text, return_dict=False)[0]
    rel = float((with_fp8 - plain).norm() / plain.norm())
    assert 0 < rel < 0.05, rel


def test_layers_whose_shapes_scaled_mm_cannot_take_are_skipped_and_counted():
    tr = _tiny_wan(head_dim=12, ffn=48)  # inner dim 24: no block linear has both features multiples of 16
    x, t, text = _inputs()
    with torch.no_grad():
        ref = tr(x, t, text, return_dict=False)[0]
        assert apply_fp8_linear(tr) == {"layers": 0, "skipped": 20}
        assert torch.equal(tr(x, t, text, return_dict=False)[0], ref)


def test_fp8_reasons_and_the_speed_setting():
    assert fp8_reasons(torch.device("cpu"), torch.float32) == []  # runs on the CPU (slowly)
    assert "compute capability >= 8.9" in _gpu_reasons((8, 6))[0]
    assert "need torch >= 2.7" in _gpu_reasons((8, 9), "2.6.0+cu124")[0]  # row-wise scaling on Ada came in 2.7
    assert _gpu_reasons((8, 9), "2.7.1+cu126") == [] and _gpu_reasons((9, 0), "2.5.0") == []
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
