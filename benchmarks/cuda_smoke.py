"""A smoke run of every feature on one device (made for a lent GPU; dry-run it on the CPU first): a character LoRA
trained for 50 steps with `train_lora`, a film of 4 shots with that character in one batch of 4 with the x2 upscaler,
the same film's previews, and image-to-video on a tiny Wan 2.2 TI2V folder. Each part is timed and either "ok" or
its error; nothing is asserted about speed.

    .venv/bin/python -m benchmarks.cuda_smoke --device cuda --out /tmp/smoke     # on the GPU
    .venv/bin/python -m benchmarks.cuda_smoke --device cpu --out /tmp/smoke      # the dry run (about a minute)

Works in OUT/work (emptied first), writes OUT/smoke.json; exits 1 if any part failed. benchmarks/gpu_check.sh
runs it beside `reel bench`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np


def _part(results: dict, name: str, fn) -> None:
    start = time.perf_counter()
    try:
        detail = fn()
        results[name] = {"status": "ok", "seconds": round(time.perf_counter() - start, 2), **(detail or {})}
    except Exception as err:  # noqa: BLE001 - a smoke run reports every failure and goes on
        traceback.print_exc()
        results[name] = {"status": f"FAILED: {type(err).__name__}: {err}"[:400],
                         "seconds": round(time.perf_counter() - start, 2)}
    print(f"{name}: {results[name]['status']} ({results[name]['seconds']} s)", flush=True)


def _render(spec: dict, work: Path, name: str, device: str, batch_size: int = 1, preview: bool = False) -> dict:
    from reel.engine.plan import build_plan
    from reel.engine.post.contact import read_video
    from reel.engine.runtime import Engine
    from reel.engine.spec import film_from_dict

    film = film_from_dict(spec, work / f"{name}.toml")
    engine = Engine(device)
    result = engine.render(build_plan(film, batch_size=batch_size, preview=preview), work / name)
    frames = read_video(result.shots[0].video)[0]  # (F, H, W, 3)
    return {"shots": len(result.shots), "frames": list(frames.shape),
            "s_per_step": [s.timings.get("s_per_step") for s in result.shots],
            "applied": {k: str(v) for k, v in engine.applied.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from reel.engine.train.config import build_config
    from reel.engine.train.lora import train_lora
    from reel.models.tiny import build_tiny_wan
    from scripts.world_dataset import write_dataset

    work = args.out / "work"  # ours alone: a fresh one each run (training refuses an earlier run's checkpoints)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results: dict = {"device": args.device}
    lora = work / "sks.safetensors"

    def train():
        write_dataset(work / "data", clips=4, seed=5, character="orange_star", trigger="sks")
        cfg = build_config({"dataset": str(work / "data"), "base": "shapes", "trigger": "sks", "out": str(lora),
                            "steps": 50, "validate_every": 0, "checkpoint_every": 50, "device": args.device})
        train_lora(cfg, say=lambda text: None)
        return {"lora_bytes": lora.stat().st_size}

    star = {"star": {"lora": str(lora), "trigger": "sks"}}
    shots = [{"id": f"s{i}", "prompt": f"a {{star}} moving {d} on a black background", "seed": 100 + i}
             for i, d in enumerate(("left", "right", "up", "down"))]
    film = {"film": {"seed": 1, "upscale": "x2"}, "characters": star, "shots": shots}
    _part(results, "train_lora_50_steps", train)
    _part(results, "character_lora_batch4_upscale_x2", lambda: _render(film, work, "film", args.device, 4))
    _part(results, "previews", lambda: _render(film, work, "film", args.device, 4, preview=True))

    def image_to_video():
        from PIL import Image

        folder = build_tiny_wan(work / "tiny-ti2v", seed=1, variant="ti2v")
        gradient = np.linspace(0, 255, 32 * 32 * 3).reshape(32, 32, 3).astype(np.uint8)  # (H, W, 3)
        Image.fromarray(gradient).save(work / "first.png")
        spec = {"film": {"model": str(folder), "seed": 3}, "shots": [{"id": "i2v", "prompt": "a red circle moving "
                                                                     "left", "image": "first.png"}]}
        return _render(spec, work, "i2v", args.device)

    _part(results, "image_to_video_tiny_ti2v", image_to_video)
    (args.out / "smoke.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0 if all(v["status"] == "ok" for k, v in results.items() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
