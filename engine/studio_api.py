"""The studio's routes: the page at /studio and /api/studio/* (projects, edits, takes, picks, films, exports,
waveforms). engine/serve.py includes them; every route sits behind the same token and origin guard as /api.

    GET  /api/studio/projects                      film specs under the roots, and audio files
    GET  /api/studio/project?path=P                text, etag, shots, audio, characters, problems, film
    PUT  /api/studio/project?path=P   {text, etag} save (409 with the file's text when it changed on disk)
    POST /api/studio/edit?path=P      {etag, op, ...}  add/remove/move/set a shot or an audio track (tomlkit)
    POST /api/studio/takes?path=P&shot=S&n=3[&final=true]   queue takes 1..n (jobs of the queue)
    POST /api/studio/reroll?path=P&shot=S          queue one more take;  GET /api/studio/takes?path=P&shot=S
    POST /api/studio/pick?path=P      {etag, shot, take}   lock the take's seed into the spec (reel pick)
    POST /api/studio/film?path=P[&preview=true]    queue the film;  GET /api/studio/films/{job}/export/{kind}
    GET  /api/studio/waveform?path=P&track=I&bins=200      peaks of an [[audio]] file
"""

from __future__ import annotations

from fastapi import APIRouter, Body
from fastapi.responses import FileResponse, JSONResponse

from reel.engine.serve_api import media
from reel.engine.serve_models import ERRORS, JobOut, media_response
from reel.engine.serve_security import ApiError
from reel.engine.studio import AUDIO_EXTS, Studio
from reel.engine.studio_ops import Conflict
from reel.engine.studio_models import (
    CONFLICT,
    Bins,
    EditIn,
    ExportKind,
    FilmJob,
    PickIn,
    ProjectList,
    ProjectOut,
    ProjectPath,
    SaveIn,
    ShotQ,
    TakeCount,
    TakesOut,
    TrackQ,
    Waveform,
)
from reel.engine.server import WEB

PAGE_FILES = {"studio.js": "text/javascript", "studio.css": "text/css", "studio_timeline.js": "text/javascript"}
EXPORT_TYPES = {"mp4": "video/mp4", "otio": "application/json", "fcp7": "application/xml", "edl": "text/plain"}
EXPORT_CONTENT = media_response("", "video/mp4", "application/xml", "text/plain")[200]["content"]
EXPORT_RESPONSES = {200: {"description": "The film (mp4) or its OTIO (JSON), FCP 7 XML or CMX 3600 EDL",
                          "content": {**EXPORT_CONTENT, "application/json": {"schema": {"type": "object"}}}}}


def studio_page_router() -> APIRouter:
    """The studio page and its static files (no CDN, nothing hosted elsewhere)."""
    router = APIRouter()

    @router.get("/studio", include_in_schema=False)
    def page():
        return FileResponse(WEB / "studio.html", media_type="text/html")

    @router.get("/studio/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in PAGE_FILES:
            raise ApiError(404, f"no static file {name}")
        return FileResponse(WEB / name, media_type=PAGE_FILES[name])

    return router


def add_studio_routes(api: APIRouter, server) -> None:
    """/api/studio/* on the guarded /api router."""
    studio = Studio(server)

    def conflicts(call, *args):
        try:
            return call(*args)
        except Conflict as err:
            return JSONResponse(err.body(), status_code=409)

    @api.get("/studio/projects", summary="Film specs and audio files under the roots", response_model=ProjectList)
    def projects():
        return {"projects": studio.projects(), "audio": [str(p) for p in studio.files(AUDIO_EXTS)]}

    @api.get("/studio/project", summary="Open a project", response_model=ProjectOut)
    def project(path: ProjectPath):
        return studio.open(path)

    @api.put("/studio/project", summary="Save a project (never over a newer file)", response_model=ProjectOut,
             responses=CONFLICT)
    def save(path: ProjectPath, body: SaveIn = Body(...)):
        return conflicts(studio.save, path, body.text, body.etag)

    @api.post("/studio/edit", summary="One structured edit of a shot or an audio track", response_model=ProjectOut,
              responses=CONFLICT)
    def edit(path: ProjectPath, body: EditIn = Body(...)):
        return conflicts(studio.edit, path, body.etag, body.model_dump(exclude={"etag"}))

    _take_routes(api, studio)
    _film_routes(api, studio)


def audio_files(text: str) -> list[str | None]:
    """The `file` of each [[audio]] table of a spec's text (None where it has none)."""
    import tomllib

    try:
        tracks = tomllib.loads(text).get("audio", [])
    except (ValueError, RecursionError):
        return []
    tracks = tracks if isinstance(tracks, list) else []
    return [t.get("file") if isinstance(t, dict) and isinstance(t.get("file"), str) else None for t in tracks]


def _takes_out(record: dict) -> dict:
    for t in record["takes"]:
        job, shot = t.get("job"), record["shot"]
        t["clip_url"] = f"/api/jobs/{job}/shots/{shot}" if t.get("status") == "completed" else None
        t["frame_url"] = f"/api/jobs/{job}/shots/{shot}/frame.png"
        t["events_url"] = f"/api/jobs/{job}/events"
    return record


def _take_routes(api: APIRouter, studio: Studio) -> None:
    from reel.engine.studio_takes import next_take, pick_take, queue_takes, takes_record

    @api.post("/studio/takes", summary="Queue takes 1..n of a shot (previews, or finals)", response_model=TakesOut)
    def takes(path: ProjectPath, shot: ShotQ, n: TakeCount = 3, final: bool = False):
        return _takes_out(queue_takes(studio, studio.resolve(path), shot, list(range(1, n + 1)), final))

    @api.post("/studio/reroll", summary="Queue one more take of a shot", response_model=TakesOut)
    def reroll(path: ProjectPath, shot: ShotQ, final: bool = False):
        file = studio.resolve(path)
        return _takes_out(queue_takes(studio, file, shot, [next_take(studio, file, shot)], final))

    @api.get("/studio/takes", summary="A shot's takes with their clips", response_model=TakesOut)
    def list_takes(path: ProjectPath, shot: ShotQ):
        return _takes_out(takes_record(studio, studio.resolve(path), shot))

    @api.post("/studio/pick", summary="Keep a take: its seed goes into the spec", response_model=ProjectOut,
              responses=CONFLICT)
    def pick(path: ProjectPath, body: PickIn = Body(...)):
        file = studio.resolve(path)
        try:
            pick_take(studio, file, body.etag, body.shot, body.take)
        except Conflict as err:
            return JSONResponse(err.body(), status_code=409)
        return studio.open(path)


def _film_routes(api: APIRouter, studio: Studio) -> None:
    from reel.engine.studio_takes import queue_film
    from reel.engine.waveform import WaveformError, waveform

    @api.post("/studio/film", status_code=201, summary="Queue the film (final, or previews)", response_model=JobOut)
    def film(path: ProjectPath, preview: bool = False):
        job = queue_film(studio, studio.resolve(path), preview)
        return studio.server.job_json(job)

    @api.get("/studio/films/{job_id}/export/{kind}", summary="The rendered film or its editor export",
             response_class=FileResponse, responses=EXPORT_RESPONSES)
    def export(job_id: FilmJob, kind: ExportKind):
        job = studio.server.need(job_id)
        out = studio.server.folder(job.id) / "out"
        if job.status != "completed" or job.preview or not (job.result or {}).get("film"):
            raise ApiError(404, f"job {job_id} has no final film (status {job.status})")
        target = studio.server.folder(job.id) / job.result["film"] if kind == "mp4" else out / (
            {"otio": "film.otio", "fcp7": "film.xml", "edl": "film.edl"}[kind])
        media(target, f"the film's {kind} export")  # 404 when missing
        return FileResponse(target, media_type=EXPORT_TYPES[kind], filename=f"film-{job_id}{target.suffix}",
                            headers={"Cache-Control": "no-store"})

    @api.get("/studio/waveform", summary="Peaks of an audio track's file (from ffmpeg's decode)",
             response_model=Waveform)
    def wave(path: ProjectPath, track: TrackQ, bins: Bins = 200):  # sync: FastAPI runs it in its threadpool
        from reel.engine.spec_paths import spec_path

        file = studio.resolve(path)
        tracks = audio_files(studio.read(file)[0])
        if track >= len(tracks) or tracks[track] is None:
            raise ApiError(404, f"no audio track {track} with a file in {file.name}")
        audio = studio.resolve(str(spec_path(tracks[track], file.parent)), kinds=AUDIO_EXTS)  # `~` as specs do
        try:
            return waveform(audio, bins)
        except (WaveformError, OSError) as err:
            raise ApiError(400, str(err)) from None


__all__ = ["ERRORS", "add_studio_routes", "studio_page_router"]
