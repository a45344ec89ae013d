"""Train the built-in model's tiny preview decoder (models/preview_decoder.py) and ship it with the model.

    .venv/bin/python scripts/train_preview_decoder.py --threads 1                   # 1. fresh, ~28 min
    .venv/bin/python scripts/train_preview_decoder.py --restore 1024 --steps 1500 --threads 2  # 2. ~10 min
    .venv/bin/python scripts/train_preview_decoder.py --register-only   # after a re-export of the weights

The shipped decoder is made by those two runs, in that order; step 2 needs the preview LoRA
(scripts/distill_shapes_preview.py).

1. A fresh training (width 128 by default, `--width`): pairs are clips of the shapes world (every colour,
   shape, direction and background) and their latents from the model's own VAE (models/shapes/weights/vae,
   posterior mode). The decoder learns latents -> frames with an L1 + MSE loss (`--sharpen W` adds W x a
   gradient-difference loss against blurred edges). 3,000 steps of batch 8 on 1,536 clips by default.
2. `--restore N` fine-tunes the shipped decoder on what it really decodes: preview latents. For N new world
   clips, the clip's latents are noised to the preview sampler's level at step 3 or 4 (of 4) and the
   shipped preview LoRA finishes the consistency sampling from there (bf16 autocast, as in the engine).
   The target is the clip itself, so the decoder learns to draw the clip that the soft latents of a
   4-step preview stand for (corners, points), where the VAE draws those latents as they are. Mixed 50/50
   with clean pairs, lr 5e-4.

At the end each run reports, on clips it never saw: PSNR against the frames and against the full VAE
decode, and how often the shapes judge reads both decodes the same way; on 64 previews it never saw, PSNR
and shape agreement against the VAE's decode (`previews`); and on 64 new restoration pairs, how often the
judge reads each clip's true shape from this decoder and from the VAE (`restoration`). It then writes
models/shapes/adapters/preview_decoder.safetensors (+ preview_decoder.json, the report) and the `decoder`
entry of the `preview` block in models/shapes/weights/reel.json. The decoder depends on the VAE and the
preview LoRA: after the transformer is re-exported, `--register-only` restores the entry; after the preview
LoRA is re-distilled, run both steps again (a fine-tuned decoder is not fine-tuned a second time).

`--on-previews N` is an older fine-tune, kept for comparison: N preview latents rendered from prompts, with
the VAE's decode of the same latents as targets (the decoder imitates the VAE on previews).
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
WIDTH = 128  # the shipped decoder's; 64 (159k parameters) loses about 3 shape points on previews (model card)


def make_pairs(vae, n: int, seed: int):
    """(latents (n, z, F', h, w), clips (n, F, H, W, 3) uint8) from the world and the VAE's posterior mode."""
    import numpy as np
    import torch

    from reel.models.shapes.world import render_clip, sample_spec
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


def preview_settings() -> tuple[dict, int, float]:
    """(the `preview` block of reel.json, its steps, its shift) with engine/spec.py's defaults: 4 steps, and
    the model's own shift when the block names none."""
    reel = json.loads((WEIGHTS / "reel.json").read_text())
    preview = reel.get("preview", {})
    return preview, int(preview.get("steps", 4)), float(preview.get("shift", reel.get("shift", 3.0)))


def restoration_starts(steps: int) -> tuple[int, ...]:
    """The 0-based preview steps restoration pairs start from: the last two (levels 0.75 and 0.5 for 4 steps at
    shift 3), where the clip still fixes the composition and the preview LoRA draws the rest."""
    return tuple(range(max(0, steps - 2), steps))


def preview_components():
    """(the model's components with the shipped preview LoRA loaded, the `preview` block of reel.json)."""
    import torch
    from safetensors.torch import load_file

    from reel.engine.accel import apply_cpu_fast_paths
    from reel.models import wan
    from reel.models.registry import FAMILIES

    reel, _, _ = preview_settings()  # the LoRA file is checked in main()
    comps = wan.load(WEIGHTS, torch.device("cpu"), torch.float32)
    apply_cpu_fast_paths(comps, FAMILIES["wan"])  # as a CPU render runs (engine/accel.py, cpu_fast_paths = auto)
    comps.transformer.load_lora_adapter(load_file(str((WEIGHTS / reel["lora"]).resolve())), adapter_name="preview",
                                        prefix="transformer")
    return comps, reel


def restoration_pairs(n: int, seed: int, starts: tuple[int, ...] | None = None, batch: int = 8):
    """(latents (n, z, F', h, w), clips (n, F, H, W, 3) uint8, specs): preview latents of n world clips.

    Each clip's normalised VAE latents z0 are noised to the preview sampler's level sigma_k (k = 0-based step,
    taken in turn from `starts`, default restoration_starts; with 4 steps at shift 3 the levels are 1, 0.9,
    0.75, 0.5) with the engine's own per-shot noise (seed * 100_000 + index), and the shipped preview LoRA,
    prompted with the clip's caption (32 tokens, the model's max_sequence_length), runs the engine's
    consistency sampler from step k on (captions embedded in fp32, transformer under bf16 autocast on a CPU
    with native bf16). The result is what a preview of that clip looks like in latent space; the clip is the
    decoder's target. Latents are denormalised, as decode_preview hands them to the decoder."""
    import numpy as np
    import torch

    from reel.models import wan
    from reel.models.samplers import consistency, consistency_sigmas
    from reel.models.shapes.world import caption, render_clip, sample_spec
    from scripts.train_shapes.vae import to_tensor

    _, steps, shift = preview_settings()
    starts = restoration_starts(steps) if starts is None else tuple(starts)
    if not starts or max(starts) >= steps or min(starts) < 0:
        raise ValueError(f"restoration starts {starts}: the preview has only {steps} steps (0-based starts)")
    comps, _ = preview_components()
    vae, zc = comps.vae, comps.vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, zc, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, zc, 1, 1, 1)
    rng = np.random.default_rng(seed)
    specs = [sample_spec(rng) for _ in range(n)]
    clips = np.stack([render_clip(s) for s in specs])  # (n, 17, 64, 64, 3)
    lats = []
    with torch.no_grad():
        for i in range(0, n, batch):
            seeds = [seed * 100_000 + k for k in range(i, min(i + batch, n))]
            z0 = (vae.encode(to_tensor(clips[i:i + batch])).latent_dist.mode() - mean) / std  # (b, z, 5, 16, 16)
            cond = wan.encode_prompts(comps, [caption(s) for s in specs[i:i + batch]], 32)  # (b, L, D)
            k = starts[(i // batch) % len(starts)]
            sigma = float(consistency_sigmas(steps, shift)[k])
            noise = torch.cat([wan.initial_noise(tuple(z0.shape[1:]), s, comps.device) for s in seeds])
            x = (1 - sigma) * z0 + sigma * noise  # (b, z, 5, 16, 16) at level k

            def denoiser(x, t, i, cond=cond):  # the engine's preview steps from k on (bf16 as in the engine)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=wan.cpu_bf16_fast(comps.device)):
                    return wan.velocity(comps, x, t, cond).float()

            x = consistency(shift, seeds, start=k)(denoiser, x, steps, None)
            lats.append(x * std + mean)
            print(f"restoration pairs {i + len(seeds)}/{n}", flush=True)
    return torch.cat(lats), clips, specs


def preview_pairs(n: int, seed: int, batch: int = 8):
    """(latents (n, z, F', h, w), VAE-decoded frames (n, F, H, W, 3) uint8) of n previews as reel renders them:
    the shipped preview LoRA, its steps and consistency sampling, no guidance, prompts from the grammar.
    The latents are denormalised, as decode_preview hands them to the decoder."""
    import numpy as np
    import torch

    from reel.engine.sampling import consistency, guided, sample
    from reel.models import wan
    from reel.models.shapes.world import sample_prompts

    comps, _ = preview_components()
    _, steps, shift = preview_settings()
    prompts = [p for p, _ in sample_prompts(n, seed=seed)]
    shape = wan.latent_shape(comps, 17, 64, 64)
    lats, frames = [], []
    with torch.no_grad():
        for i in range(0, n, batch):
            seeds = [seed * 100_000 + k for k in range(i, min(i + batch, n))]
            cond = wan.encode_prompts(comps, prompts[i:i + batch], 32)
            noise = torch.cat([wan.initial_noise(shape, s, comps.device) for s in seeds])
            denoiser = guided(lambda x, t, e: wan.velocity(comps, x, t, e), cond, None, 1.0)
            lat = sample(consistency(shift, seeds), denoiser, noise, steps)
            video = torch.cat(list(wan.decode_stream(comps, lat)), dim=2)  # (b, 3, 17, 64, 64) in [0, 1]
            lats.append(wan._denormalise(comps.vae, lat))
            frames.append(wan.to_uint8_frames(video))
            print(f"previews {min(i + batch, n)}/{n}", flush=True)
    return torch.cat(lats), np.concatenate(frames)


def psnr(a, b) -> float:
    import numpy as np

    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def main() -> None:
    p = _parser()
    args = p.parse_args()
    fine_tune = _check_args(p, args)
    if not (WEIGHTS / "reel.json").is_file():
        raise SystemExit(f"{WEIGHTS}: no exported model (reel.json missing) — run "
                         "scripts/train_shapes_model.py first")
    if args.register_only:
        report = OUT.with_suffix(".json")
        if not (OUT.is_file() and report.is_file()):
            raise SystemExit(f"{OUT} or {report} missing — train the decoder first (without --register-only)")
        register(json.loads(report.read_text()))
        return
    base = _fine_tune_base(fine_tune) if fine_tune else None  # check before minutes of encoding
    import torch
    from diffusers import AutoencoderKLWan

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = args.out.resolve()
    vae = AutoencoderKLWan.from_pretrained(WEIGHTS / "vae", torch_dtype=torch.float32, local_files_only=True).eval()
    t0 = time.time()
    decoder, lat, target, peak_lr, provenance = _training_pairs(args, vae, fine_tune, base)
    _train(args, decoder, lat, target, peak_lr, fine_tune, t0)
    _ship(args, decoder, provenance, vae, fine_tune, out, t0)


def _parser() -> argparse.ArgumentParser:
    """The command line (module doc)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--clips", type=int, default=1536)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--register-only", action="store_true", help="only write the reel.json entry (decoder exists)")
    p.add_argument("--on-previews", type=int, default=0, metavar="N",
                   help="fine-tune the shipped decoder: N preview latents (the preview LoRA's own) with the VAE's "
                        "decode of them as targets, mixed 50/50 with clean-clip pairs; --steps then counts these steps")
    p.add_argument("--sharpen", type=float, default=0.0, metavar="WEIGHT",
                   help="add WEIGHT x a gradient-difference loss (blurred edges cost; the VAE's stage 3 uses 1.0)")
    p.add_argument("--restore", type=int, default=0, metavar="N",
                   help="fine-tune the shipped decoder: N world clips' preview latents (the preview LoRA finishes "
                        "the sampling from the clip's noised latents) with the clips as targets, mixed 50/50 with "
                        "clean-clip pairs; --steps then counts these steps")
    p.add_argument("--width", type=int, default=None,
                   help=f"channels of the decoder's 3-D convolutions (default {WIDTH}: 538k parameters); "
                        "a fresh training only")
    p.add_argument("--out", type=Path, default=OUT,
                   help="where the decoder goes (reel.json names it only at the default path)")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """Refuse bad settings before anything loads (p.error: exit 2, the flag named); returns the fine-tune's
    flag ("--on-previews", "--restore") or None for a fresh training."""
    if args.width is not None and args.width < 8:
        p.error(f"--width {args.width}: give at least 8 channels")
    for flag, value in (("--on-previews", args.on_previews), ("--restore", args.restore)):
        if value < 0:
            p.error(f"{flag} {value}: give a number of clips >= 1 (0: a fresh training)")
    for flag, value, least in (("--steps", args.steps, 1), ("--clips", args.clips, 1), ("--batch", args.batch, 1),
                               ("--threads", args.threads, 1)):
        if value < least:
            p.error(f"{flag} {value}: give at least {least}")
    if args.on_previews and args.restore:
        p.error("--on-previews and --restore are two different fine-tunes: give one")
    fine_tune = "--on-previews" if args.on_previews else "--restore" if args.restore else None
    if args.width is not None and fine_tune:
        p.error(f"--width applies to a fresh training; {fine_tune} fine-tunes the shipped decoder at its own width")
    if fine_tune and args.batch < 2:
        p.error(f"--batch {args.batch}: {fine_tune} mixes clean and preview pairs half and half; give at least 2")
    if args.register_only:
        given = [f for f, v in (("--restore", args.restore), ("--on-previews", args.on_previews),
                                ("--width", args.width), ("--out", args.out != OUT)) if v]
        if given:
            p.error(f"--register-only names the decoder already at {OUT} and trains nothing; drop {', '.join(given)}")
    if args.sharpen < 0:
        p.error(f"--sharpen {args.sharpen}: give a weight >= 0 (a negative one would reward blur)")
    return fine_tune


def _fine_tune_base(fine_tune: str) -> dict:
    """The shipped decoder's provenance, kept as the fine-tune's base, after checking that there is a decoder to
    fine-tune (not fine-tuned already) and a preview LoRA sampling with consistency steps without guidance."""
    preview = json.loads((WEIGHTS / "reel.json").read_text()).get("preview", {})
    if not OUT.is_file():
        raise SystemExit(f"{OUT}: no shipped decoder to fine-tune — train one first (without {fine_tune})")
    if not preview.get("lora") or not (WEIGHTS / preview["lora"]).is_file():
        raise SystemExit(f"{WEIGHTS / 'reel.json'}: no preview LoRA to render previews with — run "
                         f"scripts/distill_shapes_preview.py first, or train without {fine_tune}")
    if preview.get("scheduler", "lcm") != "lcm" or float(preview.get("guidance", 1.0)) != 1.0:
        raise SystemExit(f"{WEIGHTS / 'reel.json'}: the preview samples with {preview.get('scheduler')} at "
                         f"guidance {preview.get('guidance')}; {fine_tune} makes its pairs with consistency (lcm) "
                         "steps without guidance only")
    from safetensors import safe_open

    with safe_open(str(OUT), "pt") as f:  # the shipped decoder's own provenance, kept as the base's
        base = {k: v for k, v in (f.metadata() or {}).items() if k not in ("format", "config")}
    if "fine_tune" in base:  # a second fine-tune would stack on the first
        raise SystemExit(f"{OUT} is already fine-tuned ({base['fine_tune']}, {base.get('fine_tune_steps')} steps): "
                         f"train a fresh decoder first (without {fine_tune}), then fine-tune it once")
    return base


def _training_pairs(args: argparse.Namespace, vae, fine_tune: str | None, base: dict | None):
    """(decoder, latents (n, z, F', h, w), targets (n, 3, F, H, W) in [-1, 1], peak lr, provenance): --clips
    clean pairs and a fresh decoder, or for a fine-tune the shipped decoder with its preview pairs appended
    after the clean ones."""
    import torch

    from reel.models.preview_decoder import PreviewDecoder, load_preview_decoder
    from scripts.train_shapes.vae import to_tensor

    lat, clips, _ = make_pairs(vae, args.clips, seed=31)
    target = to_tensor(clips)  # (n, 3, 17, 64, 64)
    decoder = PreviewDecoder(z_dim=vae.config.z_dim, width=args.width or WIDTH)
    peak_lr, provenance = 2e-3, {"trained_steps": args.steps, "clips": args.clips, "sharpen": args.sharpen}
    if fine_tune:  # fine-tune on what the decoder will really see: the preview LoRA's latents
        decoder = load_preview_decoder(OUT, z_dim=vae.config.z_dim).train().requires_grad_(True)  # the shipped one
        if args.on_previews:  # targets: the VAE's decode of the same latents
            p_lat, p_frames = preview_pairs(args.on_previews, seed=41)
        else:  # targets: the clips the preview latents were made from
            p_lat, p_frames, _ = restoration_pairs(args.restore, seed=51)
        # clean pairs first: (n + N, z, 5, 16, 16) and (n + N, 3, 17, 64, 64)
        lat, target = torch.cat([lat, p_lat]), torch.cat([target, to_tensor(p_frames)])
        peak_lr = 5e-4
        provenance = {"fine_tune": f"{fine_tune} {args.on_previews or args.restore}", "fine_tune_steps": args.steps,
                      "clips": args.clips, "lr": peak_lr, "sharpen": args.sharpen, "base": json.dumps(base)}
    return decoder, lat, target, peak_lr, provenance


def _train(args: argparse.Namespace, decoder, lat, target, peak_lr: float, fine_tune: str | None, t0: float) -> None:
    """--steps of AdamW on L1 + MSE (+ --sharpen x gradient difference): lr warm-up over 100 steps, then cosine
    down to 5 % of the peak; a fine-tune's batches are half clean pairs, half preview pairs."""
    import torch

    from scripts.train_shapes.vae import gradient_difference

    n_extra = args.on_previews or args.restore
    opt = torch.optim.AdamW(decoder.parameters(), lr=peak_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for step in range(1, args.steps + 1):
        lr = peak_lr * min(1.0, step / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        if fine_tune:  # half clean pairs, half preview pairs
            half = args.batch // 2
            idx = torch.cat([torch.randint(args.clips, (half,), generator=g),
                             args.clips + torch.randint(n_extra, (args.batch - half,), generator=g)])
        else:
            idx = torch.randint(len(lat), (args.batch,), generator=g)
        pred = decoder(lat[idx])  # (b, 3, 17, 64, 64)
        loss = (pred - target[idx]).abs().mean() + (pred - target[idx]).pow(2).mean()
        if args.sharpen:
            loss = loss + args.sharpen * gradient_difference(pred, target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {loss.item():.4f} lr {lr:.1e} {time.time() - t0:.0f} s", flush=True)


def _ship(args: argparse.Namespace, decoder, provenance: dict, vae, fine_tune: str | None, out: Path,
          t0: float) -> None:
    """Save the decoder to `out` with its report (evaluate) and, at the default path, register it in reel.json."""
    from reel.models.preview_decoder import save_preview_decoder

    # staged beside `out` until the evaluation below is done: a failed evaluation leaves the old decoder, its
    # report and the reel.json entry as they were (the staged file is removed)
    staged = out.with_name(out.stem + ".staged.safetensors")
    save_preview_decoder(decoder, staged, {**provenance, "vae": "models/shapes/weights/vae"})
    try:
        report = evaluate(staged, vae, t0)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    if fine_tune:
        report["fine_tune"] = {"mode": fine_tune, "clips": args.on_previews or args.restore, "steps": args.steps}
    print(json.dumps(report, indent=2))
    staged.replace(out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    if out == OUT.resolve():
        register(report)
    else:
        print(f"wrote {out} (not registered: reel.json names {OUT} only)")


def evaluate(path: Path, vae, t0: float) -> dict:
    """The report on the decoder at `path`: clips, previews and restoration pairs it never saw (module doc)."""
    import numpy as np
    import torch

    from reel.models.preview_decoder import load_preview_decoder
    from reel.models.shapes.judge import judge_clip
    from scripts.train_shapes.vae import to_uint8

    # evaluation on new clips: against the frames, against the full VAE decode, judge agreement
    decoder = load_preview_decoder(path, z_dim=vae.config.z_dim)
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
              "params": sum(p.numel() for p in decoder.parameters()), "bytes": path.stat().st_size,
              "seconds": round(time.time() - t0)}
    # and on previews it never saw: the judge on the tiny decode against the VAE's decode of the same latents
    lora = json.loads((WEIGHTS / "reel.json").read_text()).get("preview", {}).get("lora")
    if lora and (WEIGHTS / lora).is_file():
        p_lat_t, p_full = preview_pairs(64, seed=42)
        with torch.no_grad():
            p_tiny = to_uint8(decoder(p_lat_t))
        report["previews"] = {"psnr_vs_vae_decode_db": psnr(p_tiny, p_full),
                              "judge_shape_agreement_pct": 100 * float(np.mean(
                                  [judge_clip(a).shape == judge_clip(b).shape for a, b in zip(p_tiny, p_full)]))}
        # and on preview latents of 64 new clips: how often the judge reads the clip's true shape
        r_lat_t, r_clips_t, r_specs_t = restoration_pairs(64, seed=52)
        with torch.no_grad():
            r_tiny = to_uint8(decoder(r_lat_t))
            r_full = np.concatenate([to_uint8(vae.decode(r_lat_t[i:i + 16]).sample) for i in range(0, 64, 16)])
        report["restoration"] = {
            "psnr_vs_frames_db": psnr(r_tiny, r_clips_t), "vae_psnr_vs_frames_db": psnr(r_full, r_clips_t),
            "judge_true_shape_pct": 100 * float(np.mean([judge_clip(c).shape == s.shape
                                                         for c, s in zip(r_tiny, r_specs_t)])),
            "vae_judge_true_shape_pct": 100 * float(np.mean([judge_clip(c).shape == s.shape
                                                             for c, s in zip(r_full, r_specs_t)]))}
    else:
        print("no preview LoRA yet (scripts/distill_shapes_preview.py): the checks on previews are skipped")
    return report


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
