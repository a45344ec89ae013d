"""A shot's own sound through `reel render` on a tiny random LTX-2 folder (tests/models/test_ltx2.py's): kept
beside the clip as WAV with the shot's duration at the vocoder's rate, carried by the clip, mixed into the film at
the shot's audio_volume under the film's [[audio]] tracks; `audio = false` drops it; seeds lock it; the film's fps
must be the model's own. Offline, CPU."""

from __future__ import annotations

import json
import textwrap
import wave

import numpy as np
import pytest
from typer.testing import CliRunner

from reel.engine.post.probe import decode_audio, probe

FILM = """
[film]
title = "sound"
model = "{model}"
seed = 11

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"

[[shots]]
id = "b"
prompt = "a blue square moving up on a black background"
audio_volume = 0.5

[[shots]]
id = "c"
prompt = "a green triangle moving right on a black background"
audio = false
"""


@pytest.fixture(scope="module")
def ltx2_folder(tmp_path_factory):
    from tests.models.test_ltx2 import build_tiny_ltx2

    return build_tiny_ltx2(tmp_path_factory.mktemp("ltx2") / "model")


def wav(path):
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), np.frombuffer(w.readframes(w.getnframes()), "<i2")


def test_shots_keep_their_sound_beside_the_clip_and_in_the_film(ltx2_folder, tmp_path):
    from tests.models.test_ltx2 import FPS, FRAMES, SAMPLE_RATE

    from reel.engine.cli import app

    spec = tmp_path / "film.toml"
    spec.write_text(textwrap.dedent(FILM).replace("{model}", str(ltx2_folder)))
    checked = CliRunner().invoke(app, ["validate", str(spec)])
    assert checked.exit_code == 0 and "shot a: with the model's own sound (volume 1 " in checked.output
    assert "shot b: with the model's own sound (volume 0.5 " in checked.output and "shot c" not in checked.output
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    seconds = FRAMES / FPS
    for sid in ("a", "b"):
        rate, channels, samples = wav(out / "shots" / f"{sid}.wav")
        assert rate == SAMPLE_RATE and channels == 2 and samples.size == 2 * round(seconds * SAMPLE_RATE)
        assert np.abs(samples).max() > 0  # a random model's sound, not silence
        clip = probe(out / "shots" / f"{sid}.mp4")
        assert clip.video and clip.audio and abs(clip.duration - seconds) < 0.05
        manifest = json.loads((out / "shots" / f"{sid}.json").read_text())
        assert manifest["audio"] == {"file": f"{sid}.wav"}  # its volume is the film's mix (film.json)
    assert not (out / "shots" / "c.wav").exists() and not probe(out / "shots" / "c.mp4").audio
    assert json.loads((out / "shots" / "c.json").read_text())["audio"] is None
    film = json.loads((out / "film.json").read_text())
    assert [(t["file"].rsplit("/", 1)[-1], t["start_s"], t["volume"]) for t in film["audio"]] == [
        ("a.wav", 0.0, 1.0), ("b.wav", seconds, 0.5)]
    film_audio = decode_audio(out / "film.mp4")  # mono at 8 kHz
    assert probe(out / "film.mp4").audio and np.abs(film_audio[: int(2 * seconds * 8000)]).max() > 0
    first = (out / "shots" / "a.wav").read_bytes()
    again = CliRunner().invoke(app, ["render", str(spec), "--out", str(tmp_path / "again"), "--device", "cpu"])
    assert again.exit_code == 0 and (tmp_path / "again" / "shots" / "a.wav").read_bytes() == first  # seed-locked
    other = tmp_path / "other.toml"
    other.write_text(spec.read_text().replace("seed = 11", "seed = 12"))
    assert CliRunner().invoke(app, ["render", str(other), "--out", str(tmp_path / "other"), "--device", "cpu",
                                    "--shots", "a"]).exit_code == 0
    assert not np.array_equal(wav(tmp_path / "other" / "shots" / "a.wav")[2], wav(out / "shots" / "a.wav")[2])


def test_a_shots_volume_and_the_films_tracks_mix_together(ltx2_folder, tmp_path):
    """Shot b at audio_volume 0.5 plays at half the level of the same render at 1.0; an [[audio]] track (a tone)
    plays beside the shots' own sound."""
    from tests.models.test_ltx2 import FPS, FRAMES

    from reel.engine.cli import app

    tone = tmp_path / "tone.wav"
    rate = 8000
    t = np.arange(int(rate * 4)) / rate
    with wave.open(str(tone), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes())
    levels = {}
    for volume in (1.0, 0.5):
        spec = tmp_path / f"film-{volume}.toml"
        spec.write_text(textwrap.dedent(FILM).replace("{model}", str(ltx2_folder))
                        .replace("audio_volume = 0.5", f"audio_volume = {volume}"))
        out = tmp_path / f"out-{volume}"
        assert CliRunner().invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"]).exit_code == 0
        mix = decode_audio(out / "film.mp4")  # mono, 8 kHz
        b = mix[int(FRAMES / FPS * 8000) + 200: int(2 * FRAMES / FPS * 8000) - 200]  # shot b's span
        levels[volume] = float(np.sqrt(np.mean(b ** 2)))
        if volume == 0.5:
            spec.write_text(spec.read_text() + '\n[[audio]]\nfile = "tone.wav"\nvolume = 1.0\nfade_in = 0\n'
                                               'fade_out = 0\n')
            assert CliRunner().invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"]).exit_code == 0
            film = json.loads((out / "film.json").read_text())
            assert [t["file"].rsplit("/", 1)[-1] for t in film["audio"]] == ["tone.wav", "a.wav", "b.wav"]
            with_tone = decode_audio(out / "film.mp4")
            assert np.sqrt(np.mean(with_tone[:2000] ** 2)) > np.sqrt(np.mean(mix[:2000] ** 2)) + 0.1
    assert levels[0.5] == pytest.approx(levels[1.0] / 2, rel=0.15)


def test_a_picked_final_take_keeps_its_sound(ltx2_folder, tmp_path):
    from reel.engine.cli import app

    spec = tmp_path / "film.toml"
    spec.write_text(textwrap.dedent(FILM).replace("{model}", str(ltx2_folder)))
    out = tmp_path / "out"
    took = CliRunner().invoke(app, ["takes", str(spec), "--shot", "a", "-n", "2", "--final", "--out", str(out),
                                    "--device", "cpu", "-q"])
    assert took.exit_code == 0, took.output
    picked = CliRunner().invoke(app, ["pick", "a", "2", "--out", str(out)])
    assert picked.exit_code == 0 and "its final is in place" in picked.output
    assert (out / "shots" / "a.wav").is_file()
    render = CliRunner().invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu", "--shots", "a"])
    assert render.exit_code == 0 and "0 rendered, 1 reused" in render.output, render.output


def test_sound_needs_the_models_own_frame_rate(ltx2_folder, tmp_path):
    from reel.engine.cli import app

    spec = tmp_path / "film.toml"
    text = textwrap.dedent(FILM).replace("{model}", str(ltx2_folder))
    spec.write_text(text.replace("seed = 11", "seed = 11\nfps = 12"))
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code != 0 and "film.fps" in result.output and "own frame rate, 24 fps" in result.output


def test_previews_skip_the_sound(ltx2_folder, tmp_path):
    """A film with a preview LoRA (here a small random one in diffusers' format) previews without decoding sound:
    no WAV, no audio stream; its final keeps it."""
    import torch
    from safetensors.torch import save_file

    from reel.engine.cli import app
    from reel.models import ltx2
    from tests.models.test_ltx2 import _lora

    comps = ltx2.load(ltx2_folder, torch.device("cpu"), torch.float32)
    lora = tmp_path / "fast.safetensors"
    save_file({f"transformer.{k}.lora_{ab}.weight": t.contiguous() for k, (a, b) in _lora(comps.transformer).items()
               for ab, t in (("A", a), ("B", b))}, str(lora))
    spec = tmp_path / "film.toml"
    spec.write_text(textwrap.dedent(FILM).replace("{model}", str(ltx2_folder)).replace(
        "seed = 11", 'seed = 11\npreview_lora = "fast.safetensors"\npreview_steps = 2\npreview_scheduler = "euler"'))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["preview", str(spec), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert not list((out / "preview" / "shots").glob("*.wav")) and not probe(out / "preview" / "shots" / "a.mp4").audio
    assert json.loads((out / "preview" / "shots" / "a.json").read_text())["audio"] is None
