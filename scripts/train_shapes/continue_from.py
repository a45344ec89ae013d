"""Continue training a finished built-in model: a checkpoint at the transformer stage built from an exported
WanPipeline folder (models/shapes/weights), so more transformer steps can follow a run whose checkpoint was
deleted. Not an entry point; see `scripts/train_shapes_model.py --from-weights`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from . import common
from .common import TrainConfig
from .transformer import SHARD


def state_from_weights(cfg: TrainConfig, weights: Path) -> dict:
    """{stage: transformer, vae, latents stats, model = ema = exported weights (fp32), tr_step} from `weights`.

    The optimizer starts fresh (an export keeps no moments); the latent cache is the newest
    complete runs/latents_* folder (the cache the model was trained on), rebuilt from this VAE if there is none.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    weights = Path(weights)
    reel_json = weights / "reel.json"
    if not reel_json.is_file():
        raise SystemExit(f"--from-weights {weights}: no reel.json there; point it at an exported model folder "
                         f"(models/shapes/weights)")
    missing = [d for d in ("vae", "transformer", "text_encoder") if not (weights / d / "config.json").is_file()]
    if missing:
        raise SystemExit(f"--from-weights {weights}: no {', '.join(missing)} folder with a config.json; point it at a "
                         f"whole exported model folder (models/shapes/weights)")
    reel = json.loads(reel_json.read_text())
    step = int(reel.get("trained", {}).get("transformer_steps", 0))
    if cfg.tr_steps <= step:
        raise SystemExit(f"--from-weights: the model already has {step} transformer steps; pass "
                         f"--set tr_steps=N with N > {step} (the total to reach)")
    vae = AutoencoderKLWan.from_pretrained(weights / "vae", torch_dtype=torch.float32)
    transformer = WanTransformer3DModel.from_pretrained(weights / "transformer", torch_dtype=torch.float32)
    text_encoder = UMT5EncoderModel.from_pretrained(weights / "text_encoder", dtype=torch.float32)
    # the run's settings must describe this model (sizes come from TrainConfig, not from the export)
    sizes = {"layers": "num_layers", "heads": "num_attention_heads", "head_dim": "attention_head_dim",
             "ffn_dim": "ffn_dim", "freq_dim": "freq_dim", "text_dim": "text_dim", "z_dim": "in_channels"}
    wrong = [f"{k}={transformer.config[v]}" for k, v in sizes.items() if getattr(cfg, k) != transformer.config[v]]
    wrong += [f"{k}={reel[k]}" for k in ("shift", "width", "height", "frames")
              if k in reel and getattr(cfg, k) != reel[k]]
    if wrong:
        raise SystemExit(f"--from-weights {weights}: the model was trained with other settings; "
                         f"add --set {' '.join(wrong)}")
    model = {f"transformer.{k}": v.clone() for k, v in transformer.state_dict().items()}
    model |= {f"text_encoder.{k}": v.clone() for k, v in text_encoder.state_dict().items()}
    # the newest complete cache of cfg.cache_clips clips (a smoke run's small cache is not one)
    n_shards = math.ceil(cfg.cache_clips / min(SHARD, cfg.cache_clips))
    caches = sorted((p for p in common.RUNS_DIR.glob("latents_*") if (p / f"shard_{n_shards - 1:03d}.pt").is_file()
                     and not (p / f"shard_{n_shards:03d}.pt").exists()), key=lambda p: p.stat().st_mtime)
    state = {
        "stage": "transformer",
        "vae": {k: v.clone() for k, v in vae.state_dict().items()},
        "latents_mean": list(vae.config.latents_mean),
        "latents_std": list(vae.config.latents_std),
        "vae_step": int(reel.get("trained", {}).get("vae_steps", 0)),
        "vae_psnr": reel.get("trained", {}).get("vae_psnr_db"),
        "model": model,
        "ema": {k: v.clone() for k, v in model.items()},
        "tr_step": step,
        # the source's reel.json travels in the checkpoint: the export keeps its records (preview, VAE widening)
        "continued_from": {"weights": str(weights), "step": step, "reel": reel},
    }
    if caches:
        state["cache_name"] = caches[-1].name
    return state
