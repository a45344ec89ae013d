"""diffusers' WanAttnProcessor for self-attention (no added K/V), with the q/k norm and the rotary apply
as swappable ops: the base of the Triton path (kernels/wan_fused.py) and the CPU path (kernels/wan_cpu.py).

    class MyProcessor(WanSelfAttnProcessorBase):
        def qk_norm(self, norm, x): ...       # x (B, S, H*Dh); norm is attn.norm_q or attn.norm_k
        def rotary(self, x, cos, sin): ...     # x (B, S, H, Dh); cos, sin (1, S, 1, Dh)
"""

from __future__ import annotations

import torch


class WanSelfAttnProcessorBase:
    """diffusers' WanAttnProcessor math for self-attention; subclasses choose how q/k norm and rotary run."""

    _attention_backend = None
    _parallel_config = None

    def qk_norm(self, norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return norm(x)

    def rotary(self, x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
        from reel.kernels.rotary import rotary_reference

        return rotary_reference(x, freqs_cos, freqs_sin)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        query, key, value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)  # (B, S, H*Dh)
        query, key = self.qk_norm(attn.norm_q, query), self.qk_norm(attn.norm_k, key)
        query = query.unflatten(2, (attn.heads, -1))  # (B, S, H, Dh)
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = self.rotary(query, *rotary_emb)
            key = self.rotary(key, *rotary_emb)
        out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                                    backend=self._attention_backend, parallel_config=self._parallel_config)
        out = out.flatten(2, 3).type_as(query)  # (B, S, H*Dh)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    @classmethod
    def replacing(cls, processor) -> WanSelfAttnProcessorBase:
        """A new processor of this class that keeps `processor`'s attention backend and parallel config."""
        new = cls()
        new._attention_backend = getattr(processor, "_attention_backend", None)
        new._parallel_config = getattr(processor, "_parallel_config", None)
        return new
