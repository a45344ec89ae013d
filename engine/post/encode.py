"""Streaming H.264 encode through the ffmpeg bundled with imageio-ffmpeg.

    with VideoWriter(path, width=64, height=64, fps=8, metadata={"title": "x"}) as w:
        w.write(frames)   # (N, H, W, 3) uint8, any number of times: frames go down a pipe chunk by chunk

The file appears under its final name only when ffmpeg finished cleanly (atomic rename).
Settings: libx264, CRF 18, yuv420p, BT.709 matrix and tags, +faststart, the spec's fps.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import numpy as np

from engine.store import tmp_name

CRF = 18


class EncodeError(RuntimeError):
    """ffmpeg failed; the message carries its own words."""


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def check_size(width: int, height: int) -> None:
    """yuv420p needs even sizes; we reject rather than rescale or pad silently."""
    if width % 2 or height % 2:
        raise EncodeError(f"{width}x{height}: H.264 yuv420p needs even width and height — use an even size")


def metadata_args(metadata: dict | None) -> list[str]:
    args = []
    for key, value in (metadata or {}).items():
        args += ["-metadata", f"{key}={value}"]
    return args


class VideoWriter:
    """Encode frames to an .mp4 as they arrive; `close()` renames it into place."""

    def __init__(self, path: str | Path, width: int, height: int, fps: int, crf: int = CRF,
                 metadata: dict | None = None):
        check_size(width, height)
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_name(self.path)
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
            "-an", "-c:v", "libx264", "-preset", "medium", "-crf", str(crf),
            "-vf", "scale=out_color_matrix=bt709:out_range=tv", "-pix_fmt", "yuv420p",
            "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv",
            "-movflags", "+faststart", *metadata_args(metadata), "-f", "mp4", str(self.tmp),
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frames: np.ndarray) -> None:
        """Send (N, H, W, 3) uint8 frames to ffmpeg."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected (N, {self.height}, {self.width}, 3) uint8 frames, got {frames.shape} {frames.dtype}")
        try:
            self.proc.stdin.write(np.ascontiguousarray(frames).tobytes())
        except BrokenPipeError:
            raise EncodeError(f"ffmpeg stopped while encoding {self.path}: {self._stderr()}") from None
        self.frames_written += frames.shape[0]

    def _stderr(self) -> str:
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
            return self.proc.stderr.read().decode(errors="replace").strip()
        return ""

    def close(self) -> Path:
        """Finish the file and rename it into place; raise EncodeError (and clean up) if ffmpeg failed."""
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        code = self.proc.wait()
        err = self.proc.stderr.read().decode(errors="replace").strip()
        if code != 0 or self.frames_written == 0:
            self.abort()
            raise EncodeError(f"ffmpeg could not write {self.path} (exit {code}): {err or 'no frames written'}")
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and remove the partial file."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
