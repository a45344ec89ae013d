"""Train the built-in x2 upscaler (Real-ESRGAN SRVGGNetCompact) on shapes-world frames.

    .venv/bin/python -m scripts.train_upscaler                       # ~8-12 min on one CPU thread
    .venv/bin/python -m scripts.train_upscaler --steps 200 --out /tmp/x2.safetensors   # quick look

HR frames are rendered by models/shapes/world.py at several sizes (held-out combinations excluded);
LR frames are made from them by `make_lr`: a 2x2 area downscale, then (per clip, at random) the mild
blur a small VAE leaves and an H.264 round trip through reel's own VideoWriter at a random CRF — the
kind of input the upscaler meets when it enlarges decoded renders of the 64x64 built-in model.

Loss: MSE (what PSNR measures). With L1 the net stays at its nearest-neighbour skip for thousands of
steps: most pixels of this world are flat, where L1's median pull favours an exactly-zero residual.

The network is spandrel's own `Compact` class (SRVGGNetCompact, PReLU), so the saved state dict is
exactly what `spandrel.ModelLoader` auto-detects. Output: models/shapes/upscalers/x2.safetensors
(float32, with the training settings and held-out PSNR in the safetensors metadata).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reel.models.registry import SHAPES_DIR
from reel.models.shapes.world import HELD_OUT_PAIRS, ORANGE_STAR, render_clip, sample_spec

OUT = SHAPES_DIR / "upscalers" / "x2.safetensors"
FRAMES = 17
HR_SIZES = ((128, 128), (128, 128), (96, 160), (160, 96), (192, 128), (96, 96))  # (height, width), % 8


@dataclass(frozen=True)
class Config:
    """Training settings (all recorded in the weights' metadata)."""

    steps: int = 4000
    batch: int = 16
    crop: int = 48  # LR patch side, pixels
    lr: float = 1e-3  # Adam, cosine-decayed to lr / 100
    num_feat: int = 32
    num_conv: int = 8
    clips: int = 240  # training clips of FRAMES frames
    object_crop_p: float = 0.6  # share of crops centred near the moving object (rest uniform)
    sharp_p: float = 0.4  # share of clips without blur
    raw_p: float = 0.4  # share of clips without the H.264 round trip
    seed: int = 0


# ---- data ---------------------------------------------------------------------------------------
def area_down2(hr: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H/2, W/2, 3) uint8, mean of each 2x2 block."""
    n, h, w, c = hr.shape
    blocks = hr.reshape(n, h // 2, 2, w // 2, 2, c).astype(np.float32)  # (N, H/2, 2, W/2, 2, 3)
    return np.clip(np.rint(blocks.mean(axis=(2, 4))), 0, 255).astype(np.uint8)


def gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (edge-replicated) of (N, H, W, 3) uint8 frames; sigma in pixels."""
    if sigma <= 0:
        return frames
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma * sigma))
    k = k / k.sum()  # (2r+1,)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)


def h264_roundtrip(frames: np.ndarray, crf: int, workdir: Path) -> np.ndarray:
    """Encode (N, H, W, 3) uint8 frames with reel's VideoWriter at `crf`, decode them as upscale_video does."""
    import imageio_ffmpeg

    from reel.engine.post.encode import VideoWriter
    from reel.engine.post.upscale import DECODE_PARAMS

    path = workdir / f"rt-{crf}.mp4"
    with VideoWriter(path, width=frames.shape[2], height=frames.shape[1], fps=8, crf=crf) as writer:
        writer.write(frames)
    reader = imageio_ffmpeg.read_frames(str(path), output_params=DECODE_PARAMS)
    h, w = next(reader)["size"][::-1]
    decoded = np.stack([np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader])  # (N, H, W, 3)
    path.unlink()
    return decoded


def make_lr(hr: np.ndarray, blur: float = 0.0, crf: int | None = None, workdir: Path | None = None) -> np.ndarray:
    """The LR clip for an HR clip: 2x area downscale, Gaussian blur `blur` (LR pixels), H.264 at `crf`."""
    lr = gaussian_blur(area_down2(hr), blur)
    if crf is not None:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            lr = h264_roundtrip(lr, crf, Path(tmp))
    return lr


def random_degradation(rng: np.random.Generator, sharp_p: float, raw_p: float) -> tuple[float, int | None]:
    """(blur sigma, crf or None) for one training clip: no blur with p `sharp_p`, no H.264 with p `raw_p`."""
    blur = 0.0 if rng.random() < sharp_p else float(rng.uniform(0.3, 0.9))
    crf = None if rng.random() < raw_p else int(rng.integers(18, 33))
    return blur, crf


def object_centres(spec, frames: int) -> np.ndarray:
    """(frames, 2) object centre per frame as (x, y) frame fractions."""
    p = np.linspace(0.0, 1.0, frames)[:, None]  # (F, 1)
    return np.asarray(spec.start_xy) + (np.asarray(spec.end_xy()) - np.asarray(spec.start_xy)) * p


def build_dataset(cfg: Config, log=print) -> list[dict]:
    """Training clips: dicts with hr (F, H, W, 3), lr (F, H/2, W/2, 3) uint8 and centres (F, 2)."""
    rng = np.random.default_rng(cfg.seed)
    clips = []
    for i in range(cfg.clips):
        if rng.random() < 0.1:
            spec = ORANGE_STAR.sample_spec(rng)
        else:
            spec = sample_spec(rng, exclude_pairs=HELD_OUT_PAIRS)
        h, w = HR_SIZES[int(rng.integers(len(HR_SIZES)))]
        hr = render_clip(spec, width=w, height=h, frames=FRAMES)  # (F, H, W, 3)
        blur, crf = random_degradation(rng, cfg.sharp_p, cfg.raw_p)
        clips.append({"hr": hr, "lr": make_lr(hr, blur, crf), "centres": object_centres(spec, FRAMES)})
        if (i + 1) % 60 == 0:
            log(f"data: {i + 1}/{cfg.clips} clips")
    return clips


def heldout_set(n_clips: int, seed: int, blur: float, crf: int | None, size: int = 128):
    """(hr, lr) uint8 arrays of `n_clips` held-out clips (only HELD_OUT_PAIRS), FRAMES frames each."""
    rng = np.random.default_rng(seed)
    hrs = [render_clip(sample_spec(rng, only_pairs=sorted(HELD_OUT_PAIRS)), size, size, FRAMES) for _ in range(n_clips)]
    hr = np.concatenate(hrs)  # (n*F, H, W, 3)
    lr = np.concatenate([make_lr(c, blur, crf) for c in hrs])  # (n*F, H/2, W/2, 3)
    return hr, lr


def sample_batch(clips: list[dict], cfg: Config, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (LR, HR) patches, flipped / rotated: (B, 3, c, c) and (B, 3, 2c, 2c) float in [0, 1]."""
    c = cfg.crop
    lrs, hrs = [], []
    for _ in range(cfg.batch):
        clip = clips[int(rng.integers(len(clips)))]
        t = int(rng.integers(FRAMES))
        lr, hr = clip["lr"][t], clip["hr"][t]  # (h, w, 3), (2h, 2w, 3)
        h, w = lr.shape[:2]
        if rng.random() < cfg.object_crop_p:
            cx, cy = clip["centres"][t] * (w, h) + rng.normal(0, c / 4, size=2)
            x0, y0 = int(np.clip(cx - c / 2, 0, w - c)), int(np.clip(cy - c / 2, 0, h - c))
        else:
            x0, y0 = int(rng.integers(w - c + 1)), int(rng.integers(h - c + 1))
        lp, hp = lr[y0:y0 + c, x0:x0 + c], hr[2 * y0:2 * (y0 + c), 2 * x0:2 * (x0 + c)]
        k = int(rng.integers(4))
        lp, hp = np.rot90(lp, k), np.rot90(hp, k)
        if rng.random() < 0.5:
            lp, hp = lp[:, ::-1], hp[:, ::-1]
        lrs.append(lp)
        hrs.append(hp)
    lr_t = torch.from_numpy(np.stack(lrs)).permute(0, 3, 1, 2).float() / 255  # (B, 3, c, c)
    hr_t = torch.from_numpy(np.stack(hrs)).permute(0, 3, 1, 2).float() / 255  # (B, 3, 2c, 2c)
    return lr_t, hr_t


# ---- evaluation ---------------------------------------------------------------------------------
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-frame PSNR (dB) of (N, H, W, 3) uint8 arrays."""
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = np.maximum(err.reshape(len(a), -1).mean(axis=1), 1e-10)  # (N,)
    return float(np.mean(10 * np.log10(255.0**2 / mse)))


@torch.inference_mode()
def run_model(model: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    """Whole-frame x2 of (N, h, w, 3) uint8 -> (N, 2h, 2w, 3) uint8 (training-time check only)."""
    x = torch.from_numpy(lr).permute(0, 3, 1, 2).float() / 255  # (N, 3, h, w)
    y = model(x).clamp(0, 1)  # (N, 3, 2h, 2w)
    return (y * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, 2h, 2w, 3)


# ---- training -----------------------------------------------------------------------------------
def build_model(cfg: Config) -> torch.nn.Module:
    """spandrel's SRVGGNetCompact class, x2, PReLU (the only activation spandrel detects)."""
    from reel.engine.post.upscale import import_spandrel

    import_spandrel()
    from spandrel.architectures.Compact import Compact

    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=cfg.num_feat, num_conv=cfg.num_conv, upscale=2,
                    act_type="prelu")
    # He init for the PReLU stack (torch's default shrinks the signal ~1/sqrt(3) per conv, which leaves the
    # net stuck at its nearest-neighbour skip for ~1000 steps) and a 10x smaller last conv.
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:
        torch.nn.init.kaiming_normal_(conv.weight, a=0.25, nonlinearity="leaky_relu")
        torch.nn.init.zeros_(conv.bias)
    with torch.no_grad():
        convs[-1].weight.mul_(0.1)
    return model


def train(cfg: Config, out: Path, log=print) -> dict:
    """Train, evaluate on held-out clips, save safetensors at `out` (atomically); return a summary."""
    from safetensors.torch import save_file

    from reel.engine.post.upscale import load_upscaler
    from reel.engine.store import atomic_path

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    t0 = time.perf_counter()
    # 1. data
    clips = build_dataset(cfg, log)
    val_hr, val_lr = heldout_set(6, seed=1234, blur=0.5, crf=23)  # render-like
    clean_hr, clean_lr = heldout_set(6, seed=1234, blur=0.0, crf=None)
    log(f"data ready in {time.perf_counter() - t0:.0f}s")
    # 2. model and optimiser
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr / 100)
    # 3. steps
    t1, running = time.perf_counter(), 0.0
    for step in range(1, cfg.steps + 1):
        lr_t, hr_t = sample_batch(clips, cfg, rng)
        loss = F.mse_loss(model(lr_t), hr_t)  # (B, 3, 2c, 2c) vs (B, 3, 2c, 2c)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if step % 250 == 0 or step == cfg.steps:
            model.eval()
            val, clean = psnr(run_model(model, val_lr), val_hr), psnr(run_model(model, clean_lr), clean_hr)
            model.train()
            log(f"step {step}/{cfg.steps}  mse {running / 250:.6f}  held-out PSNR render-like {val:.2f} dB, "
                f"clean {clean:.2f} dB  {time.perf_counter() - t1:.0f}s")
            running = 0.0
    train_seconds = time.perf_counter() - t1
    # 4. save and check that spandrel recognises it
    model.eval()
    summary = {"config": asdict(cfg), "train_seconds": round(train_seconds, 1),
               "data_seconds": round(t1 - t0, 1),
               "heldout_psnr_render_like": round(psnr(run_model(model, val_lr), val_hr), 3),
               "heldout_psnr_clean": round(psnr(run_model(model, clean_lr), clean_hr), 3)}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"reel": "built-in x2 upscaler (shapes world)", "architecture": "SRVGGNetCompact",
            "trained_by": "scripts/train_upscaler.py", "summary": json.dumps(summary)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=meta)
    up = load_upscaler(str(out))
    log(f"saved {out} ({out.stat().st_size / 1e3:.0f} kB): spandrel sees {up.describe()}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=Config.steps)
    parser.add_argument("--clips", type=int, default=Config.clips)
    parser.add_argument("--num-feat", type=int, default=Config.num_feat)
    parser.add_argument("--num-conv", type=int, default=Config.num_conv)
    parser.add_argument("--sharp-p", type=float, default=Config.sharp_p, help="share of clips without blur")
    parser.add_argument("--raw-p", type=float, default=Config.raw_p, help="share of clips without H.264")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = Config(steps=args.steps, clips=args.clips, num_feat=args.num_feat, num_conv=args.num_conv,
                 sharp_p=args.sharp_p, raw_p=args.raw_p)
    summary = train(cfg, args.out, log=lambda msg: print(msg, flush=True))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
