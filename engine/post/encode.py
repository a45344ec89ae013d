"""Streaming encode through the ffmpeg bundled with imageio-ffmpeg, with editor-friendly presets.

    with VideoWriter(path, width=64, height=64, fps=8, codec="h264", metadata={"title": "x"}) as w:
        w.write(frames)   # (N, H, W, 3) uint8, any number of times: frames go down a pipe chunk by chunk

Presets (`CODECS`):
    h264    libx264, CRF 18, yuv420p, .mp4 (default)
    h265    libx265, CRF 20, yuv420p, `hvc1` tag (plays in QuickTime/Safari), .mp4
    prores  prores_ks 422 HQ, yuv422p10le, .mov, PCM audio (for editors)
    av1     libsvtav1 (else libaom-av1), CRF 30, yuv420p, .mp4; a clear error if this ffmpeg has neither
    h264-draft  libx264 `ultrafast`, CRF 18, .mp4: previews (half the encode time of `medium` on short
            clips, larger files, the same CRF)
All carry BT.709 matrix/primaries/transfer tags, +faststart, and arbitrary metadata tags. The file
appears under its final name only when ffmpeg finished cleanly (atomic rename); on any failure (ffmpeg's error,
a full disk, an exception or interrupt in the caller) ffmpeg is stopped and its temporary file removed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reel.engine.store import commit, disk_full, remove_quietly, tmp_name

CRF = 18
DECODE_PARAMS = ["-sws_flags", "accurate_rnd+full_chroma_int"]  # YUV->RGB without ffmpeg's default darkening bias


class EncodeError(RuntimeError):
    """ffmpeg failed or cannot do what was asked; the message carries its own words."""


class CodecUnavailable(EncodeError, ValueError):
    """The spec asks for a codec this ffmpeg cannot encode (bad input: exit 2)."""


@dataclass(frozen=True)
class Codec:
    name: str
    ext: str  # container file extension
    muxer: str  # ffmpeg -f
    encoders: tuple[str, ...]  # first available is used
    video_args: tuple[str, ...]
    pix_fmt: str
    audio_args: tuple[str, ...]

    def args(self) -> list[str]:
        encoder = pick_encoder(self)
        extra = {"libsvtav1": ["-crf", "30", "-preset", "8"], "libaom-av1": ["-crf", "30", "-cpu-used", "8"]}
        return ["-c:v", encoder, *extra.get(encoder, []), *self.video_args]


CODECS: dict[str, Codec] = {
    "h264": Codec("h264", ".mp4", "mp4", ("libx264",), ("-preset", "medium", "-crf", str(CRF)), "yuv420p",
                  ("-c:a", "aac", "-b:a", "192k")),
    "h264-draft": Codec("h264-draft", ".mp4", "mp4", ("libx264",), ("-preset", "ultrafast", "-crf", str(CRF)),
                        "yuv420p", ("-c:a", "aac", "-b:a", "192k")),
    "h265": Codec("h265", ".mp4", "mp4", ("libx265",),
                  ("-preset", "medium", "-crf", "20", "-tag:v", "hvc1", "-x265-params", "log-level=error"),
                  "yuv420p", ("-c:a", "aac", "-b:a", "192k")),
    "prores": Codec("prores", ".mov", "mov", ("prores_ks",), ("-profile:v", "3", "-vendor", "apl0"), "yuv422p10le",
                    ("-c:a", "pcm_s16le")),
    "av1": Codec("av1", ".mp4", "mp4", ("libsvtav1", "libaom-av1"), (), "yuv420p", ("-c:a", "aac", "-b:a", "192k")),
}


def ffmpeg_failure(path: Path, code: int, stderr: str, doing: str = "write") -> Exception:
    """The error for an ffmpeg run that failed to write `path`: DiskFullError (naming the file, its folder and the
    free space) when it ran out of room, else EncodeError with ffmpeg's own words."""
    said = stderr.lower()
    if "no space left on device" in said:
        return disk_full(path, errno.ENOSPC)
    if "disk quota exceeded" in said:
        return disk_full(path, errno.EDQUOT)
    if "file too large" in said or code == -signal.SIGXFSZ:  # ffmpeg stopped by the file size limit (ulimit -f)
        return disk_full(path, errno.EFBIG)
    return EncodeError(f"ffmpeg could not {doing} {path} (exit {code}): {stderr or 'no message'}")


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_env() -> dict:
    """ffmpeg's environment: SVT-AV1 prints its banner unless told to log errors only."""
    return {**os.environ, "SVT_LOG": "1"}


@functools.lru_cache(maxsize=1)
def available_encoders() -> frozenset[str]:
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS":
            names.add(parts[1])
    return frozenset(names)


def pick_encoder(codec: Codec) -> str:
    for encoder in codec.encoders:
        if encoder in available_encoders():
            return encoder
    raise CodecUnavailable(f"codec {codec.name!r}: this ffmpeg ({ffmpeg_exe()}) has no {' or '.join(codec.encoders)} "
                      f"encoder — choose another codec ({', '.join(CODECS)}) or install an ffmpeg build with it")


def get_codec(name: str) -> Codec:
    if name not in CODECS:
        raise EncodeError(f"unknown codec {name!r} — use one of {', '.join(c for c in CODECS if c != 'h264-draft')}")
    return CODECS[name]


def check_size(width: int, height: int) -> None:
    """4:2:0 and 4:2:2 need even sizes; we reject rather than rescale or pad silently."""
    if width % 2 or height % 2:
        raise EncodeError(f"{width}x{height}: the encoders need even width and height — use an even size")


def color_args(codec: Codec) -> list[str]:
    return ["-vf", f"scale=out_color_matrix=bt709:out_range=tv,format={codec.pix_fmt}", "-pix_fmt", codec.pix_fmt,
            "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv"]


AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def audio_args(audio_from: str | Path | None, codec: Codec | None = None, rate: int | None = None) -> list[str]:
    """No audio, or the audio streams of `audio_from` (input 1) beside the piped video (input 0), encoded as the
    codec preset says (AAC in .mp4, PCM in ProRes .mov). `rate`: the input's sample rate when known; AAC cannot
    carry every rate (a tiny test vocoder's 1600 Hz), so such sound is resampled to 48 kHz."""
    if audio_from is None:
        return ["-an"]
    encode = list(codec.audio_args) if codec is not None else ["-c:a", "aac", "-b:a", "192k"]
    if rate is not None and "aac" in encode and rate not in AAC_RATES:
        encode += ["-ar", "48000"]
    return ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a?", *encode]


def metadata_args(metadata: dict | None) -> list[str]:
    args = []
    for key, value in (metadata or {}).items():
        args += ["-metadata", f"{key}={value}"]
    return args


def container_args(codec: Codec) -> list[str]:
    """faststart (index first) and custom metadata keys kept, for mp4 and mov alike."""
    return ["-movflags", "+faststart+use_metadata_tags"]


class VideoWriter:
    """Encode frames to a file as they arrive; `close()` renames it into place."""

    def __init__(self, path: str | Path, width: int, height: int, fps: int, codec: str = "h264",
                 metadata: dict | None = None, crf: int | None = None, audio_from: str | Path | None = None,
                 audio_rate: int | None = None):
        """audio_from: a media file whose audio streams (if any) are copied in, encoded as the codec preset says;
        audio_rate: its sample rate, when known (see audio_args)."""
        check_size(width, height)
        self.codec = get_codec(codec)
        crf_args = ["-crf", str(crf)] if crf is not None and codec in ("h264", "h265") else []
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_name(self.path)
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
            *audio_args(audio_from, self.codec, audio_rate), *self.codec.args(), *crf_args, *color_args(self.codec),
            *container_args(self.codec),
            *metadata_args(metadata), "-f", self.codec.muxer, str(self.tmp),
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=ffmpeg_env())

    def write(self, frames: np.ndarray) -> None:
        """Send (N, H, W, 3) uint8 frames to ffmpeg."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected (N, {self.height}, {self.width}, 3) uint8 frames, "
                             f"got {frames.shape} {frames.dtype}")
        try:
            self.proc.stdin.write(np.ascontiguousarray(frames).tobytes())
        except BrokenPipeError:  # ffmpeg exited: say why, and leave nothing behind
            raise self._failed("encode") from None
        self.frames_written += frames.shape[0]

    def _failed(self, doing: str) -> Exception:
        """Wait briefly for ffmpeg to exit (then stop it), remove the partial file, return the error saying why."""
        stderr = ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.abort()
        with contextlib.suppress(Exception):
            stderr = self.proc.stderr.read().decode(errors="replace").strip()
        if self.proc.returncode == 0 and self.frames_written == 0:
            return EncodeError(f"ffmpeg could not write {self.path}: no frames written")
        return ffmpeg_failure(self.path, self.proc.returncode, stderr, doing)

    def close(self) -> Path:
        """Finish the file and rename it into place; on any failure stop ffmpeg, remove the partial file and raise
        (EncodeError, or DiskFullError when the disk or the file size limit ran out)."""
        try:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            if self.proc.wait() != 0 or self.frames_written == 0:
                raise self._failed("write")
            commit(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and remove the partial file (safe to call more than once, and after close)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        remove_quietly(self.tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
