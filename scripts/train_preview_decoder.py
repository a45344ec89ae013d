"""Train the built-in model's tiny preview decoder (models/preview_decoder.py) and ship it with the model.

    .venv/bin/python scripts/train_preview_decoder.py [--steps 3000] [--clips 1536] [--threads 1]
    .venv/bin/python scripts/train_preview_decoder.py --register-only   # after a re-export of the weights

Pairs: clips of the shapes world (every colour, shape, direction and background) and their latents from
the model's own VAE (models/shapes/weights/vae, posterior mode). The decoder learns latents -> frames
with an L1 + MSE loss. At the end it reports PSNR against the frames and against the full VAE decode on
clips it never saw, plus how often the shapes judge reads both decodes the same way, then writes
models/shapes/adapters/preview_decoder.safetensors (+ preview_decoder.json, the report) and the `decoder`
entry of the `preview` block in models/shapes/weights/reel.json. About 12 minutes on two CPU threads. The
decoder depends on the VAE only: after the transformer is re-exported, `--register-only` restores the entry.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WEIGHTS = ROOT / "models" / "shapes" / "weights"
OUT = ROOT / "models" / "shapes" / "adapters" / "preview_decoder.safetensors"


def make_pairs(vae, n: int, seed: int):
    """(latents (n, z, F', h, w), clips (n, F, H, W, 3) uint8) from the world and the VAE's posterior mode."""
    import numpy as np
    import torch

    from models.shapes.world import render_clip, sample_spec
    from scripts.train_shapes.vae import to_tensor

    rng = np.random.default_rng(seed)
    specs = [sample_spec(rng) for _ in range(n)]
    clips = np.stack([render_clip(s) for s in specs])  # (n, 17, 64, 64, 3)
    lat = []
    with torch.no_grad():
        for i in range(0, n, 32):
            lat.append(vae.encode(to_tensor(clips[i:i + 32])).latent_dist.mode())  # (b, z, 5, 16, 16)
            print(f"encoded {min(i + 32, n)}/{n} clips", flush=True)
    return torch.cat(lat), clips, specs


def psnr(a, b) -> float:
    import numpy as np

    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--clips", type=int, default=1536)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--register-only", action="store_true", help="only write the reel.json entry (decoder exists)")
    args = p.parse_args()
    if not (WEIGHTS / "reel.json").is_file():
        raise SystemExit(f"{WEIGHTS}: no exported model (reel.json missing) — run scripts/train_shapes_model.py first")
    if args.register_only:
        report = OUT.with_suffix(".json")
        if not (OUT.is_file() and report.is_file()):
            raise SystemExit(f"{OUT} or {report} missing — train the decoder first (without --register-only)")
        register(json.loads(report.read_text()))
        return
    import numpy as np
    import torch
    from diffusers import AutoencoderKLWan

    from models.preview_decoder import PreviewDecoder, load_preview_decoder, save_preview_decoder
    from models.shapes.judge import judge_clip
    from scripts.train_shapes.vae import to_tensor, to_uint8

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae = AutoencoderKLWan.from_pretrained(WEIGHTS / "vae", torch_dtype=torch.float32, local_files_only=True).eval()
    t0 = time.time()
    lat, clips, _ = make_pairs(vae, args.clips, seed=31)
    target = to_tensor(clips)  # (n, 3, 17, 64, 64)
    decoder = PreviewDecoder(z_dim=vae.config.z_dim)
    opt = torch.optim.AdamW(decoder.parameters(), lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for step in range(1, args.steps + 1):
        lr = 2e-3 * min(1.0, step / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        idx = torch.randint(len(lat), (args.batch,), generator=g)
        pred = decoder(lat[idx])  # (b, 3, 17, 64, 64)
        loss = (pred - target[idx]).abs().mean() + (pred - target[idx]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {loss.item():.4f} lr {lr:.1e} {time.time() - t0:.0f} s", flush=True)
    save_preview_decoder(decoder, OUT, {"trained_steps": args.steps, "clips": args.clips,
                                        "vae": "models/shapes/weights/vae"})
    # evaluation on new clips: against the frames, against the full VAE decode, judge agreement
    decoder = load_preview_decoder(OUT, z_dim=vae.config.z_dim)
    lat_t, clips_t, specs_t = make_pairs(vae, 64, seed=32)
    with torch.no_grad():
        tiny = to_uint8(decoder(lat_t))
        full = np.concatenate([to_uint8(vae.decode(lat_t[i:i + 16]).sample) for i in range(0, 64, 16)])
    judge_tiny = [judge_clip(c) for c in tiny]
    judge_full = [judge_clip(c) for c in full]
    agree = {k: 100 * float(np.mean([getattr(a, k) == getattr(b, k) for a, b in zip(judge_tiny, judge_full)]))
             for k in ("color", "background", "shape", "direction")}
    report = {"psnr_vs_frames_db": psnr(tiny, clips_t), "vae_psnr_vs_frames_db": psnr(full, clips_t),
              "psnr_vs_vae_decode_db": psnr(tiny, full), "judge_agreement_pct": agree,
              "params": sum(p.numel() for p in decoder.parameters()), "bytes": OUT.stat().st_size,
              "seconds": round(time.time() - t0)}
    print(json.dumps(report, indent=2))
    OUT.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    register(report)


def register(report: dict) -> None:
    """Name the decoder in the model's reel.json `preview` block (paths relative to the weights folder)."""
    reel_json = WEIGHTS / "reel.json"
    reel = json.loads(reel_json.read_text())
    reel.setdefault("preview", {})["decoder"] = "../adapters/preview_decoder.safetensors"
    reel["preview"]["decoder_report"] = report
    reel_json.write_text(json.dumps(reel, indent=2) + "\n")
    print(f"preview decoder: {OUT} (registered in {reel_json})")


if __name__ == "__main__":
    main()
