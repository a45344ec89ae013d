"""The built-in model's speed on this CPU: one shot at default settings (target <= 3 s) and the demo film
(target: under a minute of render time).

    .venv/bin/python -m benchmarks.bench_builtin
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.results import write_section
from reel.engine.plan import build_plan
from reel.engine.runtime import Engine
from reel.engine.spec import film_from_dict, load_film

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.toml"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="reel-bench-builtin-"))
    film = film_from_dict({"film": {"seed": 1}, "shots": [{"id": "a", "prompt": "a red circle moving right on a "
                                                                               "black background"}]},
                          work / "one.toml")
    engine = Engine("cpu")
    engine.render(build_plan(film), work / "warm")
    shot = []
    for i in range(5):
        t = time.perf_counter()
        engine.render(build_plan(film), work / f"one{i}")
        shot.append(time.perf_counter() - t)
    t = time.perf_counter()
    Engine("cpu").render(build_plan(load_film(DEMO)), work / "demo")
    demo = time.perf_counter() - t
    job = build_plan(film).jobs[0]
    md = f"""## Built-in model speed on this CPU

`.venv/bin/python -m benchmarks.bench_builtin`

| measure | value | target |
|---|---|---|
| one shot, defaults ({job.width}x{job.height}, {job.frames} frames, {job.steps} steps, guidance {job.guidance}), \
median of 5, warm | {statistics.median(shot):.2f} s | <= 3 s |
| demo film ({len(load_film(DEMO).shots)} shots), cold engine incl. model load | {demo:.1f} s | < 60 s |
"""
    write_section("builtin_speed", md, {"shot_seconds": shot, "demo_seconds": demo})
    print(md)


if __name__ == "__main__":
    main()
