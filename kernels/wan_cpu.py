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

from kernels.rotary import rotary_complex


class WanSelfAttnProcessorCPU:
    """diffusers' WanAttnProcessor for self-attention (no added K/V), rotary via rotary_complex."""

    _attention_backend = None
    _parallel_config = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        query, key, value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)  # (B, S, H*Dh)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query = query.unflatten(2, (attn.heads, -1))  # (B, S, H, Dh)
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = rotary_complex(query, *rotary_emb)
            key = rotary_complex(key, *rotary_emb)
        out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                                    backend=self._attention_backend, parallel_config=self._parallel_config)
        out = out.flatten(2, 3).type_as(query)  # (B, S, H*Dh)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


def use_cpu_fast_paths(transformer: torch.nn.Module) -> int:
    """Switch the self-attention of every block of a WanTransformer3DModel; returns the layers changed."""
    n = 0
    for block in getattr(transformer, "blocks", []):
        attn = block.attn1
        if attn.add_k_proj is None and type(attn.processor).__name__ == "WanAttnProcessor":
            processor = WanSelfAttnProcessorCPU()
            processor._attention_backend = getattr(attn.processor, "_attention_backend", None)
            processor._parallel_config = getattr(attn.processor, "_parallel_config", None)
            attn.set_processor(processor)
            n += 1
    return n
