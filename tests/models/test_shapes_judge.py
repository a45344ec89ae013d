"""Tests for the shapes judge (models/shapes/judge.py), with a real H.264 round trip.

    .venv/bin/python -m pytest tests/models/test_shapes_judge.py -q
"""

import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from reel.models.shapes.judge import judge_clip, score
from reel.models.shapes.world import ORANGE_STAR, render_clip, sample_spec


def h264_round_trip(clip: np.ndarray, path) -> np.ndarray:
    """Encode (F, H, W, 3) uint8 with libx264 crf 18 yuv420p, decode back."""
    n, h, w, _ = clip.shape
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", "8", "-i", "-", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, input=clip.tobytes(), check=True)
    gen = imageio_ffmpeg.read_frames(str(path))
    next(gen)  # metadata
    frames = np.stack([np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen])  # (F, H, W, 3)
    assert frames.shape == clip.shape
    return frames


def test_judge_after_h264_round_trip(tmp_path):
    rng = np.random.default_rng(123)
    specs = [sample_spec(rng) for _ in range(100)]
    verdicts = [judge_clip(h264_round_trip(render_clip(s), tmp_path / "c.mp4")) for s in specs]
    table = score(verdicts, specs)
    for field in ("color", "background", "shape", "direction"):
        assert table[field] >= 0.99, (field, table)


def test_judge_recognises_orange_star(tmp_path):
    rng = np.random.default_rng(5)
    for _ in range(10):
        spec = ORANGE_STAR.sample_spec(rng)
        v = judge_clip(h264_round_trip(render_clip(spec), tmp_path / "s.mp4"))
        assert (v.color, v.shape, v.direction, v.background) == ("orange", "star", spec.direction, spec.background)


def test_judge_tolerates_blur_and_noise():
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(9)
    specs = [sample_spec(rng) for _ in range(30)]
    verdicts = []
    for s in specs:
        clip = np.stack([np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(1.0))) for f in render_clip(s)])
        noisy = np.clip(clip + rng.normal(0, 6, clip.shape), 0, 255).astype(np.uint8)
        verdicts.append(judge_clip(noisy))
    table = score(verdicts, specs)
    assert min(table[f] for f in ("color", "background", "direction")) >= 0.95, table
    assert table["shape"] >= 0.9, table


def test_empty_clip_and_restricted_answers():
    blank = np.full((17, 64, 64, 3), 15, np.uint8)
    v = judge_clip(blank)
    assert v.background == "black" and v.color == "" and v.confidence == 0.0
    star = render_clip(ORANGE_STAR.sample_spec(np.random.default_rng(0)))
    v = judge_clip(star, shapes=("circle", "square", "triangle"))
    assert v.shape in ("circle", "square", "triangle")
    with pytest.raises(ValueError, match="expected"):
        judge_clip(blank[0])


def test_score_counts():
    spec = sample_spec(np.random.default_rng(0))
    v = judge_clip(render_clip(spec))
    assert score([v], [spec])["all"] == 1.0
    with pytest.raises(ValueError):
        score([v], [])
