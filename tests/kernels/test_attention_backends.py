"""Attention backends that diffusers would refuse mid-render are refused up front (kernels/attention.py): flash3 is
available exactly when diffusers' own check says so, and the backends whose diffusers functions reject attention
masks are refused for the transformers that always pass one (LTX-Video, HunyuanVideo)."""

from __future__ import annotations

import pytest
import torch
from diffusers import LTXVideoTransformer3DModel, WanTransformer3DModel

from reel.kernels.attention import BACKENDS, MASKED_ATTENTION, BackendError, select_backend

CUDA = torch.device("cuda")  # claimed: the checks that need a real GPU step aside on the CPU


def _tiny_ltx() -> LTXVideoTransformer3DModel:
    return LTXVideoTransformer3DModel(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8,
                                      cross_attention_dim=16, num_layers=1, caption_channels=16)


def _tiny_wan() -> WanTransformer3DModel:
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=1)


def test_flash3_is_available_exactly_when_diffusers_says_so():
    from diffusers.models import attention_dispatch
    from diffusers.utils import is_flash_attn_3_available

    reasons = BACKENDS["flash3"].validate(CUDA, torch.bfloat16, 128)
    diffusers_can = is_flash_attn_3_available() and attention_dispatch._CAN_USE_FLASH_ATTN_3
    assert any("flash_attn_3" in r for r in reasons) != diffusers_can
    assert "flash_attn_3 package diffusers checks for" in BACKENDS["flash3"].install


@pytest.mark.parametrize("name", ["flash-attn", "flash3", "sageattention"])
def test_backends_without_masks_are_refused_for_transformers_that_pass_them(name):
    ltx, wan = _tiny_ltx(), _tiny_wan()
    masked = [r for r in BACKENDS[name].validate(CUDA, torch.bfloat16, 64, ltx) if "attention mask" in r]
    assert masked == [f"diffusers' {name} backend takes no attention mask, and LTXVideoTransformer3DModel passes "
                      f"one (the prompt's padding mask in cross-attention): use sdpa, cudnn or xformers"]
    assert not any("attention mask" in r for r in BACKENDS[name].validate(CUDA, torch.bfloat16, 64, wan))
    with pytest.raises(BackendError, match="takes no attention mask"):
        select_backend(name, CUDA, torch.bfloat16, 64, transformer=ltx)


def test_backends_with_masks_and_auto_are_unaffected():
    ltx = _tiny_ltx()
    for name in ("cudnn", "xformers", "sdpa"):
        assert not any("attention mask" in r for r in BACKENDS[name].validate(CUDA, torch.bfloat16, 64, ltx))
    name, passed = select_backend("auto", CUDA, torch.bfloat16, 64, prefer="flash-attn", transformer=ltx)
    assert name == "sdpa" and any("attention mask" in r for r in passed["flash-attn"])


def test_the_masked_classes_are_registry_transformer_classes():
    from reel.models.registry import FAMILIES

    assert set(MASKED_ATTENTION) <= {family.transformer_class for family in FAMILIES.values()}
