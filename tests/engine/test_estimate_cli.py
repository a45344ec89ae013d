"""`reel estimate`: a readable prediction for a film, before or after downloading its model."""

from __future__ import annotations

from typer.testing import CliRunner

from reel.engine.cli import app

runner = CliRunner()
SPEC = '[film]\nmodel = "{model}"\n[[shots]]\nid = "a"\nprompt = "x"\n[[shots]]\nid = "b"\nprompt = "y"\nframes = 13\n'


def test_estimate_film_on_a_gpu(write_spec):
    result = runner.invoke(app, ["estimate", str(write_spec(SPEC)), "--gpu", "h100"])
    assert result.exit_code == 0, result.output
    assert "H100" in result.output and "peak" in result.output and "MFU 0.40" in result.output


def test_estimate_a_shipped_config_recommends_offload_on_a_small_card(write_spec):
    result = runner.invoke(app, ["estimate", str(write_spec(SPEC)), "--gpu", "4090", "--model-config",
                                 "wan2.1-t2v-14b"])
    assert result.exit_code == 0, result.output
    assert "does not fit in 24 GB" in result.output and "--offload" in result.output


def test_estimate_bad_gpu_and_config(write_spec):
    result = runner.invoke(app, ["estimate", str(write_spec(SPEC)), "--gpu", "b200"])
    assert result.exit_code == 2 and "known GPUs: h100" in result.output
    result = runner.invoke(app, ["estimate", str(write_spec(SPEC)), "--gpu", "h100", "--model-config", "sora"])
    assert result.exit_code == 2 and "wan2.1-t2v-14b" in result.output
