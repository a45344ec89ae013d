"""fp8 matmuls and regional compile together (kernels/fp8_linear.py, kernels/regional_compile.py), inductor on the
CPU: every block still shares one graph (the fp8 layers are modules, not per-layer hooks that dynamo would guard on
one by one), the output stays close to the eager fp8 forward, and both come off exactly. Also: a trampoline that
hits dynamo's recompile limit says so instead of running eager in silence."""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from torch._dynamo.utils import counters

from reel.kernels.fp8_linear import apply_fp8_linear, remove_fp8_linear
from reel.kernels.regional_compile import apply_compile, compile_fallbacks, remove_compile

def _tiny_wan(layers: int) -> WanTransformer3DModel:
    """A tiny Wan transformer whose block linears _scaled_mm takes (features multiples of 16)."""
    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                 out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=layers,
                                 rope_max_seq_len=64).eval()


def _inputs(frames: int = 2):
    torch.manual_seed(1)
    return torch.randn(2, 4, frames, 8, 8), torch.tensor([500.0, 300.0]), torch.randn(2, 5, 32)  # latents, t, text


def _fresh_dynamo() -> None:
    torch._dynamo.reset()
    counters.clear()


def test_fp8_layers_and_regional_compile_share_one_graph_and_come_off_exactly():
    tr = _tiny_wan(layers=3)
    x, t, text = _inputs()
    with torch.no_grad():
        eager = tr(x, t, text, return_dict=False)[0]  # (2, 4, 2, 8, 8)
        assert apply_fp8_linear(tr) == {"layers": 30, "skipped": 0}  # 3 blocks x 10 linears
        eager_fp8 = tr(x, t, text, return_dict=False)[0]
    _fresh_dynamo()
    assert apply_compile(tr, "regional") == 3
    with torch.no_grad():
        compiled = tr(x, t, text, return_dict=False)[0]
        again = tr(x, t, text, return_dict=False)[0]
    assert counters["stats"]["unique_graphs"] == 1  # three blocks, fp8 layers inside: one graph
    assert compile_fallbacks(tr) is None
    torch.testing.assert_close(compiled, eager_fp8, rtol=2e-2, atol=2e-2)  # fp8 rounding may differ when fused
    assert torch.equal(again, compiled)
    assert remove_compile(tr) == 3 and remove_fp8_linear(tr) == 30
    assert all("forward" not in vars(m) for m in tr.modules())
    with torch.no_grad():
        assert torch.equal(tr(x, t, text, return_dict=False)[0], eager)


def test_hitting_the_recompile_limit_is_reported_not_silent():
    """With the limit at 1, a second input shape cannot get its graph: dynamo runs that call eager, the hook sees
    its counter and compile_fallbacks says so (the engine copies it into the manifest). An architecture of its own
    (4 layers), as the flag stays on its trampoline for the process."""
    tr = _tiny_wan(layers=4)
    _fresh_dynamo()
    apply_compile(tr, "regional")
    with torch._dynamo.config.patch(recompile_limit=1), torch.no_grad():
        tr(*_inputs(frames=2), return_dict=False)
        assert compile_fallbacks(tr) is None
        x, t, text = _inputs(frames=3)
        out = tr(x, t, text, return_dict=False)[0]  # a new shape: past the limit, eager
    note = compile_fallbacks(tr)
    assert note is not None and "recompile limit (1)" in note and "run eager" in note
    remove_compile(tr)
    with torch.no_grad():
        torch.testing.assert_close(out, tr(x, t, text, return_dict=False)[0], rtol=1e-4, atol=1e-5)
