"""LTX-Video family: parity with LTXPipeline / LTXImageToVideoPipeline, `reel render` end to end, LoRAs.

A tiny random LTX model (VAE 32x spatial / 8x temporal like the real one, timestep-conditioned decoder,
LTX's dynamic-shift scheduler config) is written as real diffusers folders. Offline, CPU, fp32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from reel.engine.lora_bank import AdapterBank
from reel.engine.cli import app
from reel.engine.post.contact import read_video
from reel.engine.sampling import guided, sample
from reel.models import ltx
from reel.models.registry import resolve_model

WORDS = ("a red green blue circle square moving left right up down on black gray background the of and with "
         "fast slow").split()
PROMPT = "a red circle moving left on a black background"
NEGATIVE = "a blue square"
W, H, FRAMES, FPS, STEPS, GUIDANCE, TEXT_LEN = 96, 64, 9, 24, 3, 3.0, 16


def build_tiny_ltx(path, pipeline: str = "LTXPipeline", decode_noise: bool = False):
    """A random tiny LTX folder: 8 latent channels, VAE 32x/8x, 2-layer transformer, word tokenizer."""
    import diffusers
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from reel.models.wordtok import build_word_tokenizer

    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(WORDS, model_max_length=TEXT_LEN)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0))
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=2, caption_channels=32)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4, upsample_factor=(1,) * 4,
        timestep_conditioning=True, patch_size=4, patch_size_t=1, scaling_factor=0.8)
    vae.latents_mean.copy_(torch.linspace(-0.3, 0.3, 8))
    vae.latents_std.copy_(torch.linspace(0.7, 1.4, 8))
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)
    pipe = getattr(diffusers, pipeline)(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                        transformer=transformer, scheduler=scheduler)
    pipe.save_pretrained(path)
    defaults = {"width": W, "height": H, "frames": FRAMES, "fps": FPS, "steps": STEPS, "guidance": GUIDANCE,
                "max_sequence_length": TEXT_LEN}
    if decode_noise:
        defaults.update(decode_timestep=0.05, decode_noise_scale=0.025)
    (path / "reel.json").write_text(json.dumps(defaults, indent=2) + "\n")
    return path


@pytest.fixture(scope="module")
def t2v_folder(tmp_path_factory):
    return build_tiny_ltx(tmp_path_factory.mktemp("models") / "tiny-ltx", decode_noise=True)


@pytest.fixture(scope="module")
def t2v(t2v_folder):
    from diffusers import LTXPipeline

    pipe = LTXPipeline.from_pretrained(t2v_folder, local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe, ltx.load(t2v_folder, torch.device("cpu"), torch.float32)


def reel_video(comps, seed, image=None, steps=STEPS, guidance=GUIDANCE, pass_seeds=True):
    """reel's own loop: (F, H, W, 3) in [0, 1] and the final latents (1, C, F', H', W')."""
    cond = ltx.encode_prompts(comps, [PROMPT], TEXT_LEN)
    uncond = ltx.encode_prompts(comps, [NEGATIVE], TEXT_LEN)
    shape = ltx.latent_shape(comps, FRAMES, H, W)
    img = None
    if image is not None:
        img = ltx.image_condition(comps, image, FRAMES, H, W)
        cond, uncond = {**cond, "cond_mask": img["cond_mask"]}, {**uncond, "cond_mask": img["cond_mask"]}
    noise = ltx.initial_noise(shape, seed, comps.device, image=img)
    sampler = ltx.make_sampler(comps, "default", 1.0, shape=shape, image=img)
    latents = sample(sampler, guided(lambda x, t, e: ltx.velocity(comps, x, t, e), cond, uncond, guidance),
                     noise, steps)
    chunks = list(ltx.decode_stream(comps, latents, seeds=[seed] if pass_seeds else None))  # [(1, 3, f, H, W)]
    assert [c.shape[2] for c in chunks] == [1, 8]
    return torch.cat(chunks, dim=2)[0].permute(1, 2, 3, 0).numpy(), latents


def pipe_video(pipe, seed, image=None, decode=(0.05, 0.025)):
    kwargs = {} if image is None else {"image": image}
    return pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=H, width=W, num_frames=FRAMES, frame_rate=FPS,
                num_inference_steps=STEPS, guidance_scale=GUIDANCE, max_sequence_length=TEXT_LEN,
                decode_timestep=decode[0], decode_noise_scale=decode[1],
                generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kwargs).frames[0]


def test_registry_factors_and_shape(t2v_folder, t2v):
    info = resolve_model(str(t2v_folder))
    _, comps = t2v
    assert info.family.name == "ltx" and (info.temporal_factor, info.size_multiple) == (8, 32)
    assert (comps.temporal_factor, comps.spatial_factor) == (8, 32) and comps.frame_rate == FPS
    assert ltx.latent_shape(comps, FRAMES, H, W) == (8, 2, 2, 3)
    with pytest.raises(ValueError, match="try 9 or 17"):
        ltx.latent_shape(comps, 12, H, W)


@pytest.mark.parametrize("seed", [7])
def test_frames_match_ltxpipeline(t2v, seed):
    pipe, comps = t2v
    ref = pipe_video(pipe, seed)  # (F, H, W, 3)
    ours, _ = reel_video(comps, seed)
    assert ours.shape == ref.shape == (FRAMES, H, W, 3)
    assert float(np.abs(ours - ref).max()) <= 1e-3
    assert float(ref.std()) > 0.01  # not two blank videos
    # without the seeds, the decode noise comes from a fixed generator: close, not equal
    other, _ = reel_video(comps, seed, pass_seeds=False)
    assert 0 < float(np.abs(other - ref).max())


def test_prompt_embeddings_and_noise_match_the_pipeline(t2v):
    pipe, comps = t2v
    with torch.no_grad():  # the pipeline's __call__ runs without grad too
        e, m = pipe._get_t5_prompt_embeds([PROMPT], max_sequence_length=TEXT_LEN, device="cpu")
    ours = ltx.encode_prompts(comps, [PROMPT], TEXT_LEN)
    assert torch.equal(ours["embeds"], e) and torch.equal(ours["mask"], m) and ours["mask"].dtype == torch.bool
    packed = pipe.prepare_latents(1, 8, H, W, FRAMES, torch.float32, "cpu", torch.Generator("cpu").manual_seed(5))
    noise = ltx.initial_noise(ltx.latent_shape(comps, FRAMES, H, W), 5, torch.device("cpu"))
    assert torch.equal(ltx._pack(noise, comps), packed)


def test_render_two_shots_end_to_end(t2v_folder, tmp_path):
    spec = tmp_path / "film.toml"
    spec.write_text(f"""
[film]
title = "Tiny LTX"
model = "{t2v_folder}"
seed = 3
steps = 2

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"

[[shots]]
id = "b"
prompt = "a blue square moving up on a gray background"
frames = 17
""")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 rendered, 0 reused" in result.output
    for sid, n in (("a", 9), ("b", 17)):
        clip, fps = read_video(out / "shots" / f"{sid}.mp4")
        assert clip.shape == (n, H, W, 3) and fps == FPS
        m = json.loads((out / "shots" / f"{sid}.json").read_text())
        assert m["model"]["family"] == "ltx" and m["scheduler"] == "default" and m["frames"] == n
    film, fps = read_video(out / "film.mp4")
    assert film.shape == (9 + 17, H, W, 3) and fps == FPS


def _lora(transformer, rank=2, seed=1, scale=0.3):
    """{module path: (A (r, in), B (out, r))} for the attention and feed-forward linears of every block."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, mod in transformer.named_modules():
        if name.startswith("transformer_blocks.") and isinstance(mod, torch.nn.Linear) and (
                ".attn" in name or ".ff." in name):
            out[name] = (torch.randn((rank, mod.in_features), generator=g) * scale,
                         torch.randn((mod.out_features, rank), generator=g) * scale)
    return out


def test_lora_loads_through_adapterbank_and_changes_output(t2v_folder, tmp_path):
    comps = ltx.load(t2v_folder, torch.device("cpu"), torch.float32)
    lora = _lora(comps.transformer)
    diffusers_file, comfy_file = tmp_path / "hero.safetensors", tmp_path / "hero-comfy.safetensors"
    save_file({f"transformer.{k}.lora_{ab}.weight": t.contiguous() for k, (a, b) in lora.items()
               for ab, t in (("A", a), ("B", b))}, str(diffusers_file))
    alpha = 4.0  # ComfyUI/kohya style: lora_down/lora_up + alpha, the update scaled by alpha / rank
    comfy = {}
    for k, (a, b) in lora.items():
        comfy[f"diffusion_model.{k}.lora_down.weight"] = a.contiguous()
        comfy[f"diffusion_model.{k}.lora_up.weight"] = (b * a.shape[0] / alpha).contiguous()
        comfy[f"diffusion_model.{k}.alpha"] = torch.tensor(alpha)
    save_file(comfy, str(comfy_file))
    base, _ = reel_video(comps, 11)
    bank = AdapterBank(comps.transformer, ltx.lora_to_diffusers)
    bank.load("hero", diffusers_file)
    bank.load("hero_comfy", comfy_file)
    assert bank.formats == {"hero": "diffusers", "hero_comfy": "comfyui"}
    bank.activate([("hero", 1.0)])
    with_lora, _ = reel_video(comps, 11)
    bank.activate([("hero_comfy", 1.0)])
    with_comfy, _ = reel_video(comps, 11)
    bank.activate([])
    again, _ = reel_video(comps, 11)
    assert float(np.abs(with_lora - base).max()) > 1e-2
    assert float(np.abs(with_comfy - with_lora).max()) <= 1e-4
    assert np.array_equal(again, base)


def test_image_to_video_matches_ltx_image2video_pipeline(tmp_path, t2v):
    from diffusers import LTXImageToVideoPipeline
    from PIL import Image

    folder = build_tiny_ltx(tmp_path / "tiny-ltx-i2v", pipeline="LTXImageToVideoPipeline", decode_noise=True)
    assert resolve_model(str(folder)).takes_image
    pipe = LTXImageToVideoPipeline.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    comps = ltx.load(folder, torch.device("cpu"), torch.float32)
    rng = np.random.default_rng(0)
    image = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    image[:, : W // 2] = [200, 40, 40]  # some structure, not only noise
    ref = pipe_video(pipe, 21, image=Image.fromarray(image))
    ours, latents = reel_video(comps, 21, image=image)
    assert ours.shape == ref.shape == (FRAMES, H, W, 3)
    assert float(np.abs(ours - ref).max()) <= 1e-3
    # the conditioned latent frame is the image's, untouched by the steps; the clip differs from text-to-video
    img = ltx.image_condition(comps, image, FRAMES, H, W)
    start = ltx.initial_noise(ltx.latent_shape(comps, FRAMES, H, W), 21, comps.device, image=img)
    assert torch.equal(latents[:, :, :1], start[:, :, :1])
    text_only, _ = reel_video(t2v[1], 21)
    assert float(np.abs(text_only - ours).max()) > 1e-2


def test_a_batch_of_shots_equals_each_shot_alone(t2v):
    _, comps = t2v
    shape = ltx.latent_shape(comps, FRAMES, H, W)
    cond = ltx.encode_prompts(comps, [PROMPT, NEGATIVE], TEXT_LEN)
    uncond = ltx.encode_prompts(comps, ["", ""], TEXT_LEN)
    noise = torch.cat([ltx.initial_noise(shape, s, comps.device) for s in (1, 2)])  # (2, C, F', H', W')
    latents = sample(ltx.make_sampler(comps, "default", 1.0, shape=shape),
                     guided(lambda x, t, e: ltx.velocity(comps, x, t, e), cond, uncond, GUIDANCE), noise, STEPS)
    batch = torch.cat(list(ltx.decode_stream(comps, latents, seeds=[1, 2])), dim=2)  # (2, 3, F, H, W)
    for i, seed in enumerate((1, 2)):
        one = {k: v[i:i + 1] for k, v in cond.items()}
        alone = sample(ltx.make_sampler(comps, "default", 1.0, shape=shape),
                       guided(lambda x, t, e: ltx.velocity(comps, x, t, e), one,
                              {k: v[i:i + 1] for k, v in uncond.items()}, GUIDANCE), noise[i:i + 1], STEPS)
        video = torch.cat(list(ltx.decode_stream(comps, alone, seeds=[seed])), dim=2)
        assert float((video[0] - batch[i]).abs().max()) <= 1e-4
    assert ltx.to_uint8_frames(batch[:, :, :1]).shape == (2, 1, H, W, 3)
