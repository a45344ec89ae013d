"""Render-farm scaling: the same film on a local Ray instance with 1 and with 2 CPU workers.

    .venv/bin/python -m benchmarks.bench_cluster                      # built-in model, 8 shots
    .venv/bin/python -m benchmarks.bench_cluster --shots 8 --rounds 2

Each worker gets cores / workers torch threads. Rounds alternate the order; the median counts. Writes
the `cluster` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.results import model_under_test, write_section
from reel.engine.cluster import render_on_cluster
from reel.engine.plan import build_plan
from reel.engine.spec import film_from_dict
from reel.models.shapes.world import sample_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="shapes")
    args = parser.parse_args()
    import ray

    model, note = model_under_test(args.model)
    work = Path(tempfile.mkdtemp(prefix="reel-bench-cluster-"))
    spec = {"film": {"model": model, "seed": 5},
            "shots": [{"id": f"s{i}", "prompt": p} for i, (p, _) in enumerate(sample_prompts(args.shots, seed=3))]}
    film = film_from_dict(spec, work / "film.toml")
    cores = os.cpu_count() or 2
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    times: dict[int, list[float]] = {1: [], 2: []}
    try:
        render_on_cluster(build_plan(film), work / "warm", address="auto", workers=2)  # start-up costs out
        for r in range(args.rounds):
            for w in ((1, 2) if r % 2 == 0 else (2, 1)):
                t = time.perf_counter()
                render_on_cluster(build_plan(film), work / f"r{r}-w{w}", address="auto", workers=w)
                times[w].append(time.perf_counter() - t)
    finally:
        ray.shutdown()
    one, two = statistics.median(times[1]), statistics.median(times[2])
    job = build_plan(film).jobs[0]
    md = f"""## Render farm: 1 against 2 CPU workers{note}

`.venv/bin/python -m benchmarks.bench_cluster --shots {args.shots} --rounds {args.rounds}`

{args.shots} shots of {job.width}x{job.height}, {job.frames} frames, {job.steps} steps on a local Ray instance with \
{cores} cores;
each worker loads the model once (its start-up is inside the time) and gets {cores} / workers torch threads.

| workers | film time | shots / minute | speed-up |
|---|---|---|---|
| 1 | {one:.1f} s | {args.shots / one * 60:.1f} | 1.00x |
| 2 | {two:.1f} s | {args.shots / two * 60:.1f} | {one / two:.2f}x |
"""
    write_section("cluster", md, {"seconds": {str(k): v for k, v in times.items()}, "note": note})
    print(md)


if __name__ == "__main__":
    main()
