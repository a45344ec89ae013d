"""`reel bench` at tiny scale on the CPU: the real command over a tiny real folder (and a scaled-down shipped config),
its JSON, Markdown and PNG, --record, and every bad input. No timing asserts: the figures are whatever they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from reel.engine.bench_report import RESULTS_HEADING, markdown, table_rows
from reel.engine.cli import app

TINY = ["--device", "cpu", "--steps", "2", "--rounds", "1"]


def bench(*args: str):
    return CliRunner().invoke(app, ["bench", *args])


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory, tiny_model) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    result = bench(str(tiny_model), *TINY, "--paths", "default,plain,flash3", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "bench.json").read_text())


def test_bench_times_reel_and_diffusers_on_the_same_weights(tiny_bench):
    out, res = tiny_bench
    assert list(res["sides"]) == ["diffusers", "default", "plain"]
    for name, side in res["sides"].items():
        assert side["s_per_step"] > 0 and side["denoise_s"] > 0 and side["decode_s"] > 0, name
        assert side["tflops"] > 0 and 0 < side["share_of_peak"], name
        assert len(side["rounds_s_per_step"]) == 1
    assert res["sides"]["diffusers"]["decode_export_s"] >= res["sides"]["diffusers"]["decode_s"]
    # the same weights, seed and sampler: reel's default frames match the pipeline's (CPU fp32)
    assert res["sides"]["default"]["psnr_db"] >= 40
    assert res["sides"]["default"]["vs_diffusers"] > 0
    assert res["step_flops"] > 0 and res["matmul_peak_tflops"] > 0
    assert res["shot"]["steps"] == 2 and res["device_type"] == "cpu" and res["random"] is None
    # a path that cannot run here is reported with its reasons, not run
    assert "CUDA" in res["skipped"]["flash3"]
    assert (out / "clips" / "default" / "shots" / "bench.mp4").is_file()
    assert not (out / "work").exists()


def test_bench_writes_markdown_and_a_png_chart(tiny_bench):
    out, res = tiny_bench
    md = (out / "bench.md").read_text()
    assert md == markdown(res)
    assert "CPU figures" in md and "| diffusers |" in md and "| default |" in md
    assert "| flash3 |" in md and "cannot run here" in md
    assert all(line.count("|") == 11 for line in md.splitlines() if line.startswith("| "))  # one cell each
    with Image.open(out / "bench.png") as img:
        assert img.format == "PNG" and img.width > 100


def test_record_adds_the_table_under_its_heading(tiny_bench, tmp_path):
    _, res = tiny_bench
    from reel.engine.bench_report import record

    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# results\n\n## other\n\ntext\n")
    assert record(res, results_md) == []  # a CPU run adds no rows to the measured table
    record(res, results_md)
    text = results_md.read_text()
    assert text.count(RESULTS_HEADING) == 1 and text.count("| default |") == 2
    assert text.startswith("# results\n\n## other\n\ntext\n")
    results_md.write_text(f"# r\n\n{RESULTS_HEADING}\n\nold\n\n## later\n\nkept\n")
    record(res, results_md)
    text = results_md.read_text()
    assert text.index("| default |") < text.index("## later") and text.endswith("## later\n\nkept\n")


def test_table_rows_of_a_cuda_run_compare_each_path_with_the_plain_one(tiny_bench, tmp_path):
    from reel.engine.measured import load_table, measured_choice, record_row

    _, res = tiny_bench
    cuda = json.loads(json.dumps(res)) | {"device_type": "cuda", "device": "NVIDIA H200"}
    cuda["sides"]["cudnn"] = dict(cuda["sides"]["default"], setting="attention", value="cudnn", lossy=False,
                                  s_per_step=cuda["sides"]["plain"]["s_per_step"] / 2)
    rows = table_rows(cuda)
    (row,) = [r for r in rows if r["value"] == "cudnn"]
    assert row["gpu"] == "NVIDIA H200" and row["setting"] == "attention" and row["speedup"] == pytest.approx(2, 1e-3)
    assert all(r["setting"] is not None for r in rows)
    assert row["other_settings"] == {"fused_kernels": "off", "compile": "off"}
    table = tmp_path / "measured.json"
    for r in rows:  # the rows --record writes are rows the measured table takes, and auto then reads them
        record_row(r, table)
    assert len(load_table(table)) == len(rows)
    assert measured_choice("attention", ["cudnn"], "NVIDIA H200", table)[0] == "cudnn"
    assert measured_choice("attention", ["cudnn"], "NVIDIA A100", table)[0] is None


def test_bench_a_scaled_down_shipped_config(tmp_path):
    out = tmp_path / "b"
    result = bench("wan2.1-t2v-1.3b", *TINY, "--shrink", "--width", "64", "--height", "64", "--frames", "5",
                   "--paths", "default", "--out", str(out))
    assert result.exit_code == 0, result.output
    res = json.loads((out / "bench.json").read_text())
    assert res["random"]["config"] == "wan2.1-t2v-1.3b" and res["random"]["shrink"] is True
    assert "RANDOM weights" in result.output and res["sides"]["default"]["psnr_db"] >= 40
    assert not (out / "work").exists()  # the random weights do not stay behind


@pytest.mark.parametrize("config", ["hunyuanvideo-1.5-t2v", "ltx-2", "skyreels-v2-df-1.3b-540p"])
def test_bench_the_new_families_shipped_configs(config, tmp_path):
    """Issue 26's families bench like the others: reel's default path against their diffusers pipeline (HunyuanVideo
    1.5's takes guidance through its guider and has no step callback)."""
    out = tmp_path / "b"
    result = bench(config, *TINY, "--shrink", "--paths", "default", "--out", str(out))
    assert result.exit_code == 0, result.output
    sides = json.loads((out / "bench.json").read_text())["sides"]
    assert sides["default"]["psnr_db"] >= 60 and sides["diffusers"]["s_per_step"] > 0, sides


@pytest.mark.parametrize("args, message", [
    (["--paths", "default,warp-drive"], "unknown path(s) warp-drive"),
    (["--shrink"], "--shrink scales a shipped config down"),
    (["--record", "--results", "/nonexistent/RESULTS.md"], "--record: /nonexistent/RESULTS.md does not exist"),
    (["--device", "cuda"], "torch.cuda.is_available() is False"),
])
def test_bad_input_fails_with_the_fix_and_writes_nothing(tiny_model, tmp_path, args, message):
    out = tmp_path / "out"
    result = bench(str(tiny_model), *TINY, *args, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (out / "bench.json").exists()


def test_bench_of_a_missing_model_names_it(tmp_path):
    result = bench(str(tmp_path / "nope"), *TINY, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "nope" in result.output and "built-in model" in result.output
    assert not (tmp_path / "out" / "bench.json").exists()


def test_rounds_must_be_positive(tiny_model, tmp_path):
    result = bench(str(tiny_model), "--device", "cpu", "--rounds", "0", "--out", str(tmp_path))
    assert result.exit_code == 2 and "rounds" in result.output


def test_a_spent_time_budget_reports_every_side_as_not_run(tiny_model, tmp_path):
    out = tmp_path / "out"
    result = bench(str(tiny_model), *TINY, "--paths", "default", "--budget", "0.000001", "--out", str(out))
    assert result.exit_code == 2
    assert "no reel path finished" in result.output and "time budget" in result.output
    assert not (out / "bench.json").exists() and not (out / "work").exists()


def test_bench_an_image_to_video_config_starts_both_sides_from_one_first_frame(tmp_path):
    out = tmp_path / "b"
    result = bench("wan2.1-i2v-14b", *TINY, "--shrink", "--width", "64", "--height", "64", "--frames", "5",
                   "--paths", "default", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    res = json.loads((out / "bench.json").read_text())
    assert res["sides"]["default"]["psnr_db"] >= 40  # the same image, weights and seed on both sides
