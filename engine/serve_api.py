"""The routes of reel's HTTP server (engine/serve.py builds the app from them): the page, the token login,
and the /api router. Every handler is a thin call into `Server`; errors are ApiError bodies.

    app.include_router(page_router(config)); app.include_router(api_router(server, config))
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

from reel.engine.jobqueue import TERMINAL, Job
from reel.engine.serve_models import (
    ERRORS,
    FileName,
    Health,
    JobId,
    JobList,
    JobOut,
    Limit,
    Paused,
    Priority,
    SessionOk,
    ShotId,
    StaticName,
    Status,
    Validated,
    media_response,
)
from reel.engine.server import POLL_SECONDS, SESSION_BODY, SPEC_BODY, STATIC, WEB, Server, ServeConfig
from reel.engine.serve_security import TOKEN_COOKIE, ApiError, check_request, read_body, token_matches

log = logging.getLogger("reel.serve")
VIDEO = ("video/mp4", "video/quicktime", "video/webm")
FIRST_SHOT = {"job_id": "$response.body#/id", "shot_id": "$response.body#/shots/0"}
SHOT_LINKS = {"FirstShot": {"operationId": "shot", "parameters": FIRST_SHOT},
              "FirstShotFrame": {"operationId": "frame", "parameters": FIRST_SHOT}}
SSE_EVENT = {"type": "object", "description": "One event: `job` with the job as JSON data, then `end`.",
             "properties": {"event": {"enum": ["job", "end"]}, "data": {"type": "string"}, "id": {"type": "string"},
                            "retry": {"type": "integer"}}}


def add_error_handlers(app: FastAPI) -> None:
    """Every error, reel's or FastAPI's, answers as {"error": ..., "problems": [...]}; an unexpected exception
    as a 500 of that shape with an id to find its traceback in the server's log (the body holds no trace)."""

    @app.exception_handler(ApiError)
    async def api_error(_request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_params(_request, err: RequestValidationError):
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in err.errors()]
        return JSONResponse(ApiError(400, "bad request parameters", problems).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        headers = dict(err.headers or {})
        if err.status_code == 405:  # Starlette names the methods of one route; a path can have several
            headers["Allow"] = allowed_methods(request)
        return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code,
                            headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        ref = uuid.uuid4().hex[:12]
        log.error("error %s in %s %s", ref, request.method, request.url.path, exc_info=err)
        message = f"internal error {ref} — the server's log has the details; please report it"
        return JSONResponse(ApiError(500, message).body(), status_code=500)


def allowed_methods(request: Request) -> str:
    """Every method some route answers at the request's path (a 405's Allow header): Starlette's names only the
    methods of the first route that matched. The routers are the ones engine/serve.py keeps in app.state."""
    methods = set()
    for router in getattr(request.app.state, "routers", ()):
        for route in router.routes:
            if isinstance(route, BaseRoute) and route.matches(request.scope)[0] is not Match.NONE:
                methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


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
    def static(name: StaticName):
        if name not in STATIC:
            raise ApiError(404, f"no static file {name}")
        return FileResponse(WEB / name, media_type=STATIC[name])

    @router.post("/api/session", summary="Exchange the token for a cookie (the web page's login)",
                 openapi_extra=SESSION_BODY, response_model=SessionOk, responses=ERRORS)
    async def session(request: Request):
        try:
            token = json.loads(await read_body(request, 4096))["token"]
        except (ValueError, TypeError, KeyError, RecursionError):  # RecursionError: [[[[... nested too deep
            raise ApiError(400, 'send {"token": "..."} as JSON') from None
        if not token_matches(token, config.token):
            raise ApiError(401, "wrong token" if config.token else "this server has no token to log in with")
        response = JSONResponse({"ok": True})
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    return router


def api_router(server: Server, config: ServeConfig) -> APIRouter:
    """/api: every route behind the token and origin checks (with a token, the OpenAPI document declares
    it as an HTTP bearer scheme); every error answer is a `Problem`."""
    def guard(request: Request) -> None:
        check_request(request.method, request.headers, request.cookies, config.token, config.host)

    needs = [Depends(guard)]
    if config.token:  # documentation only: `guard` checks the header (or the session cookie) itself
        needs.append(Security(HTTPBearer(auto_error=False, description="The server's --token / REEL_TOKEN.")))
    api = APIRouter(prefix="/api", dependencies=needs, responses=ERRORS)
    _queue_routes(api, server, config)
    _job_routes(api, server)
    _file_routes(api, server)
    return api


def _queue_routes(api: APIRouter, server: Server, config: ServeConfig) -> None:
    @api.get("/health", summary="Workers, queue counts, roots", response_model=Health)
    def health():
        return {"status": "ok", "paused": server.queue.paused(), "counts": server.queue.counts(),
                "roots": [str(r) for r in server.roots.folders], "relative_paths_start_at": str(server.base),
                "workers": [{"device": w.device, "job": w.current, "alive": w.is_alive()} for w in server.workers]}

    @api.post("/validate", summary="Check a spec without queueing it", openapi_extra=SPEC_BODY,
              response_model=Validated)
    async def validate(request: Request, preview: bool = False):
        body = await read_body(request, config.max_body)
        _text, _fmt, plan = await run_in_threadpool(server.check, body, request.headers.get("content-type", ""),
                                                    preview)
        return {"ok": True, "title": plan.film.title, "shots": [j.shot_id for j in plan.jobs],
                "model": plan.film.model.name, "size": [plan.film.width, plan.film.height], "fps": plan.film.fps}

    @api.post("/jobs", status_code=201, summary="Queue a film", openapi_extra=SPEC_BODY, response_model=JobOut,
              responses={201: {"headers": {"Location": {"schema": {"type": "string"}, "description": "The job."}},
                               "links": SHOT_LINKS}})
    async def submit(request: Request, priority: Priority = 0, preview: bool = False, force: bool = False):
        body = await read_body(request, config.max_body)
        job = await run_in_threadpool(server.submit, body, request.headers.get("content-type", ""), priority,
                                      preview, force)
        return JSONResponse(server.job_json(job), status_code=201, headers={"Location": f"/api/jobs/{job.id}"})

    @api.get("/jobs", summary="The jobs, newest first", response_model=JobList)
    def jobs(status: Status | None = None, limit: Limit = 200):
        order = server.queue.queued_order()
        return {"jobs": [server.job_json(j, order) for j in server.queue.list(status, limit)],
                "paused": server.queue.paused()}

    @api.post("/queue/pause", summary="Start no new job (running ones finish)", response_model=Paused)
    def pause():
        server.queue.set_paused(True)
        return {"paused": True}

    @api.post("/queue/resume", summary="Start jobs again", response_model=Paused)
    def resume():
        server.queue.set_paused(False)
        server.wake.set()
        return {"paused": False}


def _job_routes(api: APIRouter, server: Server) -> None:
    @api.get("/jobs/{job_id}", summary="One job", response_model=JobOut)
    def job(job_id: JobId):
        return server.job_json(server.need(job_id))

    @api.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job", response_model=JobOut)
    def cancel(job_id: JobId):
        return server.job_json(server.cancel(job_id))

    @api.get("/jobs/{job_id}/events", summary="Server-sent events: `job` on every change, `end` at the end",
             response_class=StreamingResponse,
             responses={200: {"description": "An event stream", "content": {"text/event-stream": {
                 "schema": SSE_EVENT}}}})
    async def events(job_id: JobId, request: Request):
        await run_in_threadpool(server.need, job_id)
        return StreamingResponse(_event_stream(server, job_id, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.get("/jobs/{job_id}/spec", summary="The spec as submitted", response_class=Response,
             responses={200: {"description": "The spec's text", "content": {
                 "application/toml": {"schema": {"type": "string"}}, "application/json": {"schema": {}}}}})
    def spec(job_id: JobId):
        job = server.need(job_id)
        return PlainTextResponse(job.spec, media_type="application/json" if job.spec_format == "json"
                                 else "application/toml")

    @api.get("/jobs/{job_id}/film", summary="The finished film", response_class=FileResponse,
             responses=media_response("The film", *VIDEO))
    def film(job_id: JobId):
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

    @api.get("/jobs/{job_id}/shots/{shot_id}", summary="A shot's clip", response_class=FileResponse,
             responses=media_response("The shot's clip", *VIDEO), operation_id="shot")
    def shot(job_id: JobId, shot_id: ShotId):
        folder = shot_path(server.need(job_id), shot_id)
        found = [folder / f"{shot_id}{ext}" for ext in (".mp4", ".mov") if (folder / f"{shot_id}{ext}").is_file()]
        return media(found[0] if found else folder / f"{shot_id}.mp4", f"shot {shot_id}'s clip")

    @api.get("/jobs/{job_id}/shots/{shot_id}/frame.png", summary="A shot's newest decoded frame",
             response_class=FileResponse, responses=media_response("A PNG image", "image/png"), operation_id="frame")
    def frame(job_id: JobId, shot_id: ShotId):
        job = server.need(job_id)
        shot_path(job, shot_id)
        return media(server.folder(job_id) / "frames" / f"{shot_id}.png", f"a frame of shot {shot_id}")

    @api.get("/jobs/{job_id}/files/{path:path}", summary="A file of the job's folder", response_class=FileResponse,
             responses={200: {"description": "The file, with the media type its name implies",
                              "content": {"*/*": {}}}})
    def files(job_id: JobId, path: FileName):
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
