"""Regional torch.compile as removable hooks (kernels/regional_compile.py): inductor on the CPU, one graph shared by
every block, the eager forward back exactly on removal, and a film rendered with [speed] compile = "regional"
through the Engine close to the eager render."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

from reel.engine.plan import build_plan
from reel.engine.post.contact import read_video
from reel.engine.runtime import Engine
from reel.engine.spec import load_film
from reel.kernels.regional_compile import (COMPILE_HOOK, apply_compile, compile_reasons, compile_seconds,
                                           remove_compile)

FILM = """
[film]
model = "{model}"
seed = 3
steps = 2
guidance = 4.0
frames = 5
width = 32
height = 32

[speed]
{speed}

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"
"""


def _tiny_wan() -> WanTransformer3DModel:
    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
                                 out_channels=4, text_dim=32, freq_dim=32, ffn_dim=48, num_layers=2,
                                 rope_max_seq_len=64).eval()


def test_regional_compile_shares_one_graph_and_removes_exactly():
    from torch._dynamo.utils import counters

    tr = _tiny_wan()
    x, t, text = torch.randn(2, 4, 2, 8, 8), torch.tensor([500.0, 300.0]), torch.randn(2, 5, 32)  # latents, t, text
    with torch.no_grad():
        eager = tr(x, t, text, return_dict=False)[0]  # (2, 4, 2, 8, 8)
    torch._dynamo.reset()
    counters.clear()
    assert compile_reasons("regional", tr, torch.device("cpu")) == []
    assert apply_compile(tr, "regional") == 2 and apply_compile(tr, "regional") == 0  # once per block
    with torch.no_grad():
        compiled = tr(x, t, text, return_dict=False)[0]
        again = tr(x, t, text, return_dict=False)[0]
    assert counters["stats"]["unique_graphs"] == 1  # both blocks run the one compiled graph
    assert compile_seconds(tr) > 0  # the warm-up, for the benchmark
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    assert torch.equal(again, compiled)
    assert remove_compile(tr) == 2
    assert all("forward" not in vars(m) for m in tr.modules())  # the class's own forward, as before any hook
    with torch.no_grad():
        assert torch.equal(tr(x, t, text, return_dict=False)[0], eager)
    assert compile_seconds(tr) == 0.0


def test_compile_reasons_on_this_cpu():
    cpu = torch.device("cpu")
    tr = _tiny_wan()
    assert any("needs a CUDA device" in r for r in compile_reasons("cuda-graphs", tr, cpu))
    assert compile_reasons("full", tr, cpu) == []
    assert "unknown compile mode" in compile_reasons("fast", tr, cpu)[0]
    cog = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                      time_embed_dim=8, text_embed_dim=16, num_layers=1, sample_width=8,
                                      sample_height=8, sample_frames=5, patch_size=2, max_text_seq_length=8)
    assert "no repeated blocks" in compile_reasons("regional", cog, cpu)[0]  # CogVideoX lists none
    with pytest.raises(ValueError, match="compile mode"):
        apply_compile(tr, "everything")


def _hooked(module: torch.nn.Module) -> bool:
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(COMPILE_HOOK) is not None


def test_render_with_regional_compile_matches_eager(write_spec, tmp_path):
    """A whole film through the Engine with [speed] compile = "regional": the manifest says so, the clip matches
    the eager render's within encoder rounding."""
    import json

    torch._dynamo.reset()
    clips = {}
    for name, speed in (("eager", 'compile = "off"'), ("regional", 'compile = "regional"')):
        plan = build_plan(load_film(write_spec(FILM.replace("{speed}", speed), f"{name}.toml")))
        engine = Engine("cpu")
        result = engine.render(plan, tmp_path / name)
        clips[name] = read_video(result.shots[0].video)[0].astype(np.float32)  # (F, H, W, 3)
        manifest = json.loads(result.shots[0].manifest.read_text())
        _, comps = engine.load(plan.film.model)
        hooked = [m for m in comps.transformer.modules() if _hooked(m)]
        if name == "regional":
            assert manifest["speed"]["compile"].startswith("regional (2 compiled region(s)")
            assert len(hooked) == 2 and compile_seconds(comps.transformer) > 0
        else:
            assert "compile" not in manifest["speed"] and not hooked
    diff = np.abs(clips["regional"] - clips["eager"])
    assert clips["eager"].shape == clips["regional"].shape
    assert float(diff.mean()) < 0.5 and float(diff.max()) <= 8, (float(diff.mean()), float(diff.max()))
