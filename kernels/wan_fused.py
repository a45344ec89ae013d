"""Wire the fused Triton ops into a diffusers WanTransformer3DModel (CUDA only; opt-in).

    reasons = fused_reasons(device)           # why the fused path can't run here (empty: it can)
    apply_fused_kernels(transformer)          # q/k RMSNorm + rotary in self-attention, adaLN modulate and
                                              # gated residuals in every block; same math as diffusers'

Self-attention layers get a processor that runs q/k RMSNorm and the rotary apply as Triton kernels;
blocks get a forward whose LayerNorm+modulate and gated residuals are fused. Cross-attention and
image-conditioned (I2V) attention keep diffusers' processor. Tests run the same wiring on the CPU
under TRITON_INTERPRET=1 and compare with the stock model.
"""

from __future__ import annotations

import importlib.util
import types

import torch

from reel.kernels.modulate import gated_residual_triton, ln_modulate_triton
from reel.kernels.rmsnorm import rms_norm_triton
from reel.kernels.rotary import rotary_triton
from reel.kernels.wan_attn import WanSelfAttnProcessorBase


def fused_reasons(device: torch.device, interpret_ok: bool = False) -> list[str]:
    """Every reason the fused kernels cannot run on `device`."""
    import os

    reasons = []
    if importlib.util.find_spec("triton") is None:
        reasons.append("triton is not installed (pip install triton)")
    interpreted = interpret_ok and os.environ.get("TRITON_INTERPRET") == "1"
    if device.type != "cuda" and not interpreted:
        reasons.append(f"needs a CUDA device (running on {device.type})")
    return reasons


def _rms(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(norm, torch.nn.RMSNorm):
        return rms_norm_triton(x, norm.weight, norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps)
    return norm(x)


class FusedWanSelfAttnProcessor(WanSelfAttnProcessorBase):
    """diffusers' WanAttnProcessor for self-attention, with q/k RMSNorm and rotary as Triton kernels."""

    def qk_norm(self, norm, x):
        return _rms(norm, x)

    def rotary(self, x, freqs_cos, freqs_sin):
        return rotary_triton(x, freqs_cos, freqs_sin)


def fused_block_forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb):
    """WanTransformerBlock.forward with fused LayerNorm+modulate and gated residuals (Wan 2.1 temb)."""
    if temb.ndim == 4:  # Wan 2.2 TI2V per-token modulation: keep diffusers' own path
        return type(self).forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb)
    mods = (self.scale_shift_table + temb.float()).chunk(6, dim=1)  # 6 x (B, 1, D)
    shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = mods
    # 1. self-attention
    norm = ln_modulate_triton(hidden_states, shift_msa, scale_msa, self.norm1.eps)
    hidden_states = gated_residual_triton(hidden_states, self.attn1(norm, None, None, rotary_emb), gate_msa)
    # 2. cross-attention (unchanged)
    norm = self.norm2(hidden_states.float()).type_as(hidden_states)
    hidden_states = hidden_states + self.attn2(norm, encoder_hidden_states, None, None)
    # 3. feed-forward
    norm = ln_modulate_triton(hidden_states, c_shift_msa, c_scale_msa, self.norm3.eps)
    return gated_residual_triton(hidden_states, self.ffn(norm).float(), c_gate_msa)


def apply_fused_kernels(transformer: torch.nn.Module, interpret_ok: bool = False) -> int:
    """Switch every block of a WanTransformer3DModel to the fused path; returns the blocks changed."""
    reasons = fused_reasons(transformer.device, interpret_ok)
    if reasons:
        raise RuntimeError("fused kernels cannot run: " + "; ".join(reasons))
    for block in transformer.blocks:
        if block.attn1.add_k_proj is None:
            block.attn1.set_processor(FusedWanSelfAttnProcessor.replacing(block.attn1.processor))
        block.forward = types.MethodType(fused_block_forward, block)
    return len(transformer.blocks)
