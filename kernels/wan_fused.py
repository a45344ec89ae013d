"""Wire the fused Triton ops into a diffusers WanTransformer3DModel (CUDA only; opt-in), removably.

    reasons = fused_reasons(device)           # why the fused path can't run here (empty: it can)
    apply_fused_kernels(transformer)          # q/k RMSNorm + rotary in self-attention, adaLN modulate and
                                              # gated residuals in every block; same math as diffusers'
    remove_fused_kernels(transformer)         # diffusers' own processors and block forwards again

Self-attention layers get a processor (diffusers' public `set_processor`) that runs q/k RMSNorm and the
rotary apply as Triton kernels; each block gets a `FusedWanBlockHook` in its diffusers HookRegistry
(kernels/hooks.py) whose LayerNorm+modulate and gated residuals are fused. Cross-attention and
image-conditioned (I2V) attention keep diffusers' processor. Tests run the same wiring on the CPU
under TRITON_INTERPRET=1 and compare with the stock model.
"""

from __future__ import annotations

import importlib.util

import torch
from diffusers.hooks import ModelHook

from reel.kernels.hooks import add_hook, remove_hook
from reel.kernels.modulate import gated_residual_triton, ln_modulate_triton
from reel.kernels.rmsnorm import rms_norm_triton
from reel.kernels.rotary import rotary_triton
from reel.kernels.wan_attn import WanSelfAttnProcessorBase, restore_self_attention, swap_self_attention

FUSED_BLOCK_HOOK = "reel_fused_wan_block"


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


class FusedWanBlockHook(ModelHook):
    """WanTransformerBlock.forward with fused LayerNorm+modulate and gated residuals (Wan 2.1 temb)."""

    def new_forward(self, block, hidden_states, encoder_hidden_states, temb, rotary_emb):
        if temb.ndim == 4:  # Wan 2.2 TI2V per-token modulation: keep the forward this hook wraps
            return self.fn_ref.original_forward(hidden_states, encoder_hidden_states, temb, rotary_emb)
        mods = (block.scale_shift_table + temb.float()).chunk(6, dim=1)  # 6 x (B, 1, D)
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = mods
        # 1. self-attention
        norm = ln_modulate_triton(hidden_states, shift_msa, scale_msa, block.norm1.eps)
        hidden_states = gated_residual_triton(hidden_states, block.attn1(norm, None, None, rotary_emb), gate_msa)
        # 2. cross-attention (unchanged)
        norm = block.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + block.attn2(norm, encoder_hidden_states, None, None)
        # 3. feed-forward
        norm = ln_modulate_triton(hidden_states, c_shift_msa, c_scale_msa, block.norm3.eps)
        return gated_residual_triton(hidden_states, block.ffn(norm).float(), c_gate_msa)


def _blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    return [m for m in transformer.modules() if isinstance(m, WanTransformerBlock)]


def apply_fused_kernels(transformer: torch.nn.Module, interpret_ok: bool = False) -> int:
    """Switch every block of a WanTransformer3DModel to the fused path; returns the blocks changed."""
    reasons = fused_reasons(transformer.device, interpret_ok)
    if reasons:
        raise RuntimeError("fused kernels cannot run: " + "; ".join(reasons))
    swap_self_attention(transformer, FusedWanSelfAttnProcessor)
    return sum(add_hook(block, FusedWanBlockHook(), FUSED_BLOCK_HOOK) for block in _blocks(transformer))


def remove_fused_kernels(transformer: torch.nn.Module) -> int:
    """Take the fused path off every block (hook and processor); returns the blocks that had it."""
    restore_self_attention(transformer, FusedWanSelfAttnProcessor)
    return sum(remove_hook(block, FUSED_BLOCK_HOOK) for block in _blocks(transformer))
