"""The files and folders a film spec names: resolved, checked against a guard (a server's roots) before any
existence test, and stat-ed so that no file-system error escapes as a traceback. Imports no torch.

    path = spec_path("music.wav", source)          # ~ expanded, relative to the spec's folder
    found = existing("audio[0].file", path, problems, hint="check the path", guard=guard)   # Path or None

`guard(field, path)` returns a (field, message) refusal or None. It runs first, so that a refused path is
never tested for existence: the refusal reads the same whether the file is there or not.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from reel.models.registry import path_error

Guard = Callable[[str, Path], "tuple[str, str] | None"]
Kind = Literal["file", "dir", "missing", "other", "bad"]


def spec_path(value: str, base: Path) -> Path:
    """A path as a spec writes it: `~` expanded, relative paths under `base` (the spec's folder)."""
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # `~user` of no known user: the name stays as written
        path = Path(value)
    return path if path.is_absolute() else base / path


def kind(path: Path) -> tuple[Kind, str]:
    """What is at `path` (symlinks followed), and why it cannot be known when the answer is "bad"."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing", ""
    except (OSError, ValueError) as err:  # too long, a NUL character, a loop of links, no permission
        return "bad", path_error(err)
    if stat.S_ISREG(mode):
        return "file", ""
    return ("dir", "") if stat.S_ISDIR(mode) else ("other", "")


def shown(path: Path | str, limit: int = 160) -> str:
    """A path for a message: whole when short, its start and end when over `limit` characters."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"


def resolved(path: Path) -> Path:
    """`path` with symlinks resolved where that is possible (never raises)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return Path(os.path.abspath(path))


def existing(field: str, path: Path, problems: list, *, hint: str, guard: Guard | None = None,
             want: Literal["file", "dir"] = "file", missing: str | None = None) -> Path | None:
    """`path` resolved when it is a `want` (a regular file or a folder); else None and one problem for `field`:
    the guard's refusal, or what is there instead. `missing` replaces the "does not exist" message."""
    if guard is not None:
        refusal = guard(field, path)
        if refusal is not None:
            problems.append(refusal)
            return None
    found, why = kind(path)
    if found == want:
        return resolved(path)
    if found == "missing":
        message = missing or f"{shown(path)} does not exist — {hint}"
    elif found == "bad":
        message = f"{shown(path)!r} cannot be used as a path ({why}) — {hint}"
    elif found == "dir":
        message = f"{shown(path)} is a directory, not a file — {hint}"
    elif want == "dir":
        message = f"{shown(path)} is not a folder — {hint}"
    else:
        message = f"{shown(path)} is not a regular file (a device, pipe or socket) — {hint}"
    problems.append((field, message))
    return None
