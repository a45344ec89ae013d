"""Streaming H.264 encode: decoded back with real ffmpeg; partial files never appear under final names."""

from __future__ import annotations

import numpy as np
import pytest

from reel.engine.post.assemble import assemble
from reel.engine.post.encode import CODECS
from reel.engine.post.timeline import Timeline, place_clips
from reel.engine.post.contact import read_video
from reel.engine.post.encode import EncodeError, VideoWriter
from tests.conftest import probe


def gradient_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, None, :, None]
    t = np.arange(n, dtype=np.float32)[:, None, None, None] * 8
    frames = np.broadcast_to((x + t) % 256, (n, h, w, 3)).copy()
    frames[..., 1] = 128
    return frames.astype(np.uint8)  # (N, H, W, 3)


def test_chunked_encode_decodes_back(tmp_path):
    out = tmp_path / "clip.mp4"
    frames = gradient_frames(17)
    with VideoWriter(out, width=64, height=48, fps=8, metadata={"title": "grad"}) as writer:
        writer.write(frames[:1])
        writer.write(frames[1:9])
        writer.write(frames[9:])
    decoded, fps = read_video(out)
    assert decoded.shape == (17, 48, 64, 3) and fps == 8
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 3  # CRF 18 is near-lossless here
    info = probe(out)
    assert "h264" in info and "yuv420p(tv, bt709" in info and "title           : grad" in info
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_odd_size_rejected_explicitly(tmp_path):
    with pytest.raises(EncodeError, match="even width and height"):
        VideoWriter(tmp_path / "x.mp4", width=33, height=32, fps=8)


def test_failure_mid_write_leaves_no_file(tmp_path):
    out = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, width=64, height=48, fps=8) as writer:
            writer.write(gradient_frames(5))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_wrong_frames_rejected(tmp_path):
    with VideoWriter(tmp_path / "c.mp4", width=64, height=48, fps=8) as writer:
        with pytest.raises(ValueError, match=r"expected \(N, 48, 64, 3\) uint8"):
            writer.write(np.zeros((2, 48, 64, 3), dtype=np.float32))
        writer.write(gradient_frames(2))


def test_concat_copy_and_reencode(tmp_path):
    clips = []
    for i, n in enumerate((5, 9)):
        with VideoWriter(tmp_path / f"{i}.mp4", width=64, height=48, fps=8) as writer:
            writer.write(gradient_frames(n))
        clips.append((str(i), tmp_path / f"{i}.mp4", n, 0))
    timeline = Timeline(8, place_clips(clips))
    for same in (True, False):
        how = assemble(timeline, tmp_path / f"film-{same}.mp4", CODECS["h264"], same_params=same)
        frames, fps = read_video(tmp_path / f"film-{same}.mp4")
        assert frames.shape[0] == 14 and fps == 8
        assert how["video"].startswith("concat (stream copy)" if same else "filtergraph")
