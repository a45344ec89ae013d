"""diffusers' WanAttnProcessor for self-attention (no added K/V), with the q/k norm and the rotary apply
as swappable ops: the base of the Triton path (kernels/wan_fused.py) and the CPU path (kernels/wan_cpu.py).

    class MyProcessor(WanSelfAttnProcessorBase):
        def qk_norm(self, norm, x): ...       # x (B, S, H*Dh); norm is attn.norm_q or attn.norm_k
        def rotary(self, x, cos, sin): ...     # x (B, S, H, Dh); cos, sin (1, S, 1, Dh)

    n = swap_self_attention(transformer, MyProcessor)      # through diffusers' public set_processor
    restore_self_attention(transformer, MyProcessor)       # the processors they replaced, back in place

Each processor keeps the one it replaced, so processors stack (the fused path over the CPU one) and each
comes off on its own, leaving diffusers' own processor objects exactly as they were.
"""

from __future__ import annotations

import torch


def _qkv_projections(attn, hidden_states: torch.Tensor):
    """(query, key, value), each (B, S, H*Dh), as diffusers' Wan processor projects them (fused to_qkv or not).

    diffusers has no public API for this: `_get_qkv_projections` is private to transformer_wan.py. It stays
    behind this one helper, so a diffusers change breaks one place, and the parity tests (tests/kernels) catch it."""
    from diffusers.models.transformers.transformer_wan import _get_qkv_projections

    return _get_qkv_projections(attn, hidden_states, None)


def _carry_dispatch_settings(source, target) -> None:
    """Give `target` the attention backend and context-parallel config `source` dispatches with.

    diffusers keeps them as the processor attributes `_attention_backend` and `_parallel_config`, which its
    public `set_attention_backend` writes; there is no public getter, so they are read here and only here."""
    for name in ("_attention_backend", "_parallel_config"):
        value = getattr(source, name, None)
        if getattr(target, name, None) is not value:  # set only what differs: nothing left behind otherwise
            setattr(target, name, value)


class WanSelfAttnProcessorBase:
    """diffusers' WanAttnProcessor math for self-attention; subclasses choose how q/k norm and rotary run."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, replaced=None):
        self.replaced = replaced  # the processor this one stands in for (restore_self_attention puts it back)

    def qk_norm(self, norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return norm(x)

    def rotary(self, x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
        from reel.kernels.rotary import rotary_reference

        return rotary_reference(x, freqs_cos, freqs_sin)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        query, key, value = _qkv_projections(attn, hidden_states)  # (B, S, H*Dh)
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
        """A new processor of this class in place of `processor`, dispatching attention as it does."""
        new = cls(processor)
        _carry_dispatch_settings(processor, new)
        return new


def _self_attention_layers(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """Every self-attention layer without added K/V (attn1 of each block) of a diffusers Wan transformer."""
    from diffusers.models.transformers.transformer_wan import WanAttention

    return [m for m in transformer.modules()
            if isinstance(m, WanAttention) and not m.is_cross_attention and m.add_k_proj is None]


def swap_self_attention(transformer: torch.nn.Module, cls: type[WanSelfAttnProcessorBase], *,
                        only_stock: bool = False) -> int:
    """Give each self-attention layer a `cls` processor wrapping its current one (skipping layers that have one
    already; with `only_stock`, also those whose processor is not diffusers' WanAttnProcessor); returns how many."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    n = 0
    for attn in _self_attention_layers(transformer):
        current = attn.get_processor()
        if type(current) is cls or (only_stock and type(current) is not WanAttnProcessor):
            continue
        attn.set_processor(cls.replacing(current))
        n += 1
    return n


def restore_self_attention(transformer: torch.nn.Module, cls: type[WanSelfAttnProcessorBase]) -> int:
    """Unlink every `cls` processor from its layer's chain, putting back the processor it replaced (the dispatch
    settings it had meanwhile go with it); returns how many were removed."""
    n = 0
    for attn in _self_attention_layers(transformer):
        outer, current = None, attn.get_processor()
        while isinstance(current, WanSelfAttnProcessorBase) and type(current) is not cls:
            outer, current = current, current.replaced
        if type(current) is not cls:
            continue
        _carry_dispatch_settings(current, current.replaced)
        if outer is None:
            attn.set_processor(current.replaced)
        else:
            outer.replaced = current.replaced
        n += 1
    return n
