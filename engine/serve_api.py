"""The routes of reel's HTTP server (engine/serve.py builds the app from them): the page, the token login,
and the /api router. Every handler is a thin call into `Server`; errors are ApiError bodies.

    app.include_router(page_router(config)); app.include_router(api_router(server, config))
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from reel.engine.jobqueue import TERMINAL, Job
from reel.engine.server import POLL_SECONDS, SESSION_BODY, SPEC_BODY, STATIC, WEB, Server, ServeConfig
from reel.engine.serve_security import TOKEN_COOKIE, ApiError, check_request, read_body, token_matches


def add_error_handlers(app: FastAPI) -> None:
    """Every error, reel's or FastAPI's, answers as {"error": ..., "problems": [...]}."""

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


def media(path: Path, what: str):
    """A file of a job as a response (never cached), or 404 naming what is missing."""
    if not path.is_file():
        raise ApiError(404, f"{what} does not exist (yet)")
    return FileResponse(path, headers={"Cache-Control": "no-store"})


def page_router(config: ServeConfig) -> APIRouter:
    """The web page, its static files, and the token login that sets the page's cookie."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index():
        return FileResponse(WEB / "index.html", media_type="text/html")

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC:
            raise ApiError(404, f"no static file {name}")
        return FileResponse(WEB / name, media_type=STATIC[name])

    @router.post("/api/session", summary="Exchange the token for a cookie (the web page's login)",
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

    return router


def api_router(server: Server, config: ServeConfig) -> APIRouter:
    """/api: every route behind the token and origin checks."""
    def guard(request: Request) -> None:
        check_request(request.method, request.headers, request.cookies, config.token, config.host)

    api = APIRouter(prefix="/api", dependencies=[Depends(guard)])
    _queue_routes(api, server, config)
    _job_routes(api, server)
    _file_routes(api, server)
    return api


def _queue_routes(api: APIRouter, server: Server, config: ServeConfig) -> None:
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

    @api.post("/queue/pause", summary="Start no new job (running ones finish)")
    def pause():
        server.queue.set_paused(True)
        return {"paused": True}

    @api.post("/queue/resume", summary="Start jobs again")
    def resume():
        server.queue.set_paused(False)
        server.wake.set()
        return {"paused": False}


def _job_routes(api: APIRouter, server: Server) -> None:
    @api.get("/jobs/{job_id}", summary="One job")
    def job(job_id: int):
        return server.job_json(server.need(job_id))

    @api.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
    def cancel(job_id: int):
        return server.job_json(server.cancel(job_id))

    @api.get("/jobs/{job_id}/events", summary="Server-sent events: `job` on every change, `end` at the end")
    async def events(job_id: int, request: Request):
        await run_in_threadpool(server.need, job_id)
        return StreamingResponse(_event_stream(server, job_id, request), media_type="text/event-stream",
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


def _file_routes(api: APIRouter, server: Server) -> None:
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


async def _event_stream(server: Server, job_id: int, request: Request):
    """`job` events on every change of the job, `end` when it ends, keep-alive comments while quiet."""
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
