"""Kill `reel render` at random moments and resume: nothing truncated under a final name, finished shots
reused, no temporary file left once the resume ran, and the film and every clip byte-identical to an
uninterrupted render's.

    .venv/bin/python -m benchmarks.killtest --runs 50 --seed 1     # writes the `kill` section of RESULTS.md

The tests run the same check with a few runs (tests/reliability/test_kill.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILM = """
[film]
model = "{model}"
seed = 21
steps = {steps}

{shots}
"""


@dataclass
class KillRun:
    delay: float
    killed: bool  # False when the render had already finished
    finished_before: int  # shots with a clip and matching manifest after the kill
    reused_on_resume: int
    truncated: list[str]
    film_equal: bool  # the same pixels as the uninterrupted film
    bytes_equal: bool  # the film and every clip byte for byte the uninterrupted render's
    tmp_after_kill: int  # temporary files the kill left behind (SIGKILL cannot clean up; the next run does)
    tmp_after_resume: int  # temporary files left after the resume finished (must be 0)


def make_spec(folder: Path, model: str, shots: int = 5, steps: int = 12) -> Path:
    body = "\n".join(f'[[shots]]\nid = "s{i}"\nprompt = "shot number {i} moving left"\n' for i in range(shots))
    spec = folder / "film.toml"
    spec.write_text(FILM.format(model=model, steps=steps, shots=body))
    return spec


def _default_signals() -> None:
    """In the child before exec: SIGINT/SIGTERM at their defaults and unblocked, as from a user's shell. A blocked
    or ignored SIGINT is inherited across exec (a library in the test process can leave one), and the render
    would then never see the signal this harness sends."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def reel(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "reel.engine.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, preexec_fn=_default_signals, **kw)


def frames_of(path: Path) -> np.ndarray:
    from reel.engine.post.contact import read_video

    return read_video(path)[0]


def check_outputs(out: Path) -> tuple[int, list[str]]:
    """(shots complete, files under final names that do not decode fully)."""
    bad, complete = [], 0
    for clip in sorted((out / "shots").glob("*.mp4")) if (out / "shots").is_dir() else []:
        try:
            n = len(frames_of(clip))
        except Exception:
            bad.append(clip.name)
            continue
        manifest = clip.with_suffix(".json")
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            if m.get("frames") == n:
                complete += 1
            else:
                bad.append(f"{clip.name} has {n} frames, manifest says {m.get('frames')}")
    for js in (out / "shots").glob("*.json") if (out / "shots").is_dir() else []:
        json.loads(js.read_text())  # every manifest parses: written atomically
    return complete, bad


def temporary_files(out: Path) -> int:
    from reel.engine.store import TMP_MARK

    return len(list(out.rglob(f"*{TMP_MARK}*"))) if out.is_dir() else 0


def same_bytes(out: Path, reference: Path) -> bool:
    """The film and every clip of `out` byte for byte those of `reference`."""
    videos = [Path("film.mp4"), *(p.relative_to(reference) for p in sorted((reference / "shots").glob("*.mp4")))]
    return all((out / v).is_file() and (out / v).read_bytes() == (reference / v).read_bytes() for v in videos)


def kill_and_resume(spec: Path, out: Path, reference: Path, delay: float, sig=signal.SIGKILL) -> KillRun:
    proc = reel("render", str(spec), "--out", str(out), "--quiet")
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(sig)
    proc.wait()
    complete, bad = check_outputs(out)
    tmp_after_kill = temporary_files(out)
    resume = reel("render", str(spec), "--out", str(out))
    stdout, stderr = resume.communicate()
    if resume.returncode != 0:
        raise RuntimeError(f"resume failed: {stderr.decode()}")
    text = stdout.decode() + stderr.decode()
    reused = text.count("unchanged, reused")
    equal = np.array_equal(frames_of(out / "film.mp4"), frames_of(reference / "film.mp4"))
    return KillRun(delay, killed, complete, reused, bad, equal, same_bytes(out, reference), tmp_after_kill,
                   temporary_files(out))


def run(model: str, runs: int, seed: int, work: Path, steps: int = 12) -> list[KillRun]:
    rng = random.Random(seed)
    spec = make_spec(work, model, steps=steps)
    reference = work / "reference"
    ref = reel("render", str(spec), "--out", str(reference), "--quiet")
    t0 = time.perf_counter()
    _, err = ref.communicate()
    if ref.returncode != 0:
        raise RuntimeError(err.decode())
    full = time.perf_counter() - t0
    return [kill_and_resume(spec, work / f"run{i}", reference, rng.uniform(0.3, full * 0.95)) for i in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", default="shapes")
    args = parser.parse_args()
    from benchmarks.results import model_under_test, write_section
    model, note = model_under_test(args.model)
    results = run(model, args.runs, args.seed, Path(tempfile.mkdtemp(prefix="reel-kill-")))
    killed = [r for r in results if r.killed]
    md = f"""## Kill and resume{note}

`.venv/bin/python -m benchmarks.killtest --runs {args.runs} --seed {args.seed}`

`reel render` of a 5-shot film killed with SIGKILL at a random moment (seeded), then run again.

| measure | value |
|---|---|
| runs (killed mid-render) | {len(results)} ({len(killed)}) |
| files under a final name that did not decode fully | {sum(len(r.truncated) for r in results)} |
| shots finished before the kill | {sum(r.finished_before for r in killed)} |
| of those, reused by the resume (not rendered again) | \
{sum(min(r.reused_on_resume, r.finished_before) for r in killed)} |
| resumed films equal to the uninterrupted film (pixels) | {sum(r.film_equal for r in results)} / {len(results)} |
| resumed outputs byte-identical to the uninterrupted render (film and every clip) | \
{sum(r.bytes_equal for r in results)} / {len(results)} |
| temporary files left by the kills (SIGKILL cannot clean up) | {sum(r.tmp_after_kill for r in results)} |
| temporary files left after the resumes | {sum(r.tmp_after_resume for r in results)} |
"""
    write_section("kill", md, {"runs": [r.__dict__ for r in results]})
    print(md)


if __name__ == "__main__":
    main()
