"""The studio's renders through the server's job queue: takes of one shot (each a job, so progress and decoded
frames are live at /api/jobs/{id}/events and .../frame.png), picking one (reel's `pick`), and the film.

    jobs = queue_takes(studio, path, "chase", takes=[1, 2, 3], final=False)
    picked = pick_take(studio, path, etag, "chase", 2)     # the seed goes into the spec (tomlkit, one line)
    job = queue_film(studio, path, preview=False)

A take job renders a copy of the spec that holds only that shot, with the take's seed (engine/takes.py's seeds:
take 1 is the shot as the spec renders it now). Its record is reel's OUT/takes/SHOT/takes.json with OUT the project's
studio folder, so `reel pick` and the page agree; the clips stay in the jobs' folders.
"""

from __future__ import annotations

from pathlib import Path

from reel.engine.serve_security import ApiError
from reel.engine.store import atomic_write_json, atomic_write_text, read_json


def _takes_file(studio, path: Path, shot_id: str) -> Path:
    return studio.out(path) / "takes" / shot_id / "takes.json"


def takes_record(studio, path: Path, shot_id: str) -> dict:
    """The shot's takes.json with each take's status brought up to date from its job."""
    record = read_json(_takes_file(studio, path, shot_id)) or {"shot": shot_id, "takes": [], "picked": None}
    for take in record["takes"]:
        job = studio.server.queue.get(take.get("job", 0))
        if job is not None:
            take["status"] = job.status
    return record


def _take_spec(text: str, shot_id: str, seed: int) -> str:
    """The spec with only shot `shot_id` (seed set) and no audio: what one take job renders."""
    import tomlkit

    doc = tomlkit.parse(text)
    shot = next(t for t in doc["shots"] if t.get("id") == shot_id)
    shot["seed"] = seed
    for key in ("transition", "transition_seconds"):  # alone in its spec a crossfade has nothing to fade from;
        shot.pop(key, None)  # how a shot starts is not part of its clip (nor of its fingerprint)
    shots = tomlkit.aot()
    shots.append(shot)
    doc["shots"] = shots
    doc.pop("audio", None)
    return tomlkit.dumps(doc)


def _submit(studio, path: Path, text: str, shot_ids: list[str], title: str, preview: bool, seed=None):
    """Queue a job; `seed(job)` runs before the workers are woken (files the job's render store starts with)."""
    server = studio.server
    if len(server.queue.queued_order()) >= server.config.max_queued:
        raise ApiError(429, f"the queue is full ({server.config.max_queued} jobs waiting) — try again later")
    job = server.queue.submit(title, text, "toml", str(path.parent), shot_ids, 0, preview, False)
    atomic_write_text(server.folder(job.id) / "spec.toml", text)
    if seed is not None:
        seed(job)
    server.wake.set()
    return job


def _seed_picked(studio, path: Path, job, preview: bool) -> int:
    """Start the new film job's render store from the project's picked takes (reel's pick put them in the studio's
    folder, OUT/shots or OUT/preview/shots): their fingerprints match the film's shots, so the job reuses them
    instead of rendering them again. The files are laid out in a staging folder and renamed into place as the
    job's `out` in one step; if a worker already began the job there, nothing is seeded and the job renders those
    shots itself (the same pixels). Returns how many shots were seeded."""
    import os
    import shutil

    sub = "preview" if preview else ""
    src = studio.out(path) / sub / "shots"
    picked = [(m, c[0]) for m in sorted(src.glob("*.json")) if src.is_dir()
              if (c := [c for c in src.glob(f"{m.stem}.*") if c.suffix in (".mp4", ".mov")])]
    if not picked:
        return 0
    folder = studio.server.folder(job.id)
    staging = folder / f"out.seeding-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / sub / "shots").mkdir(parents=True)
    try:
        for manifest, clip in picked:
            sound = clip.with_suffix(".wav")  # a shot's own sound (LTX-2), when it has one
            for source in (clip, *([sound] if sound.is_file() else []), manifest):
                target = staging / sub / "shots" / source.name
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
        os.rename(staging, folder / "out")  # atomic; refused once a worker has put anything in `out`
    except OSError:
        return 0
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(picked)


def _valid_film(studio, path: Path, preview: bool):
    text, _etag = studio.read(path)
    film, problems = studio.check(path, text, preview=preview)
    if film is None:
        raise ApiError(400, "the spec has problems — fix them before rendering", problems)
    return text, film


def queue_takes(studio, path: Path, shot_id: str, takes: list[int], final: bool) -> dict:
    """Queue takes `takes` (numbers, 1..16) of a shot as previews (or finals); takes already queued or rendered
    of the same kind are kept, not queued again. Returns the shot's takes record."""
    from reel.engine.takes import take_seeds

    text, film = _valid_film(studio, path, preview=not final)
    if shot_id not in [s.id for s in film.shots]:
        raise ApiError(404, f"no shot {shot_id!r} in {path.name} — its shots are {', '.join(s.id for s in film.shots)}")
    if film.shot(shot_id).continue_from:
        raise ApiError(400, f"shot {shot_id} continues {film.shot(shot_id).continue_from}: take that shot instead")
    kind = "final" if final else "preview"
    seeds = take_seeds(film, shot_id, max(takes))
    specs = {k: _take_spec(text, shot_id, seeds[k - 1]) for k in sorted(set(takes))}
    with studio.lock(path):  # one read-modify-write of takes.json at a time
        record = takes_record(studio, path, shot_id)
        record["spec"] = str(path)
        # a take is kept when it rendered (or is rendering) this very spec; an edited shot gets new takes
        keep = [t for t in record["takes"] if t.get("status") not in ("failed", "cancelled")
                and not (t["kind"] == kind and t["take"] in specs and t.get("spec_hash") != _digest(specs[t["take"]]))]
        todo = [k for k in specs if not any(t["take"] == k and t["kind"] == kind for t in keep)]
        room = studio.server.config.max_queued - len(studio.server.queue.queued_order())
        if len(todo) > room:  # all or nothing: no job queued without its record
            raise ApiError(429, f"the queue has room for {max(room, 0)} more job(s), {len(todo)} take(s) asked — "
                                "try again later")
        record["takes"] = keep
        for k in todo:
            job = _submit(studio, path, specs[k], [shot_id], f"{film.title}: {shot_id} take {k}", preview=not final)
            shots = studio.server.folder(job.id) / "out" / ("preview" if not final else "") / "shots"
            record["takes"].append({"take": k, "kind": kind, "seed": seeds[k - 1], "job": job.id,
                                    "status": job.status, "spec_hash": _digest(specs[k]),
                                    "video": str(shots / f"{shot_id}.mp4"), "manifest": str(shots / f"{shot_id}.json")})
        record["takes"].sort(key=lambda t: (t["kind"], t["take"]))
        atomic_write_json(_takes_file(studio, path, shot_id), record)
    return record


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def next_take(studio, path: Path, shot_id: str) -> int:
    """The number of a new take (re-roll): one past the highest so far."""
    return max([t["take"] for t in takes_record(studio, path, shot_id)["takes"]] or [0]) + 1


def pick_take(studio, path: Path, etag: str, shot_id: str, take: int) -> dict:
    """reel's pick: the take's seed into the spec (if the file is still the one the client read)."""
    from reel.engine.studio_ops import Conflict
    from reel.engine.takes import TakeError, pick

    with studio.lock(path):  # the etag check and the spec's edit together (a save cannot slip in between)
        text, now = studio.read(path)
        if now != etag:
            raise Conflict(path, text, now)
        record = takes_record(studio, path, shot_id)
        if not any(t["take"] == take and t.get("status") == "completed" for t in record["takes"]):
            raise ApiError(400, f"take {take} of shot {shot_id} has not finished rendering — pick a completed take")
        try:
            return pick(studio.out(path), shot_id, take)
        except TakeError as err:
            raise ApiError(400, str(err)) from None


def queue_film(studio, path: Path, preview: bool):
    """Queue the whole film (its final, or its previews) as one job, starting from the project's picked takes."""
    text, film = _valid_film(studio, path, preview=preview)
    job = _submit(studio, path, text, [s.id for s in film.shots], film.title, preview,
                  seed=lambda job: _seed_picked(studio, path, job, preview))
    studio.record_film(path, job.id)
    return job
