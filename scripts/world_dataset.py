"""Write a captioned clip dataset from the shapes world (for distill-preview and the LoRA benchmark).

    python scripts/world_dataset.py OUT_DIR --clips 200 [--character orange_star --trigger sks] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from reel.engine.post.encode import VideoWriter
from reel.models.shapes.world import (
    BACKGROUNDS, CHARACTERS, DIRECTIONS, HELD_OUT_PAIRS, caption, render_clip, sample_spec)


def write_dataset(out: Path, clips: int, seed: int = 0, character: str | None = None, trigger: str = "sks",
                  size: int = 64, frames: int = 17, fps: int = 8) -> list:
    """Clips and same-name captions in `out`; base-grammar clips exclude the held-out pairs. A character's
    clips are balanced: every 4 consecutive clips hold each direction and each background once, and every 16
    each (direction, background) pair once; 24 clips give 6 of each direction and background (a random draw of
    24 once gave 4 gray and 2 "left" clips). Positions, sizes and travel stay random."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if character:  # the order of the names is drawn; base-grammar draws stay as before
        dirs = [str(x) for x in rng.permutation(list(DIRECTIONS))]
        bgs = [str(x) for x in rng.permutation(sorted(BACKGROUNDS))]
    specs = []
    for i in range(clips):
        if character:
            who = CHARACTERS[character]
            # a Latin square: block i // 4 shifts the backgrounds against the directions (4 of each)
            direction, background = dirs[i % len(dirs)], bgs[(i + i // len(dirs)) % len(bgs)]
            spec = who.sample_spec(rng, direction=direction, background=background)
            text = who.caption(spec, trigger=trigger)
        else:
            spec = sample_spec(rng, exclude_pairs=HELD_OUT_PAIRS)
            text = caption(spec)
        with VideoWriter(out / f"clip{i:04d}.mp4", size, size, fps) as w:
            w.write(render_clip(spec, width=size, height=size, frames=frames))
        (out / f"clip{i:04d}.txt").write_text(text + "\n")
        specs.append(spec)
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--character", choices=sorted(CHARACTERS))
    parser.add_argument("--trigger", default="sks")
    args = parser.parse_args()
    write_dataset(args.out, args.clips, args.seed, args.character, args.trigger)
    print(f"{args.clips} clips in {args.out}")


if __name__ == "__main__":
    main()
