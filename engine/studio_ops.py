"""Structured edits of a film spec's text for the studio page, made with tomlkit so every comment and format
that the edit does not touch survives. Pure functions: text in, text out; StudioEditError when the edit names a
shot or track that is not there (the message says which ones are).

    text = apply_edit(text, {"op": "move_shot", "shot": "b", "to": 0})
    text = apply_edit(text, {"op": "set_shot", "shot": "b", "field": "prompt", "value": "a red circle"})
    text = apply_edit(text, {"op": "add_audio", "fields": {"file": "music.wav", "at": 1.5}})
"""

from __future__ import annotations

import re
from pathlib import Path

from reel.engine.serve_security import ApiError

SHOT_FIELDS = ("prompt", "frames", "seconds", "seed", "steps", "guidance", "negative_prompt", "characters",
               "transition", "transition_seconds", "image", "continue_from", "audio", "audio_volume")
AUDIO_FIELDS = ("file", "at", "shot", "volume", "trim_start", "duration", "fade_in", "fade_out")
SHOT_FIELD = re.compile(r"^shots\[(\d+)\]\.?([A-Za-z_]*)")
NEW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class Conflict(ApiError):
    """409: the file changed on disk since the client read it; the body carries the file as it is now."""

    def __init__(self, path: Path, text: str, etag: str):
        super().__init__(409, f"{path.name} changed on disk since you opened it — your edit was not written; "
                              "merge it into the current text and save again")
        self.text, self.etag = text, etag

    def body(self) -> dict:
        return super().body() | {"text": self.text, "etag": self.etag}


class StudioEditError(ValueError):
    """An edit that cannot be applied to the spec as it is now."""


def _doc(text: str):
    import tomlkit

    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as err:
        raise StudioEditError(f"the spec is not valid TOML ({err}) — fix it in the text editor first") from None


def _aot(doc, key: str):
    """The array of tables `key` ([[shots]] or [[audio]]), created when missing."""
    import tomlkit

    if key not in doc:
        doc[key] = tomlkit.aot()
    value = doc[key]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise StudioEditError(f"`{key}` is not a list of [[{key}]] tables — fix it in the text editor")
    return value


def _shot_index(shots, shot_id: str) -> int:
    ids = [t.get("id") for t in shots]
    if shot_id not in ids:
        raise StudioEditError(f"no shot {shot_id!r} in the spec — its shots are {', '.join(map(str, ids)) or 'none'}")
    return ids.index(shot_id)


def _track_index(tracks, index: int) -> int:
    if not 0 <= index < len(tracks):
        raise StudioEditError(f"no audio track {index} — the spec has {len(tracks)} (numbered from 0)")
    return index


def _move(array, frm: int, to: int) -> None:
    """Move item `frm` to position `to` (clamped) of a tomlkit array of tables."""
    items = [array[i] for i in range(len(array))]
    item = items.pop(frm)
    items.insert(max(0, min(to, len(items))), item)
    while len(array):
        array.pop()
    for t in items:
        array.append(t)


def _set(table, field: str, value, allowed: tuple[str, ...]) -> None:
    if field not in allowed:
        raise StudioEditError(f"field {field!r} cannot be set here — use one of {', '.join(allowed)}")
    if value is None:
        table.pop(field, None)  # back to the film's value
    else:
        table[field] = value


def _add_shot(doc, edit: dict) -> None:
    import tomlkit

    shots = _aot(doc, "shots")
    shot_id = edit.get("shot") or _free_id([t.get("id") for t in shots])
    if not NEW_ID.match(shot_id) or shot_id in [t.get("id") for t in shots]:
        raise StudioEditError(f"shot id {shot_id!r} is taken or not a valid id (letters, digits, _ and -)")
    table = tomlkit.table()
    table["id"] = shot_id
    table["prompt"] = edit.get("value") or "a white circle moving right on a black background"
    table.add(tomlkit.nl())
    at = edit.get("to")
    shots.append(table)
    if at is not None:
        _move(shots, len(shots) - 1, at)


def _free_id(ids: list) -> str:
    n = len(ids) + 1
    while f"shot{n}" in ids:
        n += 1
    return f"shot{n}"


def apply_edit(text: str, edit: dict) -> str:
    """The spec's text after one edit; `edit` has an `op` (see STUDIO_OPS in engine/studio_models.py)."""
    import tomlkit

    doc = _doc(text)
    op = edit["op"]
    if op == "add_shot":
        _add_shot(doc, edit)
    elif op in ("remove_shot", "move_shot", "set_shot"):
        shots = _aot(doc, "shots")
        i = _shot_index(shots, edit.get("shot") or "")
        if op == "remove_shot":
            shots.pop(i)
        elif op == "move_shot":
            _move(shots, i, int(edit.get("to") or 0))
        else:
            _set(shots[i], edit.get("field") or "", edit.get("value"), SHOT_FIELDS)
    elif op == "add_audio":
        table = tomlkit.table()
        for key, value in (edit.get("fields") or {}).items():
            _set(table, key, value, AUDIO_FIELDS)
        if "file" not in table:
            raise StudioEditError("an audio track needs a `file` (a path under the server's roots)")
        table.add(tomlkit.nl())
        _aot(doc, "audio").append(table)
    elif op in ("remove_audio", "move_audio", "set_audio"):
        tracks = _aot(doc, "audio")
        i = _track_index(tracks, int(edit.get("track") or 0))
        if op == "remove_audio":
            tracks.pop(i)
        elif op == "move_audio":
            _move(tracks, i, int(edit.get("to") or 0))
        else:
            _set(tracks[i], edit.get("field") or "", edit.get("value"), AUDIO_FIELDS)
    else:
        raise StudioEditError(f"unknown edit {op!r}")
    return tomlkit.dumps(doc)


def problem_items(problems: list[tuple[str, str]], shot_ids: list) -> list[dict]:
    """Problems with the shot and key they concern (`shots[1].frames (shot 'b')` -> shot b, key frames)."""
    items = []
    for field, message in problems:
        m = SHOT_FIELD.match(field)
        shot = shot_ids[int(m.group(1))] if m and int(m.group(1)) < len(shot_ids) else None
        items.append({"field": field, "message": message, "shot": shot if isinstance(shot, str) else None,
                      "key": m.group(2) if m else field.split(".")[-1].split(" ")[0]})
    return items
