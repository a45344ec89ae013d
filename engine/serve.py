"""reel's HTTP server: a persistent render queue, a JSON API with live progress, and a web page.

    reel serve                                   # http://127.0.0.1:8188/, queue and outputs in ./reel-server/
    reel serve --root ~/models --root ~/films    # the folders a submitted spec may name files in
    reel serve --host 0.0.0.0 --token SECRET     # off loopback a token is required (or REEL_TOKEN=SECRET)

The API (its OpenAPI document is GET /openapi.json; with a token every /api call sends
`Authorization: Bearer TOKEN`). Relative paths in a submitted spec start at the first --root.
    POST /api/jobs?priority=0&preview=false&force=false   queue a film: the spec as application/toml or
                                          application/json; 201 with the job, or 4xx with
                                          {"error": ..., "problems": [{"field": ..., "message": ...}]}
    POST /api/validate                    check a spec without queueing it
    GET  /api/jobs[?status=queued]        the jobs, newest first
    GET  /api/jobs/{id}                   one job: status, queue position, per-shot progress, result
    POST /api/jobs/{id}/cancel            cancel it (a running job stops at its next denoising step)
    GET  /api/jobs/{id}/events            server-sent events: `job` (the job) on every change, then `end`
    GET  /api/jobs/{id}/film              the finished film
    GET  /api/jobs/{id}/shots/{shot}      a shot's clip; .../shots/{shot}/frame.png its newest decoded frame
    GET  /api/jobs/{id}/files/{path}      any file of the job's folder (out/film.json, out/shots/a.json, ...)
    GET  /api/jobs/{id}/spec              the spec as submitted
    POST /api/queue/pause, /api/queue/resume;  GET /api/health
    POST /api/session {"token": ...}      sets a cookie, so the web page (EventSource, <video>) sends the token
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import socket
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from reel.engine.jobqueue import TERMINAL, Job, JobQueue, Worker
from reel.engine.serve_security import (
    TOKEN_COOKIE,
    ApiError,
    Roots,
    check_bind,
    check_request,
    film_path_problems,
    read_body,
    spec_path_problems,
    token_matches,
)
from reel.engine.store import atomic_write_text
from reel.models.resources import package_folder

log = logging.getLogger("reel.serve")
WEB = package_folder("reel.engine.web")  # index.html, app.js, style.css
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
SPEC_TYPES = {"application/toml": "toml", "application/x-toml": "toml", "text/x-toml": "toml", "text/toml": "toml",
              "application/json": "json"}
POLL_SECONDS = 0.25  # how often an event stream looks for changes
SPEC_BODY = {"requestBody": {"required": True, "description": "The film spec (reel's TOML, or the same as JSON).",
                             "content": {"application/toml": {"schema": {"type": "string"}},
                                         "application/json": {"schema": {"type": "object"}}}}}
SESSION_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "properties": {"token": {"type": "string"}}, "required": ["token"]}}}}}


class ServeError(ValueError):
    """The server cannot start as configured; the message says what to change."""


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8188  # 0: any free port
    token: str | None = None  # required off loopback
    roots: tuple[Path, ...] = ()  # folders a spec may name files in
    data: Path = Path("reel-server")  # queue.db and jobs/<id>/ (spec, out/, frames/)
    devices: tuple[str, ...] = ("auto",)  # one worker per device
    max_body: int = 1 << 20  # bytes in a submitted spec
    max_queued: int = 1000  # queued jobs at most (429 beyond)


def check_config(config: ServeConfig) -> None:
    """Everything that can be wrong before the server starts: binding, roots, devices."""
    try:
        check_bind(config.host, config.token)
    except ValueError as err:
        raise ServeError(str(err)) from None
    for root in config.roots:
        if not Path(root).expanduser().is_dir():
            raise ServeError(f"--root {root}: not a folder — create it or fix the path")
    from reel.engine.runtime import DeviceError, pick_device

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
    """The queue, the workers and the rules for specs; the routes in create_app call into it."""

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
        from reel.engine.plan import build_plan
        from reel.engine.spec import SpecError, film_from_dict
        from reel.kernels.attention import BACKENDS

        source = base / f"submitted.{fmt}"
        problems = spec_path_problems(data, base, self.roots)  # 1. before reel opens any file the spec names
        if problems:
            raise SpecError(source, problems)
        film = film_from_dict(data, source)  # 2. the spec's own checks
        problems = film_path_problems(film, self.roots)  # 3. every path as resolved (library characters too)
        if problems:
            raise SpecError(source, problems)
        if film.speed.attention != "auto" and film.speed.attention not in BACKENDS:
            raise SpecError(source, [("speed.attention", f"{film.speed.attention!r}: unknown backend — use auto or "
                                                         f"one of {', '.join(BACKENDS)}")])
        return build_plan(film, preview=preview)

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


def create_app(config: ServeConfig):
    """The FastAPI app: the page, the API, and a lifespan that starts and stops the queue's workers."""
    server = Server(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await run_in_threadpool(server.start)
        try:
            yield
        finally:
            await run_in_threadpool(server.close)

    app = FastAPI(title="reel", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="A render queue for film specs. See engine/serve.py.")
    app.state.server = server

    @app.exception_handler(ApiError)
    async def api_error(_request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_params(_request, err: RequestValidationError):
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in err.errors()]
        return JSONResponse(ApiError(400, "bad request parameters", problems).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_request, err: HTTPException):
        return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    def guard(request: Request) -> None:
        check_request(request.method, request.headers, request.cookies, config.token, config.host)

    def media(path: Path, what: str):
        if not path.is_file():
            raise ApiError(404, f"{what} does not exist (yet)")
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    # -- the page --------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC:
            raise ApiError(404, f"no static file {name}")
        return FileResponse(WEB / name, media_type=STATIC[name])

    @app.post("/api/session", summary="Exchange the token for a cookie (the web page's login)",
              openapi_extra=SESSION_BODY)
    async def session(request: Request):
        try:
            token = json.loads(await read_body(request, 4096))["token"]
        except (ValueError, TypeError, KeyError):
            raise ApiError(400, 'send {"token": "..."} as JSON') from None
        if not config.token or not isinstance(token, str) or not token_matches(token, config.token):
            raise ApiError(401, "wrong token" if config.token else "this server has no token to log in with")
        response = JSONResponse({"ok": True})
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    api = APIRouter(prefix="/api", dependencies=[Depends(guard)])

    @api.get("/health", summary="Workers, queue counts, roots")
    def health():
        return {"status": "ok", "paused": server.queue.paused(), "counts": server.queue.counts(),
                "roots": [str(r) for r in server.roots.folders], "relative_paths_start_at": str(server.base),
                "workers": [{"device": w.device, "job": w.current, "alive": w.is_alive()} for w in server.workers]}

    @api.post("/validate", summary="Check a spec without queueing it", openapi_extra=SPEC_BODY)
    async def validate(request: Request, preview: bool = False):
        body = await read_body(request, config.max_body)
        _text, _fmt, plan = await run_in_threadpool(server.check, body, request.headers.get("content-type", ""),
                                                    preview)
        return {"ok": True, "title": plan.film.title, "shots": [j.shot_id for j in plan.jobs],
                "model": plan.film.model.name, "size": [plan.film.width, plan.film.height], "fps": plan.film.fps}

    @api.post("/jobs", status_code=201, summary="Queue a film", openapi_extra=SPEC_BODY)
    async def submit(request: Request, priority: int = Query(0, ge=-100, le=100), preview: bool = False,
                     force: bool = False):
        body = await read_body(request, config.max_body)
        job = await run_in_threadpool(server.submit, body, request.headers.get("content-type", ""), priority,
                                      preview, force)
        return JSONResponse(server.job_json(job), status_code=201, headers={"Location": f"/api/jobs/{job.id}"})

    @api.get("/jobs", summary="The jobs, newest first")
    def jobs(status: str | None = Query(None, pattern="^(queued|running|completed|failed|cancelled)$"),
             limit: int = Query(200, ge=1, le=1000)):
        order = server.queue.queued_order()
        return {"jobs": [server.job_json(j, order) for j in server.queue.list(status, limit)],
                "paused": server.queue.paused()}

    @api.get("/jobs/{job_id}", summary="One job")
    def job(job_id: int):
        return server.job_json(server.need(job_id))

    @api.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
    def cancel(job_id: int):
        return server.job_json(server.cancel(job_id))

    @api.get("/jobs/{job_id}/events", summary="Server-sent events: `job` on every change, `end` at the end")
    async def events(job_id: int, request: Request):
        await run_in_threadpool(server.need, job_id)

        async def stream():
            version, quiet = None, 0.0
            yield "retry: 1000\n\n"
            while True:
                job = await run_in_threadpool(server.queue.get, job_id)
                if job is None:
                    return
                if job.version != version:
                    version, quiet = job.version, 0.0
                    data = json.dumps(await run_in_threadpool(server.job_json, job))
                    yield f"id: {job.version}\nevent: job\ndata: {data}\n\n"
                if job.status in TERMINAL:
                    yield "event: end\ndata: {}\n\n"
                    return
                if server.stop.is_set() or await request.is_disconnected():
                    return
                await asyncio.sleep(POLL_SECONDS)
                quiet += POLL_SECONDS
                if quiet >= 15:
                    quiet = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.get("/jobs/{job_id}/spec", summary="The spec as submitted")
    def spec(job_id: int):
        job = server.need(job_id)
        return PlainTextResponse(job.spec, media_type="application/json" if job.spec_format == "json"
                                 else "application/toml")

    @api.get("/jobs/{job_id}/film", summary="The finished film")
    def film(job_id: int):
        job = server.need(job_id)
        rel = (job.result or {}).get("film")
        if not rel:
            raise ApiError(404, f"job {job_id} has no film yet (status {job.status})")
        return media(server.folder(job_id) / rel, "the film")

    def shot_path(job: Job, shot_id: str) -> Path:
        if shot_id not in job.shot_ids:
            raise ApiError(404, f"job {job.id} has no shot {shot_id!r}; its shots: {', '.join(job.shot_ids)}")
        return server.folder(job.id) / "out" / ("preview" if job.preview else "") / "shots"

    @api.get("/jobs/{job_id}/shots/{shot_id}", summary="A shot's clip")
    def shot(job_id: int, shot_id: str):
        folder = shot_path(server.need(job_id), shot_id)
        found = [folder / f"{shot_id}{ext}" for ext in (".mp4", ".mov") if (folder / f"{shot_id}{ext}").is_file()]
        return media(found[0] if found else folder / f"{shot_id}.mp4", f"shot {shot_id}'s clip")

    @api.get("/jobs/{job_id}/shots/{shot_id}/frame.png", summary="A shot's newest decoded frame")
    def frame(job_id: int, shot_id: str):
        job = server.need(job_id)
        shot_path(job, shot_id)
        return media(server.folder(job_id) / "frames" / f"{shot_id}.png", f"a frame of shot {shot_id}")

    @api.get("/jobs/{job_id}/files/{path:path}", summary="A file of the job's folder")
    def files(job_id: int, path: str):
        folder = server.folder(server.need(job_id).id).resolve()
        target = (folder / path).resolve()
        if not target.is_relative_to(folder):
            raise ApiError(404, f"{path}: not in the job's folder")
        return media(target, path)

    @api.post("/queue/pause", summary="Start no new job (running ones finish)")
    def pause():
        server.queue.set_paused(True)
        return {"paused": True}

    @api.post("/queue/resume", summary="Start jobs again")
    def resume():
        server.queue.set_paused(False)
        server.wake.set()
        return {"paused": False}

    app.include_router(api)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on such sockets (else ~40 ms per keep-alive reply)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({err.strerror}) — choose another --port") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def _uvicorn(config: ServeConfig):
    import uvicorn

    app = create_app(config)
    return app, uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="on"))


def serve(config: ServeConfig, say=print) -> None:
    """Run the server in the foreground until Ctrl-C (a running job goes back in the queue)."""
    check_config(config)
    sock = bind(config.host, config.port)
    app, server = _uvicorn(config)
    app.state.server.start()  # lock and queue errors surface here, as ServeError
    say(f"reel server on {url_of(sock)} — queue {app.state.server.data / 'queue.db'}, roots: "
        f"{app.state.server.roots}, devices: {', '.join(config.devices)}"
        f"{', token required' if config.token else ''}")
    try:
        server.run(sockets=[sock])
    finally:
        app.state.server.close()
        sock.close()


@contextlib.contextmanager
def serving_in_thread(config: ServeConfig) -> Iterator[str]:
    """Run the server in a background thread (tests, benchmarks); yields its base URL, stops on exit."""
    check_config(config)
    sock = bind(config.host, config.port)
    app, server = _uvicorn(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="reel-serve", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise ServeError("the server stopped while starting (see the log above)")
            time.sleep(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
