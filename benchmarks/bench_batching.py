"""Throughput of batched shot rendering against one-by-one, same process, interleaved rounds.

    .venv/bin/python -m benchmarks.bench_batching                    # built-in model, 8 shots
    .venv/bin/python -m benchmarks.bench_batching --shots 8 --sizes 1,2,4,8 --rounds 2

Each round renders the same 8-shot film once per batch size (order rotated between rounds) into a
fresh folder; shots per minute is the median over rounds. Writes the `batching` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.results import model_under_test, write_section
from reel.engine.plan import build_plan
from reel.engine.runtime import Engine
from reel.engine.spec import film_from_dict
from reel.models.shapes.world import sample_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--sizes", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="shapes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    model, note = model_under_test(args.model)
    work = Path(tempfile.mkdtemp(prefix="reel-bench-batch-"))
    prompts = [p for p, _ in sample_prompts(args.shots, seed=5)]
    spec = {"film": {"model": model, "seed": 3},
            "shots": [{"id": f"s{i}", "prompt": p} for i, p in enumerate(prompts)]}
    film = film_from_dict(spec, work / "film.toml")
    engine = Engine("cpu")
    engine.render(build_plan(film), work / "warmup")  # load, cache prompts, warm up kernels
    times: dict[int, list[float]] = {b: [] for b in sizes}
    for r in range(args.rounds):
        order = sizes[r % len(sizes):] + sizes[:r % len(sizes)]
        for b in order:
            t = time.perf_counter()
            engine.render(build_plan(film, batch_size=b), work / f"r{r}-b{b}")
            times[b].append(time.perf_counter() - t)
    base = statistics.median(times[1]) if 1 in times else None
    rows = []
    data = {}
    for b in sizes:
        med = statistics.median(times[b])
        spm = args.shots / med * 60
        data[b] = {"seconds": times[b], "shots_per_minute": spm}
        ratio = f"{base / med:.2f}x" if base else "-"
        rows.append(f"| {b} | {med:.2f} s | {spm:.1f} | {ratio} |")
    job = build_plan(film).jobs[0]
    md = f"""## Batched shots{note}

`.venv/bin/python -m benchmarks.bench_batching --shots {args.shots} --sizes {args.sizes} --rounds {args.rounds}`

{args.shots} shots of {job.width}x{job.height}, {job.frames} frames, {job.steps} steps, guidance {job.guidance}
(cond+uncond in one forward pass), whole film including decode and encode, median of {args.rounds} interleaved rounds.

| batch size | film time | shots / minute | vs one by one |
|---|---|---|---|
{chr(10).join(rows)}
"""
    write_section("batching", md, {"sizes": data, "note": note})
    print(md)


if __name__ == "__main__":
    main()
