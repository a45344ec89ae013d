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


def _opted_in(folder, tmp_path, **reel_json):
    """A copy of a model folder whose reel.json gains `reel_json`."""
    import shutil

    copy = tmp_path / "opted"
    shutil.copytree(folder, copy)
    reel = json.loads((copy / "reel.json").read_text()) if (copy / "reel.json").is_file() else {}
    (copy / "reel.json").write_text(json.dumps({**reel, **reel_json}))
    return copy


def test_a_wan_folder_opts_into_diffusion_forcing_by_its_reel_json(tiny_model, tmp_path):
    """Wan transformers take per-frame timesteps (as per-token ones): a T2V folder whose reel.json says
    "long_shots": "diffusion-forcing" renders long shots in chunks; without it the shot is one pass."""
    folder = _opted_in(tiny_model, tmp_path, long_shots="diffusion-forcing", window_frames=9, overlap_frames=5)
    assert long_window(resolve_model(str(folder))) == (9, 5) and long_window(resolve_model(str(tiny_model))) == (0, 0)
    spec = tmp_path / "film.toml"
    spec.write_text(f'[film]\nmodel = "{folder}"\nseed = 2\n[[shots]]\nid = "a"\nprompt = "a red circle"\n'
                    'frames = 25\n')
    checked = CliRunner().invoke(app, ["validate", str(spec)])
    assert checked.exit_code == 0 and "shot a: 25 frames, longer than the model's window — 5 chunks" in checked.output
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    clip, _ = read_video(tmp_path / "out" / "shots" / "a.mp4")
    assert clip.shape[0] == 25 and clip.std() > 1.0


def test_a_wan_folder_without_the_opt_in_refuses_per_frame_timesteps(tiny_model):
    import torch

    from reel.models import wan

    comps = wan.load(tiny_model, torch.device("cpu"), torch.float32)
    latents = torch.zeros(1, *wan.latent_shape(comps, 9, 32, 32))
    with pytest.raises(ValueError, match="has not opted into"):
        wan.velocity(comps, latents, torch.zeros(1, latents.shape[2]), torch.zeros(1, 4, 32))
    with pytest.raises(ValueError, match="no long-shot scheme"):
        next(iter(wan.render_long(comps, None, frames=25, height=32, width=32, window=9, overlap=5, steps=1,
                                  shift=1.0, seed=0, scheduler="euler")))


@pytest.mark.parametrize("value,message", [("bogus", "the scheme reel knows is"), ("diffusion-forcing", None)])
def test_reel_json_long_shots_is_checked(tiny_model, tmp_path, value, message):
    from reel.engine.spec import SpecError

    folder = _opted_in(tiny_model, tmp_path, long_shots=value, window_frames=10)
    spec = tmp_path / "film.toml"
    spec.write_text(f'[film]\nmodel = "{folder}"\n[[shots]]\nid = "a"\nprompt = "a red circle"\n')
    with pytest.raises(SpecError) as info:
        load_film(spec)
    text = " ".join(m for _, m in info.value.problems)
    assert (message or "window_frames = 10: a chunk needs 4k+1 frames") in text


def test_the_step_cache_is_refused_where_diffusers_cannot_cache(df_folder, tmp_path):
    """diffusers' First-Block-Cache has no entry for SkyReels-V2's (nor HunyuanVideo 1.5's, LTX-2's) blocks: the
    spec and the flag say so instead of a traceback mid-render."""
    from reel.engine.spec import SpecError

    spec = tmp_path / "film.toml"
    spec.write_text(textwrap.dedent(FILM).replace("{model}", str(df_folder)) + "\n[speed]\nstep_cache = 0.1\n")
    with pytest.raises(SpecError) as info:
        load_film(spec)
    assert any(f == "speed.step_cache" and "no step cache" in m for f, m in info.value.problems)
    spec.write_text(textwrap.dedent(FILM).replace("{model}", str(df_folder)))
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(tmp_path / "o"), "--step-cache", "0.1"])
    assert result.exit_code != 0 and "--step-cache: skyreels models have no step cache" in result.output


def test_a_long_shot_with_the_step_cache_starts_each_chunk_fresh(tiny_model, tmp_path):
    """First-Block-Cache keeps the last step's residual: a shorter last chunk (7 latent frames in windows of 4:
    4, 4, 3) would meet a residual of the wrong shape unless each chunk starts its own trajectory."""
    folder = _opted_in(tiny_model, tmp_path, long_shots="diffusion-forcing", window_frames=13, overlap_frames=5)
    spec = tmp_path / "film.toml"
    spec.write_text(f'[film]\nmodel = "{folder}"\nseed = 2\n[[shots]]\nid = "a"\nprompt = "a red circle"\n'
                    'frames = 25\n[speed]\nstep_cache = 0.05\n')
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "shots" / "a.json").read_text())
    assert manifest["long_shot"]["chunks"] == [[0, 13], [5, 21], [13, 25]]
    assert read_video(tmp_path / "out" / "shots" / "a.mp4")[0].shape[0] == 25


@pytest.mark.parametrize("reel_json,field,message", [
    ({"window_frames": [9]}, "film.model", "window_frames = [9]: a whole number of frames"),
    ({"overlap_frames": "x"}, "film.model", "overlap_frames = 'x': a whole number of frames"),
    ({"window_frames": 16389}, "film.model", "window_frames = 16389: "),  # past the rotary table: the window's fault
])
def test_bad_windows_name_the_model_folder(tiny_model, tmp_path, reel_json, field, message):
    from reel.engine.spec import SpecError

    folder = _opted_in(tiny_model, tmp_path, long_shots="diffusion-forcing", **reel_json)
    spec = tmp_path / "film.toml"
    spec.write_text(f'[film]\nmodel = "{folder}"\n[[shots]]\nid = "a"\nprompt = "a red circle"\nframes = 16393\n')
    with pytest.raises(SpecError) as info:
        load_film(spec)
    assert any(f == field and message in m for f, m in info.value.problems), info.value.problems


def test_image_folders_and_image_shots_cannot_be_long(tiny_model, tmp_path):
    """Diffusion forcing renders text-to-video: a Wan TI2V folder cannot opt in, and a long shot with a first frame
    is refused by the spec (not mid-render)."""
    from reel.engine.spec import SpecError
    from reel.models.tiny import build_tiny_wan

    ti2v = build_tiny_wan(tmp_path / "ti2v", variant="ti2v")
    reel = json.loads((ti2v / "reel.json").read_text()) if (ti2v / "reel.json").is_file() else {}
    (ti2v / "reel.json").write_text(json.dumps({**reel, "long_shots": "diffusion-forcing", "window_frames": 9}))
    spec = tmp_path / "ti2v.toml"
    spec.write_text(f'[film]\nmodel = "{ti2v}"\n[[shots]]\nid = "a"\nprompt = "a red circle"\nframes = 17\n')
    with pytest.raises(SpecError) as info:
        load_film(spec)
    assert any("text-to-video Wan folders only" in m for _, m in info.value.problems)
    folder = _opted_in(tiny_model, tmp_path, long_shots="diffusion-forcing", window_frames=9)
    spec = tmp_path / "image.toml"
    spec.write_text(f'[film]\nmodel = "{folder}"\n[[shots]]\nid = "a"\nprompt = "a red circle"\nframes = 9\n'
                    '[[shots]]\nid = "b"\nprompt = "a red circle"\nframes = 17\ncontinue_from = "a"\n')
    with pytest.raises(SpecError) as info:
        load_film(spec)
    assert any(f.startswith("shots[1].") and "renders text-to-video only" in m for f, m in info.value.problems)


def test_chunks_must_fill_a_df_transformers_causal_blocks(df_folder, tmp_path):
    """A DF transformer with num_frame_per_block = 2: 41 frames in 17-frame windows are chunks of 5, 5, 5 latent
    frames, which do not fill blocks of 2; the spec says so before anything renders."""
    import shutil

    from reel.engine.spec import SpecError

    folder = tmp_path / "blocks"
    shutil.copytree(df_folder, folder)
    config = json.loads((folder / "transformer" / "config.json").read_text())
    (folder / "transformer" / "config.json").write_text(json.dumps({**config, "num_frame_per_block": 2}))
    spec = tmp_path / "film.toml"
    spec.write_text(textwrap.dedent(FILM).replace("{model}", str(folder)))
    with pytest.raises(SpecError) as info:
        load_film(spec)
    assert any(f.startswith("shots[0].frames") and "causal blocks of 2" in m for f, m in info.value.problems)
