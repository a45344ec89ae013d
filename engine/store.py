"""The render store: where outputs live, atomic writes, and what can be skipped on resume.

Layout of an output folder:
    DIR/shots/<id>.mp4, DIR/shots/<id>.json   one clip and its manifest per shot (.mov for ProRes)
    DIR/film.mp4, DIR/film.json               the assembled film and its manifest
    DIR/film.otio, film.xml, film.edl         the timeline for editors

Every file is first written as `<name>.tmp-<pid>-<thread>` in the same folder and renamed over the final
name, so an interrupted render never leaves a truncated file under a final name. Every failure path removes the
temporary file (a Python error, ffmpeg failing, an interrupt); only SIGKILL or a power cut leaves one, and the
next run's `prepare()` removes it. A write that runs out of room raises DiskFullError, naming the file, its
folder and the free space there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".tmp-"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, past the file size limit


class DiskFullError(OSError):
    """A write ran out of room (errno ENOSPC, EDQUOT or EFBIG); the message names the file, its folder and the
    free space there, and the temporary file is already gone."""

    def __init__(self, code: int, message: str):  # OSError's argument order: pickles (to and from workers) intact
        super().__init__(code, message)

    def __str__(self) -> str:
        return self.strerror


def human_bytes(n: float) -> str:
    """A size for people: 1536 -> '1.5 KiB'."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            break
    return f"{n:.1f} {unit}"


def disk_full(path: Path, code: int = errno.ENOSPC, what: str | None = None) -> DiskFullError:
    """The error for a write of `path` (or of `what`, said in its place) that ran out of room, with the free space
    of its folder now (after the partial file was removed) and the fix."""
    folder = path if path.is_dir() else path.parent
    try:
        free = f"{human_bytes(shutil.disk_usage(folder).free)} free in {folder}"
    except OSError:
        free = f"free space in {folder} unknown"
    if code == errno.EFBIG:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            why, fix = (f"the file size limit was reached (ulimit -f: {human_bytes(limit)}; {free})",
                        "raise the limit (ulimit -f unlimited)")
        else:
            why, fix = (f"the file is too large for this filesystem ({free})",
                        "render into a folder on another filesystem (FAT32, for one, stops at 4 GiB)")
    else:
        why = f"{'disk quota exceeded' if code == errno.EDQUOT else 'no space left on the device'} ({free})"
        fix = "free some space"
    return DiskFullError(code, f"could not write {what or path}: {why} — {fix} and run the same command again")


def remove_quietly(path: Path) -> None:
    """Remove a temporary file on a failure path: an error here must not hide the one being handled."""
    with contextlib.suppress(OSError):
        path.unlink()


@contextlib.contextmanager
def removed_on_error(tmp: Path, final: Path) -> Iterator[None]:
    """Remove `tmp` if the block fails in any way (an exception, an interrupt); a write that ran out of room
    comes out as DiskFullError naming `final`."""
    try:
        yield
    except OSError as err:
        remove_quietly(tmp)
        if err.errno in DISK_FULL and not isinstance(err, DiskFullError):
            raise disk_full(final, err.errno) from err
        raise
    except BaseException:
        remove_quietly(tmp)
        raise


def commit(tmp: Path, final: Path) -> None:
    """Make a finished temporary file visible under its final name: data on disk first, then the atomic rename.
    On any error the temporary file is removed."""
    with removed_on_error(tmp, final):
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)


def tmp_name(final: Path) -> Path:
    """The temporary sibling of `final` (same folder, so the rename is atomic)."""
    return final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")  # unique per thread


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it over `final`, on any error remove it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    with removed_on_error(tmp, final):
        yield tmp
    commit(tmp, final)


def atomic_write_text(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(final: Path, data: dict) -> None:
    atomic_write_text(final, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    """A manifest, or None if it is missing or unreadable (then the output is rendered again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class BusyError(RuntimeError):
    """Another reel process is writing to the same output folder."""


class RenderStore:
    """Paths and resume decisions for one output folder."""

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold OUT/.reel.lock (an flock, released when the process dies) while writing to the folder."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".reel.lock"
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise BusyError(f"{self.root} is in use by another reel process (pid {holder}) — wait for it to finish "
                            "or render into another --out folder") from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def __init__(self, root: str | Path, ext: str = ".mp4"):
        self.root = Path(root)
        self.ext = ext  # the video container's extension (.mp4, or .mov for ProRes)

    @property
    def shots_dir(self) -> Path:
        return self.root / "shots"

    def shot_video(self, shot_id: str) -> Path:
        return self.shots_dir / f"{shot_id}{self.ext}"

    def shot_manifest(self, shot_id: str) -> Path:
        return self.shots_dir / f"{shot_id}.json"

    def shot_audio(self, shot_id: str) -> Path:
        """The model's own sound of a shot (LTX-2), beside its clip: 16-bit PCM WAV."""
        return self.shots_dir / f"{shot_id}.wav"

    @property
    def film_video(self) -> Path:
        return self.root / f"film{self.ext}"

    @property
    def film_manifest(self) -> Path:
        return self.root / "film.json"

    def prepare(self) -> None:
        """Create the folders and remove temporary files left by an interrupted run."""
        self.shots_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.root, self.shots_dir):
            for leftover in folder.glob(f"*{TMP_MARK}*"):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def finished_shot(self, shot_id: str, fingerprint: str) -> dict | None:
        """The shot's manifest if its clip exists and was rendered from the same inputs, else None."""
        manifest = read_json(self.shot_manifest(shot_id))
        if manifest is None or manifest.get("fingerprint") != fingerprint:
            return None
        if not self.shot_video(shot_id).is_file():
            return None
        if manifest.get("audio") and not self.shot_audio(shot_id).is_file():  # its sound goes into the film
            return None
        return manifest


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs, then raise KeyboardInterrupt if one came.

    For starting child processes whose files must be cleaned up: an interrupt inside subprocess.Popen, or
    between a writer's start and its registration, would leave an encoder nobody can stop and its temporary
    file behind. Signals reach only the main thread; elsewhere the block runs as it is."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: held.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():  # None: a handler not set from Python; the default is the nearest
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    if held:
        signal.raise_signal(held[0])  # to the handler that was there (the CLI's raises KeyboardInterrupt)
