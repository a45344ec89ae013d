"""The fast-preview part of a film spec: the few-step LoRA, its sampler and the tiny latent decoder, from the
spec's `preview_*` fields over the model's reel.json `preview` block. Imports no torch (the decoder's header
check imports it when a spec names a decoder).

    [film]
    preview_lora = "fast.safetensors"     # a few-step LoRA (default: the model's own)
    preview_steps = 4                      # 1..16
    preview_scheduler = "lcm"              # lcm (consistency) | euler | unipc
    preview_decoder = "dec.safetensors"    # a tiny latent decoder, or "vae" (default: the model's own)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from reel.engine.spec_inputs import lora_problem, preview_decoder_problem
from reel.engine.spec_paths import Guard, existing, kind, resolved, spec_path
from reel.models.registry import ModelInfo


@dataclass(frozen=True)
class Preview:
    """Fast-preview settings: a few-step LoRA, its sampler, no classifier-free guidance by default."""

    lora: Path
    steps: int
    scheduler: str  # "lcm" (consistency sampling) | "euler" | "unipc"
    shift: float
    guidance: float
    decoder: Path | None = None  # tiny preview decoder (models/preview_decoder.py); None: the model's VAE


def preview_settings(f, model: ModelInfo, source: Path, problems: list, guard: Guard | None = None) -> Preview | None:
    """The spec's preview_* fields (`f`, the [film] table) over the model's reel.json `preview` block (paths
    relative to the model folder); None when no preview LoRA is known."""
    base = model.defaults.get("preview") if isinstance(model.defaults.get("preview"), dict) else {}
    scheduler = f.preview_scheduler or str(base.get("scheduler", "lcm"))
    if f.preview_lora is not None and scheduler == "lcm" and not model.family.flow_matching:
        problems.append(("film.preview_scheduler", f"consistency (lcm) previews need a flow-matching model; "
                                                   f"{model.family.name} is not — set preview_scheduler = \"default\""))
        return None
    if f.preview_lora is not None:
        lora = existing("film.preview_lora", spec_path(f.preview_lora, source.parent), problems, guard=guard,
                        hint="point it at a few-step LoRA file")
        if lora is not None and (message := lora_problem(lora)) is not None:
            problems.append(("film.preview_lora", message))
            return None
    elif not model.family.flow_matching or not isinstance(base.get("lora"), str):
        return None
    else:  # the model names a preview LoRA; one it does not ship: `reel preview` says so
        lora = _model_file("film.model (reel.json preview.lora)", model, base["lora"], problems, guard)
    if lora is None:
        return None
    values = _numbers(f, model, base, problems)
    if scheduler != "lcm" and (message := model.scheduler_problem(scheduler)) is not None:
        problems.append(("film.preview_scheduler" if f.preview_scheduler else "film.model (reel.json preview)",
                         message))
    decoder = _preview_decoder(f, model, base, source, problems, guard)
    if values is None:
        return None
    steps, shift, guidance = values
    return Preview(decoder=decoder, lora=lora, steps=steps, scheduler=scheduler, shift=shift, guidance=guidance)


def _model_file(field: str, model: ModelInfo, value: str, problems: list, guard: Guard | None) -> Path | None:
    """A file the model's reel.json names (relative to its folder); None, quietly, when it is not there."""
    path = spec_path(value, model.path)
    if guard is not None and (refusal := guard(field, path)) is not None:
        problems.append(refusal)
        return None
    return resolved(path) if kind(path)[0] == "file" else None


def _numbers(f, model: ModelInfo, base: dict, problems: list) -> tuple[int, float, float] | None:
    """(steps, shift, guidance): the spec's, else reel.json's preview block, else the defaults."""
    where = "film.model (reel.json preview)"
    try:
        steps = f.preview_steps or int(base.get("steps", 4))
        shift = f.preview_shift if f.preview_shift is not None else float(base.get("shift", model.defaults["shift"]))
        guidance = f.preview_guidance if f.preview_guidance is not None else float(base.get("guidance", 1.0))
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        problems.append((where, f"{model.path}/reel.json preview values are not numbers ({err})"))
        return None
    if not (1 <= steps <= 16 and 0 < shift <= 100 and 0 <= guidance <= 100) or not math.isfinite(shift + guidance):
        problems.append((where, f"{model.path}/reel.json preview: steps {steps} (1-16), shift {shift} (0-100) or "
                                f"guidance {guidance} (0-100) is out of range — set film.preview_steps / "
                                "preview_shift / preview_guidance"))
        return None
    return steps, shift, guidance


def _preview_decoder(f, model: ModelInfo, base: dict, source: Path, problems: list,
                     guard: Guard | None) -> Path | None:
    """The preview decoder: the spec's preview_decoder ("vae" for the model's own VAE, or a file), else the
    one the model ships (reel.json preview.decoder), else None (the VAE)."""
    if f.preview_decoder == "vae":
        return None
    if f.preview_decoder is not None:
        if not model.family.preview_decoder:
            problems.append(("film.preview_decoder", f"preview decoders read Wan-family latents; {model.family.name} "
                                                     "previews decode with the model's VAE — remove preview_decoder"))
            return None
        path = spec_path(f.preview_decoder, source.parent)
        found = existing("film.preview_decoder", path, problems, guard=guard,
                         hint="point it at a decoder made by scripts/train_preview_decoder.py, or write \"vae\"")
        if found is not None and (message := preview_decoder_problem(found, model)) is not None:
            problems.append(("film.preview_decoder", message))
            return None
        return found
    if isinstance(base.get("decoder"), str) and model.family.preview_decoder:
        return _model_file("film.model (reel.json preview.decoder)", model, base["decoder"], problems, guard)
    return None
