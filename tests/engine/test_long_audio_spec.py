"""Spec and plan fields of issue 26 on the families that have neither sound nor a long-shot scheme: `seconds` gives
a shot its frames, a shot's audio settings are refused where the model makes no sound, and long shots are
planned in diffusers' SkyReels-V2 diffusion-forcing chunks (models/long_shots.py)."""

from __future__ import annotations

import pytest

from reel.engine.plan import build_plan
from reel.engine.spec import SpecError, load_film
from reel.models.long_shots import chunks, describe, latent_chunks

SPEC = """
[film]
title = "t"
model = "{model}"
seed = 7

[[shots]]
id = "one"
prompt = "a red circle moving left on a black background"
"""


def test_seconds_become_frames_on_the_frame_rule(write_spec, tiny_model):
    film = load_film(write_spec(SPEC + "seconds = 2\n"))  # 8 fps: 2 s is 17 frames (4k+1)
    assert film.shots[0].frames == 17 and film.shots[0].seconds == 2.0
    film = load_film(write_spec(SPEC + "seconds = 1.3\n"))  # 10.4 -> 11 frames -> the next 4k+1: 13
    assert film.shots[0].frames == 13
    job = build_plan(film).jobs[0]
    assert job.frames == 13 and job.window == 0 and not job.audio  # one pass, no sound: the tiny Wan model


def test_seconds_and_frames_together_and_bad_seconds_are_refused(write_spec, tiny_model):
    with pytest.raises(SpecError) as info:
        load_film(write_spec(SPEC + "seconds = 2\nframes = 17\n"))
    assert any(f.startswith("shots[0].seconds") and "both frames and seconds" in m for f, m in info.value.problems)
    for bad in ("seconds = 0", "seconds = -1", "seconds = 7200", 'seconds = "2"'):
        with pytest.raises(SpecError) as info:
            load_film(write_spec(SPEC + bad + "\n"))
        assert any(f.startswith("shots[0].seconds") for f, _ in info.value.problems), bad
    with pytest.raises(SpecError) as info:  # 3600 s at 240 fps: 864,001 frames
        load_film(write_spec(SPEC.replace("seed = 7", "seed = 7\nfps = 240") + "seconds = 3600\n"))
    assert any(f.startswith("shots[0].seconds") and "over 100,000" in m for f, m in info.value.problems)


def test_audio_settings_need_a_model_that_makes_sound(write_spec, tiny_model):
    film = load_film(write_spec(SPEC + "audio = false\n"))  # dropping sound that is not there is harmless
    assert build_plan(film).jobs[0].audio is False
    for line, key in (("audio = true", "audio"), ("audio_volume = 0.5", "audio_volume")):
        with pytest.raises(SpecError) as info:
            load_film(write_spec(SPEC + line + "\n"))
        assert any(f.startswith(f"shots[0].{key}") and "make no sound" in m for f, m in info.value.problems), line
    with pytest.raises(SpecError) as info:
        load_film(write_spec(SPEC + "audio_volume = 9\n"))
    assert any(f.startswith("shots[0].audio_volume") for f, _ in info.value.problems)


def _pipeline_chunks(frames: int, window: int, overlap: int, t: int) -> list[int]:
    """Latent frames of each iteration, as SkyReelsV2DiffusionForcingPipeline computes them (diffusers 0.42)."""
    total, base, keep = (frames - 1) // t + 1, (window - 1) // t + 1, (overlap - 1) // t + 1
    if frames <= window:
        return [total]
    n_iter = 1 + (total - base - 1) // (base - keep) + 1
    out = []
    for k in range(n_iter):
        if k == 0:
            out.append(base)
        else:
            done = k * (base - keep) + keep
            out.append(min(total - done + keep, base))
    return out


@pytest.mark.parametrize("window,overlap", [(97, 17), (97, 37), (121, 17), (17, 5), (17, 1)])
def test_chunks_follow_the_diffusion_forcing_pipeline(window, overlap):
    for frames in range(1, 400, 4):
        got = latent_chunks(frames, window, overlap, 4)
        assert [n for _, n in got] == _pipeline_chunks(frames, window, overlap, 4), frames
        new = got[0][1] + sum(n - ((overlap - 1) // 4 + 1) for _, n in got[1:])
        assert new == (frames - 1) // 4 + 1  # stitched, the chunks hold the shot's latent frames exactly
        pixels = chunks(frames, window, overlap, 4)
        assert pixels[0][0] == 0 and pixels[-1][1] == frames and all(b - a <= window + 3 for a, b in pixels)
        # (a later chunk's first latent frame stands for 4 frames, the first chunk's for 1)


def test_the_plan_text_names_every_chunk():
    assert describe(289, 97, 17, 4).startswith(
        "4 chunks of at most 25 latent frames (window_frames = 97): frames 0-96, 77-176, 157-256, 237-288")
