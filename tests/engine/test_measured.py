"""`auto` from measurements only (engine/measured.py, engine/measured_speedups.json): the rule, the row checks,
the checked-in table, apply_load_time on a CUDA device picking from a table, the attention backends' reasons on
this CPU and their removal, and the [speed] values the spec takes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from diffusers import WanTransformer3DModel

from reel.engine.accel import SpeedConfig, apply_load_time, remove_load_time
from reel.engine.measured import TABLE, MeasuredTableError, load_table, measured_choice, record_row
from reel.engine.spec import SpecError, load_film
from reel.kernels.attention import BACKENDS, BackendError, remove_backend, select_backend

GPU = "Test GPU 80GB"


def row(setting="attention", value="cudnn", s=1.0, base=1.2, gpu=GPU, **extra) -> dict:
    return {"gpu": gpu, "setting": setting, "value": value, "model": "wan2.1-t2v-1.3b", "size": "832x480x81, 6 steps",
            "s_per_step": s, "baseline_s_per_step": base, "speedup": round(base / s, 3), "psnr_db": None,
            "date": "2026-12-05", "versions": "torch 2.11+cu130, diffusers 0.42.1", "source": "test", **extra}


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "measured.json"
    for r in (row(), row(value="flash3", s=1.1), row(value="sageattention", s=0.5),
              row("compile", "regional", s=1.0, base=1.3, other_settings={"fused_kernels": "off"}),
              row("fused_kernels", "on", s=1.0, base=1.01)):
        record_row(r, path)
    return path


def test_auto_picks_only_what_a_row_on_that_gpu_shows_faster(table):
    assert measured_choice("attention", ["flash3", "cudnn"], GPU, table)[0] == "cudnn"  # 1.20x beats 1.09x
    assert measured_choice("attention", ["flash3"], GPU, table)[0] == "flash3"
    value, why = measured_choice("attention", ["sageattention"], GPU, table)  # 2.4x, but lossy
    assert value is None and "lossy" in why
    assert measured_choice("attention", ["cudnn"], "NVIDIA H100", table) == \
        (None, "no recorded measurement of attention on NVIDIA H100")
    record_row(row("fp8_matmul", True, s=0.5, lossy=True), table)  # `reel bench --record` writes value True
    assert measured_choice("fp8_matmul", ["true"], GPU, table) == (None, "true: lossy, never chosen by auto")
    record_row(row(value="xformers", s=0.5, lossy=True), table)  # flagged lossy by the bench: never chosen
    assert measured_choice("attention", ["xformers"], GPU, table)[0] is None
    value, why = measured_choice("fused_kernels", ["on"], GPU, table)  # 1.01x: noise, not a reason
    assert value is None and "1.01x" in why
    assert measured_choice("compile", ["regional"], GPU, table, context={"fused_kernels": "off"})[0] == "regional"
    value, why = measured_choice("compile", ["regional"], GPU, table, context={"fused_kernels": "on"})
    assert value is None and "only with fused_kernels=off" in why
    record_row(row(value="cudnn", s=1.3), table)  # a second, slower measurement vetoes it
    assert measured_choice("attention", ["cudnn", "flash3"], GPU, table)[0] == "flash3"


def test_record_row_checks_every_field_and_writes_atomically(tmp_path):
    path = tmp_path / "t.json"
    with pytest.raises(MeasuredTableError, match="speedup 2.0 is not baseline_s_per_step / s_per_step = 1.200"):
        record_row(row() | {"speedup": 2.0}, path)
    with pytest.raises(MeasuredTableError, match="date '5 Dec' must be YYYY-MM-DD"):
        record_row(row() | {"date": "5 Dec"}, path)
    with pytest.raises(MeasuredTableError, match="s_per_step"):
        record_row(row() | {"s_per_step": 0.0}, path)
    with pytest.raises(MeasuredTableError, match="colour: Extra inputs"):
        record_row(row() | {"colour": "red"}, path)
    assert not path.exists()  # nothing written for a bad row
    record_row(row(), path)
    record_row(row(value="flash3"), path)
    data = json.loads(path.read_text())
    assert [r["value"] for r in data["rows"]] == ["cudnn", "flash3"] and "about" in data
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temporary file left
    path.write_text('{"rows": [{"gpu": "x"}]}')
    with pytest.raises(MeasuredTableError, match=r"t.json: rows\[0\]: setting: Field required"):
        load_table(path)


def test_the_checked_in_table_holds_only_the_h200_measurement():
    rows = load_table()
    assert TABLE.name == "measured_speedups.json" and {r.gpu for r in rows} == {"NVIDIA H200"}
    assert {r.date for r in rows} == {"2026-12-04"}
    assert {(r.setting, r.value, r.s_per_step, r.baseline_s_per_step) for r in rows} == {
        ("fused_kernels", "on", 1.725, 1.237), ("compile", "full", 1.524, 1.725), ("engine", "reel", 1.237, 1.224)}
    # what auto does on that GPU: fused kernels stay off (0.72x); compile was measured only with them on
    assert measured_choice("fused_kernels", ["on"], "NVIDIA H200")[0] is None
    assert measured_choice("compile", ["regional", "full"], "NVIDIA H200", context={"fused_kernels": "off"})[0] is None


def _tiny_wan() -> WanTransformer3DModel:
    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                 out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2,
                                 rope_max_seq_len=64).eval()


def test_apply_load_time_on_cuda_takes_auto_from_the_table_and_comes_off_again(table):
    """The components claim a CUDA device: nothing runs on it (hooks and backends are only set), so this runs here.
    Per-instance attention backends, compile hooks; remove_load_time puts diffusers' defaults back."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    from reel.models.registry import FAMILIES

    tr = _tiny_wan()
    comps = SimpleNamespace(device=torch.device("cuda"), dtype=torch.bfloat16, transformer=tr, transformer_2=None,
                            vae=None)
    default = _AttentionBackendRegistry.get_active_backend()[0]
    applied = apply_load_time(comps, SpeedConfig(offload="none", vae_tiling=False, weights="bf16"),
                              family=FAMILIES["wan"], gpu_name=GPU, table=table)
    assert applied["attention"] == "cudnn" and applied["attention_auto"].startswith("cudnn: measured 1.20x on Test")
    assert "flash3" in applied["attention_passed_over"]  # not installed here
    assert {p._attention_backend for p in tr.attn_processors.values()} == {AttentionBackendName._NATIVE_CUDNN}
    assert _AttentionBackendRegistry.get_active_backend()[0] == default  # other models keep theirs
    assert applied["fused_kernels"].startswith("off (auto: on: measured 1.01x")
    assert applied["compile"].startswith("regional (2 compiled region(s)") and "auto: regional: measured 1.30x" in \
        applied["compile"]
    assert "fp8_matmul" not in applied
    assert remove_load_time(comps, FAMILIES["wan"]) == {"compile": 2, "fp8_matmul": 0}
    assert {p._attention_backend for p in tr.attn_processors.values()} == {None}
    assert all("forward" not in vars(m) for m in tr.modules())
    plain = apply_load_time(comps, SpeedConfig(offload="none", vae_tiling=False, weights="bf16"),
                            family=FAMILIES["wan"], gpu_name="NVIDIA H200")  # the checked-in table
    assert plain["attention"] == "sdpa" and plain["compile"].startswith("off (auto: full: measured 1.13x")
    assert plain["fused_kernels"].startswith("off (auto: on: measured 0.72x on NVIDIA H200")


def test_backend_reasons_on_this_cpu():
    cpu, head = torch.device("cpu"), 128
    for name in ("cudnn", "flash3", "sageattention"):
        reasons = BACKENDS[name].validate(cpu, torch.float32, head)
        assert any("needs a CUDA device" in r for r in reasons) and any("needs fp16 or bf16" in r for r in reasons)
    assert any("flash_attn_interface is not installed" in r for r in BACKENDS["flash3"].validate(cpu, torch.bfloat16,
                                                                                                   head))
    assert any("head size 256 unsupported" in r for r in BACKENDS["cudnn"].validate(cpu, torch.bfloat16, 256))
    with pytest.raises(BackendError, match="--attention cudnn cannot run here: needs a CUDA device"):
        select_backend("cudnn", cpu, torch.float32, 64)
    name, passed = select_backend("auto", cpu, torch.float32, 64, prefer="cudnn")  # cannot run: sdpa
    assert name == "sdpa" and set(passed) == set(BACKENDS) - {"sdpa"}
    cuda = torch.device("cuda")  # claimed: the checks that need a real GPU step aside
    assert select_backend("auto", cuda, torch.bfloat16, 64, prefer="cudnn")[0] == "cudnn"
    assert select_backend("auto", cuda, torch.bfloat16, 64)[0] == "sdpa"  # nothing measured: sdpa


def test_attention_backend_comes_off_again():
    from reel.kernels.attention import apply_backend

    tr = _tiny_wan()
    apply_backend(tr, "cudnn")
    assert {str(p._attention_backend.value) for p in tr.attn_processors.values()} == {"_native_cudnn"}
    remove_backend(tr)
    assert {p._attention_backend for p in tr.attn_processors.values()} == {None}


SPEC = """
[film]
model = "{model}"

[speed]
{speed}

[[shots]]
id = "a"
prompt = "a red circle"
"""


@pytest.mark.parametrize("given, compile_, fp8", [("", "auto", False), ("compile = true", "regional", False),
                                                  ("compile = false", "off", False),
                                                  ('compile = "cuda-graphs"\nfp8_matmul = true', "cuda-graphs", True)])
def test_spec_takes_the_new_values(write_spec, given, compile_, fp8):
    speed = load_film(write_spec(SPEC.replace("{speed}", given))).speed
    assert (speed.compile, speed.fp8_matmul) == (compile_, fp8)


@pytest.mark.parametrize("given, needle", [('compile = "fast"', "speed.compile: Value error, compile must be one of "
                                            "auto, off, regional, full, cuda-graphs"),
                                           ("compile = 1", "speed.compile"),
                                           ('fp8_matmul = "yes"', "speed.fp8_matmul: must be true or false")])
def test_spec_rejects_bad_values_naming_the_field(write_spec, given, needle):
    with pytest.raises(SpecError) as info:
        load_film(write_spec(SPEC.replace("{speed}", given)))
    assert needle in str(info.value)
