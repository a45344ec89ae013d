"""Tiny randomly initialised Wan models, saved as real diffusers folders.

Used by the tests and benchmarks (a real model on disk, loaded back like any user's folder). They make
noise, not pictures.

    python -m reel.models.tiny /tmp/tiny-wan        # writes a WanPipeline folder (model_index.json, ...)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TINY_WORDS = ("a red green blue circle square triangle moving left right up down on black gray navy "
              "background sks orange star the of and with in fast slow").split()


def build_tiny_wan(path: str | Path, seed: int = 0, text_len: int = 16, variant: str = "t2v") -> Path:
    """Write a random tiny Wan folder (VAE 4x spatial, 4x temporal) to `path`.

    variant: "t2v" (Wan 2.1 T2V), "i2v" (Wan 2.1 I2V: CLIP image encoder, image latents as extra channels;
    diffusers hard-codes 512 text tokens for it), "ti2v" (Wan 2.2 TI2V: per-token timesteps, text or
    image), "a14b" (Wan 2.2 A14B: two experts split at a boundary timestep)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from reel.models.wordtok import build_word_tokenizer

    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if variant not in ("t2v", "i2v", "ti2v", "a14b"):
        raise ValueError(f"variant {variant!r}: use t2v, i2v, ti2v or a14b")
    if variant == "i2v":
        text_len = 512
    path = Path(path)
    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(TINY_WORDS, model_max_length=text_len)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1,
    ))
    vae = AutoencoderKLWan(
        base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True],
        latents_mean=[0.1, -0.2, 0.0, 0.3], latents_std=[1.5, 0.8, 1.0, 1.2],
        scale_factor_spatial=4, scale_factor_temporal=4,
    )
    def transformer(**extra):
        return WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=extra.pop("in_channels", 4),
            out_channels=4, text_dim=32, freq_dim=32, ffn_dim=48, num_layers=2, rope_max_seq_len=64, **extra)

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)
    parts = dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler)
    if variant == "i2v":
        from diffusers import WanImageToVideoPipeline
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

        encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                                   num_attention_heads=2, image_size=32, patch_size=8))
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        pipe = WanImageToVideoPipeline(transformer=transformer(in_channels=12, image_dim=16, added_kv_proj_dim=24),
                                       image_encoder=encoder, image_processor=processor, **parts)
    elif variant == "a14b":
        pipe = WanPipeline(transformer=transformer(), transformer_2=transformer(), boundary_ratio=0.875, **parts)
    else:
        pipe = WanPipeline(transformer=transformer(), expand_timesteps=variant == "ti2v", **parts)
    pipe.save_pretrained(path)
    defaults = {"width": 32, "height": 32, "frames": 9, "fps": 8, "steps": 4, "guidance": 4.0, "shift": 3.0,
                "max_sequence_length": text_len, "negative_prompt": ""}
    (path / "reel.json").write_text(json.dumps(defaults, indent=2) + "\n")
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m models.tiny OUT_DIR")
    print(build_tiny_wan(sys.argv[1]))
