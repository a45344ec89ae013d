"""Write real LoRA files for a Wan transformer in the three formats reel reads (tests only).

The same low-rank update is written as diffusers/peft (`transformer.` keys, lora_A/lora_B, alpha = rank),
ComfyUI/lightx2v (`diffusion_model.` keys, lora_down/lora_up, `.alpha`) and kohya/musubi-tuner
(`lora_unet_` keys, `.alpha`), so all three must render identically.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

# diffusers module name -> (ComfyUI name, musubi name), per block
TARGETS = {
    "attn1.to_q": ("self_attn.q", "self_attn_q"), "attn1.to_k": ("self_attn.k", "self_attn_k"),
    "attn1.to_v": ("self_attn.v", "self_attn_v"), "attn1.to_out.0": ("self_attn.o", "self_attn_o"),
    "attn2.to_q": ("cross_attn.q", "cross_attn_q"), "attn2.to_k": ("cross_attn.k", "cross_attn_k"),
    "attn2.to_v": ("cross_attn.v", "cross_attn_v"), "attn2.to_out.0": ("cross_attn.o", "cross_attn_o"),
    "ffn.net.0.proj": ("ffn.0", "ffn_0"), "ffn.net.2": ("ffn.2", "ffn_2"),
}


def random_lora(transformer, rank: int = 4, seed: int = 0, scale: float = 0.3) -> dict[str, tuple]:
    """{diffusers module path: (A (r, in), B (out, r))} for every target linear of every block."""
    g = torch.Generator().manual_seed(seed)
    modules = dict(transformer.named_modules())
    out = {}
    for i in range(len(transformer.blocks)):
        for name in TARGETS:
            lin = modules[f"blocks.{i}.{name}"]
            lin = getattr(lin, "base_layer", lin)
            a = torch.randn((rank, lin.in_features), generator=g) * scale  # (r, in)
            b = torch.randn((lin.out_features, rank), generator=g) * scale  # (out, r)
            out[f"blocks.{i}.{name}"] = (a, b)
    return out


def write_lora(lora: dict[str, tuple], path: Path, fmt: str, alpha: float = 2.0) -> Path:
    """Write `lora` (delta = B @ A) in format "diffusers", "comfyui" or "kohya"."""
    tensors = {}
    for module, (a, b) in lora.items():
        rank = a.shape[0]
        block, rest = module.split(".", 2)[1], module.split(".", 2)[2]
        if fmt == "diffusers":
            tensors[f"transformer.{module}.lora_A.weight"] = a.contiguous()
            tensors[f"transformer.{module}.lora_B.weight"] = b.contiguous()
            continue
        up = b * (rank / alpha)  # the file's alpha scales the update by alpha / rank
        if fmt == "comfyui":
            key = f"diffusion_model.blocks.{block}.{TARGETS[rest][0]}"
        elif fmt == "kohya":
            key = f"lora_unet_blocks_{block}_{TARGETS[rest][1]}"
        else:
            raise ValueError(fmt)
        tensors[f"{key}.lora_down.weight"] = a.contiguous()
        tensors[f"{key}.lora_up.weight"] = up.contiguous()
        tensors[f"{key}.alpha"] = torch.tensor(alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
