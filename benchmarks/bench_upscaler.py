"""The built-in x2 upscaler against bicubic and Lanczos on held-out shapes-world frames, and its speed.

    .venv/bin/python -m benchmarks.bench_upscaler                  # 12 held-out clips = 204 frames, 1 thread
    .venv/bin/python -m benchmarks.bench_upscaler --model PATH --clips 4 --threads 2

HR: 128x128 frames of clips drawn only from HELD_OUT_PAIRS (never seen in training). LR is made by
scripts/train_upscaler.make_lr in two ways: "clean" (2x2 area downscale) and "render-like" (area,
Gaussian blur sigma 0.5 LR px, H.264 CRF 23 through reel's VideoWriter). Metric: mean per-frame PSNR
(dB, RGB, uint8) of the 2x result against HR. Target: x2 >= bicubic + 1.5 dB.
Writes the `upscaler` section of benchmarks/RESULTS.md and benchmarks/results/upscaler.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from benchmarks.results import write_section
from reel.engine.post.upscale import load_upscaler
from scripts.train_upscaler import FRAMES, heldout_set, psnr

CONDITIONS = {"clean": (0.0, None), "render-like": (0.5, 23)}  # name -> (blur sigma, crf)
TARGET_DB = 1.5


def bicubic2(frames: np.ndarray) -> np.ndarray:
    """PIL bicubic x2 of (N, h, w, 3) uint8."""
    h, w = frames.shape[1:3]
    return np.stack([np.asarray(Image.fromarray(f).resize((2 * w, 2 * h), Image.BICUBIC)) for f in frames])


def seconds_per_frame(upscale, frames: np.ndarray, repeats: int = 3) -> float:
    """Best of `repeats` wall-clock runs over `frames`, divided by the frame count."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        upscale(frames)
        best = min(best, time.perf_counter() - t)
    return best / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="x2", help="upscaler reference (default: the built-in x2)")
    parser.add_argument("--clips", type=int, default=12, help="held-out clips of 17 frames")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, lanczos = load_upscaler(args.model), load_upscaler("lanczos2")
    if model.scale != 2:
        raise SystemExit(f"--model {args.model}: this benchmark compares 2x upscalers; it is {model.scale}x")
    # 1. quality per LR condition
    rows, data = [], {"model": model.describe(), "conditions": {}}
    for name, (blur, crf) in CONDITIONS.items():
        hr, lr = heldout_set(args.clips, seed=2024, blur=blur, crf=crf)  # (N, 128, 128, 3), (N, 64, 64, 3)
        outs = {"x2": model.upscale(lr), "bicubic": bicubic2(lr), "lanczos": lanczos.upscale(lr)}
        scores = {k: psnr(v, hr) for k, v in outs.items()}
        gain = scores["x2"] - scores["bicubic"]
        clip_gains = [psnr(outs["x2"][i:i + FRAMES], hr[i:i + FRAMES])
                      - psnr(outs["bicubic"][i:i + FRAMES], hr[i:i + FRAMES])
                      for i in range(0, len(hr), FRAMES)]  # one per clip
        data["conditions"][name] = {"blur": blur, "crf": crf, "frames": len(hr), **scores, "gain_over_bicubic": gain,
                                    "clip_gains": clip_gains}
        rows.append(f"| {name} | {len(hr)} | **{scores['x2']:.2f}** | {scores['bicubic']:.2f} | "
                    f"{scores['lanczos']:.2f} | {gain:+.2f} | {min(clip_gains):+.2f} | "
                    f"{'met' if gain >= TARGET_DB else 'MISSED'} |")
        print(rows[-1], flush=True)
    # 2. speed: 64->128 (one tile) and 512->1024 (tiled), one frame at a time
    small = heldout_set(1, seed=99, blur=0.0, crf=None)[1][:8]  # (8, 64, 64, 3)
    speed = {}
    for side in (64, 512):
        frames = np.stack([np.asarray(Image.fromarray(f).resize((side, side), Image.BICUBIC)) for f in small])
        speed[side] = {"x2_ms": 1e3 * seconds_per_frame(model.upscale, frames),  # frames: (8, side, side, 3)
                       "lanczos_ms": 1e3 * seconds_per_frame(lanczos.upscale, frames),
                       "bicubic_ms": 1e3 * seconds_per_frame(bicubic2, frames)}
        print(side, speed[side], flush=True)
    data["ms_per_frame"] = speed
    # 3. report
    d = model.describe()
    md = "\n".join([
        "## Upscaler: built-in x2 vs bicubic vs Lanczos",
        "",
        "`.venv/bin/python -m benchmarks.bench_upscaler`" + (f" `--model {args.model}`" if args.model != "x2" else ""),
        "",
        f"Model: {d.get('architecture', d['upscaler'])} {' '.join(d.get('tags', []))}, {d.get('dtype', '')}. "
        f"Held-out shapes-world frames (HELD_OUT_PAIRS only, 128x128 HR from 64x64 LR). "
        f"Clean LR = 2x2 area downscale; render-like LR = area + blur sigma 0.5 + H.264 CRF 23. "
        f"Mean per-frame PSNR in dB; target x2 >= bicubic + {TARGET_DB} dB; worst clip = the smallest "
        f"gain over bicubic of any one {FRAMES}-frame clip.",
        "",
        "| LR | frames | x2 | bicubic | Lanczos | x2 - bicubic | worst clip | target |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Time per frame on the CPU ({args.threads} thread{'s' if args.threads > 1 else ''}): "
        f"64->128: x2 {speed[64]['x2_ms']:.1f} ms, Lanczos {speed[64]['lanczos_ms']:.2f} ms, "
        f"bicubic {speed[64]['bicubic_ms']:.2f} ms; 512->1024 (tiles of {d.get('tile')} px, overlap "
        f"{d.get('overlap')}): x2 {speed[512]['x2_ms']:.0f} ms, Lanczos {speed[512]['lanczos_ms']:.1f} ms.",
    ])
    write_section("upscaler", md, data)
    print(md)


if __name__ == "__main__":
    main()
