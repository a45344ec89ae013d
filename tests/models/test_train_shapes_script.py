"""scripts/train_shapes_model.py end to end at smoke size: a whole run (VAE, latent cache, transformer,
export) into a temporary folder, then `--from-weights` continuing that export's transformer, and the
mistakes it must refuse with a message naming the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_shapes_model.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--threads", "1", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    smoke = tmp_path_factory.mktemp("smoke")
    done = run("--stage", "all", "--smoke", "--smoke-dir", str(smoke))
    assert done.returncode == 0, done.stderr[-2000:]
    return smoke


def test_smoke_run_writes_everything_inside_its_folder(smoke_run):
    assert (smoke_run / "state.pt").is_file()
    assert (smoke_run / "weights" / "model_index.json").is_file()
    assert len(list(smoke_run.glob("latents_*/shard_000.pt"))) == 1  # its cache, not in models/shapes/runs
    reel = json.loads((smoke_run / "weights" / "reel.json").read_text())
    assert reel["trained"]["transformer_steps"] == 6


def test_from_weights_continues_the_export_and_keeps_its_records(smoke_run, tmp_path):
    # the export of a finished model carries records written after training (preview adapters, VAE widening)
    weights = tmp_path / "weights"
    subprocess.run(["cp", "-r", str(smoke_run / "weights"), str(weights)], check=True)
    reel = json.loads((weights / "reel.json").read_text())
    reel["preview"] = {"lora": "../adapters/preview.safetensors", "steps": 4}
    (weights / "reel.json").write_text(json.dumps(reel))
    smoke = tmp_path / "continued"
    smoke.mkdir()
    (smoke / "latents_old").symlink_to(next(smoke_run.glob("latents_*")), target_is_directory=True)
    done = run("--stage", "all", "--smoke", "--smoke-dir", str(smoke), "--from-weights", str(weights),
               "--set", "tr_steps=9")
    assert done.returncode == 0, done.stderr[-2000:]
    log = (smoke / "progress.log").read_text()
    assert "step=6 total=9" in log  # it started from the export's step, not from scratch
    assert "cache " not in log  # trained on the existing cache, not a rebuilt one
    out = json.loads((smoke / "weights" / "reel.json").read_text())
    assert out["trained"]["transformer_steps"] == 9 and out["trained"]["continued_from_step"] == 6
    assert out["preview"] == reel["preview"]


def test_a_continued_run_stopped_early_resumes_its_phase(smoke_run, tmp_path):
    import torch

    smoke = tmp_path / "continued"
    smoke.mkdir()
    (smoke / "latents_old").symlink_to(next(smoke_run.glob("latents_*")), target_is_directory=True)
    common = ["--stage", "all", "--smoke", "--smoke-dir", str(smoke)]
    done = run(*common, "--from-weights", str(smoke_run / "weights"), "--set", "tr_steps=9", "--max-steps", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(smoke / "state.pt", weights_only=False)
    assert state["tr_step"] == 7 and state["config"]["tr_restart"] == 6 and state["cache_name"] == "latents_old"
    done = run(*common, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(smoke / "state.pt", weights_only=False)
    assert state["tr_step"] == 9 and state["config"]["tr_restart"] == 6 and state["stage"] == "done"
    assert json.loads((smoke / "weights" / "reel.json").read_text())["trained"]["continued_from_step"] == 6


@pytest.mark.parametrize("case", ["no_more_steps", "not_an_export", "half_an_export", "checkpoint_exists",
                                  "other_sizes"])
def test_from_weights_refuses_mistakes(smoke_run, tmp_path, case):
    weights, smoke, extra = smoke_run / "weights", tmp_path / "s", ["--set", "tr_steps=9"]
    smoke.mkdir()
    if case == "no_more_steps":
        extra, expect = ["--set", "tr_steps=6"], "pass --set tr_steps=N with N > 6"
    elif case == "not_an_export":
        weights, expect = tmp_path, "no reel.json there"
    elif case == "half_an_export":
        weights = tmp_path / "half"
        weights.mkdir()
        (weights / "reel.json").write_text((smoke_run / "weights" / "reel.json").read_text())
        expect = "no vae, transformer, text_encoder folder with a config.json"
    elif case == "other_sizes":
        extra, expect = ["--set", "tr_steps=9", "ffn_dim=256"], "add --set ffn_dim=512"
    else:
        (smoke / "state.pt").write_bytes((smoke_run / "state.pt").read_bytes())
        extra, expect = ["--resume", "--set", "tr_steps=9"], "drop --from-weights and pass --resume"
    done = run("--stage", "all", "--smoke", "--smoke-dir", str(smoke), "--from-weights", str(weights), *extra)
    assert done.returncode != 0
    assert expect in done.stderr, done.stderr[-2000:]
    assert not (smoke / "weights").exists()
