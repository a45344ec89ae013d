"""Distil the built-in model's preview LoRA (latent consistency distillation) and ship it with the model.

    python scripts/distill_shapes_preview.py [--steps 2000] [--batch-size 1] [--lr 2e-4] [--rank 16] [--threads 1]
                                            [--resume] [--stop-after N] [--out FILE]

Writes models/shapes/adapters/preview.safetensors and the `preview` block of models/shapes/weights/reel.json
(4 consistency steps, no guidance). Checkpoints in models/shapes/adapters/preview.train/ (resumable).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import torch

    from reel.engine.train.config import build_config
    from reel.engine.train.lora import train_lora
    from reel.models.registry import BUILTIN_MODELS
    from scripts.world_dataset import write_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stop-after", type=int)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--mixed-precision", choices=("auto", "bf16", "no"), default="auto",
                        help="bf16 autocast (auto: on CUDA and on CPUs with native bf16)")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "shapes" / "adapters" / "preview.safetensors",
                        help="where the LoRA goes; reel.json is updated only for the default path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = BUILTIN_MODELS["shapes"]
    out = args.out.resolve()
    shipped = out == (ROOT / "models" / "shapes" / "adapters" / "preview.safetensors").resolve()
    data = Path(tempfile.gettempdir()) / "reel-shapes-distill-data"
    if not (data / "clip0199.txt").is_file():
        write_dataset(data, clips=200, seed=11)
    cfg = build_config({"kind": "preview", "dataset": str(data), "base": "shapes", "out": str(out),
                        "steps": args.steps, "rank": args.rank, "alpha": float(args.rank), "lr": args.lr,
                        "batch_size": args.batch_size, "warmup_steps": 20,
                        "mixed_precision": args.mixed_precision,
                        "teacher_steps": 32, "skip": 4, "preview_steps": 4, "checkpoint_every": 50,
                        "validate_every": 200, "validation_prompts": ("a red circle moving right on a black background",
                                                                     "a blue square moving up on a gray background")})
    result = train_lora(cfg, say=print, resume=args.resume, stop_after=args.stop_after,
                        on_step=lambda s, n, loss: print(f"step {s}/{n} loss {loss:.4f}") if s % 25 == 0 else None)
    if result.steps_done == cfg.steps and shipped:
        reel = json.loads((weights / "reel.json").read_text())
        reel.setdefault("preview", {}).update(  # keeps a preview decoder entry (scripts/train_preview_decoder.py)
            {"lora": "../adapters/preview.safetensors", "steps": 4, "scheduler": "lcm", "guidance": 1.0})
        (weights / "reel.json").write_text(json.dumps(reel, indent=2) + "\n")
        print(f"preview LoRA: {out}")


if __name__ == "__main__":
    main()
