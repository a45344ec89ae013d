"""Save a trained LoRA: a diffusers/peft file (`transformer.` keys, lora_A/lora_B) that reel's
characters and diffusers' `load_lora_weights` read, and a ComfyUI file (`diffusion_model.` keys,
lora_down/lora_up, `.alpha`). The alpha/rank scale is folded into lora_B, so both files mean the same
update whatever alpha convention the loader assumes. Metadata (base model hash, trigger, rank, alpha,
steps, dataset hash) rides in the safetensors header.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reel.engine.store import atomic_path
from reel.models.wan import COMFY_NAMES


class ExportError(ValueError):
    pass


def folded(peft_state: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, tuple]:
    """{module path: (A (r, in), B (out, r) * alpha / rank)} from a peft state dict."""
    modules: dict[str, dict] = {}
    for key, tensor in peft_state.items():
        for tag in (".lora_A.weight", ".lora_B.weight"):
            if key.endswith(tag):
                modules.setdefault(key[: -len(tag)], {})[tag] = tensor.detach().float().cpu()
    return {m: (t[".lora_A.weight"], t[".lora_B.weight"] * (alpha / rank)) for m, t in modules.items()}


def save_diffusers(lora: dict[str, tuple], out: Path, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    tensors = {}
    for module, (a, b) in lora.items():
        tensors[f"transformer.{module}.lora_A.weight"] = a.contiguous()
        tensors[f"transformer.{module}.lora_B.weight"] = b.contiguous()
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", **metadata})
    return out


def save_comfyui(lora: dict[str, tuple], out: Path, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    tensors = {}
    for module, (a, b) in lora.items():
        parts = module.split(".", 2)  # blocks, i, rest
        if parts[0] != "blocks" or len(parts) < 3 or parts[2] not in COMFY_NAMES:
            raise ExportError(f"{module}: no ComfyUI name for this layer (ComfyUI export covers attention and "
                              "feed-forward linears of the blocks)")
        key = f"diffusion_model.blocks.{parts[1]}.{COMFY_NAMES[parts[2]]}"
        tensors[f"{key}.lora_down.weight"] = a.contiguous()
        tensors[f"{key}.lora_up.weight"] = b.contiguous()
        tensors[f"{key}.alpha"] = torch.tensor(float(a.shape[0]))  # alpha = rank: the scale is already folded
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", **metadata})
    return out
