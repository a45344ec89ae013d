"""Shared pieces of the shapes-model training: configs, model builders, prompt embeddings exactly as
WanPipeline computes them, the single atomic checkpoint, and the progress log.

Not an entry point; see scripts/train_shapes_model.py.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SHAPES_DIR = ROOT / "models" / "shapes"
CKPT_DIR = SHAPES_DIR / "checkpoints"
CKPT_PATH = CKPT_DIR / "state.pt"
RUNS_DIR = SHAPES_DIR / "runs"  # git-ignored: logs, latent cache, eval samples
WEIGHTS_DIR = SHAPES_DIR / "weights"
CKPT_LIMIT_BYTES = 30 * 1024 * 1024


@dataclass
class TrainConfig:
    """Everything that defines a run (stored in the checkpoint; a resume keeps the stored one)."""

    seed: int = 0
    width: int = 64
    height: int = 64
    frames: int = 17
    fps: int = 8
    text_len: int = 32
    # VAE (diffusers AutoencoderKLWan)
    vae_base_dim: int = 16
    z_dim: int = 8
    vae_steps: int = 1500
    vae_batch: int = 8
    vae_frames: int = 9  # training clips are shorter than 17 (the VAE is causal and convolutional)
    vae_crop: int = 48  # random square crops of the 64x64 render
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6
    vae_min_psnr: float = 30.0  # at vae_steps, extend by vae_extend steps while below this (up to vae_max_steps)
    vae_max_steps: int = 3500
    vae_extend: int = 500
    vae_sample: bool = False  # decode a posterior sample (True) or the mode (False: sharper, faster to learn)
    # latent cache
    cache_clips: int = 10000
    # transformer (diffusers WanTransformer3DModel) + text encoder (transformers UMT5EncoderModel)
    heads: int = 4
    head_dim: int = 32
    layers: int = 6
    ffn_dim: int = 512
    freq_dim: int = 64
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_ff: int = 128
    text_vocab: int = 64
    tr_steps: int = 10000
    tr_batch: int = 16
    tr_lr: float = 3e-4
    tr_warmup: int = 300
    tr_restart: int = 0  # step where the current lr phase starts (> 0: continued from exported weights)
    shift: float = 3.0  # timestep shift in training and inference (more high-noise steps)
    cfg_drop: float = 0.1
    ema_decay: float = 0.999
    bf16: bool = True  # CPU autocast for the transformer stage (weights and optimizer stay fp32)
    # evaluation / saving
    eval_every: int = 1000
    eval_prompts: int = 32
    eval_steps: int = 10
    guidance: float = 4.0
    save_every: int = 200


def vae_config(cfg: TrainConfig) -> dict:
    return dict(
        base_dim=cfg.vae_base_dim,
        z_dim=cfg.z_dim,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[True, True],
        dropout=0.0,
        latents_mean=[0.0] * cfg.z_dim,
        latents_std=[1.0] * cfg.z_dim,
        scale_factor_spatial=4,
        scale_factor_temporal=4,
    )


def transformer_config(cfg: TrainConfig) -> dict:
    return dict(
        patch_size=(1, 2, 2),
        num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.z_dim,
        out_channels=cfg.z_dim,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=64,
    )


def text_config(cfg: TrainConfig) -> dict:
    return dict(
        vocab_size=cfg.text_vocab,
        d_model=cfg.text_dim,
        d_kv=cfg.text_dim // cfg.text_heads,
        d_ff=cfg.text_ff,
        num_layers=cfg.text_layers,
        num_heads=cfg.text_heads,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
    )


def build_vae(cfg: TrainConfig, latents_mean=None, latents_std=None):
    from diffusers import AutoencoderKLWan

    kw = vae_config(cfg)
    if latents_mean is not None:
        kw["latents_mean"], kw["latents_std"] = list(map(float, latents_mean)), list(map(float, latents_std))
    return AutoencoderKLWan(**kw)


def build_transformer(cfg: TrainConfig):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(**transformer_config(cfg))


def build_text_encoder(cfg: TrainConfig):
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(**text_config(cfg)))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- prompt embeddings: WanPipeline._get_t5_prompt_embeds, line for line ----------------------
def tokenize(tokenizer, prompts: list[str], text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(
        prompts,
        padding="max_length",
        max_length=text_len,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    return enc.input_ids, enc.attention_mask  # (B, L), (B, L)


def prompt_embeds(text_encoder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D) embeddings: encoder run with the mask, rows past each prompt's length zeroed."""
    hidden = text_encoder(ids, mask).last_hidden_state  # (B, L, D)
    keep = mask.gt(0).unsqueeze(-1).to(hidden.dtype)  # (B, L, 1); masks are a prefix of ones
    return hidden * keep


# ---- flow matching (as Wan) -----------------------------------------------------------------------
def shift_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan / SD3 timestep shift (models/samplers.py shift_sigmas); shift>1 favours high noise."""
    from reel.models.samplers import shift_sigmas

    return shift_sigmas(u, shift)


# ---- checkpoint: ONE file, overwritten atomically ------------------------------------------------
def _compact(obj):
    """Optimizer moments to bf16 to keep the checkpoint small (restored to fp32 on load)."""
    if isinstance(obj, dict):
        return {k: _compact(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor) and obj.is_floating_point() and obj.numel() > 1:
        return obj.to(torch.bfloat16)
    return obj


def compact_optimizer(opt: torch.optim.Optimizer) -> dict:
    return _compact(opt.state_dict())


def load_optimizer(opt: torch.optim.Optimizer, state: dict) -> None:
    opt.load_state_dict(state)  # load_state_dict casts floating state to the param dtype (fp32)


def save_checkpoint(state: dict, path: Path | None = None) -> int:
    """Write `state` to path.tmp then os.replace; returns the size in bytes (fails if > 30 MB).

    path defaults to the module's CKPT_PATH at call time (the smoke run points it elsewhere).
    """
    path = path or CKPT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    if len(data) > CKPT_LIMIT_BYTES:
        raise RuntimeError(f"checkpoint would be {len(data) / 2**20:.1f} MB > 30 MB: shrink the model or state")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(data)


def load_checkpoint(path: Path | None = None) -> dict | None:
    path = path or CKPT_PATH
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def config_from_state(state: dict | None, default: TrainConfig) -> TrainConfig:
    if state is None:
        return default
    return TrainConfig(**{**asdict(default), **state["config"]})


# ---- log ------------------------------------------------------------------------------------------
@dataclass
class Logger:
    """Appends lines to runs/train_progress.log and stdout, with rate and ETA."""

    path: Path = RUNS_DIR / "train_progress.log"
    t0: float = field(default_factory=time.time)

    def __call__(self, msg: str, **fields) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{stamp} {msg} {extra}".rstrip()
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def json(self, record: dict) -> None:
        with open(self.path.with_suffix(".jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")


def eta(done: int, total: int, rate: float) -> str:
    left = max(total - done, 0) / max(rate, 1e-9)
    return f"{int(left // 3600)}h{int(left % 3600 // 60):02d}m"
