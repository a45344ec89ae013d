"""What the studio page shows of a project: its shots as storyboard cards (with render status and thumbnails), its
timeline, audio tracks, characters and the latest film render. Built from the spec as written (so a spec with
problems still shows every shot) and, when it validates, from the Film reel resolved (frames, seeds, durations).

    view = describe(studio, path, text, etag, film_or_None, problems)
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from reel.engine.studio_ops import problem_items

RUNNING = ("queued", "running")


def _raw(text: str) -> dict:
    try:
        data = tomllib.loads(text)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _list(data: dict, key: str) -> list[dict]:
    value = data.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _jobs_of(studio, path: Path, shot_ids: list[str]) -> list:
    """Every job the studio queued for this project (films and takes), newest first."""
    from reel.engine.studio_takes import takes_record

    ids = set(studio.state(path).get("films", []))
    for shot_id in shot_ids:
        ids |= {t["job"] for t in takes_record(studio, path, shot_id)["takes"] if "job" in t}
    jobs = [studio.server.queue.get(i) for i in sorted(ids, reverse=True)]
    return [j for j in jobs if j is not None]


def _shot_render(studio, jobs: list, shot_id: str) -> dict:
    """Status, thumbnail and clip URLs of one shot from the newest jobs that render it."""
    mine = [j for j in jobs if shot_id in j.shot_ids]
    out = {"status": "not rendered", "job": None, "thumbnail": None, "preview_url": None, "final_url": None}
    if mine:
        newest = mine[0]
        out["job"] = newest.id
        out["status"] = (newest.status if newest.status != "completed"
                         else "preview" if newest.preview else "final")
    for job in mine:
        done = job.status == "completed"
        if out["thumbnail"] is None and (studio.server.folder(job.id) / "frames" / f"{shot_id}.png").is_file():
            out["thumbnail"] = f"/api/jobs/{job.id}/shots/{shot_id}/frame.png"
        key = "preview_url" if job.preview else "final_url"
        if done and out[key] is None:
            out[key] = f"/api/jobs/{job.id}/shots/{shot_id}"
    return out


def _shots(studio, raw_shots: list[dict], film, jobs: list) -> list[dict]:
    from reel.engine.plan import shot_seed

    resolved = {s.id: (i, s) for i, s in enumerate(film.shots)} if film else {}
    fps = film.fps if film else None
    cards, start = [], 0.0
    for raw in raw_shots:
        shot_id = raw.get("id") if isinstance(raw.get("id"), str) else ""
        card = {"id": shot_id, "prompt": raw.get("prompt") if isinstance(raw.get("prompt"), str) else "",
                "characters": [c for c in raw.get("characters", []) if isinstance(c, str)]
                if isinstance(raw.get("characters"), list) else [],
                "seed": raw.get("seed") if isinstance(raw.get("seed"), int) else None, "seed_locked": "seed" in raw,
                "frames": raw.get("frames") if isinstance(raw.get("frames"), int) else None, "duration": None,
                "transition": raw.get("transition") if isinstance(raw.get("transition"), str) else "cut",
                "start": None}
        if shot_id in resolved:
            i, shot = resolved[shot_id]
            card["seed"] = shot_seed(film, i)[0]
            card["frames"] = shot.frames or film.frames
            card["characters"] = list(shot.characters)
            card["duration"] = round(card["frames"] / fps, 3)
            start -= (shot.transition_frames or 0) / fps
            card["start"] = round(max(start, 0.0), 3)
            start = max(start, 0.0) + card["duration"]
        cards.append(card | _shot_render(studio, jobs, shot_id))
    return cards


def _characters(raw: dict, film, cards: list[dict]) -> list[dict]:
    table = raw.get("characters") if isinstance(raw.get("characters"), dict) else {}
    out = {}
    for name, c in table.items():
        c = c if isinstance(c, dict) else {}
        lora = c.get("lora")
        out[name] = {"name": name, "trigger": c.get("trigger") if isinstance(c.get("trigger"), str) else name,
                     "lora": [Path(x).name for x in (lora if isinstance(lora, list) else [lora]) if isinstance(x, str)],
                     "weight": c.get("weight") if isinstance(c.get("weight"), (int, float)) else 1.0}
    for name, c in (film.characters.items() if film else ()):
        out[name] = {"name": name, "trigger": c.trigger, "lora": [p.name for p in c.loras],
                     "weight": c.weight if isinstance(c.weight, (int, float)) else list(c.weight)}
    for ch in out.values():
        ch["thumbnail"] = next((s["thumbnail"] for s in cards if ch["name"] in s["characters"] and s["thumbnail"]),
                               None)
    return sorted(out.values(), key=lambda c: c["name"])


def _film(studio, path: Path, jobs: list) -> dict | None:
    films = set(studio.state(path).get("films", []))
    job = next((j for j in jobs if j.id in films), None)
    if job is None:
        return None
    done = job.status == "completed" and (job.result or {}).get("film")
    base = f"/api/studio/films/{job.id}"
    return {"job": job.id, "status": job.status, "preview": job.preview,
            "url": f"/api/jobs/{job.id}/film" if done else None,
            "exports": {k: f"{base}/export/{k}" for k in ("mp4", "otio", "fcp7", "edl")} if done and not job.preview
            else {}}


def describe(studio, path: Path, text: str, etag: str, film, problems: list) -> dict:
    """The project as the page shows it."""
    raw = _raw(text)
    raw_shots = _list(raw, "shots")
    jobs = _jobs_of(studio, path, [s.get("id") for s in raw_shots if isinstance(s.get("id"), str)])
    cards = _shots(studio, raw_shots, film, jobs)
    tracks = []
    for i, t in enumerate(_list(raw, "audio")):
        keys = ("file", "at", "shot", "volume", "trim_start", "duration", "fade_in", "fade_out")
        tracks.append({"index": i, **{k: t.get(k) for k in keys},
                       "waveform": f"/api/studio/waveform?path={_q(str(path))}&track={i}"})
    film_raw = raw.get("film") if isinstance(raw.get("film"), dict) else {}
    return {"path": str(path), "name": studio.name(path), "text": text, "etag": etag,
            "title": film.title if film else str(film_raw.get("title", path.stem)),
            "fps": film.fps if film else None, "valid": film is not None,
            "problems": problem_items(problems, [s.get("id") for s in raw_shots]),
            "shots": cards, "audio": tracks, "characters": _characters(raw, film, cards),
            "duration": round(sum(c["duration"] or 0 for c in cards), 3), "film": _film(studio, path, jobs)}


def _q(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
