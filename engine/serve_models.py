"""The shapes of reel's HTTP API, for its OpenAPI document (GET /openapi.json) and for the edge checks: the
path and query parameters every route takes (typed and bounded, so nothing unchecked reaches SQLite or the
file system) and the JSON bodies it answers with (clients and schemathesis check responses against them).

    @api.get("/jobs/{job_id}", response_model=JobOut)
    def job(job_id: JobId): ...
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, Field

from reel.engine.jobqueue import MAX_JOB_ID
from reel.engine.spec import SHOT_ID_RE

# Shot ids as engine/spec.py accepts them; file names in a job's folder: segments of letters, digits, `_`,
# `-` and `.` that do not start with a dot (no `..`, no hidden files), `/` between segments.
FILE_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}){0,7}$"
STATIC_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"
Status = Literal["queued", "running", "completed", "failed", "cancelled"]

JobId = Annotated[int, Path(ge=1, le=MAX_JOB_ID, description="A job's id, as POST /api/jobs returned it.")]
ShotId = Annotated[str, Path(min_length=1, max_length=64, pattern=SHOT_ID_RE.pattern,
                             description="A shot's id from the job's spec.")]
FileName = Annotated[str, Path(min_length=1, max_length=1024, pattern=FILE_PATTERN,
                               description="A path inside the job's folder, e.g. out/film.json.")]
StaticName = Annotated[str, Path(min_length=1, max_length=64, pattern=STATIC_PATTERN)]
Priority = Annotated[int, Query(ge=-100, le=100, description="Higher runs first; ties in submission order.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many jobs, newest first.")]


class ProblemItem(BaseModel):
    field: str = Field(description="Where: a spec field (`shots[1].frames (shot 'b')`), a parameter, or ''.")
    message: str = Field(description="What is wrong and how to fix it (the CLI's message).")


class Problem(BaseModel):
    """Every error answer (4xx and 5xx)."""

    error: str
    problems: list[ProblemItem]


class Links(BaseModel):
    self: str
    events: str
    spec: str
    film: str | None


class JobOut(BaseModel):
    """One job, as every job route answers it (times are ISO 8601 UTC)."""

    id: int
    status: Status
    title: str
    priority: int
    preview: bool
    force: bool
    shots: list[str]
    position: int | None = Field(description="1 for the next job to run; null unless queued.")
    created: str | None
    started: str | None
    finished: str | None
    run_order: int | None
    attempts: int
    device: str | None
    cancel_requested: bool
    error: str | None
    problems: list[ProblemItem]
    progress: dict[str, Any] = Field(description="shots_total, shots_done, message, and per shot its status, "
                                                 "step, total and frame counter.")
    result: dict[str, Any] | None
    version: int = Field(description="Bumped on every change.")
    links: Links


class JobList(BaseModel):
    jobs: list[JobOut]
    paused: bool


class WorkerOut(BaseModel):
    device: str
    job: int | None
    alive: bool


class Health(BaseModel):
    status: Literal["ok"]
    paused: bool
    counts: dict[str, int]
    roots: list[str]
    relative_paths_start_at: str
    workers: list[WorkerOut]


class Validated(BaseModel):
    ok: Literal[True]
    title: str
    shots: list[str]
    model: str
    size: list[int] = Field(description="[width, height] in pixels.")
    fps: int


class Paused(BaseModel):
    paused: bool


class SessionOk(BaseModel):
    ok: Literal[True]


ERRORS = {"4XX": {"model": Problem, "description": "Refused: `error` says why, `problems` lists each problem."},
          "5XX": {"model": Problem, "description": "The server failed; the server's log has the details."}}
BINARY = {"schema": {"type": "string", "format": "binary"}}


def media_response(description: str, *types: str) -> dict:
    """`responses=` for a route that answers with a file of one of `types`."""
    return {200: {"description": description, "content": {t: BINARY for t in types}}}
