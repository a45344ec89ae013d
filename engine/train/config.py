"""LoRA training settings: defaults < DATASET/dataset.toml < --config FILE < command-line flags.
Imports no torch.

A config file is flat TOML with any of TrainConfig's fields, e.g.
    rank = 16
    steps = 600
    lr = 2e-4
    validate_every = 100
    validation_prompts = ["a {trigger} moving left on a black background"]
DATASET/dataset.toml may set the data fields: width, height, frames, extract ("head" | "uniform"), repeats.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
DATA_FIELDS = ("width", "height", "frames", "extract", "repeats")


class ConfigError(ValueError):
    """A training setting that cannot be used; names the file or flag and the fix."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["character", "preview"] = "character"  # preview: latent consistency distillation
    dataset: str
    base: str = "shapes"
    trigger: str = ""  # required for a character LoRA
    out: str
    work_dir: str | None = None  # checkpoints, logs, validation sheets (default: OUT without suffix + ".train")
    # data
    width: int | None = Field(None, ge=8)
    height: int | None = Field(None, ge=8)
    frames: int | None = Field(None, ge=1)
    extract: Literal["head", "uniform"] = "uniform"
    repeats: int = Field(1, ge=1, le=1000)
    # LoRA
    rank: int = Field(16, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    targets: tuple[str, ...] = DEFAULT_TARGETS
    # optimisation
    steps: int = Field(500, ge=1)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(20, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    shift: float | None = Field(None, gt=0)
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    caption_dropout: float = Field(0.0, ge=0, le=1)
    # the fraction of samples that teach the LoRA to leave the unconditional (empty-prompt) prediction as the base
    # model makes it: empty caption, target = the base's own prediction with the LoRA off. Without it the LoRA
    # changes both passes of classifier-free guidance alike and guidance cancels part of the character
    uncond_preservation: float = Field(0.25, ge=0, lt=1)
    # None = auto: on for a GPU (memory), off on the CPU (it recomputes every layer: 1.8x slower per step on
    # the built-in model, and the CPU has memory to spare)
    gradient_checkpointing: bool | None = None
    # auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16 / AMX); "no": fp32 throughout
    mixed_precision: Literal["auto", "bf16", "no"] = "auto"
    seed: int = Field(0, ge=0)
    # bookkeeping
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    validate_every: int = Field(100, ge=0)  # 0: never
    validation_prompts: tuple[str, ...] = ()  # default: the first caption; "{trigger}" is substituted
    validation_steps: int | None = Field(None, ge=1)
    validation_seed: int = 1234
    device: str = "auto"
    # preview distillation (kind = "preview"): LCM-LoRA's recipe
    teacher_steps: int = Field(32, ge=2)  # the teacher's ODE grid (shifted flow sigmas)
    skip: int = Field(4, ge=1)  # grid steps the teacher solves in one go (skipping-step consistency)
    teacher_guidance: float | None = Field(None, ge=1.0)  # folded-in CFG scale (default: the model's)
    preview_steps: int = Field(4, ge=1, le=16)  # steps the preview renders with
    huber_c: float = Field(0.001, gt=0)


def _read(path: Path, what: str) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None


def build_config(flags: dict, config_file: Path | None = None) -> TrainConfig:
    """Merge the sources and validate; every problem is reported with where it came from."""
    merged: dict = {}
    sources: dict[str, str] = {}
    dataset = flags.get("dataset")
    if dataset and (Path(dataset) / "dataset.toml").is_file():
        data_file = Path(dataset) / "dataset.toml"
        data = _read(data_file, "dataset config")
        unknown = [k for k in data if k not in DATA_FIELDS]
        if unknown:
            raise ConfigError(f"{data_file}: unknown keys {unknown} — dataset.toml may set {', '.join(DATA_FIELDS)}")
        merged.update(data)
        sources.update({k: str(data_file) for k in data})
    if config_file is not None:
        data = _read(config_file, "training config")
        for key in ("targets", "validation_prompts"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        merged.update(data)
        sources.update({k: str(config_file) for k in data})
    merged.update({k: v for k, v in flags.items() if v is not None})
    sources.update({k: "--" + k.replace("_", "-") for k, v in flags.items() if v is not None})
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = str(e["loc"][0]) if e["loc"] else ""
            where = sources.get(key, "settings")
            if e["type"] == "extra_forbidden":
                close = difflib.get_close_matches(key, list(TrainConfig.model_fields), n=1)
                lines.append(f"{where}: unknown setting {key!r}" + (f" — did you mean {close[0]!r}?" if close else ""))
            elif e["type"] == "missing":
                lines.append(f"{key}: required — pass --{key.replace('_', '-')} or set it in the config file")
            else:
                lines.append(f"{where}: {key}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None
