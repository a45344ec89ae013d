"""LTX-2 family (picture + sound): parity with LTX2Pipeline / LTX2ImageToVideoPipeline through reel's own loop, the
sound track's length and rate, seeds locking the sound, LoRA formats, batching.

A tiny random LTX-2 (video VAE 32x spatial / 8x temporal with explicit ratios like the real config, a causal audio
VAE with 4x time compression, a 2-stage vocoder, 2-layer Gemma 3, connectors with learnable registers, LTX-2's
dynamic-shift scheduler config) is written as real diffusers folders. Offline, CPU, fp32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from reel.engine.lora_bank import AdapterBank, LoraError
from reel.engine.sampling import guided, sample
from reel.models import ltx2
from reel.models.registry import resolve_model
from reel.models.tiny import TINY_WORDS

PROMPT = "a red circle moving left on a black background"
NEGATIVE = "a blue square"
W, H, FRAMES, FPS, STEPS, GUIDANCE, TEXT_LEN = 96, 64, 9, 24, 3, 3.0, 16
SAMPLE_RATE = 1600  # the tiny vocoder: 100 mel frames per second x 16 samples per mel frame


def build_tiny_ltx2(path, pipeline: str = "LTX2Pipeline", decode_noise: bool = False):
    """A random tiny LTX-2 folder (8 video latent channels, audio latents 2 x 4 mel bins = 8 packed channels)."""
    import diffusers
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from reel.models.wordtok import build_word_tokenizer

    torch.manual_seed(0)
    tok = build_word_tokenizer(TINY_WORDS, model_max_length=TEXT_LEN)
    last = len(tok) - 1  # image tokens are never used: any id
    text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=256,
                         sliding_window=8, pad_token_id=0, eos_token_id=1, bos_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4, image_token_index=last, boi_token_index=last, eoi_token_index=last))
    transformer = LTX2VideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_cross_attention_dim=8, num_layers=2, caption_channels=16)
    connectors = LTX2TextConnectors(
        caption_channels=16, text_proj_in_factor=3, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8, video_connector_num_layers=1, video_connector_num_learnable_registers=4,
        audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=4, connector_rope_base_seq_len=32)
    vae = AutoencoderKLLTX2Video(
        latent_channels=8, block_out_channels=(8, 16, 32, 64), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1), decoder_causal=False,
        timestep_conditioning=decode_noise, spatial_compression_ratio=32, temporal_compression_ratio=8,
        decoder_spatial_padding_mode="zeros")  # the real "reflect" cannot pad the 1x1 latents of a 32 px contract shot
    vae.latents_mean.copy_(torch.linspace(-0.3, 0.3, 8))
    vae.latents_std.copy_(torch.linspace(0.7, 1.4, 8))
    audio_vae = AutoencoderKLLTX2Audio(base_channels=8, output_channels=2, ch_mult=(1, 1, 1), num_res_blocks=1,
                                       latent_channels=2, mel_bins=16, resolution=32)
    audio_vae.latents_mean.copy_(torch.linspace(-0.2, 0.2, 8))
    audio_vae.latents_std.copy_(torch.linspace(0.8, 1.2, 8))
    vocoder = LTX2Vocoder(in_channels=2 * 16, hidden_channels=16, out_channels=2, upsample_kernel_sizes=[8, 8],
                          upsample_factors=[4, 4], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
                          output_sampling_rate=SAMPLE_RATE)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)
    pipe = getattr(diffusers, pipeline)(scheduler=scheduler, vae=vae, audio_vae=audio_vae, text_encoder=text_encoder,
                                        tokenizer=tok, connectors=connectors, transformer=transformer, vocoder=vocoder)
    pipe.save_pretrained(path)
    defaults = {"width": W, "height": H, "frames": FRAMES, "fps": FPS, "steps": STEPS, "guidance": GUIDANCE,
                "max_sequence_length": TEXT_LEN, "image_crf": 0}  # no PyAV here: no H.264 re-compression
    if decode_noise:
        defaults.update(decode_timestep=0.05, decode_noise_scale=0.025)
    (path / "reel.json").write_text(json.dumps(defaults, indent=2) + "\n")
    return path


@pytest.fixture(scope="module")
def t2v_folder(tmp_path_factory):
    return build_tiny_ltx2(tmp_path_factory.mktemp("models") / "tiny-ltx2", decode_noise=True)


@pytest.fixture(scope="module")
def t2v(t2v_folder):
    from diffusers import LTX2Pipeline

    pipe = LTX2Pipeline.from_pretrained(t2v_folder, local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe, ltx2.load(t2v_folder, torch.device("cpu"), torch.float32)


def reel_render(comps, seed, image=None, prompts=(PROMPT,), negatives=(NEGATIVE,), seeds=None):
    """reel's own loop: video (B, F, H, W, 3) in [0, 1], sound (B, 2, samples), rate, final latents (B, N)."""
    seeds = seeds or [seed]
    cond = ltx2.batch_conditioning(comps, ltx2.encode_prompts(comps, list(prompts), TEXT_LEN), guidance=GUIDANCE,
                                   fps=FPS, batch=len(seeds))
    uncond = ltx2.batch_conditioning(comps, ltx2.encode_prompts(comps, list(negatives), TEXT_LEN), guidance=GUIDANCE,
                                     fps=FPS, batch=len(seeds))
    shape = ltx2.latent_shape(comps, FRAMES, H, W)
    img = None
    if image is not None:
        img = ltx2.image_condition(comps, image, FRAMES, H, W)
        cond, uncond = {**cond, "cond_mask": img["cond_mask"]}, {**uncond, "cond_mask": img["cond_mask"]}
    noise = torch.cat([ltx2.initial_noise(shape, s, comps.device, image=img) for s in seeds])
    sampler = ltx2.make_sampler(comps, "default", 1.0, shape=shape, image=img)
    latents = sample(sampler, guided(lambda x, t, e: ltx2.velocity(comps, x, t, e), cond, uncond, GUIDANCE),
                     noise, STEPS)
    chunks = list(ltx2.decode_stream(comps, latents, seeds=seeds))  # [(B, 3, f, H, W)]
    assert [c.shape[2] for c in chunks] == [1, 8]
    wave, rate = ltx2.decode_audio(comps, latents, seeds=seeds)
    return torch.cat(chunks, dim=2).permute(0, 2, 3, 4, 1).numpy(), wave, rate, latents


def pipe_render(pipe, comps, seed, image=None):
    kwargs = ltx2.pipeline_kwargs(comps, negative_prompt=NEGATIVE, fps=FPS)
    if image is not None:
        kwargs["image"] = image
    out = pipe(prompt=PROMPT, height=H, width=W, num_frames=FRAMES, num_inference_steps=STEPS,
               guidance_scale=GUIDANCE, max_sequence_length=TEXT_LEN, output_type="np",
               generator=torch.Generator("cpu").manual_seed(seed), **kwargs)
    return out.frames[0], out.audio.float()  # (F, H, W, 3), (1, 2, samples)


def test_registry_factors_and_shape(t2v_folder, t2v):
    info = resolve_model(str(t2v_folder))
    _, comps = t2v
    assert info.family.name == "ltx2" and info.family.audio and (info.temporal_factor, info.size_multiple) == (8, 32)
    assert comps.sample_rate == SAMPLE_RATE and comps.frame_rate == FPS
    length = round(FRAMES / FPS * 16000 / 160 / 4)  # LTX2Pipeline's audio_num_frames: 9
    assert ltx2.latent_shape(comps, FRAMES, H, W) == (8 * 2 * 2 * 3 + 2 * length * 4,)
    with pytest.raises(ValueError, match="try 9 or 17"):
        ltx2.latent_shape(comps, 12, H, W)


def test_text_to_video_and_sound_match_ltx2pipeline(t2v):
    pipe, comps = t2v
    ref_video, ref_audio = pipe_render(pipe, comps, 7)
    video, wave, rate, _ = reel_render(comps, 7)
    assert video[0].shape == ref_video.shape == (FRAMES, H, W, 3)
    assert float(np.abs(video[0] - ref_video).max()) <= 1e-3 and float(ref_video.std()) > 0.01
    n = ref_audio.shape[-1]  # the pipeline's vocoder output: (4L - 3) mel frames x 16 samples
    assert n == (4 * 9 - 3) * 16
    assert float((wave[..., :n] - ref_audio).abs().max()) <= 1e-3 and float(ref_audio.std()) > 1e-3
    # the track: exactly the shot's duration at the vocoder's rate, silence after the vocoder's last sample
    assert rate == pipe.vocoder.config.output_sampling_rate == SAMPLE_RATE
    assert wave.shape == (1, 2, round(FRAMES / FPS * SAMPLE_RATE)) and wave.dtype == torch.float32
    assert torch.all(wave[..., n:] == 0) and float(wave.abs().max()) <= 1.0


def test_prompt_embeddings_match_the_pipeline(t2v):
    pipe, comps = t2v
    with torch.no_grad():
        embeds, mask = pipe._get_gemma_prompt_embeds([PROMPT], max_sequence_length=TEXT_LEN, device="cpu")
        video, audio, binary = pipe.connectors(embeds, mask, padding_side="left")
    ours = ltx2.encode_prompts(comps, [PROMPT], TEXT_LEN)
    assert torch.equal(ours["video"], video) and torch.equal(ours["audio"], audio) and torch.equal(ours["mask"], binary)


def test_seed_locks_picture_and_sound(t2v):
    _, comps = t2v
    video_a, wave_a, _, _ = reel_render(comps, 3)
    video_b, wave_b, _, _ = reel_render(comps, 3)
    video_c, wave_c, _, _ = reel_render(comps, 4)
    assert np.array_equal(video_a, video_b) and torch.equal(wave_a, wave_b)
    assert float((wave_a - wave_c).abs().max()) > 1e-3 and float(np.abs(video_a - video_c).max()) > 1e-2


def test_image_to_video_matches_ltx2_image2video_pipeline(tmp_path, t2v):
    from diffusers import LTX2ImageToVideoPipeline
    from PIL import Image

    folder = build_tiny_ltx2(tmp_path / "tiny-ltx2-i2v", pipeline="LTX2ImageToVideoPipeline")
    assert resolve_model(str(folder)).takes_image
    pipe = LTX2ImageToVideoPipeline.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    comps = ltx2.load(folder, torch.device("cpu"), torch.float32)
    image = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    image[:, : W // 2] = [200, 40, 40]
    ref_video, ref_audio = pipe_render(pipe, comps, 21, image=Image.fromarray(image))
    video, wave, _, latents = reel_render(comps, 21, image=image)
    assert float(np.abs(video[0] - ref_video).max()) <= 1e-3
    assert float((wave[..., :ref_audio.shape[-1]] - ref_audio).abs().max()) <= 1e-3
    img = ltx2.image_condition(comps, image, FRAMES, H, W)  # frame 0 is the image's latents, never stepped
    assert torch.equal(latents[img["keep"]], img["image_latents"].flatten())
    text_only, _, _, _ = reel_render(t2v[1], 21)
    assert float(np.abs(text_only - video).max()) > 1e-2


def _lora(transformer, rank=2, seed=1, scale=0.3):
    """{module path: (A (r, in), B (out, r))} for the attention linears of every block and the video and audio
    input projections (named patchify_proj / audio_patchify_proj in the original checkpoint)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, mod in transformer.named_modules():
        if isinstance(mod, torch.nn.Linear) and (".to_" in name or name in ("proj_in", "audio_proj_in")):
            out[name] = (torch.randn((rank, mod.in_features), generator=g) * scale,
                         torch.randn((mod.out_features, rank), generator=g) * scale)
    return out


def _original(name: str) -> str:
    """A diffusers module path in the original LTX-2 checkpoint's names (what ComfyUI LoRAs use)."""
    return {"proj_in": "patchify_proj", "audio_proj_in": "audio_patchify_proj"}.get(name, name)


def test_lora_formats_load_through_adapterbank(t2v_folder, tmp_path):
    comps = ltx2.load(t2v_folder, torch.device("cpu"), torch.float32)
    lora = _lora(comps.transformer)
    assert any(".audio_attn1." in k for k in lora) and any(".audio_to_video_attn." in k for k in lora)
    diffusers_file, comfy_file, kohya_file = (tmp_path / f"hero-{k}.safetensors" for k in ("d", "c", "k"))
    save_file({f"transformer.{k}.lora_{ab}.weight": t.contiguous() for k, (a, b) in lora.items()
               for ab, t in (("A", a), ("B", b))}, str(diffusers_file))
    alpha, comfy = 4.0, {}  # ComfyUI / trainer style: lora_down/lora_up + alpha, the update scaled by alpha / rank
    for k, (a, b) in lora.items():
        comfy[f"diffusion_model.{_original(k)}.lora_down.weight"] = a.contiguous()
        comfy[f"diffusion_model.{_original(k)}.lora_up.weight"] = (b * a.shape[0] / alpha).contiguous()
        comfy[f"diffusion_model.{_original(k)}.alpha"] = torch.tensor(alpha)
    save_file(comfy, str(comfy_file))
    save_file({"lora_unet_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(2, 16)}, str(kohya_file))
    base, base_wave, _, _ = reel_render(comps, 11)
    bank = AdapterBank(comps.transformer, ltx2.lora_to_diffusers)
    bank.load("hero", diffusers_file)
    bank.load("hero_comfy", comfy_file)
    assert bank.formats == {"hero": "diffusers", "hero_comfy": "comfyui"}
    with pytest.raises((LoraError, ValueError), match="lora_unet_"):
        bank.load("hero_kohya", kohya_file)
    bank.activate([("hero", 1.0)])
    with_lora, lora_wave, _, _ = reel_render(comps, 11)
    bank.activate([("hero_comfy", 1.0)])
    with_comfy, comfy_wave, _, _ = reel_render(comps, 11)
    bank.activate([])
    again, again_wave, _, _ = reel_render(comps, 11)
    assert float(np.abs(with_lora - base).max()) > 1e-2 and float((lora_wave - base_wave).abs().max()) > 1e-4
    assert float(np.abs(with_comfy - with_lora).max()) <= 1e-4 and float((comfy_wave - lora_wave).abs().max()) <= 1e-4
    assert np.array_equal(again, base) and torch.equal(again_wave, base_wave)


def test_a_batch_of_shots_equals_each_shot_alone(t2v):
    _, comps = t2v
    video, wave, _, _ = reel_render(comps, 0, prompts=(PROMPT, NEGATIVE), negatives=("", ""), seeds=[1, 2])
    for i, (prompt, seed) in enumerate(((PROMPT, 1), (NEGATIVE, 2))):
        one_video, one_wave, _, _ = reel_render(comps, seed, prompts=(prompt,), negatives=("",))
        assert float(np.abs(one_video[0] - video[i]).max()) <= 1e-4
        assert float((one_wave[0] - wave[i]).abs().max()) <= 1e-4
