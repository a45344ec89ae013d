"""Running out of room in each writing stage of a render (the clips, the concat list, the film, the timeline
exports): `reel render` exits 1 with one line naming the file, its folder and the free space (no traceback),
leaves no temporary file and no partial file under a final name, and the same command afterwards succeeds.

Two real ways to run out of room, no mocks:
- a small tmpfs (a full disk: ENOSPC from Python and from ffmpeg). Mounting needs root; skipped elsewhere.
- the file size limit (RLIMIT_FSIZE, `ulimit -f`): Python's writes fail with EFBIG and ffmpeg, which gets the
  default SIGXFSZ disposition back from subprocess, is stopped by the signal. Runs anywhere.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from benchmarks.killtest import check_outputs, make_spec
from reel.engine.cli import app
from reel.engine.store import TMP_MARK

PAGE = 4096  # tmpfs allocates whole pages


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    """(spec, an uninterrupted render of it): a 2-shot film and its clips, film and exports."""
    work = tmp_path_factory.mktemp("disk-full-ref")
    spec = make_spec(work, str(tiny_model), shots=2, steps=2)
    result = _reel(spec, work / "out")
    assert result.returncode == 0, result.stderr
    return spec, work / "out"


def _reel(spec, out, fsize: int | None = None) -> subprocess.CompletedProcess:
    """`reel render SPEC --out OUT -q` in a child process, with at most `fsize` bytes a file if given."""
    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "REEL_CACHE_DIR": os.environ.get("REEL_CACHE_DIR", str(out.parent / "reel-cache"))}
    return subprocess.run([sys.executable, "-m", "reel.engine.cli", "render", str(spec), "--out", str(out), "-q"],
                          capture_output=True, text=True, env=env, preexec_fn=limit)


def _shots_only(reference_out, out) -> None:
    """OUT holds the reference's finished shots (and its lock file), not its film or exports."""
    shutil.copytree(reference_out, out, ignore=shutil.ignore_patterns("film*"))


@pytest.fixture
def disk(tmp_path):
    """A tmpfs mounted for the test (needs root), and a function leaving exactly N bytes free on it."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the file size limit test covers the same paths")

    def leave_free(nbytes: int | None) -> None:  # None: room again
        st = os.statvfs(mnt)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        size = "16m" if nbytes is None else str(used + nbytes)
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)

    yield mnt, leave_free
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _pages(path) -> int:
    return -(-path.stat().st_size // PAGE)


def _assert_failed_cleanly(result, root, names: str, why: str) -> None:
    """Exit 1, one line on stderr naming the file and why, no temporary file anywhere under `root`."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: could not write {names}") and why in lines[0], lines[0]
    assert "run the same command again" in lines[0]
    assert not [p for p in root.rglob(f"*{TMP_MARK}*")], list(root.rglob("*"))


def _rerun_matches(spec, out, reference_out) -> None:
    """The same command with room again succeeds, and the film is the uninterrupted render's, byte for byte."""
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "film.mp4").read_bytes() == (reference_out / "film.mp4").read_bytes()
    assert (out / "film.otio").is_file() and (out / "film.json").is_file()
    assert check_outputs(out) == (2, [])


def _setup(stage: str, reference_out, out, leave_free) -> tuple[str, str]:
    """Fill the disk so that the render of OUT runs out of room in `stage`; (file the error names, why)."""
    film = reference_out / "film.mp4"
    if stage == "clips":  # a fresh folder: the lock file takes a page, the clips' encoders share one more
        leave_free(2 * PAGE)
        return f"{out / 'shots'}/s", f"free in {out / 'shots'}"
    _shots_only(reference_out, out)  # the shots are reused: assembly writes first
    free = {"concat list": 0,  # not a byte for the list ffmpeg reads the clips from
            "film": PAGE,  # the list fits, the film does not
            "timeline exports": PAGE + _pages(film) * PAGE}[stage]  # list and film fit; the list's page is left
    leave_free(free)
    names = {"concat list": f"the clip list for {out / 'film.mp4'}", "film": str(out / "film.mp4"),
             "timeline exports": str(out / "film.otio")}[stage]
    return names, f"free in {out}"


@pytest.mark.parametrize("stage", ["clips", "concat list", "film", "timeline exports"])
def test_full_disk_in_each_stage(reference, disk, stage):
    spec, reference_out = reference
    mnt, leave_free = disk
    out = mnt / "out"
    names, where = _setup(stage, reference_out, out, leave_free)
    result = _reel(spec, out)
    _assert_failed_cleanly(result, mnt, names, "no space left on the device")
    assert where in result.stderr
    assert check_outputs(out)[1] == []  # every clip under a final name decodes fully
    if stage != "timeline exports":
        assert not (out / "film.mp4").exists()
    else:  # the film was finished before the exports failed; without its manifest the next run makes it again
        assert (out / "film.mp4").read_bytes() == (reference_out / "film.mp4").read_bytes()
    assert not (out / "film.json").exists() and not (out / "film.otio").exists()
    leave_free(None)
    _rerun_matches(spec, out, reference_out)


@pytest.mark.parametrize("stage", ["clips", "film"])
def test_file_size_limit(reference, tmp_path, stage):
    """ulimit -f below a clip's size (ffmpeg stopped by SIGXFSZ while encoding a clip), or below the film's
    (the shots reused, the clip list written, the film's ffmpeg stopped)."""
    spec, reference_out = reference
    out = tmp_path / "out"
    clips = sorted((reference_out / "shots").glob("*.mp4"))
    if stage == "clips":  # above the text-embedding cache entries (~2 KB), below a clip
        limit, names = min(c.stat().st_size for c in clips) // 2, f"{out / 'shots'}/s"
    else:
        _shots_only(reference_out, out)
        limit, names = (reference_out / "film.mp4").stat().st_size // 2, str(out / "film.mp4")
    result = _reel(spec, out, fsize=limit)
    _assert_failed_cleanly(result, out, names, "the file size limit was reached (ulimit -f")
    assert check_outputs(out)[1] == [] and not (out / "film.mp4").exists()
    _rerun_matches(spec, out, reference_out)
