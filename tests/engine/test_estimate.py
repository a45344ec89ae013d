"""The GPU cost estimator: meta-device FLOPs against an analytic count, shipped configs, memory, bad input.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/engine/test_estimate.py -q
"""

from __future__ import annotations

import json

import pytest
import torch

from reel.engine.estimate import (
    BF16,
    estimate_film,
    estimate_step,
    format_estimate,
    gpu_spec,
    load_model_config,
    shipped_configs,
)
from reel.engine.estimate_meta import build, param_count, run_on_meta, vae_factors
from reel.engine.spec import load_film
from reel.models.registry import FAMILIES

# nominal sizes from the model names / cards; CogVideoX-5b's transformer holds 5.57e9 ("5B" rounds down),
# Wan2.1-I2V-14B adds image key/value projections (40 blocks x 2 x 5120^2 = 2.1e9) to the 14B T2V model
NOMINAL = {"wan2.1-t2v-1.3b": 1.3e9, "wan2.1-t2v-14b": 14e9, "wan2.1-i2v-14b": 14e9 + 40 * 2 * 5120**2,
           "wan2.2-ti2v-5b": 5e9, "wan2.2-t2v-a14b": 14e9, "ltx-video": 2e9, "cogvideox-5b": 5e9, "hunyuanvideo": 13e9,
           "hunyuanvideo-1.5-t2v": 8.3e9, "ltx-2": 19e9, "skyreels-v2-df-1.3b-540p": 1.3e9}
FACTORS = {"wan2.2-ti2v-5b": (4, 16), "ltx-video": (8, 32), "ltx-2": (8, 32), "hunyuanvideo-1.5-t2v": (4, 16)}
#          (temporal, spatial); the others are (4, 8)


def _configs(folder):
    tr = json.loads((folder / "transformer" / "config.json").read_text())
    vae = json.loads((folder / "vae" / "config.json").read_text())
    return tr, {"_class_name": vae["_class_name"], "config": vae}


def _analytic_wan_flops(cfg: dict, tokens: int, text_len: int, batch: int = 1) -> float:
    """Multiply-adds x 2 of a Wan transformer forward: every linear layer (2*m*n*k) plus attention (4*N*M*d)."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    n, L, ff, p = tokens, text_len, cfg["ffn_dim"], cfg["patch_size"]
    patch = p[0] * p[1] * p[2]
    total = 2 * n * cfg["in_channels"] * patch * d  # patch embedding
    total += 2 * (cfg["freq_dim"] * d + d * d) + 2 * d * 6 * d  # time embedder + time projection
    total += 2 * L * (cfg["text_dim"] * d + d * d)  # text embedder
    block = (4 * 2 * n * d * d + 4 * n * n * d  # self-attention: q, k, v, o + scores and values
             + 2 * 2 * n * d * d + 2 * 2 * L * d * d + 4 * n * L * d  # cross-attention
             + 2 * 2 * n * d * ff)  # feed-forward
    total += cfg["num_layers"] * block + 2 * n * d * cfg["out_channels"] * patch  # blocks + output projection
    return float(total * batch)


def test_tiny_wan_flops_match_the_analytic_count(tiny_model):
    tr, vae = _configs(tiny_model)
    est = estimate_step(tr, "wan", 32, 32, 9, batch=1, cfg=False, vae_config=vae, text_len=16)
    assert est.latent == (3, 8, 8) and est.tokens == 3 * 4 * 4
    expected = _analytic_wan_flops(tr, est.tokens, 16)
    assert est.flops == pytest.approx(expected, rel=0.03)
    assert est.params == param_count(build(tr["_class_name"], tr, torch.bfloat16))


def test_flops_grow_with_frames_and_double_with_cfg(tiny_model):
    tr, vae = _configs(tiny_model)
    short = estimate_step(tr, "wan", 64, 64, 33, batch=1, cfg=False, vae_config=vae, text_len=16)
    long = estimate_step(tr, "wan", 64, 64, 65, batch=1, cfg=False, vae_config=vae, text_len=16)
    assert long.tokens / short.tokens == pytest.approx(17 / 9)
    assert long.flops >= 0.95 * short.flops * long.tokens / short.tokens  # linear in tokens, or more (attention)
    guided = estimate_step(tr, "wan", 64, 64, 33, batch=1, cfg=True, vae_config=vae, text_len=16)
    assert guided.flops == pytest.approx(2 * short.flops, rel=1e-9)
    assert guided.activation_bytes > short.activation_bytes  # cond + uncond rows share one forward


def test_live_bytes_counts_the_peak_of_live_tensors_not_weights():
    weight = torch.nn.Linear(1000, 1000, device="meta")

    def fn():
        a = torch.empty(1000, 1000, device="meta")  # 4 MB
        b = weight(a)  # 4 MB; the weight itself (4 MB) is not an activation
        del a
        c = b.t()  # a view: no new bytes
        return (c * 2).sum()  # 4 MB more while b lives

    flops, peak = run_on_meta(fn, weight)
    assert flops == 2 * 1000**3
    assert peak == pytest.approx(8e6, rel=0.01)


@pytest.mark.parametrize("name", sorted(NOMINAL))
def test_shipped_configs_instantiate_with_plausible_sizes(name):
    model = load_model_config(name)
    assert model["_source"] and model["family"] in FAMILIES
    for part in ("transformer", "transformer_2"):
        if part in model:
            n = param_count(build(model[part]["_class_name"], model[part]["config"], torch.bfloat16))
            assert n == model[part]["params"]
            assert n == pytest.approx(NOMINAL[name], rel=0.12)
    vae = model["vae"]
    assert param_count(build(vae["_class_name"], vae["config"], torch.float32)) == vae["params"]
    assert vae_factors(vae["_class_name"], vae["config"])[:2] == FACTORS.get(name, (4, 8))
    assert model["text_encoder"]["params"] > 1e9  # T5-XXL / UMT5-XXL / Llama encoders


def test_shipped_configs_are_all_listed():
    assert set(shipped_configs()) == set(NOMINAL)
    names = ("h100", "H200", "a100", "l40s", "RTX 4090")
    assert {gpu_spec(g).key for g in names} == {"h100", "h200", "a100", "l40s", "4090"}


def _film(write_spec, width: int, height: int, frames: int, guidance: float = 5.0):
    return load_film(write_spec(f"""
        [film]
        model = "{{model}}"
        width = {width}
        height = {height}
        frames = {frames}
        steps = 4
        guidance = {guidance}

        [[shots]]
        id = "one"
        prompt = "a red circle"
    """), limits=False)  # sizes of the real models estimated with --model-config, past the tiny folder's limits


def test_tiny_model_fits_on_an_h100_with_bf16_weights(write_spec, tiny_model):
    est = estimate_film(_film(write_spec, 32, 32, 9), "h100")
    (shot,) = est.shots
    assert est.memory["transformer weights"] == shot.step.params * BF16
    assert est.recommendations == []
    assert shot.cfg_steps == 4 and shot.seconds > 0
    text = format_estimate(est)
    assert "fits in 80 GB as is" in text and "one" in text


def test_wan_14b_at_720p_on_a_4090_recommends_offload(write_spec):
    est = estimate_film(_film(write_spec, 1280, 720, 17), "4090", model_config="wan2.1-t2v-14b")
    (shot,) = est.shots
    params = load_model_config("wan2.1-t2v-14b")["transformer"]["params"]
    assert est.memory["transformer weights"] == shot.step.params * BF16 == params * 2
    assert shot.step.tokens == 5 * 45 * 80
    assert est.memory["peak"] > 24e9
    (rec,) = est.recommendations
    assert "does not fit in 24 GB" in rec and "--offload" in rec


def test_unknown_gpu_lists_the_known_ones(write_spec):
    with pytest.raises(ValueError, match=r"unknown GPU 'v100'.*h100, h200, a100, l40s, 4090"):
        estimate_film(_film(write_spec, 32, 32, 9), "v100")


def test_unknown_model_config_lists_the_shipped_ones(write_spec):
    with pytest.raises(ValueError, match=r"unknown model config 'wan3'.*wan2.1-t2v-1.3b"):
        estimate_film(_film(write_spec, 32, 32, 9), "h100", model_config="wan3")
