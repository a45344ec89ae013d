"""CPU fast paths for diffusers' Wan transformer: the same math, vectorised where diffusers' is not.

    n = use_cpu_fast_paths(transformer)   # self-attention layers switched; returns how many

Self-attention gets diffusers' WanAttnProcessor with the rotary apply as one complex multiply
(kernels/rotary.py `rotary_complex`): diffusers' strided half-writes were 11 % of the built-in model's
transformer time on the CPU. Cross-attention and image-conditioned (I2V) layers keep diffusers' processor.
Applied per instance, so another pipeline in the same process stays diffusers' own. On CUDA the
Triton path (kernels/wan_fused.py) replaces the same processor instead.
"""

from __future__ import annotations

import torch

from reel.kernels.rotary import rotary_complex
from reel.kernels.wan_attn import WanSelfAttnProcessorBase


class WanSelfAttnProcessorCPU(WanSelfAttnProcessorBase):
    """diffusers' WanAttnProcessor for self-attention (no added K/V), rotary via rotary_complex."""

    def rotary(self, x, freqs_cos, freqs_sin):
        return rotary_complex(x, freqs_cos, freqs_sin)


def use_cpu_fast_paths(transformer: torch.nn.Module) -> int:
    """Switch the self-attention of every block of a WanTransformer3DModel; returns the layers changed."""
    n = 0
    for block in getattr(transformer, "blocks", []):
        attn = block.attn1
        if attn.add_k_proj is None and type(attn.processor).__name__ == "WanAttnProcessor":
            attn.set_processor(WanSelfAttnProcessorCPU.replacing(attn.processor))
            n += 1
    return n
