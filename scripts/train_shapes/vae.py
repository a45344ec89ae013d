"""VAE stage: trains AutoencoderKLWan on shapes-world clips (rendered on the fly), then measures
per-channel latent statistics. Not an entry point; see scripts/train_shapes_model.py.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from reel.models.shapes.world import HELD_OUT_PAIRS, render_clip, sample_spec

from .common import Logger, TrainConfig, build_vae, compact_optimizer, eta, load_optimizer, save_checkpoint

VAL_SEED = 10_000_019  # validation clips: seeds never used for training data


def to_tensor(clips: np.ndarray) -> torch.Tensor:
    """(B, F, H, W, 3) uint8 -> (B, 3, F, H, W) float in [-1, 1]."""
    x = torch.from_numpy(clips).float().div(127.5).sub(1.0)  # (B, F, H, W, 3)
    return x.permute(0, 4, 1, 2, 3).contiguous()  # (B, 3, F, H, W)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, F, H, W) in [-1, 1] -> (B, F, H, W, 3) uint8."""
    x = x.clamp(-1, 1).add(1.0).mul(127.5).round().to(torch.uint8)  # (B, 3, F, H, W)
    return x.permute(0, 2, 3, 4, 1).numpy()


def training_batch(cfg: TrainConfig, step: int) -> torch.Tensor:
    """Deterministic per step: random clips (held-out pairs excluded), random crop and frame window."""
    rng = np.random.default_rng([cfg.seed, 1, step])
    clips = []
    for _ in range(cfg.vae_batch):
        clip = render_clip(sample_spec(rng, exclude_pairs=HELD_OUT_PAIRS), cfg.width, cfg.height, cfg.frames)
        f0 = int(rng.integers(0, cfg.frames - cfg.vae_frames + 1))
        y0 = int(rng.integers(0, cfg.height - cfg.vae_crop + 1))
        x0 = int(rng.integers(0, cfg.width - cfg.vae_crop + 1))
        clips.append(clip[f0 : f0 + cfg.vae_frames, y0 : y0 + cfg.vae_crop, x0 : x0 + cfg.vae_crop])
    return to_tensor(np.stack(clips))  # (B, 3, vae_frames, crop, crop)


def validation_clips(cfg: TrainConfig, n: int = 16, held_out: bool = True) -> np.ndarray:
    """(n, F, H, W, 3) full-size clips never seen in training (held-out pairs, separate seeds)."""
    rng = np.random.default_rng(VAL_SEED)
    specs = [
        sample_spec(rng, only_pairs=HELD_OUT_PAIRS) if held_out and i % 2 == 0 else sample_spec(rng)
        for i in range(n)
    ]
    return np.stack([render_clip(s, cfg.width, cfg.height, cfg.frames) for s in specs])


@torch.no_grad()
def reconstruct(vae, clips: np.ndarray, batch: int = 8) -> np.ndarray:
    """Encode (posterior mode) and decode uint8 clips, as the pipeline would."""
    outs = []
    for i in range(0, len(clips), batch):
        x = to_tensor(clips[i : i + batch])  # (b, 3, F, H, W)
        z = vae.encode(x).latent_dist.mode()  # (b, z_dim, F', H/4, W/4)
        outs.append(to_uint8(vae.decode(z).sample))
    return np.concatenate(outs)


def gradient_difference(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean |(|dy| - |dx|)| of the spatial gradients of prediction y and target x, (B, 3, f, h, w): zero only
    when every edge is as steep as the target's (Mathieu et al. 2016's remedy for blurry MSE predictions)."""
    loss = 0.0
    for dim in (-1, -2):
        loss = loss + (y.diff(dim=dim).abs() - x.diff(dim=dim).abs()).abs().mean()
    return loss


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * math.log10(255.0**2 / max(mse, 1e-10))


def train_vae(cfg: TrainConfig, state: dict, log: Logger, max_steps: int | None = None) -> dict:
    """Run/resume the VAE stage; returns the updated state (stage moves to "cache" when done)."""
    # 1. model + optimizer, restored from the checkpoint if present
    vae = build_vae(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0, betas=(0.9, 0.99))
    step = state.get("vae_step", 0)
    if "vae" in state:
        vae.load_state_dict(state["vae"])
        load_optimizer(opt, state["vae_opt"])
    log("vae stage", params=sum(p.numel() for p in vae.parameters()), step=step, total=cfg.vae_steps)
    val = validation_clips(cfg)
    vae.train()
    t_last, s_last = time.time(), step
    stop_at = cfg.vae_steps if max_steps is None else min(cfg.vae_steps, step + max_steps)
    # 2. loop: MSE + L1 on the posterior mode (or a sample), tiny KL; cosine LR after 100 warm-up steps
    while step < stop_at:
        lr = cfg.vae_lr * min(1.0, (step + 1) / 100) * (0.55 + 0.45 * math.cos(math.pi * step / cfg.vae_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x = training_batch(cfg, step)  # (B, 3, f, h, w)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        post = vae.encode(x).latent_dist
        z = post.sample(generator=gen) if cfg.vae_sample else post.mode()  # (B, z_dim, f', h/4, w/4)
        y = vae.decode(z).sample  # (B, 3, f, h, w)
        rec = (y - x).pow(2).mean() + 0.5 * (y - x).abs().mean()
        kl = post.kl().mean() / z[0].numel()
        loss = rec + cfg.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            rate = (step - s_last) / (time.time() - t_last)
            log("vae", step=step, loss=f"{loss.item():.5f}", kl=f"{kl.item():.2f}", lr=f"{lr:.2e}",
                steps_per_s=f"{rate:.3f}", eta=eta(step, cfg.vae_steps, rate))
            t_last, s_last = time.time(), step
        if step % 250 == 0 or step == cfg.vae_steps:
            vae.eval()
            p = psnr(reconstruct(vae, val), val)
            vae.train()
            log("vae eval", step=step, psnr_db=f"{p:.2f}")
            log.json({"stage": "vae", "step": step, "psnr": p})
            if step == cfg.vae_steps and p < cfg.vae_min_psnr and cfg.vae_steps + cfg.vae_extend <= cfg.vae_max_steps:
                cfg.vae_steps += cfg.vae_extend  # below target: train on (stored in the checkpoint's config)
                state["config"]["vae_steps"] = cfg.vae_steps
                stop_at = cfg.vae_steps if max_steps is None else stop_at
                log("vae extended", psnr_db=f"{p:.2f}", target=cfg.vae_min_psnr, total=cfg.vae_steps)
        if step % cfg.save_every == 0 or step == stop_at:
            state.update(vae=vae.state_dict(), vae_opt=compact_optimizer(opt), vae_step=step)
            size = save_checkpoint(state)
            log("saved", step=step, mb=f"{size / 2**20:.1f}")
    if step >= cfg.vae_steps:
        # 3. finish: fp16-rounded weights are THE vae from now on (cache, export); drop its optimizer
        sd = {k: v.half() if v.is_floating_point() else v for k, v in vae.state_dict().items()}
        state.pop("vae_opt", None)
        state.update(vae=sd, vae_step=step, stage="cache")
        vae.load_state_dict(sd)
        vae.eval()
        p = psnr(reconstruct(vae, val), val)
        state["vae_psnr"] = p
        log("vae done", psnr_db=f"{p:.2f}")
        save_checkpoint(state)
    return state
