"""The render server's state (engine/serve.py runs it over HTTP): its configuration, the persistent job queue
and its workers, and the checks a submitted spec goes through.

    server = Server(ServeConfig(data=Path("reel-server"), roots=(Path.home() / "films",)))
    server.start(); job = server.submit(body, "application/toml", 0, False, False); server.close()
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path


from reel.engine.jobqueue import TERMINAL, Job, JobQueue, Worker
from reel.engine.serve_security import (
    ApiError,
    Roots,
    TokenError,
    check_bind,
    clean_token,
    film_path_problems,
    spec_path_problems,
)
from reel.engine.store import atomic_write_text
from reel.models.resources import package_folder

log = logging.getLogger("reel.serve")
WEB = package_folder("reel.engine.web")  # index.html, app.js, style.css
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
SPEC_TYPES = {"application/toml": "toml", "application/x-toml": "toml", "text/x-toml": "toml", "text/toml": "toml",
              "application/json": "json"}
POLL_SECONDS = 0.25  # how often an event stream looks for changes
EXAMPLE_FILM = {"film": {"title": "Example", "model": "shapes", "steps": 2},
                "shots": [{"id": "a", "prompt": "a red circle moving right on a black background", "frames": 5}]}
EXAMPLE_TOML = ('[film]\ntitle = "Example"\nmodel = "shapes"\nsteps = 2\n\n[[shots]]\nid = "a"\n'
                'prompt = "a red circle moving right on a black background"\nframes = 5\n')
SPEC_BODY = {"requestBody": {"required": True, "description": "The film spec (reel's TOML, or the same as JSON).",
                             "content": {"application/toml": {"schema": {"type": "string"}, "example": EXAMPLE_TOML},
                                         "application/json": {"schema": {"type": "object"},
                                                              "example": EXAMPLE_FILM}}}}
SESSION_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "properties": {"token": {"type": "string"}}, "required": ["token"]}}}}}


class ServeError(ValueError):
    """The server cannot start as configured; the message says what to change."""


@dataclass(frozen=True)
class ServeConfig:
    """How `reel serve` runs. The token is stripped here; a blank or short one is a ServeError."""

    host: str = "127.0.0.1"
    port: int = 8188  # 0: any free port
    token: str | None = field(default=None, repr=False)  # required off loopback; >= 16 characters
    roots: tuple[Path, ...] = ()  # folders a spec may name files in
    data: Path = Path("reel-server")  # queue.db and jobs/<id>/ (spec, out/, frames/)
    devices: tuple[str, ...] = ("auto",)  # one worker per device
    max_body: int = 1 << 20  # bytes in a submitted spec
    max_queued: int = 1000  # queued jobs at most (429 beyond)

    def __post_init__(self):
        try:
            object.__setattr__(self, "token", clean_token(self.token))
        except TokenError as err:
            raise ServeError(str(err)) from None


def check_config(config: ServeConfig) -> None:
    """Everything that can be wrong before the server starts: binding, roots, devices."""
    try:
        check_bind(config.host, config.token)
    except ValueError as err:
        raise ServeError(str(err)) from None
    for root in config.roots:
        if not Path(root).expanduser().is_dir():
            raise ServeError(f"--root {root}: not a folder — create it or fix the path")
    from reel.engine.devices import DeviceError, pick_device

    try:
        names = [str(pick_device(d)) for d in config.devices]
    except DeviceError as err:
        raise ServeError(str(err)) from None
    if not names or len(set(names)) != len(names):
        raise ServeError(f"--device {', '.join(config.devices)}: give each device once (one worker per device)")
    if config.max_body < 1 or config.max_queued < 1:
        raise ServeError("--max-body and --max-queued must be positive")


def iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds") if t is not None else None


class Server:
    """The queue, the workers and the rules for specs; the routes (engine/serve_api.py) call into it."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.roots = Roots(config.roots)
        self.data = Path(config.data).expanduser().resolve()
        self.base = self.roots.folders[0] if self.roots else self.data  # where relative spec paths start
        self.queue: JobQueue | None = None
        self.workers: list[Worker] = []
        self.wake, self.stop = threading.Event(), threading.Event()
        self._lock = None

    # -- life ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Lock the data folder (one server per folder), open the queue, requeue interrupted jobs, start
        one worker per device. Idempotent."""
        if self.queue is not None:
            return
        self.data.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.data / "server.lock", "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise ServeError(f"another reel server uses {self.data} — stop it, or give this one --data DIR") from None
        self.queue = JobQueue(self.data / "queue.db")
        resumed = self.queue.recover()
        if resumed:
            log.warning("jobs %s were interrupted; queued again (finished shots are reused)", resumed)
        self.stop.clear()
        for device in self.config.devices:
            worker = Worker(self.queue, device, self.plan_for, self.data / "jobs", self.wake, self.stop)
            worker.start()
            self.workers.append(worker)

    def close(self) -> None:
        """Stop the workers (a running job goes back in the queue at its next step) and unlock."""
        self.stop.set()
        self.wake.set()
        for worker in self.workers:
            worker.join(timeout=120)
        self.workers.clear()
        if self.queue is not None:
            self.queue.close()
            self.queue = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    # -- specs -----------------------------------------------------------------------------------
    def parse(self, body: bytes, content_type: str) -> tuple[str, str, dict]:
        """(text, format, data) of a submitted spec."""
        from reel.engine.spec import SpecError

        kind = content_type.split(";")[0].strip().lower()
        fmt = SPEC_TYPES.get(kind)
        if fmt is None:
            raise ApiError(415, f"Content-Type {kind or '(none)'}: send the spec as application/toml or "
                                "application/json")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "the spec is not UTF-8 text — save it as UTF-8") from None
        source = self.base / f"submitted.{fmt}"
        try:
            data = tomllib.loads(text) if fmt == "toml" else json.loads(text)
        except (ValueError, RecursionError) as err:  # TOMLDecodeError and JSONDecodeError are ValueErrors
            raise spec_error(SpecError(source, [("", f"not valid {fmt.upper()}: {err}")])) from None
        if not isinstance(data, dict):
            raise spec_error(SpecError(source, [("", "a spec is a table: [film] and [[shots]]")]))
        return text, fmt, data

    def plan(self, data: dict, fmt: str, base: Path, preview: bool):
        """The RenderPlan of a parsed spec, with every path checked against the roots first (SpecError)."""
        import os

        from reel.engine.plan import build_plan
        from reel.engine.spec import SpecError, film_from_dict
        from reel.kernels.attention import BACKENDS
        from reel.models.registry import BUILTIN_MODELS

        source = base / f"submitted.{fmt}"
        problems = spec_path_problems(data, base, self.roots)  # 1. before reel opens any file the spec names
        if problems:
            raise SpecError(source, problems)
        builtin = tuple(Path(os.path.realpath(p)).parent for p in BUILTIN_MODELS.values())

        def guard(field: str, path: Path):  # every path the spec loader meets (library files too), before it
            return self.roots.problem(field, path, base, extra=builtin)  # tests existence: no existence oracle

        film = film_from_dict(data, source, guard=guard)  # 2. the spec's own checks
        problems = film_path_problems(film, self.roots)  # 3. every path as resolved (library characters too)
        if problems:
            raise SpecError(source, problems)
        if film.speed.attention != "auto" and film.speed.attention not in BACKENDS:
            raise SpecError(source, [("speed.attention", f"{film.speed.attention!r}: unknown backend — use auto or "
                                                         f"one of {', '.join(BACKENDS)}")])
        return build_plan(film, preview=preview)

    def warm(self, make_plan: Callable) -> None:
        """Ask idle workers to load what `make_plan()` (a RenderPlan) needs before its first job arrives: the
        studio calls this when a project opens, so its first preview does not wait for the model to load."""
        for worker in self.workers:
            worker.warm_with = make_plan
        self.wake.set()

    def plan_for(self, job: Job):
        """A worker's view: the job's spec checked again (files may have changed since it was queued)."""
        text, fmt = job.spec, job.spec_format
        data = tomllib.loads(text) if fmt == "toml" else json.loads(text)
        return self.plan(data, fmt, Path(job.base), job.preview)

    def check(self, body: bytes, content_type: str, preview: bool):
        """(text, format, plan) of an acceptable spec; ApiError 4xx with the problems otherwise."""
        from reel.engine.spec import SpecError

        text, fmt, data = self.parse(body, content_type)
        try:
            return text, fmt, self.plan(data, fmt, self.base, preview)
        except SpecError as err:
            raise spec_error(err) from None
        except ValueError as err:  # PlanError (e.g. no preview adapter), ModelError, ...
            raise ApiError(400, str(err)) from None

    def submit(self, body: bytes, content_type: str, priority: int, preview: bool, force: bool) -> Job:
        text, fmt, plan = self.check(body, content_type, preview)
        if len(self.queue.queued_order()) >= self.config.max_queued:
            raise ApiError(429, f"the queue is full ({self.config.max_queued} jobs waiting) — try again later")
        job = self.queue.submit(plan.film.title, text, fmt, str(self.base), [j.shot_id for j in plan.jobs],
                                priority, preview, force)
        atomic_write_text(self.data / "jobs" / str(job.id) / f"spec.{fmt}", text)  # the job folder's record
        self.wake.set()
        return job

    # -- jobs ------------------------------------------------------------------------------------
    def need(self, job_id: int) -> Job:
        job = self.queue.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id} — GET /api/jobs lists them")
        return job

    def cancel(self, job_id: int) -> Job:
        job = self.need(job_id)
        if job.status in TERMINAL:
            raise ApiError(409, f"job {job_id} is already {job.status}")
        job = self.queue.request_cancel(job_id)
        for worker in self.workers:
            worker.cancelled.add(job_id)
        return job

    def folder(self, job_id: int) -> Path:
        return self.data / "jobs" / str(job_id)

    def job_json(self, job: Job, order: list[int] | None = None) -> dict:
        order = self.queue.queued_order() if order is None and job.status == "queued" else (order or [])
        base = f"/api/jobs/{job.id}"
        film = (job.result or {}).get("film")
        return {"id": job.id, "status": job.status, "title": job.title, "priority": job.priority,
                "preview": job.preview, "force": job.force, "shots": list(job.shot_ids),
                "position": order.index(job.id) + 1 if job.id in order else None,
                "created": iso(job.created), "started": iso(job.started), "finished": iso(job.finished),
                "run_order": job.run_order, "attempts": job.attempts, "device": job.device,
                "cancel_requested": job.cancel, "error": job.error,
                "problems": [{"field": f, "message": m} for f, m in job.problems],
                "progress": job.progress, "result": job.result, "version": job.version,
                "links": {"self": base, "events": f"{base}/events", "spec": f"{base}/spec",
                          "film": f"{base}/film" if film else None}}


def spec_error(err) -> ApiError:
    return ApiError(400, str(err), list(err.problems))


