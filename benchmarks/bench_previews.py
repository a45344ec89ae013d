"""Previews against final renders on the built-in model: agreement, adherence and speed.

    .venv/bin/python -m benchmarks.bench_previews --prompts 100

Each prompt renders twice with the same seed: the final (model defaults, with guidance) and the preview
(the shipped preview LoRA, 4 consistency steps, no guidance). The shapes judge reads both. Targets:
colour agreement >= 95 %, direction agreement >= 90 %, preview adherence within 5 points of the final's,
a preview shot >= 8x faster. Writes the `previews` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.results import write_section
from engine.plan import build_plan
from engine.post.contact import read_video
from engine.runtime import Engine
from engine.spec import film_from_dict
from models.shapes.judge import judge_clip
from models.shapes.world import sample_prompts

KEYS = ("color", "background", "shape", "direction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reel-bench-previews-"))
    prompts = sample_prompts(args.prompts, seed=101)
    film = film_from_dict({"film": {"seed": 99}, "shots": [{"id": f"p{i}", "prompt": p}
                                                           for i, (p, _) in enumerate(prompts)]}, work / "film.toml")
    if film.preview is None:
        raise SystemExit("the built-in model ships no preview LoRA yet: python scripts/distill_shapes_preview.py")
    engine = Engine("cpu")
    times = {}
    for mode in ("final", "preview"):
        t = time.perf_counter()
        engine.render(build_plan(film, batch_size=args.batch_size, preview=mode == "preview"), work / "out")
        times[mode] = time.perf_counter() - t
    verdicts = {}
    for mode, folder in (("final", work / "out" / "shots"), ("preview", work / "out" / "preview" / "shots")):
        verdicts[mode] = [judge_clip(read_video(folder / f"p{i}.mp4")[0]) for i in range(len(prompts))]
    n = len(prompts)
    agree = {k: 100 * sum(getattr(a, k) == getattr(b, k) for a, b in zip(verdicts["final"], verdicts["preview"])) / n
             for k in KEYS}
    adherence = {m: {k: 100 * sum(getattr(v, k) == getattr(s, k) for v, (_, s) in zip(verdicts[m], prompts)) / n
                     for k in KEYS} for m in verdicts}
    speed = times["final"] / times["preview"]
    rows = "\n".join(f"| {k} | {agree[k]:.0f} % | {adherence['final'][k]:.0f} % | {adherence['preview'][k]:.0f} % |"
                     for k in KEYS)
    md = f"""## Previews against final renders (built-in model)

`.venv/bin/python -m benchmarks.bench_previews --prompts {args.prompts} --batch-size {args.batch_size}`

| reading | preview = final | final adherence | preview adherence |
|---|---|---|---|
{rows}

Whole-film time: final {times['final']:.1f} s, preview {times['preview']:.1f} s — the preview is {speed:.1f}x faster
(targets: colour agreement >= 95 %, direction >= 90 %, adherence within 5 points, >= 8x).
"""
    write_section("previews", md, {"agreement": agree, "adherence": adherence, "seconds": times})
    print(md)


if __name__ == "__main__":
    main()
