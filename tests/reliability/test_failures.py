"""Failures a render must survive: a busy output folder, a full disk, out-of-memory, corrupt weights,
an unwritable output folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest
import torch
from typer.testing import CliRunner

from benchmarks.killtest import check_outputs, make_spec
from reel.engine.cli import app
from reel.engine.plan import build_plan
from reel.engine.runtime import Engine, OutOfMemory
from reel.engine.spec import load_film
from reel.engine.store import RenderStore

runner = CliRunner()


def test_second_render_on_a_busy_folder_is_refused(tiny_model, tmp_path):
    spec = make_spec(tmp_path, str(tiny_model), shots=2, steps=3)
    out = tmp_path / "out"
    with RenderStore(out).locked():  # as if another reel process were rendering here
        result = runner.invoke(app, ["render", str(spec), "--out", str(out)])
        assert result.exit_code == 2 and "in use by another reel process" in result.output
        assert f"pid {os.getpid()}" in result.output
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output  # the lock died with its holder


def test_two_processes_on_one_folder(tiny_model, tmp_path):
    spec = make_spec(tmp_path, str(tiny_model), shots=3, steps=300)  # slow enough to overlap
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(shutil.which("python") or "python"), "-m", "reel.engine.cli",
           "render", str(spec), "--out", str(out), "-q"]
    import sys

    cmd[0] = sys.executable
    first = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env)
    import time

    while not (out / ".reel.lock").is_file() or not (out / ".reel.lock").read_text().strip():
        time.sleep(0.05)
        assert first.poll() is None
    second = subprocess.run(cmd, stderr=subprocess.PIPE, env=env)
    assert first.wait() == 0
    if second.returncode == 0:
        pytest.skip("the first render finished before the second started")
    assert second.returncode == 2 and b"in use by another reel process" in second.stderr
    complete, bad = check_outputs(out)
    assert complete == 3 and bad == []


def test_out_of_memory_halves_the_batch_then_gives_advice(tiny_model, tmp_path):
    spec = make_spec(tmp_path, str(tiny_model), shots=4, steps=2)
    plan = build_plan(load_film(spec), batch_size=4)
    engine = Engine("cpu")
    seen = []

    def oom_when_batched(jobs):
        seen.append(len(jobs))
        if len(jobs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    engine.fault_hook = oom_when_batched
    result = engine.render(plan, tmp_path / "out")
    assert seen == [4, 2, 1, 1, 2, 1, 1] and result.film_video.is_file()
    engine2 = Engine("cpu")
    engine2.fault_hook = lambda jobs: (_ for _ in ()).throw(torch.OutOfMemoryError("injected"))
    with pytest.raises(OutOfMemory, match="does not fit in memory even alone, with group offload and VAE tiling"):
        engine2.render(build_plan(load_film(spec)), tmp_path / "out2")
    assert engine2._memory_savers  # the memory savers were tried before giving up


def test_out_of_memory_mid_denoise_kills_the_started_encoders(tiny_model, tmp_path, monkeypatch):
    """A batch starts its clip encoders before denoising; an out-of-memory error inside the denoise must stop
    them and remove their temporary files before the halved batch runs."""
    import reel.engine.runtime as runtime

    spec = make_spec(tmp_path, str(tiny_model), shots=4, steps=2)
    real = runtime.sample
    seen = []

    def sample_oom_when_batched(sampler, denoiser, noise, *args, **kw):
        seen.append(noise.shape[0])
        if noise.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected mid-denoise)")
        return real(sampler, denoiser, noise, *args, **kw)

    monkeypatch.setattr(runtime, "sample", sample_oom_when_batched)
    out = tmp_path / "out"
    result = Engine("cpu").render(build_plan(load_film(spec), batch_size=4), out)
    assert seen[0] == 4 and 1 in seen and result.film_video.is_file()
    assert not list(out.rglob("*.tmp-*"))  # no encoder's partial file left behind
    complete, bad = check_outputs(out)
    assert complete == 4 and bad == []


def test_corrupt_or_truncated_weights_are_named(tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    spec = make_spec(tmp_path, str(model), shots=1, steps=2)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(spec), "--out", str(out)])
    assert result.exit_code == 2 and str(weights) in result.output and "truncated" in result.output
    assert not out.exists()
    weights.write_bytes(b"\x00" * 100)
    result = runner.invoke(app, ["render", str(spec), "--out", str(out)])
    assert result.exit_code == 2 and "not a safetensors file" in result.output
    (model / "vae" / "config.json").write_text("{broken")
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and "vae/config.json cannot be read as JSON" in result.output


def test_unwritable_output_folder(tiny_model, tmp_path):
    if os.geteuid() == 0:
        target = "/proc/reel-out"  # root may write anywhere on disk; /proc refuses even root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "out")
    spec = make_spec(tmp_path, str(tiny_model), shots=1, steps=2)
    result = runner.invoke(app, ["render", str(spec), "--out", target])
    assert result.exit_code in (1, 2) and "error:" in result.output and "Traceback" not in result.output


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs mounted for the test (needs root); a filler file takes most of it."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_fails_clearly_and_resumes(tiny_model, tmp_path, small_disk):
    spec = make_spec(tmp_path, str(tiny_model), shots=6, steps=2)
    filler = small_disk / f"filler-{uuid.uuid4().hex}"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * (free - 60_000))  # room for a few clips only
    out = small_disk / "out"
    result = runner.invoke(app, ["render", str(spec), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "no space left" in result.output and "run the same command again" in result.output
    complete, bad = check_outputs(out)
    assert bad == [] and not list(out.rglob("*.tmp-*"))
    filler.unlink()
    result = runner.invoke(app, ["render", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{6 - complete} rendered, {complete} reused" in result.output
    assert json.loads((out / "film.json").read_text())["frames"] == 6 * 9
