"""Model families by name: lazy class paths, frame and size rules, defaults. Imports no torch.

`resolve_model("shapes")` or `resolve_model("/path/to/diffusers/folder")` returns a `ModelInfo`
read from the folder's JSON files only, so the spec can be validated in milliseconds before any
weights are touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent
BUILTIN_MODELS = {"shapes": BUILTIN_DIR / "shapes" / "weights"}


class ModelError(ValueError):
    """A model reference that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Family:
    """One model family: how to recognise it, how to load it, what it accepts."""

    name: str
    pipeline_classes: tuple[str, ...]  # model_index.json `_class_name` values of this family
    module: str  # lazy import path of the reel module that loads and runs it
    default_fps: int
    default_steps: int
    default_guidance: float
    default_shift: float
    default_width: int
    default_height: int
    default_frames: int
    default_max_sequence_length: int


FAMILIES: dict[str, Family] = {
    "wan": Family(
        name="wan",
        pipeline_classes=("WanPipeline",),
        module="models.wan",
        default_fps=16,
        default_steps=50,
        default_guidance=5.0,
        default_shift=3.0,
        default_width=832,
        default_height=480,
        default_frames=81,
        default_max_sequence_length=512,
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """A resolved model folder and the rules its shots must follow."""

    name: str  # what the spec wrote: "shapes" or the path
    path: Path  # the diffusers folder (model_index.json inside)
    family: Family
    temporal_factor: int  # frames must be temporal_factor*k + 1
    size_multiple: int  # width and height must be multiples of this (VAE factor x patch)
    defaults: dict = field(default_factory=dict)  # width, height, frames, fps, steps, guidance, shift, ...
    builtin: bool = False

    def frames_ok(self, frames: int) -> bool:
        return frames >= 1 and (frames - 1) % self.temporal_factor == 0

    def nearest_frames(self, frames: int) -> list[int]:
        """The valid frame counts around `frames`, nearest first (one or two values)."""
        k = self.temporal_factor
        below = max(1, (frames - 1) // k * k + 1)
        above = below + k if below < frames else below
        return sorted({below, above}, key=lambda f: (abs(f - frames), f))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is missing: the model folder is incomplete") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{path} cannot be read as JSON ({err}); re-download or re-export the model") from None


def family_of(model_index: dict, path: Path) -> Family:
    cls = model_index.get("_class_name", "")
    for fam in FAMILIES.values():
        if cls in fam.pipeline_classes:
            return fam
    supported = ", ".join(f"{f.name} ({'/'.join(f.pipeline_classes)})" for f in FAMILIES.values())
    raise ModelError(f"{path}/model_index.json names pipeline {cls!r}, which reel does not support; supported: {supported}")


def resolve_model(ref: str, base_dir: Path | None = None) -> ModelInfo:
    """Resolve a spec's `model` value (a built-in name or a folder path) without loading weights."""
    builtin = ref in BUILTIN_MODELS
    if builtin:
        path = BUILTIN_MODELS[ref]
        if not (path / "model_index.json").is_file():
            raise ModelError(
                f"the built-in model {ref!r} has no weights at {path}; train them with "
                "`python scripts/train_shapes_model.py --stage all` or name a local diffusers folder"
            )
    else:
        path = Path(ref).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.exists():
            known = ", ".join(sorted(BUILTIN_MODELS))
            raise ModelError(f"{ref!r} is neither a built-in model ({known}) nor an existing path ({path} does not exist)")
        if not path.is_dir() or not (path / "model_index.json").is_file():
            raise ModelError(
                f"{path} is not a diffusers folder (no model_index.json inside); point `model` at the folder "
                "saved by save_pretrained / downloaded from the hub"
            )
    index = _read_json(path / "model_index.json")
    fam = family_of(index, path)
    vae_cfg = _read_json(path / "vae" / "config.json")
    tr_cfg = _read_json(path / "transformer" / "config.json")
    temporal = int(vae_cfg.get("scale_factor_temporal") or 4)
    spatial = int(vae_cfg.get("scale_factor_spatial") or 8)
    patch = tr_cfg.get("patch_size") or [1, 2, 2]
    size_multiple = spatial * int(max(patch[1], patch[2]))
    defaults = {
        "width": fam.default_width,
        "height": fam.default_height,
        "frames": fam.default_frames,
        "fps": fam.default_fps,
        "steps": fam.default_steps,
        "guidance": fam.default_guidance,
        "shift": fam.default_shift,
        "max_sequence_length": fam.default_max_sequence_length,
        "negative_prompt": "",
        "scheduler": "unipc",
    }
    reel_json = path / "reel.json"
    if reel_json.is_file():
        defaults.update(_read_json(reel_json))
    return ModelInfo(
        name=ref,
        path=path.resolve(),
        family=fam,
        temporal_factor=temporal,
        size_multiple=size_multiple,
        defaults=defaults,
        builtin=builtin,
    )
