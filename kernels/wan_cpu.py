"""CPU fast path for diffusers' Wan transformer: the same math, vectorised where diffusers' is not.

    n = apply_cpu_attention(transformer)    # self-attention layers switched; returns how many
    remove_cpu_attention(transformer)       # diffusers' own processors back

Self-attention gets diffusers' WanAttnProcessor with the rotary apply as one complex multiply
(kernels/rotary.py `rotary_complex`): diffusers' strided half-writes were 11 % of the built-in model's
transformer time on the CPU. Cross-attention and image-conditioned (I2V) layers keep diffusers' processor.
An attention processor set through diffusers' public `set_processor`, per instance, so another pipeline
in the same process stays diffusers' own. engine/accel.py applies it for `[speed] cpu_fast_paths` (auto:
CPU renders); on CUDA the Triton path (kernels/wan_fused.py) replaces the same processor instead.
"""

from __future__ import annotations

import torch

from reel.kernels.rotary import rotary_complex
from reel.kernels.wan_attn import WanSelfAttnProcessorBase, restore_self_attention, swap_self_attention


class WanSelfAttnProcessorCPU(WanSelfAttnProcessorBase):
    """diffusers' WanAttnProcessor for self-attention (no added K/V), rotary via rotary_complex."""

    def rotary(self, x, freqs_cos, freqs_sin):
        return rotary_complex(x, freqs_cos, freqs_sin)


def apply_cpu_attention(transformer: torch.nn.Module) -> int:
    """Switch every self-attention layer of a WanTransformer3DModel that still has diffusers' processor;
    returns the layers changed (0 when applied already)."""
    return swap_self_attention(transformer, WanSelfAttnProcessorCPU, only_stock=True)


def remove_cpu_attention(transformer: torch.nn.Module) -> int:
    """Put back the processors apply_cpu_attention replaced; returns how many."""
    return restore_self_attention(transformer, WanSelfAttnProcessorCPU)
