"""`reel takes` and `reel pick` on the built-in model: distinct recorded seeds, the comparison sheet, the spec edited
in one line only, a picked final reused by `reel render`, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.engine.plan import stable_seed

SPEC = """\
# a film with comments that must survive a pick
[film]
title = "Takes"   # kept
model = "shapes"
seed = 7

[[shots]]
id = "a"
prompt = "a red circle moving right on a black background"

[[shots]]
id = "b"  # the shot we take
prompt = "a blue square moving up on a gray background"
frames = 9
"""


def cli(*args: str):
    return CliRunner().invoke(app, [*args])


@pytest.fixture
def film(tmp_path) -> Path:
    path = tmp_path / "film.toml"
    path.write_text(SPEC)
    return path


def test_preview_takes_have_distinct_recorded_seeds_and_a_sheet(film, tmp_path):
    out = tmp_path / "out"
    result = cli("takes", str(film), "--shot", "b", "-n", "3", "--out", str(out), "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "takes" / "b" / "takes.json").read_text())
    seeds = [t["seed"] for t in record["takes"]]
    assert len(set(seeds)) == 3 and seeds[0] == stable_seed(7, "b")  # take 1 is the shot as the spec renders it
    assert seeds[1] == stable_seed(seeds[0], "take-2") and record["picked"] is None
    for t in record["takes"]:
        assert t["kind"] == "preview" and (out / "takes" / "b" / t["video"]).is_file()
        assert json.loads((out / "takes" / "b" / t["manifest"]).read_text())["seed"] == t["seed"]
    with Image.open(out / "takes" / "b" / record["preview_sheet"]) as sheet:
        assert sheet.height > 3 * 16  # a row per take
    again = cli("takes", str(film), "--shot", "b", "-n", "3", "--out", str(out), "--device", "cpu", "-q")
    assert again.exit_code == 0 and again.output.count("(reused)") == 3  # the same seeds: nothing new to render


def test_a_picked_final_is_locked_into_the_spec_and_never_rendered_again(film, tmp_path):
    out = tmp_path / "out"
    result = cli("takes", str(film), "--shot", "b", "-n", "2", "--final", "--out", str(out), "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "takes" / "b" / "takes.json").read_text())
    seed2 = record["takes"][1]["seed"]
    picked = cli("pick", "b", "2", "--out", str(out))
    assert picked.exit_code == 0 and "its final is in place" in picked.output
    expected = SPEC.replace('frames = 9\n', f'frames = 9\nseed = {seed2}\n')
    assert film.read_text() == expected  # one line added, every comment and format kept
    render = cli("render", str(film), "--out", str(out), "--device", "cpu", "--shots", "a,b")
    assert render.exit_code == 0, render.output
    assert "1 rendered, 1 reused" in render.output
    manifest = json.loads((out / "shots" / "b.json").read_text())
    assert manifest["seed"] == seed2 and manifest["take"] == {"take": 2, "seed": seed2, "of": [1, 2]}
    record = json.loads((out / "takes" / "b" / "takes.json").read_text())
    assert record["picked"] == {"take": 2, "seed": seed2, "final_reused": True, "preview_reused": False}


def test_picking_a_preview_take_locks_its_seed_for_the_final(film, tmp_path):
    out = tmp_path / "out"
    assert cli("takes", str(film), "--shot", "a", "-n", "2", "--out", str(out), "--device", "cpu", "-q").exit_code == 0
    picked = cli("pick", "a", "1", "--out", str(out))
    assert picked.exit_code == 0 and "`reel render` renders its final" in picked.output
    assert f"seed = {stable_seed(7, 'a')}" in film.read_text()
    preview = cli("preview", str(film), "--out", str(out), "--device", "cpu", "--shots", "a")
    assert preview.exit_code == 0 and "0 rendered, 1 reused" in preview.output  # the picked preview take


@pytest.mark.parametrize("args, message", [
    (["--shot", "zz"], "no such shot"),
    (["--shot", "b", "-n", "0"], "between 1 and 16"),
    (["--shot", "b", "-n", "17"], "between 1 and 16"),
])
def test_takes_refusals(film, tmp_path, args, message):
    result = cli("takes", str(film), *args, "--out", str(tmp_path / "out"), "--device", "cpu", "-q")
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out" / "takes").exists() or not any((tmp_path / "out" / "takes").rglob("*.mp4"))


def test_pick_refusals(film, tmp_path):
    out = tmp_path / "out"
    result = cli("pick", "b", "1", "--out", str(out))
    assert result.exit_code == 2 and "no takes of shot b" in result.output
    assert cli("takes", str(film), "--shot", "b", "-n", "1", "--out", str(out), "--device", "cpu", "-q").exit_code == 0
    result = cli("pick", "b", "5", "--out", str(out))
    assert result.exit_code == 2 and "no take 5" in result.output and "its takes are 1" in result.output
    film.write_text(SPEC.replace('id = "b"', 'id = "renamed"').replace('"b"\n', '"renamed"\n'))
    before = film.read_text()
    result = cli("pick", "b", "1", "--out", str(out))
    assert result.exit_code == 2 and 'no [[shots]] table with id = "b"' in result.output
    assert film.read_text() == before  # nothing half-written
