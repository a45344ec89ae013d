"""`reel models` and `reel doctor` say what runs here and how to fix what doesn't."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner

from reel.engine.cli import app

runner = CliRunner()


def test_models_lists_families_and_found_folders(tiny_model, tmp_path):
    lib = tmp_path / "lib"
    shutil.copytree(tiny_model, lib / "tiny")
    (lib / "broken").mkdir()
    (lib / "broken" / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    result = runner.invoke(app, ["models", "--search", str(lib)])
    assert result.exit_code == 0, result.output
    from reel.models.registry import FAMILIES

    assert len(FAMILIES) >= 7  # issue 26 added skyreels, hunyuan15 and ltx2
    for family in FAMILIES:
        assert f"  {family}" in result.output
    assert "huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in result.output
    assert f"{lib / 'tiny'}: wan (WanPipeline), frames 4k+1, sizes multiple of 8" in result.output
    assert "not usable" in result.output and "FluxPipeline" in result.output


def test_doctor_reports_devices_encoders_and_backends():
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    for needle in ("torch ", "ffmpeg:", "h264 ok", "sdpa           ok", "disk output", "status:"):
        assert needle in result.output
