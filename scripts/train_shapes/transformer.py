"""Latent cache + transformer stage (WanTransformer3DModel and UMT5 text encoder trained jointly with
flow matching, as Wan) + quick judge evaluations. Not an entry point; see scripts/train_shapes_model.py.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time

import numpy as np
import torch

from reel.engine.sampling import cfg_combine
from reel.models.shapes.judge import judge_clip, score
from reel.models.shapes.vocab import build_tokenizer
from reel.models.shapes.world import COLORS, HELD_OUT_PAIRS, SHAPES, caption, render_clip, sample_prompts, sample_spec

from . import common
from .common import (
    Logger,
    TrainConfig,
    build_text_encoder,
    build_transformer,
    build_vae,
    compact_optimizer,
    eta,
    load_optimizer,
    n_params,
    prompt_embeds,
    save_checkpoint,
    shift_sigma,
    tokenize,
)
from .vae import to_tensor, to_uint8

SHARD = 500  # clips per cache shard


def vae_from_state(cfg: TrainConfig, state: dict):
    """The finished VAE (fp16-rounded weights, run in fp32) with the latent stats once measured."""
    vae = build_vae(cfg, state.get("latents_mean"), state.get("latents_std"))
    vae.load_state_dict({k: v.float() for k, v in state["vae"].items()})
    return vae.eval()


def cache_dir(state: dict):
    if state.get("cache_name"):  # a continued run keeps training on the cache its model was trained on
        return common.RUNS_DIR / state["cache_name"]
    digest = hashlib.sha1(b"".join(v.numpy().tobytes() for v in state["vae"].values())).hexdigest()[:10]
    return common.RUNS_DIR / f"latents_{digest}"  # RUNS_DIR read at call time (a smoke run moves it)


def build_cache(cfg: TrainConfig, state: dict, log: Logger) -> dict:
    """Encode cfg.cache_clips training clips (posterior mode) into shards under runs/ (resumable),
    then store per-channel latent mean/std in the state. Stage moves to "transformer"."""
    vae = vae_from_state(cfg, state)
    out = cache_dir(state)
    out.mkdir(parents=True, exist_ok=True)
    shard = min(SHARD, cfg.cache_clips)
    n_shards = math.ceil(cfg.cache_clips / shard)
    t0 = time.time()
    for k in range(n_shards):
        path = out / f"shard_{k:03d}.pt"
        if path.exists():
            continue
        rng = np.random.default_rng([cfg.seed, 2, k])
        specs = [sample_spec(rng, exclude_pairs=HELD_OUT_PAIRS) for _ in range(shard)]
        lat = []
        with torch.no_grad():
            for i in range(0, shard, 20):
                clips = np.stack([render_clip(s, cfg.width, cfg.height, cfg.frames) for s in specs[i : i + 20]])
                lat.append(vae.encode(to_tensor(clips)).latent_dist.mode())  # (20, z, F', H', W')
        tmp = path.with_suffix(".tmp")
        torch.save({"latents": torch.cat(lat).half(), "captions": [caption(s) for s in specs]}, tmp)
        tmp.replace(path)
        done = k + 1
        log("cache", shard=f"{done}/{n_shards}", eta=eta(done, n_shards, done / (time.time() - t0)))
    lat = load_cache(cfg, state)[0].float()  # (N, z, F', H', W')
    if "latents_mean" not in state:  # a rebuilt cache (fresh machine) keeps the stats in use
        state["latents_mean"] = lat.mean(dim=(0, 2, 3, 4)).tolist()
        state["latents_std"] = lat.std(dim=(0, 2, 3, 4)).tolist()
    if state["stage"] == "cache":
        state["stage"] = "transformer"
    log("cache done", clips=len(lat), mean=[round(m, 3) for m in state["latents_mean"]],
        std=[round(s, 3) for s in state["latents_std"]])
    save_checkpoint(state)
    return state


def load_cache(cfg: TrainConfig, state: dict) -> tuple[torch.Tensor, list[str]]:
    out = cache_dir(state)
    lats, caps = [], []
    for k in range(math.ceil(cfg.cache_clips / min(SHARD, cfg.cache_clips))):
        path = out / f"shard_{k:03d}.pt"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run --stage cache (or --stage all) to rebuild the latent cache")
        d = torch.load(path)
        lats.append(d["latents"])
        caps += d["captions"]
    return torch.cat(lats), caps  # (N, z, F', H', W') fp16, N captions


class Denoiser(torch.nn.Module):
    """Transformer + text encoder as one module (one optimizer, one EMA)."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.transformer = build_transformer(cfg)
        self.text_encoder = build_text_encoder(cfg)

    def forward(self, x, t, ids, mask):
        ctx = prompt_embeds(self.text_encoder, ids, mask)  # (B, L, text_dim)
        return self.transformer(x, t, ctx, return_dict=False)[0]  # (B, z, F', H', W')


@torch.no_grad()
def sample(model: Denoiser, tokenizer, cfg: TrainConfig, prompts: list[str], seed: int, steps: int,
           guidance: float, shape: tuple[int, ...]) -> torch.Tensor:
    """Euler flow sampler with CFG on normalised latents; returns (B, z, F', H', W')."""
    ids, mask = tokenize(tokenizer, prompts, cfg.text_len)
    uids, umask = tokenize(tokenizer, [""] * len(prompts), cfg.text_len)
    ctx = prompt_embeds(model.text_encoder, torch.cat([ids, uids]), torch.cat([mask, umask]))  # (2B, L, D)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((len(prompts), *shape), generator=gen)  # (B, z, F', H', W')
    sig = shift_sigma(torch.linspace(1.0, 0.0, steps + 1), cfg.shift)
    for i in range(steps):
        t = torch.full((2 * len(prompts),), float(sig[i]) * 1000.0)
        v = model.transformer(torch.cat([x, x]), t, ctx, return_dict=False)[0]  # (2B, z, F', H', W')
        vc, vu = v.chunk(2)
        x = x + (sig[i + 1] - sig[i]) * cfg_combine(vc, vu, guidance)
    return x


def quick_eval(model: Denoiser, vae, tokenizer, cfg: TrainConfig, mean, std, n: int) -> dict:
    """Judge n sampled clips: half from training combinations, half held out."""
    results = {}
    for held in (False, True):
        pairs = sample_prompts(n // 2, seed=1234 + int(held), held_out=held)
        prompts, specs = [p for p, _ in pairs], [s for _, s in pairs]
        shape = (cfg.z_dim, (cfg.frames - 1) // 4 + 1, cfg.height // 4, cfg.width // 4)
        z = sample(model, tokenizer, cfg, prompts, seed=77, steps=cfg.eval_steps, guidance=cfg.guidance, shape=shape)
        z = z * std + mean  # (B, z, F', H', W') back to VAE latents
        with torch.no_grad():
            clips = np.concatenate([to_uint8(vae.decode(z[i : i + 8]).sample) for i in range(0, len(z), 8)])
        verdicts = [judge_clip(c, colors=COLORS, shapes=SHAPES) for c in clips]
        results["held" if held else "seen"] = score(verdicts, specs)
    return results


def train_transformer(cfg: TrainConfig, state: dict, log: Logger, max_steps: int | None = None) -> dict:
    """Run/resume the transformer stage; stage moves to "export" when done."""
    torch.manual_seed(cfg.seed)
    # 1. data: cached normalised latents and their captions
    lat, caps = load_cache(cfg, state)
    mean = torch.tensor(state["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(state["latents_std"]).view(1, -1, 1, 1, 1)
    tokenizer = build_tokenizer()
    ids_all, mask_all = tokenize(tokenizer, caps, cfg.text_len)  # (N, L)
    empty_ids, empty_mask = tokenize(tokenizer, [""], cfg.text_len)  # (1, L)
    # 2. model, EMA, optimizer
    model = Denoiser(cfg)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.tr_lr, weight_decay=0.01, betas=(0.9, 0.99))
    step = state.get("tr_step", 0)
    if "model" in state:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        if "tr_opt" in state:  # absent when continuing from exported weights (fresh AdamW moments)
            load_optimizer(opt, state["tr_opt"])
    log("transformer stage", transformer_params=n_params(model.transformer), text_params=n_params(model.text_encoder),
        step=step, total=cfg.tr_steps, clips=len(lat))
    vae = vae_from_state(cfg, state)
    stop_at = cfg.tr_steps if max_steps is None else min(cfg.tr_steps, step + max_steps)
    t_last, s_last, losses = time.time(), step, []
    while step < stop_at:
        # 3. batch (deterministic per step): latents, captions (10% dropped), shifted sigmas
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(len(lat), (cfg.tr_batch,), generator=g)
        x0 = (lat[idx].float() - mean) / std  # (B, z, F', H', W')
        ids, mask = ids_all[idx].clone(), mask_all[idx].clone()  # (B, L)
        drop = torch.rand(cfg.tr_batch, generator=g) < cfg.cfg_drop
        ids[drop], mask[drop] = empty_ids, empty_mask
        sigma = shift_sigma(torch.rand(cfg.tr_batch, generator=g), cfg.shift)  # (B,)
        noise = torch.randn(x0.shape, generator=g)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise  # (B, z, F', H', W')
        target = noise - x0
        # 4. step
        # warmup then cosine to 0.1x, over the current phase [tr_restart, tr_steps) (tr_restart > 0: a
        # continued run restarts the schedule from its exported weights)
        at, span = step - cfg.tr_restart, max(cfg.tr_steps - cfg.tr_restart, 1)
        lr = cfg.tr_lr * min(1.0, (at + 1) / cfg.tr_warmup)
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(at / span, 1.0)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = model(xt, sigma * 1000.0, ids, mask)
        loss = (pred.float() - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            rate = (step - s_last) / (time.time() - t_last)
            log("tr", step=step, loss=f"{np.mean(losses):.4f}", lr=f"{lr:.2e}", steps_per_s=f"{rate:.3f}",
                eta=eta(step, cfg.tr_steps, rate))
            log.json({"stage": "transformer", "step": step, "loss": float(np.mean(losses)), "steps_per_s": rate})
            t_last, s_last, losses = time.time(), step, []
        if step % cfg.save_every == 0 or step == stop_at:
            state.update(model=model.state_dict(), ema=ema.state_dict(), tr_opt=compact_optimizer(opt), tr_step=step)
            if step >= cfg.tr_steps:
                state["stage"] = "export"
            size = save_checkpoint(state)
            log("saved", step=step, mb=f"{size / 2**20:.1f}")
        if step % cfg.eval_every == 0 or step == cfg.tr_steps:
            t0 = time.time()
            res = quick_eval(ema, vae, tokenizer, cfg, mean, std, cfg.eval_prompts)
            for k, r in res.items():
                log(f"eval[{k}]", step=step, color=r["color"], background=r["background"],
                    direction=r["direction"], shape=r["shape"], all=r["all"], n=r["n"])
            log.json({"stage": "eval", "step": step, **res, "seconds": time.time() - t0})
            t_last += time.time() - t0
    return state
