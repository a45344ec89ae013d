"""An audio file's waveform for the studio's timeline: peak levels in equal time bins, from ffmpeg's decode.

    wave = waveform(Path("music.wav"), bins=200)   # {"seconds": 12.5, "peaks": [0.0 .. 1.0] * 200}

The file is decoded to 8 kHz mono 16-bit PCM (enough to draw peaks, cheap to read), bin by bin the largest absolute
sample divided by full scale. Results are cached by path, size and modification time.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

RATE = 8000  # samples per second of the decode
MAX_SECONDS = 3600  # longer files are read up to here


class WaveformError(ValueError):
    """The file could not be decoded as audio (ffmpeg's reason in the message)."""


def waveform(path: Path, bins: int = 200) -> dict:
    stat = path.stat()
    return _cached(str(path), stat.st_size, stat.st_mtime_ns, bins)


@lru_cache(maxsize=64)
def _cached(path: str, _size: int, _mtime: int, bins: int) -> dict:
    import numpy as np

    from reel.engine.post.encode import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", path, "-t", str(MAX_SECONDS), "-vn", "-ac", "1",
           "-ar", str(RATE), "-f", "s16le", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise WaveformError(f"{Path(path).name}: decoding took over 120 s — is it really an audio file?") from None
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace")[-300:]
        raise WaveformError(f"{Path(path).name}: not decodable as audio ({reason})")
    samples = np.frombuffer(proc.stdout, dtype="<i2").astype(np.float32) / 32768.0  # (n,)
    if samples.size == 0:
        return {"seconds": 0.0, "peaks": [0.0] * bins}
    edges = np.linspace(0, samples.size, bins + 1).astype(np.int64)  # (bins+1,)
    peaks = [float(np.abs(samples[a:b]).max()) if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])]
    return {"seconds": round(samples.size / RATE, 3), "peaks": [round(p, 4) for p in peaks]}
