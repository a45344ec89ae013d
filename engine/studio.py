"""The studio's projects: film specs on disk under the server's --root, opened, validated, saved and edited without
ever losing an edit (engine/studio_api.py serves this over HTTP; engine/studio_takes.py renders takes and films).

    studio = Studio(server)
    project = studio.open("films/demo.toml")          # text, etag, shots, audio, characters, problems
    studio.save("films/demo.toml", text, etag)        # ApiError 409 (with the file's text) if it changed on disk

Every path a client names is checked against the roots before reel looks whether it exists, so a refusal reads
the same for a file that exists and one that does not. A save always keeps the text, problems or not; the
answer lists the problems, each with the shot and field it concerns.
"""

from __future__ import annotations

import hashlib
import threading
import tomllib
from pathlib import Path

from reel.engine.serve_security import ApiError
from reel.engine.store import atomic_write_text, read_json
from reel.engine.studio_ops import Conflict

MAX_PROJECTS = 500
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__"}
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac")


def etag_of(data: bytes) -> str:
    """The content hash a save must name (sha256, 32 hex digits)."""
    return hashlib.sha256(data).hexdigest()[:32]


class Studio:
    """Projects and their render state; one per server (state in DATA/studio/)."""

    def __init__(self, server):
        self.server = server
        self.state_dir = server.data / "studio"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- paths -----------------------------------------------------------------------------------
    def resolve(self, value: str, *, must_exist: bool = True, kinds: tuple[str, ...] = (".toml",)) -> Path:
        """The absolute path of a client-named file: under a root (checked first), of one of `kinds`, existing."""
        problem = self.server.roots.problem("path", value, self.server.base)
        if not self.server.roots or problem:
            raise ApiError(403, problem[1] if problem else "the server has no roots — start it with --root DIR",
                           [problem] if problem else None)
        try:
            path = Path(value).expanduser()
        except RuntimeError:  # `~user` of no known user: as written (roots.problem judged it the same way)
            path = Path(value)
        path = Path(_norm(path if path.is_absolute() else self.server.base / path))
        if path.suffix.lower() not in kinds:
            raise ApiError(400, f"{value!r}: not a {' or '.join(kinds)} file")
        try:
            is_file, is_dir = path.is_file(), path.is_dir()
        except OSError as err:  # a name the file system cannot hold (too long, ...)
            raise ApiError(400, f"{value!r}: not a usable file name ({err.strerror or err})") from None
        if is_dir:
            raise ApiError(400, f"{value!r} is a folder, not a {' or '.join(kinds)} file")
        if must_exist and not is_file:
            raise ApiError(404, f"{value!r}: no such file under the server's roots")
        return path

    def lock(self, path: Path) -> threading.Lock:
        """The project's lock: a save's etag check and its write happen under it (two saves based on one read
        cannot both pass), as do takes records and picks."""
        with self._locks_guard:
            return self._locks.setdefault(str(path), threading.Lock())

    def key(self, path: Path) -> str:
        return hashlib.sha256(str(path).encode()).hexdigest()[:16]

    def out(self, path: Path) -> Path:
        """The project's studio folder (takes records, picked clips)."""
        return self.state_dir / self.key(path)

    def state(self, path: Path) -> dict:
        return read_json(self.out(path) / "state.json") or {"films": []}

    def name(self, path: Path) -> str:
        for root in self.server.roots.folders:
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return str(path)

    def files(self, exts: tuple[str, ...]) -> list[Path]:
        """Files with these endings under the roots (the server's data folder left out), sorted, at most 500."""
        found: list[Path] = []
        for root in self.server.roots.folders:
            for path in sorted(root.rglob("*")):
                if len(found) >= MAX_PROJECTS:
                    return found
                parts = set(path.relative_to(root).parts)
                if (path.suffix.lower() in exts and not parts & SKIP_DIRS and path.is_file()
                        and not path.is_relative_to(self.server.data)
                        and self.server.roots.problem("path", path, root) is None):  # no symlink out of the roots
                    found.append(path)
        return found

    # -- projects --------------------------------------------------------------------------------
    def projects(self) -> list[dict]:
        out = []
        for path in self.files((".toml",)):
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, UnicodeDecodeError, RecursionError):  # not a readable spec: not listed
                continue
            if isinstance(data.get("film"), dict) and isinstance(data.get("shots"), list):
                title = data["film"].get("title")
                out.append({"path": str(path), "name": self.name(path),
                            "title": title if isinstance(title, str) else path.stem, "shots": len(data["shots"])})
        return out

    def read(self, path: Path) -> tuple[str, str]:
        raw = path.read_bytes()
        try:
            return raw.decode("utf-8"), etag_of(raw)
        except UnicodeDecodeError:
            raise ApiError(400, f"{path.name} is not UTF-8 text") from None

    def open(self, value: str) -> dict:
        """The project, and idle workers start loading its model so the first preview starts at once."""
        path = self.resolve(value)
        text, etag = self.read(path)
        project = self.describe(path, text, etag)
        if project["valid"]:
            self.server.warm(lambda: self.server.plan(tomllib.loads(text), "toml", path.parent, preview=True))
        return project

    def save(self, value: str, text: str, etag: str) -> dict:
        """Write `text` if the file is still the one the client read (`etag`); a new file when etag is ''."""
        path = self.resolve(value, must_exist=False)
        with self.lock(path):
            self._write_if_unchanged(value, path, text, etag)
        return self.describe(path, text, etag_of(text.encode("utf-8")))

    def _write_if_unchanged(self, value: str, path: Path, text: str, etag: str) -> None:
        """The etag check and the write, under the project's lock; a write the file system refuses is a 4xx."""
        if path.is_file():
            current, now = self.read(path)
            if now != etag:
                raise Conflict(path, current, now)
        elif etag:
            raise ApiError(404, f"{value!r}: no such file under the server's roots")
        try:
            atomic_write_text(path, text)
        except OSError as err:  # a parent that is a file, no permission, a full disk: nothing was written
            raise ApiError(400, f"{value!r} could not be written ({err.strerror or err}) — the file is unchanged"
                           ) from None

    def edit(self, value: str, etag: str, edit: dict) -> dict:
        from reel.engine.studio_ops import StudioEditError, apply_edit

        path = self.resolve(value)
        with self.lock(path):
            text, now = self.read(path)
            if now != etag:
                raise Conflict(path, text, now)
            try:
                new = apply_edit(text, edit)
            except StudioEditError as err:
                raise ApiError(400, str(err)) from None
            self._write_if_unchanged(value, path, new, etag)
        return self.describe(path, new, etag_of(new.encode("utf-8")))

    def check(self, path: Path, text: str, preview: bool = False):
        """(film or None, problems) of the text as a spec at `path` (roots checked, as for a submitted spec)."""
        from reel.engine.spec import SpecError

        try:
            data = tomllib.loads(text)
        except (ValueError, RecursionError) as err:
            return None, [("", f"not valid TOML: {err}")]
        if not isinstance(data, dict) or not isinstance(data.get("film"), dict):
            return None, [("film", "a spec has a [film] table and [[shots]]")]
        try:
            return self.server.plan(data, "toml", path.parent, preview).film, []
        except SpecError as err:
            return None, list(err.problems)
        except ValueError as err:
            return None, [("", str(err))]

    def describe(self, path: Path, text: str, etag: str) -> dict:
        """Everything the page shows of a project."""
        from reel.engine.studio_view import describe

        film, problems = self.check(path, text)
        return describe(self, path, text, etag, film, problems)

    def record_film(self, path: Path, job_id: int) -> None:
        from reel.engine.store import atomic_write_json

        state = self.state(path)
        state["films"] = [job_id, *state.get("films", [])][:20]
        atomic_write_json(self.out(path) / "state.json", state)


def _norm(path: Path) -> str:
    import os

    return os.path.normpath(path)
