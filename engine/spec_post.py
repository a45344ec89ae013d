"""The post-production part of a film spec: codec, upscaler, watermark, transitions, audio tracks.
Imports no torch.

    [film]
    codec = "h264"              # h264 | h265 | prores | av1
    upscale = "x2"              # x2 (built-in) | lanczos2 | lanczos4 | path to a model file spandrel loads
    watermark = "AI-generated"  # optional visible text in the corner of every frame

    [[shots]]
    transition = "crossfade"    # how this shot starts: "cut" (default) or "crossfade" from the previous shot
    transition_seconds = 0.5    # crossfade length; must be a whole number of frames

    [[audio]]                   # music and sound effects, mixed into the film
    file = "music.wav"          # relative to the spec
    at = 0.0                    # seconds from the film's start, or from the start of `shot` if given
    shot = "intro"              # optional: attach to a shot (moves with it when shots change)
    volume = 1.0                # linear gain
    trim_start = 0.0            # seconds skipped at the start of the file
    duration = 4.0              # optional: seconds of the file to use (default: to its end or the film's)
    fade_in = 0.5               # seconds
    fade_out = 1.0              # seconds, ending where the track ends in the film
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reel.engine.spec_paths import Guard, existing, spec_path

CODEC_NAMES = ("h264", "h265", "prores", "av1")
BUILTIN_UPSCALERS = ("x2", "lanczos2", "lanczos4")


class AudioSection(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    file: str
    at: float = Field(0.0, ge=0.0)
    shot: str | None = None
    volume: float = Field(1.0, ge=0.0, le=16.0)
    trim_start: float = Field(0.0, ge=0.0)
    duration: float | None = Field(None, gt=0.0)
    fade_in: float = Field(0.0, ge=0.0)
    fade_out: float = Field(0.0, ge=0.0)


TransitionName = Literal["cut", "crossfade"]


@dataclass(frozen=True)
class AudioTrack:
    """One audio file placed in the film (times in seconds)."""

    path: Path
    at: float
    shot: str | None
    volume: float
    trim_start: float
    duration: float | None
    fade_in: float
    fade_out: float


@dataclass(frozen=True)
class PostSettings:
    codec: str
    upscale: str | None  # "x2" | "lanczos2" | "lanczos4" | absolute model path | None
    watermark: str | None
    audio: tuple[AudioTrack, ...]


def resolve_upscale(value: str | None, source: Path, problems: list, guard: Guard | None = None) -> str | None:
    """A built-in upscaler's name, or the absolute path of the model file `value` names (None: a problem)."""
    if value is None or value in BUILTIN_UPSCALERS:
        return value
    path = spec_path(value, source.parent)
    found = existing("film.upscale", path, problems, guard=guard,
                     hint=f"name a built-in upscaler ({', '.join(BUILTIN_UPSCALERS)}) or a model file",
                     missing=f"{value!r} is neither a built-in upscaler ({', '.join(BUILTIN_UPSCALERS)}) nor an "
                             f"existing model file ({path} does not exist)")
    return None if found is None else str(found)


def transition_frames(seconds: float, fps: int, where: str, problems: list) -> int:
    """Crossfade length in frames; it must be whole (never rounded silently)."""
    frames = seconds * fps
    whole = round(frames)
    if abs(frames - whole) > 1e-6 or whole < 1:
        lo, hi = max(1, int(frames)), max(1, int(frames)) + 1
        problems.append((where, f"{seconds} s is {frames:g} frames at {fps} fps; crossfades need whole frames — "
                                f"try {lo / fps:g} or {hi / fps:g}"))
        return 0
    return whole


def check_transitions(shots: list, frames: list[int], fps: int, problems: list) -> tuple[int, ...]:
    """Per shot: crossfade frames into it from the previous shot (0 = cut). Checks lengths fit."""
    out = []
    for i, s in enumerate(shots):
        where = f"shots[{i}].transition (shot {s.id!r})"
        if s.transition != "crossfade":
            if s.transition_seconds is not None:
                problems.append((f"shots[{i}].transition_seconds (shot {s.id!r})",
                                 'only applies with transition = "crossfade" — add it or remove the duration'))
            out.append(0)
            continue
        if i == 0:
            problems.append((where, "the first shot has no previous shot to crossfade from — remove the transition"))
            out.append(0)
            continue
        out.append(transition_frames(s.transition_seconds if s.transition_seconds is not None else 0.5, fps,
                                     f"shots[{i}].transition_seconds (shot {s.id!r})", problems))
    for i in range(len(shots)):
        used = out[i] + (out[i + 1] if i + 1 < len(shots) else 0)
        if used > frames[i]:
            problems.append((f"shots[{i}] (shot {shots[i].id!r})",
                             f"its crossfades take {used} frames but the shot has {frames[i]} — shorten the "
                             "transitions or lengthen the shot"))
    return tuple(out)


def check_audio_tracks(tracks: list[AudioSection], shot_ids: list[str], source: Path,
                       problems: list, guard: Guard | None = None) -> tuple[AudioTrack, ...]:
    """Each track's file exists (the guard sees it first), its shot is one of the film's, its fades fit."""
    out = []
    for i, a in enumerate(tracks):
        path = spec_path(a.file, source.parent)
        found = existing(f"audio[{i}].file", path, problems, guard=guard,
                         hint=f"check the path (relative paths start at {source.parent})")
        if a.shot is not None and a.shot not in shot_ids:
            problems.append((f"audio[{i}].shot", f"{a.shot!r} is not a shot of this film; "
                                                 f"shots: {', '.join(shot_ids)}"))
        if a.duration is not None and a.fade_in + a.fade_out > a.duration:
            problems.append((f"audio[{i}]", f"fade_in + fade_out ({a.fade_in + a.fade_out:g} s) are longer than "
                                            f"duration ({a.duration:g} s)"))
        out.append(AudioTrack(found or path, a.at, a.shot, a.volume, a.trim_start, a.duration, a.fade_in,
                              a.fade_out))
    return tuple(out)
