"""A shot's own sound (models that make it: LTX-2), kept beside its clip as 16-bit PCM WAV.

    write_wav(store.shot_audio("s1"), wave, rate)   # wave: (channels, samples) float in [-1, 1]

The clip's encoder takes the WAV as its audio input (engine/post/encode.py audio_from), and the film's mix places
it under the clip with the shot's `audio_volume` (engine/runtime.py assemble).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch

from reel.engine.store import atomic_path


def write_wav(path: Path, samples: torch.Tensor, rate: int) -> Path:
    """(channels, samples) float in [-1, 1] -> 16-bit PCM WAV, written atomically (nothing half-written)."""
    if samples.ndim != 2 or not 1 <= samples.shape[0] <= 8 or rate <= 0:
        raise ValueError(f"{path}: a shot's sound must be (channels 1-8, samples) at a positive rate, got "
                         f"{tuple(samples.shape)} at {rate} Hz")
    pcm = (samples.detach().float().clamp(-1, 1).cpu().numpy().T * 32767.0).round().astype("<i2")  # (S, C)
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as out:
        out.setnchannels(samples.shape[0])
        out.setsampwidth(2)
        out.setframerate(int(rate))
        out.writeframes(np.ascontiguousarray(pcm).tobytes())
    return path
