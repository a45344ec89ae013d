"""The server's render queue: jobs in a SQLite file (WAL), and one worker thread per device.

    queue = JobQueue(Path("reel-server/queue.db"))
    job = queue.submit(title="Tiny", spec=text, spec_format="toml", base="/films", shot_ids=["a", "b"])
    worker = Worker(queue, "cpu", plan_for=..., jobs_dir=Path("reel-server/jobs"), wake=..., stop=...)
    worker.start()

Jobs run by priority (higher first), then in submission order. A job lives in the database from
submission to its end (queued -> running -> completed | failed | cancelled), so it survives a restart:
a job found `running` when the server starts was interrupted (a crash or a stop) and is queued again;
rendering the same plan into the same folder reuses the shots it had finished (the render store skips
shots whose manifests match). Each job renders into JOBS_DIR/<id>/out; the last decoded frame of each
shot is kept as JOBS_DIR/<id>/frames/<shot>.png while it renders (the live preview).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reel.engine.progress import RenderProgress
from reel.engine.sampling import StepState
from reel.engine.store import atomic_path

log = logging.getLogger("reel.serve")

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
MAX_JOB_ID = 2**63 - 1  # SQLite's largest INTEGER: the API refuses ids beyond it at the edge
FLUSH_SECONDS = 0.3  # per-step progress reaches the database at most this often (shot ends always do)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,                 -- queued | running | completed | failed | cancelled
    priority INTEGER NOT NULL DEFAULT 0,  -- higher runs first; ties in submission order
    title TEXT NOT NULL,
    spec TEXT NOT NULL,                   -- the spec as submitted
    spec_format TEXT NOT NULL,            -- toml | json
    base TEXT NOT NULL,                   -- the folder relative paths in the spec start from
    preview INTEGER NOT NULL DEFAULT 0,   -- render the fast previews (as `reel preview`)
    force INTEGER NOT NULL DEFAULT 0,     -- render every shot again on the first attempt
    shot_ids TEXT NOT NULL,               -- JSON list, film order
    created REAL NOT NULL,                -- unix seconds
    started REAL,
    finished REAL,
    run_order INTEGER,                    -- 1, 2, ...: the order in which workers took jobs
    attempts INTEGER NOT NULL DEFAULT 0,  -- more than 1: resumed after an interruption
    device TEXT,
    cancel INTEGER NOT NULL DEFAULT 0,    -- cancellation asked while running
    error TEXT,
    problems TEXT,                        -- JSON [[field, message], ...] for a spec rejected at run time
    progress TEXT NOT NULL DEFAULT '{}',  -- JSON, see JobProgress
    result TEXT,                          -- JSON: film path (relative to the job folder), shot statuses
    version INTEGER NOT NULL DEFAULT 0    -- bumped on every change (event streams send on change)
);
CREATE INDEX IF NOT EXISTS jobs_order ON jobs (status, priority DESC, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Job:
    """One row of the jobs table, JSON columns decoded (times in unix seconds)."""

    id: int
    status: str
    priority: int
    title: str
    spec: str
    spec_format: str
    base: str
    preview: bool
    force: bool
    shot_ids: tuple[str, ...]
    created: float
    started: float | None
    finished: float | None
    run_order: int | None
    attempts: int
    device: str | None
    cancel: bool
    error: str | None
    problems: list
    progress: dict
    result: dict | None
    version: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        d = dict(row)
        return cls(**{**d, "preview": bool(d["preview"]), "force": bool(d["force"]), "cancel": bool(d["cancel"]),
                      "shot_ids": tuple(json.loads(d["shot_ids"])), "problems": json.loads(d["problems"] or "[]"),
                      "progress": json.loads(d["progress"] or "{}"),
                      "result": json.loads(d["result"]) if d["result"] else None})


class JobQueue:
    """The jobs table. Thread-safe: each thread gets its own connection; claims are atomic."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed job survives a process crash
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()

    # -- writing -------------------------------------------------------------------------------
    def submit(self, title: str, spec: str, spec_format: str, base: str, shot_ids: list[str], priority: int = 0,
               preview: bool = False, force: bool = False) -> Job:
        cur = self._db().execute(
            "INSERT INTO jobs (status, priority, title, spec, spec_format, base, preview, force, shot_ids, created, "
            "progress) VALUES ('queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (priority, title, spec, spec_format, base, int(preview), int(force), json.dumps(list(shot_ids)),
             time.time(), json.dumps(initial_progress(shot_ids))))
        return self.get(cur.lastrowid)

    def claim(self, device: str) -> Job | None:
        """Take the next queued job (highest priority, then oldest) for `device`, or None."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' "
                             "ORDER BY priority DESC, id LIMIT 1").fetchone()
            if row is None:
                db.execute("COMMIT")
                return None
            db.execute("UPDATE jobs SET status = 'running', device = ?, started = ?, attempts = attempts + 1, "
                       "run_order = (SELECT COALESCE(MAX(run_order), 0) + 1 FROM jobs), version = version + 1 "
                       "WHERE id = ?", (device, time.time(), row["id"]))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return self.get(row["id"])

    def set_progress(self, job_id: int, progress: dict) -> None:
        self._db().execute("UPDATE jobs SET progress = ?, version = version + 1 WHERE id = ?",
                           (json.dumps(progress), job_id))

    def finish(self, job_id: int, status: str, error: str | None = None, problems: list | None = None,
               result: dict | None = None) -> None:
        assert status in TERMINAL, status
        self._db().execute(
            "UPDATE jobs SET status = ?, error = ?, problems = ?, result = ?, finished = ?, version = version + 1 "
            "WHERE id = ?", (status, error, json.dumps(problems or []), json.dumps(result) if result else None,
                             time.time(), job_id))

    def requeue(self, job_id: int) -> None:
        """Back in the queue after an interruption (server stop); finished shots are reused later."""
        self._db().execute("UPDATE jobs SET status = 'queued', device = NULL, version = version + 1 "
                           "WHERE id = ? AND status = 'running'", (job_id,))

    def recover(self) -> list[int]:
        """At start-up: jobs left `running` by a crash or a stop go back in the queue. Returns their ids."""
        db = self._db()
        ids = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE status = 'running'")]
        db.execute("UPDATE jobs SET status = 'queued', device = NULL, version = version + 1 WHERE status = 'running'")
        return ids

    def request_cancel(self, job_id: int) -> Job | None:
        """Cancel a queued job at once; mark a running one (its worker stops at the next step)."""
        db = self._db()
        db.execute("UPDATE jobs SET status = 'cancelled', finished = ?, version = version + 1 "
                   "WHERE id = ? AND status = 'queued'", (time.time(), job_id))
        db.execute("UPDATE jobs SET cancel = 1, version = version + 1 WHERE id = ? AND status = 'running'", (job_id,))
        return self.get(job_id)

    def set_paused(self, paused: bool) -> None:
        """A paused queue starts no new job (running ones finish); it stays paused across restarts."""
        self._db().execute("INSERT INTO meta (key, value) VALUES ('paused', ?) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (json.dumps(paused),))

    # -- reading -------------------------------------------------------------------------------
    def paused(self) -> bool:
        row = self._db().execute("SELECT value FROM meta WHERE key = 'paused'").fetchone()
        return bool(row and json.loads(row["value"]))

    def get(self, job_id: int) -> Job | None:
        if not 1 <= job_id <= MAX_JOB_ID:  # no such row, and SQLite cannot bind the number
            return None
        row = self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def list(self, status: str | None = None, limit: int = 200) -> list[Job]:
        """Newest first."""
        if status:
            rows = self._db().execute("SELECT * FROM jobs WHERE status = ? ORDER BY id DESC LIMIT ?", (status, limit))
        else:
            rows = self._db().execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        return [Job.from_row(r) for r in rows]

    def queued_order(self) -> list[int]:
        """Ids of the queued jobs in the order they will run."""
        rows = self._db().execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY priority DESC, id")
        return [r["id"] for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        return {s: 0 for s in STATUSES} | {r["status"]: r["n"] for r in rows}

    def cancel_requested(self, job_id: int) -> bool:
        row = self._db().execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel"])


def initial_progress(shot_ids) -> dict:
    """Per shot: status (waiting | rendering | done | reused), step/total of its denoising loop, and
    `frame`, a counter bumped whenever a new decoded frame is saved (for cache-busting image URLs)."""
    return {"shots_total": len(shot_ids), "shots_done": 0, "message": "queued",
            "shots": {s: {"status": "waiting", "step": 0, "total": 0, "frame": 0} for s in shot_ids}}


# ---- the worker --------------------------------------------------------------------------------
class Interrupted(BaseException):
    """The server is stopping: the job goes back in the queue. (BaseException: no `except Exception` eats it.)"""


class Cancelled(BaseException):
    """The job was cancelled while it rendered."""


class JobProgress(RenderProgress):
    """The Engine's progress display, turned into the job's `progress` JSON in the database. Also the
    place where a running render notices a cancellation or a server stop (it raises at the next step)."""

    def __init__(self, queue: JobQueue, job: Job, frames_dir: Path, check: Callable[[], None]):
        super().__init__(quiet=True)
        self.queue, self.job_id, self.frames_dir, self.check = queue, job.id, frames_dir, check
        self.state = {**initial_progress(job.shot_ids), "message": "starting"}
        self.state["shots"] = {**self.state["shots"], **{k: v for k, v in job.progress.get("shots", {}).items()
                                                         if k in self.state["shots"]}}  # keep frame counters
        for shot in self.state["shots"].values():
            shot.update(status="waiting", step=0)
        self._flushed = 0.0

    def flush(self, force: bool = True) -> None:
        now = time.monotonic()
        if force or now - self._flushed >= FLUSH_SECONDS:
            self._flushed = now
            self.queue.set_progress(self.job_id, self.state)

    def say(self, text: str) -> None:
        self.state["message"] = text
        self.check()

    def film(self, total_shots: int) -> None:
        self.state["shots_total"] = total_shots
        self.flush()

    def batch(self, shot_ids: tuple[str, ...], steps: int) -> None:
        self.check()
        for s in shot_ids:
            self.state["shots"][s].update(status="rendering", step=0, total=steps)
        self.state["message"] = f"rendering {', '.join(shot_ids)}"
        self.flush()

    def step(self, state: StepState) -> None:
        self.check()
        for s in state.shot_ids:
            self.state["shots"][s].update(step=state.step, total=state.total)
        self.flush(force=False)

    def shot_done(self, line: str) -> None:
        # The Engine's line is "shot <id>: ..." (ids hold no ':' or spaces); "unchanged, reused" marks a skip.
        shot_id = line.split(":", 1)[0].removeprefix("shot ")
        if shot_id in self.state["shots"]:
            shot = self.state["shots"][shot_id]
            shot["status"] = "reused" if ": unchanged, reused" in line else "done"
            shot["step"] = shot["total"] = shot["total"] or 1
        self.state["shots_done"] = sum(s["status"] in ("done", "reused") for s in self.state["shots"].values())
        self.state["message"] = line
        self.flush()
        self.check()

    def frames(self, shot_id: str, frames) -> None:
        """Engine.on_frames: keep the newest decoded frame of the shot as a PNG (written atomically)."""
        from PIL import Image

        self.check()
        path = self.frames_dir / f"{shot_id}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(frames[-1]).save(tmp, format="PNG")  # frames: (f, H, W, 3) uint8
        if shot_id in self.state["shots"]:
            self.state["shots"][shot_id]["frame"] += 1
        self.flush(force=False)


class Worker(threading.Thread):
    """One per device: takes jobs in queue order and renders them with its own Engine (models stay loaded
    between jobs). `plan_for(job)` parses and checks the job's spec again and returns its RenderPlan."""

    def __init__(self, queue: JobQueue, device: str, plan_for: Callable, jobs_dir: Path, wake: threading.Event,
                 stop: threading.Event):
        super().__init__(name=f"reel-worker-{device}", daemon=True)
        self.queue, self.device, self.plan_for, self.jobs_dir = queue, device, plan_for, jobs_dir
        self.wake, self.stop = wake, stop
        self.cancelled: set[int] = set()  # cancellations asked in this process (the database has them too)
        self.current: int | None = None
        self._engine = None
        self.warm_with: Callable[[], object] | None = None  # a plan to load while idle (Server.warm), newest wins

    def run(self) -> None:
        while not self.stop.is_set():
            self.wake.clear()
            try:
                job = None if self.queue.paused() else self.queue.claim(self.device)
            except sqlite3.Error as err:  # e.g. the database stayed locked past the timeout: try again
                log.error("worker %s could not read the queue: %s", self.device, err)
                job = None
            if job is None:
                if self.warm_with is not None:
                    self.warm()
                    continue
                self.wake.wait(0.5)
                continue
            self.current = job.id
            try:
                self.run_job(job)
            finally:
                self.current = None

    def warm(self) -> None:
        """Load what the plan of `warm_with` needs (model, LoRAs, decoders: Engine.prepare) while no job waits,
        so the next job of that project starts rendering at once. Best effort: a plan that fails is left for
        its job to report."""
        make, self.warm_with = self.warm_with, None
        try:
            plan = make()
            engine = self.engine()
            t0 = time.monotonic()
            engine.prepare(plan)  # a job's render() prepares its own plan again: files may have changed
            log.info("worker %s warmed %s in %.1f s", self.device, plan.film.model.name, time.monotonic() - t0)
        except Exception as err:  # noqa: BLE001 - the job that needs this plan reports the problem
            log.info("worker %s could not warm a model: %s", self.device, err)

    def engine(self):
        if self._engine is None:
            from reel.engine.runtime import Engine

            self._engine = Engine(device=self.device)
        return self._engine

    def run_job(self, job: Job) -> None:
        from reel.engine.spec import SpecError

        folder = self.jobs_dir / str(job.id)

        def check() -> None:
            if self.stop.is_set():
                raise Interrupted()
            if job.id in self.cancelled:
                raise Cancelled()

        progress = JobProgress(self.queue, job, folder / "frames", check)
        try:
            if self.queue.cancel_requested(job.id):
                raise Cancelled()
            plan = self.plan_for(job)  # 1. the spec again: files may have changed since it was queued
            engine = self.engine()  # 2. render; the render store reuses shots an earlier attempt finished
            engine.progress, engine.on_frames = progress, progress.frames
            result = engine.render(plan, folder / "out", force=job.force and job.attempts == 1)
        except Interrupted:
            progress.state["message"] = "interrupted by a server stop; resumes from its finished shots"
            progress.flush()
            self.queue.requeue(job.id)
            return
        except Cancelled:
            progress.state["message"] = "cancelled"
            progress.flush()
            self.queue.finish(job.id, "cancelled")
            return
        except SpecError as err:
            self.queue.finish(job.id, "failed", error=str(err), problems=err.problems)
            return
        except Exception as err:  # a failure while rendering: the job fails, the worker goes on
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self.queue.finish(job.id, "failed", error=f"{type(err).__name__}: {err}")
            return
        finally:
            if self._engine is not None:
                self._engine.progress, self._engine.on_frames = RenderProgress(quiet=True), None
        film = result.film_video.relative_to(folder).as_posix() if result.film_video else None
        progress.state["message"] = f"done: film {result.film_status}"
        progress.flush()
        self.queue.finish(job.id, "completed", result={
            "film": film, "film_status": result.film_status,
            "shots": {s.shot_id: s.status for s in result.shots},
            "rendered": sum(s.status == "rendered" for s in result.shots),
            "reused": sum(s.status == "reused" for s in result.shots)})
