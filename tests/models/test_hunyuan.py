"""HunyuanVideo family on a tiny random model saved as a real HunyuanVideoPipeline folder (CPU, offline):
parity with diffusers' pipeline through reel's own loop, streamed decode, `reel render`, LoRA formats."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reel.engine.lora_bank import AdapterBank
from reel.engine.sampling import guided, sample
from reel.models import hunyuan

PROMPT = "a red circle moving left on a black background"
WORDS = ("a red green blue circle square triangle moving left right up down on black gray navy background "
         "the of and with in").split()
LLAMA_SPECIALS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
TEXT_LEN = 16


def llama_like_tokenizer(template: str):
    """A word-level tokenizer that reads the prompt template like Llama 3 does: its header and end-of-turn
    markers are single special tokens, a begin-of-text token starts every text, no end token is added."""
    from tokenizers import pre_tokenizers, processors

    from reel.models.wordtok import build_word_tokenizer

    plain = re.sub(r"<\|\w+\|>", " ", template.replace("{}", " "))
    template_words = [w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(plain)]
    tok = build_word_tokenizer(template_words + WORDS)
    tok.add_tokens(list(LLAMA_SPECIALS), special_tokens=True)
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B", special_tokens=[("<|begin_of_text|>", bos)])
    return tok


def build_tiny_hunyuan(path: Path, seed: int = 0) -> Path:
    """A random tiny HunyuanVideoPipeline folder (VAE 8x spatial, 4x temporal; patch 2: sizes % 16, 4k+1
    frames) with a reel.json whose prompt_template.crop_start fits its tokenizer."""
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
                           HunyuanVideoTransformer3DModel)
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    from reel.models.wordtok import build_word_tokenizer

    template = hunyuan.default_prompt_template()["template"]
    tokenizer = llama_like_tokenizer(template)
    crop_start = len(tokenizer(template.split("{}")[0]).input_ids)  # begin-of-text + the template's head
    tokenizer_2 = build_word_tokenizer(WORDS, model_max_length=77)
    torch.manual_seed(seed)
    text_encoder = LlamaModel(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=37, num_attention_heads=4, num_key_value_heads=4,
        num_hidden_layers=3, pad_token_id=0, bos_token_id=tokenizer.convert_tokens_to_ids("<|begin_of_text|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"), max_position_embeddings=256))
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer_2), hidden_size=8, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, pad_token_id=0, bos_token_id=2, eos_token_id=1, projection_dim=32))
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(4, 4, 4))
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
        spatial_compression_ratio=8, temporal_compression_ratio=4)
    pipe = HunyuanVideoPipeline(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=text_encoder_2,
                                tokenizer_2=tokenizer_2)
    pipe.save_pretrained(path)
    defaults = {"width": 32, "height": 32, "frames": 9, "fps": 24, "steps": 3, "guidance": 6.0, "shift": 7.0,
                "max_sequence_length": TEXT_LEN, "prompt_template": {"crop_start": crop_start}}
    (path / "reel.json").write_text(json.dumps(defaults, indent=2) + "\n")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_tiny_hunyuan(tmp_path_factory.mktemp("models") / "tiny-hunyuan")


@pytest.fixture(scope="module")
def comps(folder):
    return hunyuan.load(folder, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def pipe(folder):
    from diffusers import HunyuanVideoPipeline

    p = HunyuanVideoPipeline.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    p.set_progress_bar_config(disable=True)
    return p


def template_of(comps) -> dict:
    return {"template": comps.prompt_template["template"], "crop_start": comps.prompt_template["crop_start"]}


def reel_frames(comps, seed: int, steps: int, guidance: float, scheduler: str = "default") -> np.ndarray:
    cond = hunyuan.with_guidance(hunyuan.encode_prompts(comps, [PROMPT], TEXT_LEN), guidance, 1)
    noise = hunyuan.initial_noise(hunyuan.latent_shape(comps, 9, 32, 32), seed, comps.device)  # (1, 4, 3, 4, 4)
    sampler = hunyuan.make_sampler(comps, scheduler, 7.0)
    latents = sample(sampler, guided(lambda x, t, e: hunyuan.velocity(comps, x, t, e), cond, None, guidance),
                     noise, steps)
    video = torch.cat(list(hunyuan.decode_stream(comps, latents)), dim=2)  # (1, 3, 9, 32, 32)
    return video[0].permute(1, 2, 3, 0).numpy()  # (F, H, W, 3) in [0, 1]


def test_registry_factors_match_the_vae_and_transformer(folder, comps):
    from reel.models.registry import resolve_model

    info = resolve_model(str(folder))
    assert info.family.name == "hunyuan" and info.pipeline == "HunyuanVideoPipeline" and not info.takes_image
    assert info.temporal_factor == comps.vae.temporal_compression_ratio == 4
    assert info.size_multiple == comps.vae.spatial_compression_ratio * comps.transformer.config.patch_size == 16
    assert info.defaults["max_sequence_length"] == TEXT_LEN and info.defaults["fps"] == 24


def test_template_crop_lands_on_the_prompt(comps):
    t = comps.prompt_template
    ids = comps.tokenizer(t["template"].format(PROMPT)).input_ids
    tokens = comps.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[t["crop_start"] - 1] == "<|end_header_id|>" and tokens[t["crop_start"]] == "a"
    assert "<unk>" not in tokens  # every word of the template is in the vocabulary


def test_prompt_embeddings_equal_the_pipelines(comps, pipe):
    ours = hunyuan.encode_prompts(comps, [PROMPT, "a blue square"], TEXT_LEN)
    embeds, pooled, mask = pipe.encode_prompt(prompt=[PROMPT, "a blue square"], prompt_template=template_of(comps),
                                              device=torch.device("cpu"), max_sequence_length=TEXT_LEN)
    assert ours["embeds"].shape == (2, TEXT_LEN, 16) and ours["pooled"].shape == (2, 8)
    assert torch.equal(ours["embeds"], embeds) and torch.equal(ours["pooled"], pooled)
    assert torch.equal(ours["mask"], mask.long()) and int(ours["mask"][0].sum()) == len(PROMPT.split()) + 1


def test_frames_match_hunyuanvideopipeline(comps, pipe):
    ref = pipe(prompt=PROMPT, height=32, width=32, num_frames=9, num_inference_steps=3, guidance_scale=6.0,
               max_sequence_length=TEXT_LEN, prompt_template=template_of(comps),
               generator=torch.Generator("cpu").manual_seed(1234), output_type="np").frames[0]  # (F, H, W, 3)
    ours = reel_frames(comps, 1234, 3, 6.0)
    assert ours.shape == ref.shape == (9, 32, 32, 3)
    assert float(np.abs(ours - ref).max()) <= 1e-3
    assert float(ref.std()) > 0.01  # not two blank videos
    assert float(np.abs(reel_frames(comps, 1234, 3, 2.0) - ours).max()) > 1e-3  # guidance is a real input


def test_scheduler_uses_the_pipelines_sigmas(comps, pipe):
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import retrieve_timesteps

    ref = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    retrieve_timesteps(ref, 5, "cpu", sigmas=np.linspace(1.0, 0.0, 6)[:-1])
    x = torch.zeros(1, 2)

    def seen_by(name: str) -> tuple[list, torch.Tensor]:
        seen = []
        out = hunyuan.make_sampler(comps, name, 7.0)(lambda x, t, i: seen.append(t) or torch.ones_like(x), x, 5, None)
        return seen, out

    seen, out = seen_by("default")
    assert torch.equal(torch.stack(seen), ref.timesteps)
    assert torch.equal(out, x + (ref.sigmas[1:] - ref.sigmas[:-1]).sum())  # Euler steps over the pipeline's sigmas
    for name in ("euler", "unipc"):
        assert len(seen_by(name)[0]) == 5
    with pytest.raises(ValueError, match="unknown scheduler"):
        hunyuan.make_sampler(comps, "ddim", 7.0)


def test_streamed_decode_equals_vae_decode_on_long_clips(comps):
    vae = comps.vae
    latents = torch.randn((2, 4, 8, 2, 2), generator=torch.Generator().manual_seed(0))  # 29 frames, temporal tiles
    chunks = list(hunyuan.decode_stream(comps, latents))
    whole = (vae.decode(latents / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)  # (2, 3, 29, 16, 16)
    assert len(chunks) > 1 and [c.shape[2] for c in chunks] == [13, 12, 4]
    assert torch.equal(torch.cat(chunks, dim=2), whole)
    frames = hunyuan.to_uint8_frames(chunks[0])
    assert frames.shape == (2, 13, 16, 16, 3) and frames.dtype == np.uint8


def test_noise_is_the_pipelines_randn(comps, pipe):
    cpu = torch.device("cpu")
    ref = pipe.prepare_latents(1, 4, 32, 32, 9, torch.float32, cpu, torch.Generator("cpu").manual_seed(7))
    assert torch.equal(hunyuan.initial_noise(hunyuan.latent_shape(comps, 9, 32, 32), 7, cpu), ref)


FILM = """
[film]
title = "Tiny Hunyuan"
model = "{model}"
seed = 3

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"

[[shots]]
id = "b"
prompt = "a blue square moving up on a gray background"
frames = 5
"""


def test_reel_render_end_to_end(folder, tmp_path):
    from reel.engine.cli import app
    from reel.engine.post.contact import read_video

    spec = tmp_path / "film.toml"
    spec.write_text(textwrap.dedent(FILM).replace("{model}", str(folder)))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 rendered, 0 reused" in result.output
    for sid, n in (("a", 9), ("b", 5)):
        clip, fps = read_video(out / "shots" / f"{sid}.mp4")
        assert clip.shape == (n, 32, 32, 3) and fps == 24 and clip.std() > 1.0
        m = json.loads((out / "shots" / f"{sid}.json").read_text())
        assert m["model"]["family"] == "hunyuan" and m["frames"] == n and m["steps"] == 3
        assert m["guidance"] == 6.0 and m["scheduler"] == "default" and m["shift"] == 7.0
    film, fps = read_video(out / "film.mp4")
    assert film.shape == (14, 32, 32, 3) and fps == 24


def test_image_shots_are_rejected_with_a_clear_error(folder, tmp_path):
    from reel.engine.cli import app

    spec = tmp_path / "film.toml"
    spec.write_text(textwrap.dedent(FILM).replace("{model}", str(folder)).replace('frames = 5', 'continue_from = "a"'))
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and "text-to-video only" in result.output


# -- LoRA ------------------------------------------------------------------------------------------------
# original HunyuanVideo module (double block) -> diffusers module(s) it becomes
DOUBLE = {"img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "img_attn_proj": ("attn.to_out.0",),
          "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
          "txt_attn_proj": ("attn.to_add_out",), "img_mlp.fc1": ("ff.net.0.proj",), "img_mlp.fc2": ("ff.net.2",),
          "txt_mlp.fc1": ("ff_context.net.0.proj",), "img_mod.linear": ("norm1.linear",)}


def write_loras(transformer, tmp: Path, rank: int = 2, alpha: float = 4.0) -> dict[str, Path]:
    """The same low-rank update to block 0 in three formats: diffusers, ComfyUI (original names, lora_A/B,
    `diffusion_model.`) and musubi-tuner/kohya (`lora_unet_`, lora_down/up + alpha)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    mods = dict(transformer.named_modules())
    files = {"diffusers": {}, "comfyui": {}, "kohya": {}}
    for orig, targets in DOUBLE.items():
        lins = [mods[f"transformer_blocks.0.{t}"] for t in targets]
        a = torch.randn((rank, lins[0].in_features), generator=g) * 0.5  # (r, in), shared by q, k, v
        bs = [torch.randn((lin.out_features, rank), generator=g) * 0.5 for lin in lins]  # (out, r) each
        for t, b in zip(targets, bs):
            files["diffusers"][f"transformer.transformer_blocks.0.{t}.lora_A.weight"] = a
            files["diffusers"][f"transformer.transformer_blocks.0.{t}.lora_B.weight"] = b
        files["comfyui"][f"diffusion_model.double_blocks.0.{orig}.lora_A.weight"] = a
        files["comfyui"][f"diffusion_model.double_blocks.0.{orig}.lora_B.weight"] = torch.cat(bs)
        k = f"lora_unet_double_blocks_0_{orig.replace('.', '_')}"
        files["kohya"][f"{k}.lora_down.weight"] = a
        files["kohya"][f"{k}.lora_up.weight"] = torch.cat(bs) * (rank / alpha)
        files["kohya"][f"{k}.alpha"] = torch.tensor(alpha)
    paths = {}
    for fmt, tensors in files.items():
        paths[fmt] = tmp / f"hero-{fmt}.safetensors"
        save_file({k: v.clone().contiguous() for k, v in tensors.items()}, str(paths[fmt]))
    return paths


def test_lora_formats_convert_alike_and_change_the_output(folder, tmp_path):
    from safetensors.torch import load_file

    comps = hunyuan.load(folder, torch.device("cpu"), torch.float32)  # its own: adapters stay out of the others
    paths = write_loras(comps.transformer, tmp_path)
    converted = {fmt: hunyuan.lora_to_diffusers(load_file(str(p))) for fmt, p in paths.items()}
    assert set(converted["comfyui"]) == set(converted["kohya"]) == set(converted["diffusers"])
    for key, value in converted["diffusers"].items():
        assert torch.allclose(converted["comfyui"][key], value) and torch.allclose(converted["kohya"][key], value)

    cond = hunyuan.with_guidance(hunyuan.encode_prompts(comps, [PROMPT], TEXT_LEN), 6.0, 1)
    x = hunyuan.initial_noise(hunyuan.latent_shape(comps, 9, 32, 32), 0, comps.device)
    t = torch.tensor(900.0)
    bank = AdapterBank(comps.transformer, hunyuan.lora_to_diffusers)
    with torch.no_grad():
        base = hunyuan.velocity(comps, x, t, cond)
        bank.load("hero", paths["diffusers"])
        bank.load("hero_kohya", paths["kohya"])
        bank.activate([("hero", 1.0)])
        with_lora = hunyuan.velocity(comps, x, t, cond)
        bank.activate([("hero_kohya", 1.0)])
        with_kohya = hunyuan.velocity(comps, x, t, cond)
        bank.activate([])
        off = hunyuan.velocity(comps, x, t, cond)
    assert float((with_lora - base).abs().max()) > 1e-3
    assert torch.allclose(with_kohya, with_lora, atol=1e-5)
    assert torch.equal(off, base)
