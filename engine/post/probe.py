"""What a media file holds, from the bundled ffmpeg (imageio-ffmpeg ships no ffprobe).

    info = probe("music.wav")            # MediaInfo(duration=3.0, audio=True, video=False, ...)
    check_audio("music.wav")              # raises MediaError unless it decodes as audio
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reel.engine.post.encode import ffmpeg_exe


class MediaError(ValueError):
    """A media file that is missing or cannot be decoded; the message names it."""


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    duration: float | None  # seconds, from the container
    video: bool
    audio: bool
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    fps: float | None
    pix_fmt: str | None
    text: str  # ffmpeg's own description, for details

    def tags(self) -> dict[str, str]:
        """Container metadata tags (the first `Metadata:` block)."""
        out = {}
        block = self.text.split("Metadata:", 1)
        if len(block) == 2:
            for line in block[1].splitlines()[1:]:
                m = re.match(r"^\s{4}(\S[^:]*?)\s*:\s(.*)$", line)
                if not m:
                    break
                out[m.group(1).strip()] = m.group(2).strip()
        return out


def probe(path: str | Path) -> MediaInfo:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True).stderr.decode(
        errors="replace")
    if "Invalid data found" in text or "Stream #" not in text:
        raise MediaError(f"{path}: not a media file ffmpeg can read "
                         f"({text.strip().splitlines()[-1] if text.strip() else 'no output'})")
    dur = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else None
    v = re.search(r"Stream #\S+.*?: Video: (\w+).*?, (\w+)(?:\([^)]*\))?, (\d+)x(\d+)", text)
    a = re.search(r"Stream #\S+.*?: Audio: (\w+)", text)
    fps = re.search(r"(\d+(?:\.\d+)?) fps", text)
    return MediaInfo(path, duration, v is not None, a is not None, v.group(1) if v else None, a.group(1) if a else None,
                     int(v.group(3)) if v else None, int(v.group(4)) if v else None,
                     float(fps.group(1)) if fps else None, v.group(2) if v else None, text)


def decode_audio(path: str | Path, rate: int = 8000) -> np.ndarray:
    """The first audio stream decoded to mono float32 samples at `rate` Hz."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-i", str(path), "-map", "0:a:0",
                             "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"], capture_output=True)
    if result.returncode != 0:
        raise MediaError(f"{path}: audio does not decode ({result.stderr.decode(errors='replace').strip()})")
    return np.frombuffer(result.stdout, dtype=np.float32)


def check_audio(path: str | Path) -> float:
    """Decode the whole audio stream once; return its duration in seconds or raise MediaError."""
    info = probe(path)
    if not info.audio:
        raise MediaError(f"{path}: has no audio stream — give a music or sound file (wav, mp3, flac, ogg, m4a)")
    samples = decode_audio(path)
    if samples.size == 0:
        raise MediaError(f"{path}: the audio stream decodes to nothing")
    return samples.size / 8000
