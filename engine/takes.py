"""Takes: several renders of one shot with distinct, recorded seeds, a side-by-side sheet, and picking one.

    reel takes film.toml --shot chase -n 3            # 3 preview takes: OUT/takes/chase/preview/take-K/, sheet.png
    reel takes film.toml --shot chase -n 3 --final    # the same seeds as finals: OUT/takes/chase/final/take-K/
    reel pick chase 2                                 # take 2's seed -> the shot's `seed` in film.toml

Take 1 is the shot as the spec renders it now (its explicit, character or derived seed); take K > 1 has the seed
stable_seed(that seed, "take-K"), so running `reel takes` again renders nothing new. OUT/takes/SHOT/takes.json records
every take (seed, kind, clip, manifest) and the pick. Picking edits only that shot's `seed` line of the spec (tomlkit
keeps every comment and format), and when the take exists as a final its clip and manifest go into OUT/shots/: the
fingerprints match, so `reel render` reuses it instead of rendering it again (a preview take likewise goes into
OUT/preview/shots/ for `reel preview`); that manifest records the pick ("take": {"take", "seed", "of"}).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from reel.engine.plan import build_plan, shot_seed, stable_seed
from reel.engine.store import RenderStore, atomic_path, atomic_write_json, atomic_write_text, read_json

MAX_TAKES = 16


class TakeError(ValueError):
    """A takes or pick request that cannot be done; the message says why and the fix."""


def take_seeds(film, shot_id: str, n: int) -> list[int]:
    """The seeds of takes 1..n of a shot: its current seed first, then seeds derived from it."""
    index = _shot_index(film, shot_id)
    first, _ = shot_seed(film, index)
    return [first] + [stable_seed(first, f"take-{k}") for k in range(2, n + 1)]


def _shot_index(film, shot_id: str) -> int:
    ids = [s.id for s in film.shots]
    if shot_id not in ids:
        raise TakeError(f"--shot {shot_id}: no such shot in {film.source} — its shots are {', '.join(ids)}")
    return ids.index(shot_id)


def _with_seed(film, index: int, seed: int):
    shots = list(film.shots)
    shots[index] = dataclasses.replace(shots[index], seed=seed)
    return dataclasses.replace(film, shots=tuple(shots))


def takes_dir(out: Path, shot_id: str) -> Path:
    return Path(out) / "takes" / shot_id


def render_takes(engine, film, shot_id: str, n: int, out: Path, *, final: bool = False,
                 say: Callable[[str], None] = print) -> dict:
    """Render takes 1..n of `shot_id` (previews, or finals with `final`) with one engine; write the comparison sheet
    and OUT/takes/SHOT/takes.json. Returns that record."""
    from reel.engine.post.contact import contact_sheet

    if not 1 <= n <= MAX_TAKES:
        raise TakeError(f"-n {n}: between 1 and {MAX_TAKES} takes")
    index = _shot_index(film, shot_id)
    if film.shots[index].continue_from:
        raise TakeError(f"shot {shot_id} continues {film.shots[index].continue_from}: render takes of that shot and "
                        "pick one; a continued shot starts from its last frame")
    if not final and film.preview is None:
        raise TakeError(f"{film.model.name} has no preview adapter — render the takes as finals (--final)")
    kind = "final" if final else "preview"
    folder = takes_dir(out, shot_id)
    record = read_json(folder / "takes.json") or {"shot": shot_id, "takes": [], "picked": None}
    record["spec"] = str(Path(film.source).resolve())
    done = {(t["take"], t["kind"]): t for t in record["takes"]}
    clips = []
    for k, seed in enumerate(take_seeds(film, shot_id, n), start=1):
        plan = build_plan(_with_seed(film, index, seed), only=[shot_id], preview=not final)
        root = folder / kind / f"take-{k}"
        say(f"take {k}/{n} of {shot_id} ({kind}, seed {seed}) ...")
        result = engine.render(plan, root)
        shot = result.shots[0]
        done[(k, kind)] = {"take": k, "kind": kind, "seed": seed, "status": shot.status,
                           "video": str(shot.video.relative_to(folder)),
                           "manifest": str(shot.manifest.relative_to(folder))}
        clips.append((f"take {k}", shot.video))
    sheet = contact_sheet(clips, folder / f"{kind}-sheet.png", columns=6)
    record["takes"] = sorted(done.values(), key=lambda t: (t["kind"], t["take"]))
    record[f"{kind}_sheet"] = sheet.name
    atomic_write_json(folder / "takes.json", record)
    return record


def pick(out: Path, shot_id: str, take: int) -> dict:
    """Lock take `take`'s seed into the spec's shot, and hand an existing final of it to the film's render store."""
    folder = takes_dir(out, shot_id)
    record = read_json(folder / "takes.json")
    if record is None:
        raise TakeError(f"no takes of shot {shot_id} in {Path(out)} — render them first: reel takes SPEC --shot "
                        f"{shot_id} -n 3 --out {out}")
    mine = [t for t in record["takes"] if t["take"] == take]
    if not mine:
        known = sorted({t["take"] for t in record["takes"]})
        raise TakeError(f"shot {shot_id} has no take {take} in {folder} — its takes are {', '.join(map(str, known))}")
    seed = mine[0]["seed"]
    set_shot_seed(Path(record["spec"]), shot_id, seed)
    picked = {"take": take, "seed": seed, "of": sorted({t["take"] for t in record["takes"]})}
    adopted = {t["kind"]: _adopt(folder, t, Path(out) / ("preview" if t["kind"] == "preview" else ""), shot_id,
                                 picked) for t in mine}
    record["picked"] = {"take": take, "seed": seed, "final_reused": adopted.get("final", False),
                        "preview_reused": adopted.get("preview", False)}
    atomic_write_json(folder / "takes.json", record)
    return record["picked"]


def set_shot_seed(spec: Path, shot_id: str, seed: int) -> None:
    """Set `seed = SEED` in the [[shots]] table whose id is `shot_id`; every other byte of the file stays."""
    import tomlkit

    try:
        doc = tomlkit.parse(spec.read_text(encoding="utf-8"))
    except (OSError, tomlkit.exceptions.TOMLKitError) as err:
        raise TakeError(f"{spec}: cannot read the spec to pick a take ({err})") from err
    tables = [t for t in doc.get("shots", []) if t.get("id") == shot_id]
    if len(tables) != 1:
        raise TakeError(f"{spec}: no [[shots]] table with id = \"{shot_id}\" (it was renamed or removed since the "
                        "takes were rendered)")
    tables[0]["seed"] = seed
    atomic_write_text(spec, tomlkit.dumps(doc))


def _adopt(folder: Path, take: dict, root: Path, shot_id: str, picked: dict) -> bool:
    """Put the take's clip and manifest into the render store at `root` (OUT for finals, OUT/preview for previews),
    the clip as a hard link where the file system allows, so the next render of the film reuses it (the fingerprints
    match). The manifest goes last and records the pick: a clip without its manifest is rendered again."""
    clip, manifest = folder / take["video"], folder / take["manifest"]
    data = read_json(manifest)
    if data is None or not clip.is_file():
        return False
    store = RenderStore(root, ext=clip.suffix)
    store.prepare()
    store.shot_manifest(shot_id).unlink(missing_ok=True)
    files = [(clip, store.shot_video(shot_id))]
    if data.get("audio"):  # the model's own sound (LTX-2) beside the clip: the render reuses the shot only with it
        if not clip.with_suffix(".wav").is_file():
            return False
        files.append((clip.with_suffix(".wav"), store.shot_audio(shot_id)))
    for source, target in files:
        with atomic_path(target) as tmp:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
    atomic_write_json(store.shot_manifest(shot_id), data | {"take": picked})
    return True
