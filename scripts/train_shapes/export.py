"""Export stage: writes models/shapes/weights/ as a diffusers WanPipeline folder (EMA weights, fp16
safetensors) plus reel.json with the recommended defaults. Not an entry point; see
scripts/train_shapes_model.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from reel.models.shapes.vocab import build_tokenizer

from .common import WEIGHTS_DIR, Logger, TrainConfig, build_text_encoder, build_transformer
from .transformer import vae_from_state

RECOMMENDED_STEPS = 20


def export(cfg: TrainConfig, state: dict, log: Logger, out: Path = WEIGHTS_DIR) -> Path:
    """Build the pipeline in a temp folder next to `out`, check it loads, then swap it in."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    # 1. components (EMA weights if trained, else the raw init: smoke runs)
    vae = vae_from_state(cfg, state)
    transformer, text_encoder = build_transformer(cfg), build_text_encoder(cfg)
    weights = state.get("ema") or state.get("model")
    if weights is None:
        raise RuntimeError("no transformer weights in the checkpoint: run --stage transformer first")
    transformer.load_state_dict(
        {k[len("transformer."):]: v for k, v in weights.items() if k.startswith("transformer.")}
    )
    text_encoder.load_state_dict(
        {k[len("text_encoder."):]: v for k, v in weights.items() if k.startswith("text_encoder.")}
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=cfg.shift, num_train_timesteps=1000
    )
    pipe = WanPipeline(
        tokenizer=build_tokenizer(model_max_length=cfg.text_len), text_encoder=text_encoder,
        transformer=transformer.half(), vae=vae.half(), scheduler=scheduler,
    )
    pipe.text_encoder.half()
    # 2. save to a temp folder, record defaults and provenance
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    reel = {
        "width": cfg.width, "height": cfg.height, "frames": cfg.frames, "fps": cfg.fps,
        "steps": RECOMMENDED_STEPS, "guidance": cfg.guidance, "shift": cfg.shift,
        "max_sequence_length": cfg.text_len, "negative_prompt": "",
        "dtype": "float32",
        "trained": {"vae_steps": state.get("vae_step", 0), "transformer_steps": state.get("tr_step", 0),
                    "vae_psnr_db": state.get("vae_psnr"), "seed": cfg.seed},
    }
    if state.get("continued_from"):  # trained further from an export: keep its other records (preview, VAE)
        reel["trained"]["continued_from_step"] = state["continued_from"]["step"]
        reel = {**state["continued_from"].get("reel", {}), **reel}
        if "lora" in reel.get("preview", {}):
            log("note: the preview LoRA was distilled for the earlier transformer; re-run "
                "scripts/distill_shapes_preview.py for these weights")
    (tmp / "reel.json").write_text(json.dumps(reel, indent=2) + "\n")
    size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    if size > 30 * 2**20:
        raise RuntimeError(f"export is {size / 2**20:.1f} MB > 30 MB: shrink the model")
    # 3. it must load back in diffusers, offline
    WanPipeline.from_pretrained(tmp, local_files_only=True, torch_dtype=torch.float32)
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    log("exported", path=str(out), mb=f"{size / 2**20:.1f}")
    return out
