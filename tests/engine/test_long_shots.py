"""Long shots through the engine on a tiny random SkyReels-V2 diffusion-forcing folder (tests/models/
test_skyreels.py's) with a 17-frame window: `reel validate` shows the chunks, `reel render` stitches them into a
clip of exactly the shot's frames (from `seconds` too), the manifest records them, a seed locks the whole shot, the
estimator costs one window's memory, and a plain SkyReelsV2Pipeline folder never chunks. Offline, CPU."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.engine.estimate import estimate_film
from reel.engine.post.contact import read_video
from reel.engine.spec import load_film
from reel.models.long_shots import long_window
from reel.models.registry import resolve_model

FILM = """
[film]
title = "long"
model = "{model}"
seed = 5

[[shots]]
id = "long"
prompt = "a red circle moving left on a black background"
frames = 41

[[shots]]
id = "short"
prompt = "a blue square moving up on a black background"
frames = 9

[[shots]]
id = "timed"
prompt = "a green triangle moving right on a black background"
seconds = 1.25
"""


@pytest.fixture(scope="module")
def df_folder(tmp_path_factory):
    from tests.models.test_skyreels import build_tiny_skyreels

    folder = build_tiny_skyreels(tmp_path_factory.mktemp("df") / "model")
    reel = json.loads((folder / "reel.json").read_text())
    (folder / "reel.json").write_text(json.dumps({**reel, "window_frames": 17, "overlap_frames": 5}))
    return folder


def test_long_shots_render_in_chunks_stitched_to_their_frames(df_folder, tmp_path):
    spec = tmp_path / "film.toml"
    spec.write_text(textwrap.dedent(FILM).replace("{model}", str(df_folder)))
    checked = CliRunner().invoke(app, ["validate", str(spec)])
    assert checked.exit_code == 0, checked.output
    assert "shot long: 41 frames, longer than the model's window — 3 chunks of at most 5 latent frames " \
           "(window_frames = 17): frames 0-16, 9-28, 21-40" in checked.output
    assert "shot timed: 33 frames" in checked.output  # 1.25 s at 24 fps: 31 frames -> 33 (4k+1)
    assert "shot short" not in checked.output
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for sid, frames in (("long", 41), ("short", 9), ("timed", 33)):
        clip, fps = read_video(out / "shots" / f"{sid}.mp4")
        assert clip.shape[0] == frames and fps == 24 and clip.std() > 1.0, sid
    manifest = json.loads((out / "shots" / "long.json").read_text())
    assert manifest["long_shot"] == {"window": 17, "overlap": 5, "chunks": [[0, 17], [9, 29], [21, 41]]}
    assert json.loads((out / "shots" / "short.json").read_text())["long_shot"] is None
    film, _ = read_video(out / "film.mp4")
    assert film.shape[0] == 41 + 9 + 33
    again = CliRunner().invoke(app, ["render", str(spec), "--out", str(tmp_path / "again"), "--device", "cpu",
                                     "--shots", "long"])
    assert again.exit_code == 0, again.output
    a, _ = read_video(out / "shots" / "long.mp4")
    b, _ = read_video(tmp_path / "again" / "shots" / "long.mp4")
    assert np.array_equal(a, b)  # the seed locks every chunk


def test_the_estimate_of_a_long_shot_holds_one_windows_memory(df_folder, tmp_path):
    spec = tmp_path / "film.toml"
    spec.write_text(textwrap.dedent(FILM).replace("{model}", str(df_folder)).replace("frames = 9", "frames = 17"))
    est = estimate_film(load_film(spec), "h100")
    long, window = est.shots[0], est.shots[1]
    assert long.frames == 41 and window.frames == 17
    assert long.memory["peak"] == window.memory["peak"]  # flat in the shot's length
    assert long.seconds_denoise == pytest.approx(3 * window.seconds_denoise, rel=0.5)  # three chunks' steps


def test_a_plain_skyreels_folder_has_no_window(tmp_path):
    from tests.models.test_skyreels import build_tiny_skyreels

    plain = resolve_model(str(build_tiny_skyreels(tmp_path / "plain", pipeline="SkyReelsV2Pipeline")))
    assert long_window(plain) == (0, 0)
    assert long_window(resolve_model("shapes")) == (0, 0)  # Wan: no long-shot scheme, no chunks
