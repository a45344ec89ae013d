"""Previews against final renders on the built-in model: agreement, adherence and speed.

    .venv/bin/python -m benchmarks.bench_previews --prompts 100

Each prompt renders twice with the same seed: the final (model defaults, with guidance) and the preview
(the shipped preview LoRA, 4 consistency steps, no guidance, the shipped tiny preview decoder). The shapes
judge reads both. Targets: colour agreement >= 95 %, direction agreement >= 90 %, preview adherence within
5 points of the final's, a preview shot >= 8x faster. Shot time is the engine's own per-batch timing (text
encode + denoise + decode + encode, from the manifests); whole-film time adds planning and film assembly
(the film, contact sheet and storyboard). Writes the `previews` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from benchmarks.results import write_section
from reel.engine.plan import build_plan
from reel.engine.post.contact import read_video
from reel.engine.runtime import Engine
from reel.engine.spec import film_from_dict
from reel.models.shapes.judge import judge_clip
from reel.models.shapes.world import sample_prompts

KEYS = ("color", "background", "shape", "direction")


def shot_seconds(folder: Path) -> float:
    """Sum over the batches of the engine's measured time (each shot manifest carries its batch's timings)."""
    total = 0.0
    for manifest in folder.glob("*.json"):
        t = json.loads(manifest.read_text())["timings"]
        total += t["total_s"] / t["batch_size"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--decoder", default=None,
                        help='preview decoder: "vae" for the model\'s VAE, a file, or the model\'s own (default)')
    parser.add_argument("--prompt-seed", type=int, default=101,
                        help="prompt draw (101 is the reported set; tune settings on another draw)")
    parser.add_argument("--lora", type=Path, default=None, help="a candidate preview LoRA instead of the shipped one")
    parser.add_argument("--preview-shift", type=float, default=None,
                        help="a candidate preview timestep shift instead of the model's (tuning only: printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reel-bench-previews-"))
    prompts = sample_prompts(args.prompts, seed=args.prompt_seed)
    film_table = {"seed": 99, **({"preview_decoder": args.decoder} if args.decoder else {}),
                  **({"preview_shift": args.preview_shift} if args.preview_shift is not None else {})}
    film = film_from_dict({"film": film_table, "shots": [{"id": f"p{i}", "prompt": p}
                                                           for i, (p, _) in enumerate(prompts)]}, work / "film.toml")
    if film.preview is None:
        raise SystemExit("the built-in model ships no preview LoRA yet: python scripts/distill_shapes_preview.py")
    if args.lora is not None:
        if not args.lora.is_file():
            raise SystemExit(f"--lora {args.lora}: no such file")
        film = dataclasses.replace(film, preview=dataclasses.replace(film.preview, lora=args.lora.resolve()))
    engine = Engine("cpu")
    times = {}
    for mode in ("final", "preview"):
        t = time.perf_counter()
        engine.render(build_plan(film, batch_size=args.batch_size, preview=mode == "preview"), work / "out")
        times[mode] = time.perf_counter() - t
    shot_s = {mode: shot_seconds(folder) for mode, folder in (("final", work / "out" / "shots"),
                                                               ("preview", work / "out" / "preview" / "shots"))}
    verdicts = {}
    for mode, folder in (("final", work / "out" / "shots"), ("preview", work / "out" / "preview" / "shots")):
        verdicts[mode] = [judge_clip(read_video(folder / f"p{i}.mp4")[0]) for i in range(len(prompts))]
    n = len(prompts)
    agree = {k: 100 * sum(getattr(a, k) == getattr(b, k) for a, b in zip(verdicts["final"], verdicts["preview"])) / n
             for k in KEYS}
    adherence = {m: {k: 100 * sum(getattr(v, k) == getattr(s, k) for v, (_, s) in zip(verdicts[m], prompts)) / n
                     for k in KEYS} for m in verdicts}
    speed = times["final"] / times["preview"]
    shot_speed = shot_s["final"] / shot_s["preview"]
    rows = "\n".join(f"| {k} | {agree[k]:.0f} % | {adherence['final'][k]:.0f} % | {adherence['preview'][k]:.0f} % |"
                     for k in KEYS)
    md = f"""## Previews against final renders (built-in model)\
{f", previews decoded with --decoder {args.decoder}" if args.decoder else ""}

`.venv/bin/python -m benchmarks.bench_previews --prompts {args.prompts} --batch-size {args.batch_size}\
{f" --decoder {args.decoder}" if args.decoder else ""}`

Preview decoder: {film.preview.decoder.name if film.preview.decoder else "the model's VAE"}.

| reading | preview = final | final adherence | preview adherence |
|---|---|---|---|
{rows}

| time ({n} shots, batch {args.batch_size}) | final | preview | ratio |
|---|---|---|---|
| per shot (engine timings) | {shot_s['final'] / n * 1000:.0f} ms | \
{shot_s['preview'] / n * 1000:.0f} ms | {shot_speed:.1f}x |
| whole film incl. assembly | {times['final']:.1f} s | {times['preview']:.1f} s | {speed:.1f}x |

Targets: colour agreement >= 95 %, direction >= 90 %, adherence within 5 points, a preview shot >= 8x faster.
"""
    if args.prompt_seed != 101 or args.lora is not None or args.preview_shift is not None:  # tuning: printed only
        print(md)
        print(json.dumps({"agreement": agree, "adherence": adherence, "shot_speedup": shot_speed}))
        return
    write_section("previews" if not args.decoder else "previews_decoder_" + Path(args.decoder).stem, md,
                  {"agreement": agree, "adherence": adherence, "seconds": times,
                   "shot_seconds": shot_s, "shot_speedup": shot_speed, "film_speedup": speed})
    print(md)


if __name__ == "__main__":
    main()
