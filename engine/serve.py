"""reel's HTTP server: a persistent render queue, a JSON API with live progress, and a web page.

    reel serve                                   # http://127.0.0.1:8188/, queue and outputs in ./reel-server/
    reel serve --root ~/models --root ~/films    # the folders a submitted spec may name files in
    reel serve --host 0.0.0.0 --token SECRET     # off loopback a token is required (or REEL_TOKEN=SECRET):
                                                 # >= 16 characters after stripping whitespace (else exit 2)

The API (its OpenAPI document is GET /openapi.json; with a token every /api call sends
`Authorization: Bearer TOKEN`). Relative paths in a submitted spec start at the first --root. Path and query
parameters are checked at the edge (job ids 1..2**63-1, shot ids and file names by pattern: 400 otherwise);
every error, an unexpected one included (500, its traceback only in the server's log), has the body below.
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

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from reel.engine.serve_api import add_error_handlers, api_router, page_router
from reel.engine.server import ServeConfig, ServeError, Server, check_config
from reel.engine.studio_api import add_studio_routes, studio_page_router

__all__ = ["ServeConfig", "ServeError", "create_app", "serve", "serving_in_thread"]


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
    add_error_handlers(app)
    api = api_router(server, config)
    add_studio_routes(api, server)  # the studio (engine/studio_api.py): /studio and /api/studio/*
    app.state.routers = (page_router(config), studio_page_router(), api)  # also for 405's Allow header
    for router in app.state.routers:
        app.include_router(router)
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
