"""`reel render` end to end on a tiny random Wan model: clips, film, manifests, seeds, resume, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.engine.plan import build_plan
from reel.engine.post.contact import read_video
from reel.engine.progress import RenderProgress
from reel.engine.runtime import Engine
from reel.engine.spec import load_film
from tests.conftest import probe

FILM = """
[film]
title = "Tiny"
model = "{model}"
seed = 3
fps = 8
steps = 3

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"

[[shots]]
id = "b"
prompt = "a blue square moving up on a gray background"
frames = 5

[[shots]]
id = "c"
prompt = "a green triangle moving down on a navy background"
"""

runner = CliRunner()


def render(spec, out, *extra):
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu", *extra])
    return result


def test_render_film_end_to_end(write_spec, tmp_path):
    spec = write_spec(FILM)
    out = tmp_path / "out"
    result = render(spec, out)
    assert result.exit_code == 0, result.output
    assert "3 rendered, 0 reused" in result.output
    frames, fps = read_video(out / "film.mp4")
    assert frames.shape == (9 + 5 + 9, 32, 32, 3) and fps == 8
    for sid, n in (("a", 9), ("b", 5), ("c", 9)):
        clip, _ = read_video(out / "shots" / f"{sid}.mp4")
        assert clip.shape == (n, 32, 32, 3)
        m = json.loads((out / "shots" / f"{sid}.json").read_text())
        assert m["shot_id"] == sid and m["frames"] == n and m["fps"] == 8 and m["steps"] == 3
        assert m["scheduler"] == "unipc" and m["shift"] == 3.0 and m["device"] == "cpu"
        assert m["model"]["weights_hash"].startswith("sha256:") and len(m["model"]["weights_hash"]) == 71
        assert {"torch", "diffusers", "transformers"} <= set(m["versions"])
        assert {"encoder_start_s", "text_encode_s", "denoise_s", "decode_encode_s", "total_s",
                "s_per_step"} <= set(m["timings"])
    film = json.loads((out / "film.json").read_text())
    assert [s["id"] for s in film["shots"]] == ["a", "b", "c"]
    assert film["frames"] == 23 and film["shots"][0]["manifest"] == "shots/a.json"
    assert "h264" in probe(out / "film.mp4")
    assert not list(out.rglob("*.tmp-*"))


def test_identical_reruns_and_seed_stability_under_edits(write_spec, tmp_path):
    first, second, edited = tmp_path / "1", tmp_path / "2", tmp_path / "3"
    assert render(write_spec(FILM), first).exit_code == 0
    assert render(write_spec(FILM), second, "--quiet").exit_code == 0
    # reorder, drop a shot, add one: shot "a" keeps its seed and its pixels
    shots = FILM.split("[[shots]]")
    edited_spec = shots[0] + "[[shots]]" + shots[3] + '[[shots]]\nid = "new"\nprompt = "a white circle"\n' \
        + "[[shots]]" + shots[1]
    assert render(write_spec(edited_spec, "edited.toml"), edited).exit_code == 0
    a1, a2, a3 = (read_video(d / "shots" / "a.mp4")[0] for d in (first, second, edited))
    assert np.array_equal(a1, a2) and np.array_equal(a1, a3)
    c1, c3 = read_video(first / "shots" / "c.mp4")[0], read_video(edited / "shots" / "c.mp4")[0]
    assert np.array_equal(c1, c3)
    seed_a = [json.loads((d / "shots" / "a.json").read_text())["seed"] for d in (first, edited)]
    assert seed_a[0] == seed_a[1]
    assert not np.array_equal(a1, c1)


def test_resume_force_and_subset(write_spec, tmp_path):
    spec, out = write_spec(FILM), tmp_path / "out"
    result = render(spec, out, "--shots", "b")
    assert result.exit_code == 0 and "not assembled" in result.output
    assert not (out / "film.mp4").exists() and (out / "shots" / "b.mp4").exists()
    mtime_b = (out / "shots" / "b.mp4").stat().st_mtime_ns
    result = render(spec, out)
    assert "2 rendered, 1 reused" in result.output and "shot b: unchanged" in result.output
    assert (out / "shots" / "b.mp4").stat().st_mtime_ns == mtime_b
    film = json.loads((out / "film.json").read_text())
    assert [s["status"] for s in film["shots"]] == ["rendered", "reused", "rendered"]
    result = render(spec, out)
    assert "0 rendered, 3 reused" in result.output and "film unchanged" in result.output
    result = render(spec, out, "--force", "--shots", "a")
    assert "1 rendered, 0 reused" in result.output
    # an edited shot is rendered again, the others are reused
    spec2 = write_spec(FILM.replace("moving up on a gray", "moving down on a gray"), "film2.toml")
    result = render(spec2, out)
    assert "1 rendered, 2 reused" in result.output and "shot b:" in result.output


class StopAtStep(RenderProgress):
    """A progress display that interrupts the render like Ctrl-C at a given shot and step."""

    def __init__(self, shot_id, step):
        super().__init__(quiet=True)
        self.shot_id, self.at = shot_id, step

    def step(self, state):
        if self.shot_id in state.shot_ids and state.step == self.at:
            raise KeyboardInterrupt


def test_interrupted_render_leaves_no_partial_files(write_spec, tmp_path):
    plan = build_plan(load_film(write_spec(FILM)))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        Engine("cpu", progress=StopAtStep("b", 2)).render(plan, out)
    names = sorted(p.name for p in out.rglob("*") if p.is_file() and p.name != ".reel.lock")
    assert names == ["a.json", "a.mp4"]  # shot a finished, b was interrupted, c never started
    result = render(write_spec(FILM), out)
    assert "2 rendered, 1 reused" in result.output


@pytest.mark.parametrize("body,needle", [
    (FILM.replace("frames = 5", "frames = 6"), "shots[1].frames (shot 'b'): 6 frames"),
    (FILM.replace('id = "c"', 'id = "../c"'), "shots[2].id: '../c' cannot be a file name"),
    (FILM.replace("steps = 3", "stepz = 3"), "did you mean 'steps'"),
])
def test_bad_spec_exits_2_and_writes_nothing(write_spec, tmp_path, body, needle):
    out = tmp_path / "out"
    result = render(write_spec(body), out)
    assert result.exit_code == 2
    assert needle in result.output and "film.toml" in result.output
    assert not out.exists()


def test_bad_flags_exit_2(write_spec, tmp_path):
    spec, out = write_spec(FILM), tmp_path / "out"
    result = render(spec, out, "--shots", "zz")
    assert result.exit_code == 2 and "its shots are: a, b, c" in result.output and not out.exists()
    result = render(spec, out, "--device", "tpu")
    assert result.exit_code == 2 and "use auto, cpu, cuda" in result.output
    (tmp_path / "file").write_text("x")
    result = render(spec, tmp_path / "file")
    assert result.exit_code == 2 and "not a folder" in result.output


def test_validate_and_help(write_spec):
    result = runner.invoke(app, ["validate", str(write_spec(FILM))])
    assert result.exit_code == 0 and "ok — 3 shot(s)" in result.output
    for cmd in ("render", "validate", "demo"):
        result = runner.invoke(app, [cmd, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
