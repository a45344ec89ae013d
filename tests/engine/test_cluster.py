"""The render farm on a local Ray instance with CPU workers: same store and manifests, resume, a killed
worker replaced without losing or duplicating a shot, a clear error without Ray."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.engine.plan import build_plan
from reel.engine.post.contact import read_video
from reel.engine.spec import load_film

ray = pytest.importorskip("ray", reason="the render farm needs the optional Ray extra")
runner = CliRunner()

FILM = """
[film]
model = "{model}"
seed = 12
steps = 4

[[shots]]
id = "a"
prompt = "a red circle moving left"

[[shots]]
id = "b"
prompt = "a blue square moving up"

[[shots]]
id = "c"
prompt = "a green triangle moving down"
frames = 5

[[shots]]
id = "d"
prompt = "a white circle moving right"
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_cluster_render_matches_local_and_resumes(local_ray, write_spec, tmp_path):
    spec = write_spec(FILM)
    farm, local = tmp_path / "farm", tmp_path / "local"
    result = runner.invoke(app, ["render", str(spec), "--out", str(farm), "--cluster", "auto", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "4 rendered, 0 reused" in result.output
    assert runner.invoke(app, ["render", str(spec), "--out", str(local), "-q", "--threads", "1"]).exit_code == 0
    for sid in "abcd":
        a, _ = read_video(farm / "shots" / f"{sid}.mp4")
        b, _ = read_video(local / "shots" / f"{sid}.mp4")
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 2
        m = json.loads((farm / "shots" / f"{sid}.json").read_text())
        assert m["fingerprint"] == json.loads((local / "shots" / f"{sid}.json").read_text())["fingerprint"]
    frames, _ = read_video(farm / "film.mp4")
    assert frames.shape[0] == 9 + 9 + 5 + 9
    assert not list(farm.rglob("*.tmp-*"))
    result = runner.invoke(app, ["render", str(spec), "--out", str(farm), "--cluster", "auto"])
    assert "0 rendered, 4 reused" in result.output


def test_killed_worker_is_replaced_and_nothing_is_lost(local_ray, write_spec, tmp_path):
    from reel.engine.cluster import render_on_cluster

    plan = build_plan(load_film(write_spec(FILM.replace("steps = 4", "steps = 40"))))
    events, killed = [], []

    def on_event(event):
        events.append(event)
        if event.kind == "started" and not killed and event.pid:
            killed.append(event.pid)
            threading.Timer(0.3, os.kill, (event.pid, signal.SIGKILL)).start()

    out = tmp_path / "out"
    result = render_on_cluster(plan, out, address="auto", workers=2, on_event=on_event)
    kinds = [e.kind for e in events]
    assert "replaced" in kinds, kinds
    assert sorted(e.batch[0] for e in events if e.kind == "finished") == ["a", "b", "c", "d"]  # each exactly once
    assert result.film_video is not None and result.film_video.is_file()
    for sid in "abcd":
        clip, _ = read_video(out / "shots" / f"{sid}.mp4")
        assert clip.shape[0] == (5 if sid == "c" else 9)
        json.loads((out / "shots" / f"{sid}.json").read_text())
    assert not list(out.rglob("*.tmp-*"))


def test_cluster_without_ray_says_what_to_install(write_spec, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(write_spec(FILM)), "--out", str(out), "--cluster", "local"])
    assert result.exit_code == 1 and "pip install 'reel[cluster]'" in result.output and not out.exists()


def test_continue_from_shots_wait_for_their_source_on_the_farm(local_ray, tmp_path):
    from PIL import Image

    from reel.models.tiny import build_tiny_wan

    model = build_tiny_wan(tmp_path / "ti2v", variant="ti2v")
    Image.new("RGB", (32, 32), (200, 40, 40)).save(tmp_path / "first.png")
    spec = tmp_path / "film.toml"
    spec.write_text(f"""
[film]
model = "{model}"
steps = 3

[[shots]]
id = "second"
prompt = "a blue square"
continue_from = "first"

[[shots]]
id = "first"
prompt = "a red circle"
image = "first.png"

[[shots]]
id = "third"
prompt = "a green triangle"
continue_from = "second"
""")
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "--cluster", "auto", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "3 rendered, 0 reused" in result.output
    local = tmp_path / "local"
    assert runner.invoke(app, ["render", str(spec), "--out", str(local), "-q", "--threads", "1"]).exit_code == 0
    for sid in ("first", "second", "third"):
        farm_m = json.loads((out / "shots" / f"{sid}.json").read_text())
        assert farm_m["fingerprint"] == json.loads((local / "shots" / f"{sid}.json").read_text())["fingerprint"]


def test_shots_with_their_own_sound_come_back_from_the_farm(local_ray, tmp_path):
    """LTX-2 shots keep their WAV beside the clip on the driver too, so the film assembles with their sound and a
    second run reuses them."""
    from tests.models.test_ltx2 import build_tiny_ltx2

    from reel.engine.post.probe import probe

    folder = build_tiny_ltx2(tmp_path / "ltx2")
    spec = tmp_path / "film.toml"
    spec.write_text(f'[film]\nmodel = "{folder}"\nseed = 4\n[[shots]]\nid = "a"\nprompt = "a red circle"\n'
                    '[[shots]]\nid = "b"\nprompt = "a blue square"\n')
    farm = tmp_path / "farm"
    result = runner.invoke(app, ["render", str(spec), "--out", str(farm), "--cluster", "auto", "--workers", "2"])
    assert result.exit_code == 0 and "2 rendered, 0 reused" in result.output, result.output
    assert (farm / "shots" / "a.wav").is_file() and (farm / "shots" / "b.wav").is_file()
    assert probe(farm / "film.mp4").audio
    again = runner.invoke(app, ["render", str(spec), "--out", str(farm), "--cluster", "auto"])
    assert "0 rendered, 2 reused" in again.output, again.output
