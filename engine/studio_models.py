"""The shapes of the studio's API (engine/studio_api.py): parameters typed and bounded at the edge, request bodies,
and the JSON answers, for /openapi.json and for the edge checks (as engine/serve_models.py does for the queue).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, computed_field

from reel.engine.serve_models import ProblemItem
from reel.engine.spec import SHOT_ID_RE
from reel.engine.takes import MAX_TAKES

MAX_TEXT = 1 << 20  # characters of a saved spec
PATH_PATTERN = r"^[^\x00]{1,1024}$"
ETAG_PATTERN = r"^[0-9a-f]{0,32}$"
SMALL_INT = 2**63 - 1
Op = Literal["add_shot", "remove_shot", "move_shot", "set_shot", "add_audio", "remove_audio", "move_audio",
             "set_audio"]
ExportKind = Literal["mp4", "otio", "fcp7", "edl"]

ProjectPath = Annotated[str, Query(min_length=1, max_length=1024, pattern=PATH_PATTERN, examples=["demo.toml"],
                                   description="A film spec under the server's roots (relative: from the first root).")]
ShotQ = Annotated[str, Query(min_length=1, max_length=64, pattern=SHOT_ID_RE.pattern, description="A shot's id.")]
TakeCount = Annotated[int, Query(ge=1, le=MAX_TAKES, description="Takes 1..n of the shot.")]
TrackQ = Annotated[int, Query(ge=0, le=999, description="The audio track's index in [[audio]].")]
Bins = Annotated[int, Query(ge=8, le=2000, description="How many peaks.")]
FilmJob = Annotated[int, Path(ge=1, le=SMALL_INT, description="A film job the studio queued.")]
Text = Annotated[str, Field(max_length=4096)]
Value = Text | Annotated[int, Field(ge=-SMALL_INT, le=SMALL_INT)] | float | bool | list[Text] | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SaveIn(Strict):
    text: str = Field(max_length=MAX_TEXT, description="The spec's new text.")
    etag: str = Field(pattern=ETAG_PATTERN, description="The etag the text was based on ('' for a new file).")


class EditIn(Strict):
    """One structured edit, applied with tomlkit (comments and format survive)."""

    etag: str = Field(pattern=ETAG_PATTERN, description="The etag of the text the edit is based on.")
    op: Op
    shot: str | None = Field(None, max_length=64, pattern=SHOT_ID_RE.pattern)
    track: int | None = Field(None, ge=0, le=999)
    to: int | None = Field(None, ge=0, le=9999, description="New position (move), or where a new shot goes.")
    field: str | None = Field(None, max_length=32, description="The key set_shot / set_audio sets.")
    value: Value = Field(None, description="The new value; null removes the key (back to the film's value).")
    fields: dict[Annotated[str, Field(max_length=32)], Value] | None = Field(None, max_length=16,
                                                                            description="add_audio's keys.")


class PickIn(Strict):
    etag: str = Field(pattern=ETAG_PATTERN)
    shot: str = Field(max_length=64, pattern=SHOT_ID_RE.pattern)
    take: int = Field(ge=1, le=MAX_TAKES * 64)


class ProjectItem(BaseModel):
    path: str
    name: str
    title: str
    shots: int


class ProjectList(BaseModel):
    projects: list[ProjectItem]
    audio: list[str] = Field(description="Audio files under the roots (for [[audio]] file).")


class StudioProblem(ProblemItem):
    shot: str | None = Field(description="The shot the problem concerns, if any.")
    key: str = Field(description="The field's key (prompt, frames, ...).")


class ShotCard(BaseModel):
    id: str
    prompt: str
    characters: list[str]
    seed: int | None
    seed_locked: bool
    frames: int | None
    duration: float | None = Field(description="Seconds.")
    start: float | None = Field(description="Seconds from the film's start.")
    transition: str
    status: str = Field(description="not rendered, queued, running, preview, final, failed, cancelled.")
    job: int | None
    thumbnail: str | None
    preview_url: str | None
    final_url: str | None

    @computed_field(description="The seed as decimal text: a JavaScript number drops a 64-bit seed's low digits.")
    @property
    def seed_text(self) -> str | None:
        return None if self.seed is None else str(self.seed)


class TrackOut(BaseModel):
    index: int
    file: Any
    at: Any
    shot: Any
    volume: Any
    trim_start: Any
    duration: Any
    fade_in: Any
    fade_out: Any
    waveform: str


class CharacterOut(BaseModel):
    name: str
    trigger: str
    lora: list[str]
    weight: float | list[float]
    thumbnail: str | None


class FilmOut(BaseModel):
    job: int
    status: str
    preview: bool
    url: str | None
    exports: dict[str, str]


class ProjectOut(BaseModel):
    path: str
    name: str
    text: str
    etag: str
    title: str
    fps: int | None
    valid: bool
    problems: list[StudioProblem]
    shots: list[ShotCard]
    audio: list[TrackOut]
    characters: list[CharacterOut]
    duration: float
    film: FilmOut | None


class ConflictOut(BaseModel):
    error: str
    problems: list[ProblemItem]
    text: str = Field(description="The file as it is on disk now.")
    etag: str


class TakeOut(BaseModel):
    take: int
    kind: Literal["preview", "final"]
    seed: int
    job: int | None = None
    status: str
    video: str
    manifest: str
    clip_url: str | None = None
    frame_url: str | None = None
    events_url: str | None = None

    @computed_field(description="The seed as decimal text: a JavaScript number drops a 64-bit seed's low digits.")
    @property
    def seed_text(self) -> str | None:
        return None if self.seed is None else str(self.seed)


class TakesOut(BaseModel):
    shot: str
    takes: list[TakeOut]
    picked: dict[str, Any] | None


class Waveform(BaseModel):
    seconds: float
    peaks: list[float]


CONFLICT = {409: {"model": ConflictOut, "description": "The file changed on disk: nothing was written."}}
