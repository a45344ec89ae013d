"""Widen the built-in model's VAE to the whole shapes world, characters included.

    .venv/bin/python scripts/widen_shapes_vae.py --steps 600 --threads 2                  # stage 1: decoder
    .venv/bin/python scripts/widen_shapes_vae.py --steps 600 --threads 2 --with-encoder   # stage 2: both
    .venv/bin/python scripts/widen_shapes_vae.py --steps 600 --threads 1 --sharpen 1.0    # stage 3: sharper decoder

Why: the VAE was trained on the base vocabulary only (six colours; circles, squares, triangles). It could
not draw what it never saw: an orange star went through encode + decode as a red-ish circle (judge: star
0 of 16, orange 9 of 16), so no character LoRA on the transformer could ever show one. A general video
VAE (Wan's) draws anything; this brings ours closer to that. The transformer never sees the new colours
and shapes: teaching it a character stays the LoRA's job.

Stage 1 trains the decoder (and post_quant_conv) only, the encoder frozen. Stage 2 also trains the
encoder, because the frozen one loses a small star's points (stars of height < 0.31 still decoded as
circles) — with three terms that keep the transformer valid: the decoder must still draw the OLD
encoder's latents of base clips (those are what the transformer generates), and the new encoder's latents
of base clips are pulled to the old ones (MSE), next to the reconstruction of every clip. Stage 3 trains the
decoder only again, with a gradient-difference loss added: MSE and L1 alone let it draw a small star's points
blunt, which the judge (and the eye, barely) reads as a circle; the extra term costs an edge that is softer than
the target's. The encoder, hence every latent, stays as stage 2 left it. Batches are a
50/50 mix of base-vocabulary clips and clips with the world's extra colour and shape (every colour with
every shape, at least one of them extra). Loss MSE + 0.5 L1 (the VAE stage's), AdamW lr 2e-4, batch 8.

Reports, before and after: PSNR on the VAE stage's 16 unseen clips (base vocabulary), and how often the
judge reads star and orange after encode + decode of 16 unseen orange-star clips; stage 2 adds the base
latents' relative drift and the PSNR of the new decoder on the old encoder's latents. Writes the VAE into
models/shapes/weights/vae (fp16, as exported); stages 1 and 3 refuse to write if the encoder changed.
Checkpoints in models/shapes/runs/vae_decoder/ (git-ignored; --resume continues; delete it between stages).
About 10 minutes (stages 1 and 3) and 17 minutes (stage 2) on one thread. Results: models/shapes/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WEIGHTS = ROOT / "models" / "shapes" / "weights"
WORK = ROOT / "models" / "shapes" / "runs" / "vae_decoder"
EXTRA_SEED = 20_000_003  # evaluation clips of the character: seeds never used for training


def torch_no_grad_lazy(fn):
    """torch.no_grad without importing torch at module import (the docstring/--help stays instant)."""
    def wrapper(*a, **k):
        import torch

        with torch.no_grad():
            return fn(*a, **k)
    return wrapper


def batch_specs(step: int, batch: int, seed: int) -> list:
    """The step's clip specs: even slots base vocabulary (held-out pairs excluded), odd slots any colour with
    any shape with at least one of them outside the base vocabulary (orange, star)."""
    import numpy as np

    from reel.models.shapes.world import ALL_COLORS, ALL_SHAPES, COLORS, HELD_OUT_PAIRS, SHAPES, sample_spec

    rng = np.random.default_rng([seed, 7, step])
    specs = []
    for i in range(batch):
        if i % 2 == 0:
            specs.append(sample_spec(rng, exclude_pairs=HELD_OUT_PAIRS))
            continue
        while True:
            c, s = str(rng.choice(list(ALL_COLORS))), str(rng.choice(list(ALL_SHAPES)))
            if c not in COLORS or s not in SHAPES:
                break
        specs.append(sample_spec(rng, color=c, shape=s))
    return specs


def training_batch(step: int, batch: int, cfg):
    """(B, 3, f, crop, crop) in [-1, 1]: batch_specs rendered, random frame window and crop per clip."""
    import numpy as np

    from reel.models.shapes.world import render_clip
    from scripts.train_shapes.vae import to_tensor

    rng = np.random.default_rng([cfg.seed, 8, step])
    clips = []
    for spec in batch_specs(step, batch, cfg.seed):
        clip = render_clip(spec, cfg.width, cfg.height, cfg.frames)  # (F, H, W, 3)
        f0 = int(rng.integers(0, cfg.frames - cfg.vae_frames + 1))
        y0 = int(rng.integers(0, cfg.height - cfg.vae_crop + 1))
        x0 = int(rng.integers(0, cfg.width - cfg.vae_crop + 1))
        clips.append(clip[f0:f0 + cfg.vae_frames, y0:y0 + cfg.vae_crop, x0:x0 + cfg.vae_crop])
    return to_tensor(np.stack(clips))


def evaluate(vae, cfg) -> dict:
    """Base PSNR (16 unseen clips) and the judge's star / orange rate on 16 unseen orange-star clips."""
    import numpy as np

    from reel.models.shapes.judge import judge_clip
    from reel.models.shapes.world import ORANGE_STAR, render_clip
    from scripts.train_shapes.vae import psnr, reconstruct, validation_clips

    vae.eval()
    val = validation_clips(cfg)
    rng = np.random.default_rng(EXTRA_SEED)
    stars = np.stack([render_clip(ORANGE_STAR.sample_spec(rng)) for _ in range(16)])
    rec = reconstruct(vae, stars)
    verdicts = [judge_clip(c) for c in rec]
    out = {"base_psnr_db": round(psnr(reconstruct(vae, val), val), 2),
           "star_psnr_db": round(psnr(rec, stars), 2),
           "star_pct": 100 * sum(v.shape == "star" for v in verdicts) / len(verdicts),
           "orange_pct": 100 * sum(v.color == "orange" for v in verdicts) / len(verdicts)}
    vae.train()
    return out


@torch_no_grad_lazy
def latent_drift(vae, old, cfg) -> dict:
    """How far the new encoder moved base-vocabulary latents (relative RMS), and how well the new decoder
    draws the OLD encoder's latents (what the transformer generates): PSNR on the 16 unseen clips."""
    from scripts.train_shapes.vae import psnr, to_tensor, to_uint8, validation_clips

    val = validation_clips(cfg)
    x = to_tensor(val)
    z_old = old.encode(x).latent_dist.mode()
    z_new = vae.encode(x).latent_dist.mode()
    rel = float((z_new - z_old).pow(2).mean().sqrt() / z_old.pow(2).mean().sqrt())
    return {"base_latent_rel_rms_drift": round(rel, 4),
            "old_latents_psnr_db": round(psnr(to_uint8(vae.decode(z_old).sample), val), 2)}


def main() -> None:
    args = _parse_args()
    import torch

    from scripts.train_shapes.common import TrainConfig

    torch.set_num_threads(args.threads)
    cfg = TrainConfig()
    vae, old, trainable, vae_dir = _load_vae(args.with_encoder)
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    ckpt, stage, step, before = _start(args, vae, opt, cfg)
    _train(args, vae, old, trainable, opt, cfg, ckpt, stage, step, before)
    _write(args, vae, old, vae_dir, cfg, stage, before)


def _parse_args() -> argparse.Namespace:
    """The command line (module doc), --sharpen checked against the stage."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--with-encoder", action="store_true",
                   help="train the encoder too, anchored to the old encoder's latents on base clips (see above)")
    p.add_argument("--sharpen", type=float, default=0.0, metavar="WEIGHT",
                   help="stage 3 (decoder only, after stage 2): add WEIGHT x a gradient-difference loss, which "
                        "penalises blurred edges (a small star's points, a square's corners)")
    args = p.parse_args()
    if args.sharpen < 0:
        p.error(f"--sharpen {args.sharpen}: give a weight >= 0 (a negative one would reward blur); stage 3 used 1.0")
    if args.sharpen and args.with_encoder:
        p.error("--sharpen trains the decoder only: drop --with-encoder")
    return args


def _load_vae(with_encoder: bool):
    """(the exported VAE in fp32, a frozen copy of it for stage 2 or None, the parameters to train, its folder):
    the decoder and post_quant_conv, plus the encoder and quant_conv with --with-encoder."""
    import torch
    from diffusers import AutoencoderKLWan

    vae_dir = WEIGHTS / "vae"
    if not (vae_dir / "config.json").is_file():
        raise SystemExit(f"{vae_dir}: no VAE — train the model first (scripts/train_shapes_model.py)")
    vae = AutoencoderKLWan.from_pretrained(vae_dir, torch_dtype=torch.float32)
    vae.requires_grad_(False)
    trainable = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    old = None
    if with_encoder:
        import copy

        old = copy.deepcopy(vae).eval()  # the encoder the transformer's latents came from (frozen)
        trainable += [*vae.encoder.parameters(), *vae.quant_conv.parameters()]
    for q in trainable:
        q.requires_grad_(True)
    return vae, old, trainable, vae_dir


def _start(args: argparse.Namespace, vae, opt, cfg) -> tuple[Path, str, int, dict]:
    """(checkpoint path, stage name, first step, the `before` report): a fresh start (evaluated first) or the
    stage's checkpoint with --resume; refuses a second stage 2 and a checkpoint of another stage."""
    import torch

    WORK.mkdir(parents=True, exist_ok=True)
    ckpt = WORK / "checkpoint.pt"
    step, before = 0, None
    stage = ("stage_2_with_encoder" if args.with_encoder else "stage_3_sharpen_decoder" if args.sharpen
             else "stage_1_decoder_only")
    done = json.loads((WEIGHTS / "reel.json").read_text()).get("vae_widening", {})
    if args.with_encoder and "stage_2_with_encoder" in done and not args.resume:
        raise SystemExit("reel.json: stage 2 already ran — running it again would anchor to the moved encoder, "
                         "not the one the transformer was trained with; restore the VAE from git first")
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        if state.get("stage") != stage:
            raise SystemExit(f"{ckpt}: a checkpoint of {state.get('stage', 'another stage')}, not {stage} — resume "
                             f"with the same --with-encoder setting, or delete it to start over")
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        step, before = state["step"], state["before"]
        print(f"resumed at step {step}", flush=True)
    elif ckpt.is_file():
        raise SystemExit(f"{ckpt}: an earlier run's checkpoint — pass --resume, or delete it to start over")
    if before is None:
        before = evaluate(vae, cfg)
        print(f"before: {before}", flush=True)
    return ckpt, stage, step, before


def _loss(vae, old, x, sharpen: float):
    """The step's loss on x (B, 3, f, h, w) in [-1, 1]: reconstruction (MSE + 0.5 L1, + sharpen x gradient
    difference) through the frozen encoder; with `old` (stage 2) through the trained one, plus the decoder on
    the old encoder's base latents and those latents' MSE to the new ones."""
    import torch

    from scripts.train_shapes.vae import gradient_difference

    if old is None:
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()  # (B, z, f', h/4, w/4): the frozen encoder's latents
        y = vae.decode(z).sample  # (B, 3, f, h, w)
        return (y - x).pow(2).mean() + 0.5 * (y - x).abs().mean() + sharpen * gradient_difference(y, x)
    z = vae.encode(x).latent_dist.mode()  # (B, z, f', h/4, w/4)
    y = vae.decode(z).sample  # (B, 3, f, h, w)
    base = x[0::2]  # the base-vocabulary half of the batch
    with torch.no_grad():
        z_old = old.encode(base).latent_dist.mode()  # what the transformer learned to generate
    y_old = vae.decode(z_old).sample  # the decoder must still draw the transformer's latents
    return ((y - x).pow(2).mean() + 0.5 * (y - x).abs().mean()
            + (y_old - base).pow(2).mean() + 0.5 * (y_old - base).abs().mean()
            + (z[0::2] - z_old).pow(2).mean())  # base latents stay where they were


def _train(args: argparse.Namespace, vae, old, trainable: list, opt, cfg, ckpt: Path, stage: str, step: int,
           before: dict) -> None:
    """From `step` to --steps: lr warm-up over 20 steps, gradients clipped at 1; progress every 10 steps, a
    checkpoint and an evaluation every 100 and at the end."""
    import torch

    vae.train()
    t0 = time.time()
    while step < args.steps:
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 20)
        x = training_batch(step, args.batch, cfg)  # (B, 3, f, h, w) in [-1, 1]
        loss = _loss(vae, old, x, args.sharpen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        step += 1
        if step % 10 == 0:
            rate = step / max(time.time() - t0, 1e-6)
            print(f"step {step}/{args.steps} loss {loss.item():.5f} "
                  f"({(args.steps - step) / max(rate, 1e-6) / 60:.1f} min left)", flush=True)
        if step % 100 == 0 or step == args.steps:
            torch.save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step, "before": before,
                        "stage": stage}, ckpt)
            print(f"step {step}: {evaluate(vae, cfg)}", flush=True)


def _write(args: argparse.Namespace, vae, old, vae_dir: Path, cfg, stage: str, before: dict) -> None:
    """Store the VAE in fp16, as the export does (stages 1 and 3: only if the encoder's tensors come back
    bit-identical), evaluate it as stored and record the stage in reel.json's `vae_widening`."""
    import torch
    from safetensors.torch import load_file, save_file

    vae.eval()
    sd = {k: v.detach().half() if v.is_floating_point() else v for k, v in vae.state_dict().items()}
    stored = load_file(vae_dir / "diffusion_pytorch_model.safetensors")
    enc_same = all(torch.equal(stored[k], sd[k]) for k in stored if k.startswith(("encoder.", "quant_conv.")))
    if not enc_same and old is None:
        raise SystemExit("the encoder changed — refusing to write (the transformer's latents would no longer match)")
    vae.load_state_dict({k: v.float() for k, v in sd.items()})
    after = evaluate(vae, cfg)
    if old is not None:
        after.update(latent_drift(vae, old, cfg))
    tmp = vae_dir / "diffusion_pytorch_model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(vae_dir / "diffusion_pytorch_model.safetensors")
    reel = json.loads((WEIGHTS / "reel.json").read_text())
    reel.setdefault("vae_widening", {"script": "scripts/widen_shapes_vae.py", "original": before})[stage] = {
        "steps": args.steps, "lr": args.lr, "batch": args.batch, **({"sharpen": args.sharpen} if args.sharpen else {}),
        "before": before, "after": after}
    (WEIGHTS / "reel.json").write_text(json.dumps(reel, indent=2) + "\n")
    print(f"after: {after}\nwrote {vae_dir}", flush=True)


if __name__ == "__main__":
    main()
