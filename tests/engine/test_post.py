"""Post-production: codec presets, crossfades, audio mixing, editor export, provenance, watermark.
Every output is decoded back with the real ffmpeg."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import opentimelineio as otio
import pytest
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.engine.post.assemble import assemble
from reel.engine.post.contact import read_video
from reel.engine.post.encode import CODECS, VideoWriter, ffmpeg_exe
from reel.engine.post.probe import decode_audio, probe
from reel.engine.post.timeline import AudioPlacement, Timeline, place_clips

runner = CliRunner()

FILM = """
[film]
title = "Post"
model = "{model}"
seed = 4
steps = 2
fps = 24
{film_extra}

[[shots]]
id = "one"
prompt = "a red circle moving left"
frames = 17

[[shots]]
id = "two"
prompt = "a blue square moving up"
frames = 17
{two_extra}

[[shots]]
id = "three"
prompt = "a green triangle"
frames = 9
{audio}
"""


def film(write_spec, film_extra="", two_extra="", audio="", name="film.toml"):
    return write_spec(FILM.replace("{film_extra}", film_extra).replace("{two_extra}", two_extra)
                      .replace("{audio}", audio), name)


def sine(path, seconds=3.0, freq=440):
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:sample_rate=48000:duration={seconds}", "-c:a", "pcm_s16le", str(path)],
                   check=True)
    return path


def solid(path, rgb, n, fps=8, size=(32, 32)):
    with VideoWriter(path, size[0], size[1], fps) as w:
        w.write(np.full((n, size[1], size[0], 3), rgb, dtype=np.uint8))
    return path


def rms(x):
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


@pytest.mark.parametrize("codec,vcodec,pix,ext", [("h265", "hevc", "yuv420p", ".mp4"),
                                                  ("prores", "prores", "yuv422p10le", ".mov"),
                                                  ("av1", "av1", "yuv420p", ".mp4")])
def test_codec_presets(write_spec, tmp_path, codec, vcodec, pix, ext):
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(film(write_spec, f'codec = "{codec}"')), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    info = probe(out / f"film{ext}")
    assert info.video_codec == vcodec and info.pix_fmt == pix and (info.width, info.height) == (32, 32)
    assert "bt709" in info.text
    if codec == "h265":
        assert "hvc1" in info.text
    if codec == "prores":
        assert "HQ" in info.text
    frames, fps = read_video(out / f"film{ext}")
    assert frames.shape[0] == 17 + 17 + 9 and fps == 24
    assert (out / "shots" / f"one{ext}").is_file()


def test_crossfade_blends_and_shortens(tmp_path):
    a, b = solid(tmp_path / "a.mp4", (230, 20, 20), 8), solid(tmp_path / "b.mp4", (20, 20, 230), 8)
    timeline = Timeline(8, place_clips([("a", a, 8, 0), ("b", b, 8, 4)]))
    assert timeline.frames == 12 and timeline.clips[1].start == 4
    how = assemble(timeline, tmp_path / "film.mp4", CODECS["h264"])
    frames, _ = read_video(tmp_path / "film.mp4")
    assert frames.shape[0] == 12 and how["crossfades"] == 1
    red = frames[:, 16, 16, 0].astype(int)
    assert red[0] > 200 and red[-1] < 40  # starts red, ends blue
    assert 40 < red[5] < 200  # mid-fade: a blend


def test_audio_tracks_mixed_placed_and_faded(tmp_path):
    clip = solid(tmp_path / "a.mp4", (100, 100, 100), 24)  # 3 s at 8 fps
    music = sine(tmp_path / "music.wav", 5.0)
    sfx = sine(tmp_path / "sfx.wav", 0.5, freq=1000)
    clips = place_clips([("a", clip, 24, 0)])
    tracks = (AudioPlacement("music", music, 1.0, 0.0, 2.0, 0.5, 0.0, 0.0),
              AudioPlacement("sfx", sfx, 0.25, 0.0, 0.5, 1.0, 0.0, 0.0))
    assemble(Timeline(8, clips, tracks), tmp_path / "film.mp4", CODECS["h264"])
    info = probe(tmp_path / "film.mp4")
    assert info.audio_codec == "aac"
    audio = decode_audio(tmp_path / "film.mp4")  # mono, 8 kHz
    assert abs(audio.size / 8000 - 3.0) < 0.05  # exactly the film's length
    assert rms(audio[: int(0.2 * 8000)]) < 0.01  # silence before the effect
    effect_rms = rms(audio[int(0.3 * 8000):int(0.7 * 8000)])
    assert effect_rms > 0.08  # lavfi's sine has amplitude 1/8: RMS 0.088 at full volume
    assert rms(audio[int(0.8 * 8000):int(0.95 * 8000)]) < 0.01  # gap between effect and music
    music_rms = rms(audio[int(1.2 * 8000):int(2.8 * 8000)])
    assert music_rms / effect_rms == pytest.approx(0.5, abs=0.05)  # volume 0.5


def test_render_with_crossfade_audio_and_exports(write_spec, tmp_path):
    sine(tmp_path / "music.wav", 4.0)
    sine(tmp_path / "boom.wav", 0.3, freq=900)
    audio = ('\n[[audio]]\nfile = "music.wav"\nvolume = 0.8\nfade_in = 0.25\nfade_out = 0.25\n'
             '\n[[audio]]\nfile = "boom.wav"\nshot = "three"\nat = 0.0\n')
    spec = film(write_spec, two_extra='transition = "crossfade"\ntransition_seconds = 0.25', audio=audio)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    frames, fps = read_video(out / "film.mp4")
    assert frames.shape[0] == 17 + 17 + 9 - 6 and fps == 24
    audio_samples = decode_audio(out / "film.mp4")
    assert abs(audio_samples.size / 8000 - 37 / 24) < 0.05
    manifest = json.loads((out / "film.json").read_text())
    assert manifest["frames"] == 37 and manifest["shots"][1]["crossfade_in_frames"] == 6
    assert manifest["shots"][2]["start_frame"] == 28 and manifest["audio"][1]["start_s"] == pytest.approx(28 / 24)
    assert manifest["exports"] == {"otio": "film.otio", "fcp7": "film.xml", "edl": "film.edl"}
    for name in ("film.otio", "film.xml", "film.edl"):
        tl = otio.adapters.read_from_file(str(out / name))
        video = tl.video_tracks()[0]
        clips = list(video.find_clips())
        assert [c.name for c in clips][:1] == ["one"] and len(clips) == 3
        assert sum(c.duration().value for c in clips) == 37
        assert clips[2].media_reference.target_url == (out / "shots" / "three.mp4").resolve().as_uri()
        if name != "film.edl":
            assert [c.name for c in clips] == ["one", "two", "three"]
            assert len(tl.audio_tracks()) == 2
    # same inputs: the film is reused; a changed audio setting re-assembles without re-rendering shots
    result = runner.invoke(app, ["render", str(spec), "--out", str(out)])
    assert "film unchanged" in result.output
    spec2 = write_spec(spec.read_text().replace("volume = 0.8", "volume = 0.4"), "film2.toml")
    result = runner.invoke(app, ["render", str(spec2), "--out", str(out)])
    assert "0 rendered, 3 reused" in result.output and "film: 3 shots" in result.output


def test_non_smpte_rate_exports_otio_and_says_why(write_spec, tmp_path):
    out = tmp_path / "out"
    spec = write_spec(FILM.replace("fps = 24", "fps = 8").replace("{film_extra}", "").replace("{two_extra}", "")
                      .replace("{audio}", ""))
    assert runner.invoke(app, ["render", str(spec), "--out", str(out), "-q"]).exit_code == 0
    exports = json.loads((out / "film.json").read_text())["exports"]
    assert exports["otio"] == "film.otio" and "not a SMPTE timecode rate" in exports["edl"]


def test_provenance_tags_and_watermark(write_spec, tmp_path):
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    assert runner.invoke(app, ["render", str(film(write_spec)), "--out", str(plain), "-q"]).exit_code == 0
    spec = film(write_spec, 'watermark = "AI"', name="wm.toml")
    assert runner.invoke(app, ["render", str(spec), "--out", str(marked), "-q"]).exit_code == 0
    tags = probe(plain / "shots" / "one.mp4").tags()
    seed = json.loads((plain / "shots" / "one.json").read_text())["seed"]
    assert tags["ai_generated"] == "true" and tags["reel_seed"] == str(seed) and "AI-generated" in tags["comment"]
    assert probe(plain / "film.mp4").tags()["title"] == "Post"
    a, _ = read_video(plain / "shots" / "one.mp4")
    b, _ = read_video(marked / "shots" / "one.mp4")
    corner = np.abs(a[:, 24:, 16:].astype(int) - b[:, 24:, 16:]).mean()
    top_left = np.abs(a[:, :12, :12].astype(int) - b[:, :12, :12]).mean()
    assert corner > 5 * max(top_left, 0.5)
    assert json.loads((marked / "shots" / "one.json").read_text())["watermark"] == "AI"


@pytest.mark.parametrize("two_extra,needle", [
    ('transition = "crossfade"\ntransition_seconds = 0.3', "whole frames — try"),
    ('transition = "crossfade"\ntransition_seconds = 0.75', "its crossfades take 18 frames but the shot has 17"),
    ('transition_seconds = 0.5', 'only applies with transition = "crossfade"'),
    ('transition = "wipe"', "shots[1].transition"),
])
def test_bad_transitions_exit_2(write_spec, tmp_path, two_extra, needle):
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(film(write_spec, two_extra=two_extra)), "--out", str(out)])
    assert result.exit_code == 2 and needle in result.output and not out.exists()


def test_bad_audio_exits_2_before_anything_is_written(write_spec, tmp_path):
    (tmp_path / "text.wav").write_text("not audio")
    solid(tmp_path / "silent.mp4", (0, 0, 0), 4)
    sine(tmp_path / "ok.wav", 1.0)
    cases = {
        '[[audio]]\nfile = "missing.wav"': "audio[0].file",
        '[[audio]]\nfile = "text.wav"': "not a media file ffmpeg can read",
        '[[audio]]\nfile = "silent.mp4"': "has no audio stream",
        '[[audio]]\nfile = "ok.wav"\nat = 9.0': "after the film ends",
        '[[audio]]\nfile = "ok.wav"\ntrim_start = 2.0': "past the file's end",
        '[[audio]]\nfile = "ok.wav"\nshot = "nope"': "audio[0].shot",
        '[[audio]]\nfile = "ok.wav"\nvolumee = 1': "did you mean 'volume'",
    }
    for i, (audio, needle) in enumerate(cases.items()):
        out = tmp_path / f"out{i}"
        result = runner.invoke(app, ["render", str(film(write_spec, audio="\n" + audio, name=f"f{i}.toml")),
                                     "--out", str(out)])
        assert result.exit_code == 2, (audio, result.output)
        assert needle in result.output, (audio, result.output)
        assert not out.exists()


@pytest.mark.parametrize("upscale,scale", [("lanczos2", 2), ("x2", 2)])
def test_render_with_upscaler_streams_bigger_frames(write_spec, tmp_path, upscale, scale):
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(film(write_spec, f'upscale = "{upscale}"')), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    frames, _ = read_video(out / "film.mp4")
    assert frames.shape == (43, 32 * scale, 32 * scale, 3)
    m = json.loads((out / "shots" / "one.json").read_text())
    assert (m["width"], m["out_width"], m["upscale"]) == (32, 32 * scale, upscale)


def test_upscale_command_and_bad_upscaler(write_spec, tmp_path):
    clip = solid(tmp_path / "in.mp4", (200, 50, 50), 6, size=(32, 24))
    result = runner.invoke(app, ["upscale", str(clip), str(tmp_path / "big.mp4"), "--model", "lanczos4", "-q"])
    assert result.exit_code == 0, result.output
    frames, fps = read_video(tmp_path / "big.mp4")
    assert frames.shape == (6, 96, 128, 3) and fps == 8
    result = runner.invoke(app, ["upscale", str(clip), str(tmp_path / "x.mp4"), "--model", str(tmp_path / "no.pth")])
    assert result.exit_code == 2 and "no.pth" in result.output and not (tmp_path / "x.mp4").exists()
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(film(write_spec, 'upscale = "missing.pth"')), "--out", str(out)])
    assert result.exit_code == 2 and "film.upscale" in result.output and not out.exists()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"nonsense" * 10)
    result = runner.invoke(app, ["render", str(film(write_spec, f'upscale = "{garbage}"', name="g.toml")),
                                 "--out", str(out)])
    assert result.exit_code == 2 and str(garbage) in result.output and not out.exists()


def test_read_videos_decodes_many_clips_in_one_process(tmp_path):
    """A film's clips (one size) decode through one ffmpeg (concat demuxer), split by frame counts; counts
    that do not add up fall back to one read per clip."""
    from reel.engine.post.contact import read_video, read_videos
    from reel.engine.post.encode import VideoWriter

    rng = np.random.default_rng(0)
    paths, counts = [], [5, 9, 3]
    for i, n in enumerate(counts):
        path = tmp_path / f"it's {i}.mp4"  # a quote in the name: the concat listing escapes it
        with VideoWriter(path, width=32, height=32, fps=8) as writer:
            writer.write(rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8))
        paths.append(path)
    together = read_videos(paths, counts)
    alone = [read_video(p)[0] for p in paths]
    assert [len(f) for f in together] == counts
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))
    wrong = read_videos(paths, [5, 9, 4])  # counts that do not add up: read one by one
    assert [len(f) for f in wrong] == counts
