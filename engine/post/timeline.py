"""The film's timeline: where every clip and audio track sits, in frames and seconds.

One source of truth for the assembler (ffmpeg filtergraphs) and the editor export (OTIO), so the
encoded film and the timeline an editor opens always agree. A crossfade of d frames overlaps the
last d frames of the previous clip with the first d of the next (the film gets d frames shorter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reel.engine.spec_post import AudioTrack


class TimelineError(ValueError):
    """Audio or transitions that do not fit the film; the message names the track and the fix."""


@dataclass(frozen=True)
class TimelineClip:
    shot_id: str
    path: Path
    frames: int  # frames in the clip file
    start: int  # frame on the timeline where the clip begins (inside the previous clip's tail when fading)
    fade_in: int  # crossfade frames shared with the previous clip (0 = cut)


@dataclass(frozen=True)
class AudioPlacement:
    name: str
    path: Path
    start: float  # seconds on the film timeline
    trim_start: float  # seconds skipped at the start of the file
    length: float  # seconds of the file used
    volume: float
    fade_in: float
    fade_out: float


@dataclass(frozen=True)
class Timeline:
    fps: int
    clips: tuple[TimelineClip, ...]
    audio: tuple[AudioPlacement, ...] = ()

    @property
    def frames(self) -> int:
        last = self.clips[-1]
        return last.start + last.frames

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    def shot_start(self, shot_id: str) -> float:
        return next(c.start for c in self.clips if c.shot_id == shot_id) / self.fps

    @property
    def has_transitions(self) -> bool:
        return any(c.fade_in for c in self.clips)


def place_clips(clips: list[tuple[str, Path, int, int]]) -> tuple[TimelineClip, ...]:
    """(shot id, file, frames, crossfade frames into it) in film order -> clips with timeline starts."""
    out, cursor = [], 0
    for shot_id, path, frames, fade in clips:
        start = cursor - fade
        out.append(TimelineClip(shot_id, path, frames, start, fade))
        cursor = start + frames
    return tuple(out)


def place_audio(tracks: tuple[AudioTrack, ...], clips: tuple[TimelineClip, ...], fps: int,
                file_durations: dict[Path, float]) -> tuple[AudioPlacement, ...]:
    """Resolve each track's start (film time or shot-relative) and the length it plays for."""
    film_len = (clips[-1].start + clips[-1].frames) / fps
    out = []
    for i, t in enumerate(tracks):
        start = t.at + (next(c.start for c in clips if c.shot_id == t.shot) / fps if t.shot else 0.0)
        available = max(0.0, file_durations[t.path] - t.trim_start)
        if available <= 0:
            raise TimelineError(f"audio[{i}] ({t.path}): trim_start {t.trim_start:g} s is past the file's end "
                                f"({file_durations[t.path]:.2f} s) — use a smaller trim_start")
        if start >= film_len:
            raise TimelineError(f"audio[{i}] ({t.path}): starts at {start:g} s, after the film ends "
                                f"({film_len:g} s) — move it earlier")
        length = min(available, t.duration if t.duration is not None else available, film_len - start)
        out.append(AudioPlacement(f"audio{i}-{t.path.stem}", t.path, start, t.trim_start, length, t.volume,
                                  min(t.fade_in, length), min(t.fade_out, length)))
    return tuple(out)
