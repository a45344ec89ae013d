"""CogVideoX in reel's own loop: parity with diffusers' CogVideoX(ImageToVideo)Pipeline (DDIM and DPM,
1.0 and 1.5), `reel render` end to end, a diffusers LoRA. Tiny random models saved as real folders; CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reel.engine.lora_bank import AdapterBank
from reel.engine.sampling import guided, sample
from reel.models import cogvideox as cog
from reel.models.tiny import TINY_WORDS

PROMPT = "a red circle moving left on a black background"
NEGATIVE = "a blue square"
TEXT_LEN = 16
SIZE, FRAMES = 32, 9  # latents 4x4 (VAE 8x), 3 latent frames (4 with CogVideoX 1.5's padding)
CPU = torch.device("cpu")

DDIM_CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                   set_alpha_to_one=True, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                   timestep_spacing="trailing", snr_shift_scale=1.0, steps_offset=0)


def build_tiny_cogvideox(path, version: str = "1.0", image: bool = False, scheduler: str = "ddim", seed: int = 0):
    """A random tiny CogVideoX folder: "1.0" (5B-style RoPE; with image: learned positions like 5B-I2V) or
    "1.5" (patch_size_t = 2; with image: the ofs embedding)."""
    from diffusers import (AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXDPMScheduler,
                           CogVideoXImageToVideoPipeline, CogVideoXPipeline, CogVideoXTransformer3DModel)
    from transformers import T5Config, T5EncoderModel

    from reel.models.wordtok import build_word_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(TINY_WORDS, model_max_length=TEXT_LEN)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                           num_heads=4, relative_attention_num_buckets=8,
                                           relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1))
    vae = AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
                                 up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                 latent_channels=4, layers_per_block=1, norm_num_groups=2,
                                 temporal_compression_ratio=4, scaling_factor=0.7)
    v15 = version == "1.5"
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=8 if image else 4, out_channels=4,
        time_embed_dim=8, ofs_embed_dim=8 if (image and v15) else None, text_embed_dim=32, num_layers=2,
        sample_width=SIZE // 8, sample_height=SIZE // 8, sample_frames=FRAMES, patch_size=2,
        patch_size_t=2 if v15 else None, temporal_compression_ratio=4, max_text_seq_length=TEXT_LEN,
        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=image and not v15)
    sched_cls = CogVideoXDPMScheduler if scheduler == "dpm" else CogVideoXDDIMScheduler
    pipe_cls = CogVideoXImageToVideoPipeline if image else CogVideoXPipeline
    pipe = pipe_cls(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                    scheduler=sched_cls(**DDIM_CONFIG))
    pipe.save_pretrained(path)
    defaults = {"width": SIZE, "height": SIZE, "frames": FRAMES, "fps": 8, "steps": 3, "guidance": 6.0,
                "max_sequence_length": TEXT_LEN}
    (path / "reel.json").write_text(json.dumps(defaults, indent=2) + "\n")
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cog")
    return {"t2v": build_tiny_cogvideox(root / "t2v"),
            "t2v15": build_tiny_cogvideox(root / "t2v15", version="1.5", scheduler="dpm", seed=1),
            "i2v": build_tiny_cogvideox(root / "i2v", image=True, seed=2),
            "i2v15": build_tiny_cogvideox(root / "i2v15", version="1.5", image=True, scheduler="dpm", seed=3)}


def first_frame() -> np.ndarray:
    """A (H, W, 3) uint8 test image: a gradient with a bright square."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    img = np.stack([x * 255 // SIZE, y * 255 // SIZE, np.full_like(x, 60)], axis=-1).astype(np.uint8)
    img[8:20, 10:22] = (250, 240, 30)
    return img


def reel_frames(comps, seed, steps, guidance, scheduler_name, image=None):
    """reel's loop with cogvideox's functions: (F, H, W, 3) in [0, 1]."""
    cond = cog.encode_prompts(comps, [PROMPT], TEXT_LEN)  # (1, L, D)
    uncond = cog.encode_prompts(comps, [NEGATIVE], TEXT_LEN) if guidance > 1 else None
    shape = cog.latent_shape(comps, FRAMES, SIZE, SIZE)  # (F', C, H', W')
    if image is not None:
        img = cog.image_condition(comps, image, FRAMES, SIZE, SIZE, seed=seed)
        cond = {"embeds": cond, **img}
        uncond = {"embeds": uncond, **img} if uncond is not None else None
    noise = cog.initial_noise(shape, seed, comps.device, image=image is not None)
    sampler = cog.make_sampler(comps, scheduler_name, 1.0, shape=shape, image=image is not None, seeds=[seed])
    latents = sample(sampler, guided(lambda x, t, e: cog.velocity(comps, x, t, e), cond, uncond, guidance),
                     noise, steps)
    chunks = list(cog.decode_stream(comps, latents, frames=FRAMES))  # [(1, 3, f, H, W)]; 1.5 drops its padding
    return torch.cat(chunks, dim=2)[0].permute(1, 2, 3, 0).numpy(), len(chunks)


def pipeline_frames(folder, seed, steps, guidance, scheduler_name, image=None):
    from diffusers import (CogVideoXDDIMScheduler, CogVideoXDPMScheduler, CogVideoXImageToVideoPipeline,
                           CogVideoXPipeline)
    from PIL import Image

    cls = CogVideoXPipeline if image is None else CogVideoXImageToVideoPipeline
    pipe = cls.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if scheduler_name != "default":
        sched = CogVideoXDPMScheduler if scheduler_name == "dpm" else CogVideoXDDIMScheduler
        pipe.scheduler = sched.from_config(pipe.scheduler.config)
    extra = {} if image is None else {"image": Image.fromarray(image)}
    return pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=FRAMES,
                num_inference_steps=steps, guidance_scale=guidance, max_sequence_length=TEXT_LEN,
                generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **extra).frames[0]


@pytest.mark.parametrize("model,scheduler_name,guidance,steps", [
    ("t2v", "default", 6.0, 4),   # CogVideoX 1.0, the folder's DDIM
    ("t2v", "dpm", 6.0, 4),       # 1.0 with the DPM scheduler (stochastic: noise from the shot's generator)
    ("t2v", "ddim", 1.0, 3),      # no guidance
    ("t2v15", "default", 5.0, 4),  # CogVideoX 1.5 (odd latent frames: front padding), the folder's DPM
])
def test_text_to_video_matches_pipeline(folders, model, scheduler_name, guidance, steps):
    comps = cog.load(folders[model], CPU, torch.float32)
    ref = pipeline_frames(folders[model], 1234, steps, guidance, scheduler_name)  # (F, H, W, 3)
    ours, chunks = reel_frames(comps, 1234, steps, guidance, scheduler_name)
    assert ours.shape == ref.shape == (FRAMES, SIZE, SIZE, 3)
    assert float(np.abs(ours - ref).max()) <= 1e-3
    assert float(ref.std()) > 0.01  # the comparison is not between two blank videos
    assert chunks >= 1


@pytest.mark.parametrize("model,scheduler_name", [("i2v", "default"), ("i2v15", "default"), ("i2v", "dpm")])
def test_image_to_video_matches_pipeline(folders, model, scheduler_name):
    comps = cog.load(folders[model], CPU, torch.float32)
    image = first_frame()
    ref = pipeline_frames(folders[model], 7, 3, 6.0, scheduler_name, image=image)
    ours, _ = reel_frames(comps, 7, 3, 6.0, scheduler_name, image=image)
    assert ours.shape == ref.shape == (FRAMES, SIZE, SIZE, 3)
    assert float(np.abs(ours - ref).max()) <= 1e-3
    other, _ = reel_frames(comps, 7, 3, 6.0, scheduler_name, image=255 - image)
    assert float(np.abs(other - ours).max()) > 1e-3  # the image conditions the result


def test_streamed_decode_equals_whole_clip_decode(folders):
    comps = cog.load(folders["t2v"], CPU, torch.float32)
    latents = torch.randn((2, 5, 4, 4, 4), generator=torch.Generator().manual_seed(0))  # (B, F', C, H', W')
    chunks = list(cog.decode_stream(comps, latents, frames=17))  # latent frame batches [0:3], [3:5]
    assert [c.shape[2] for c in chunks] == [9, 8] and all(c.shape[:2] == (2, 3) for c in chunks)
    streamed = torch.cat(chunks, dim=2)  # (B, 3, 17, 32, 32)
    whole = comps.vae.decode(1 / 0.7 * latents.permute(0, 2, 1, 3, 4)).sample
    assert streamed.shape == whole.shape == (2, 3, 17, SIZE, SIZE)
    assert torch.equal(streamed, (whole * 0.5 + 0.5).clamp(0, 1))


def test_noise_and_rules(folders):
    comps = cog.load(folders["t2v15"], CPU, torch.float32)
    assert cog.latent_shape(comps, 9, 32, 32) == (4, 4, 4, 4)  # 3 latent frames + 1 front pad (patch_size_t 2)
    assert cog.latent_shape(comps, 17, 32, 32) == (6, 4, 4, 4)  # 5 latent frames + 1 front pad
    a = cog.initial_noise((4, 4, 4, 4), 42, CPU)
    assert torch.equal(a, torch.randn((1, 4, 4, 4, 4), generator=torch.Generator("cpu").manual_seed(42)))
    for bad in (10, 13):  # 13 = 4k+1, but 4 latent frames decode to 16 frames (diffusers returns 16)
        with pytest.raises(ValueError, match="8k\\+1 frames .* try 9 or 17"):
            cog.latent_shape(comps, bad, 32, 32)
    with pytest.raises(ValueError, match="multiples of 16"):
        cog.latent_shape(comps, 9, 40, 32)
    with pytest.raises(ValueError, match="ddim, dpm"):
        cog.make_sampler(comps, "unipc", 1.0)
    i2v = cog.load(folders["i2v"], CPU, torch.float32)  # learned positional embeddings: one size only
    with pytest.raises(ValueError, match="width = 32, height = 32, frames = 9"):
        cog.latent_shape(i2v, 9, 48, 32)


def test_dpm_without_seeds_is_deterministic_per_shot(folders):
    """reel's runtime does not pass seeds yet: the DPM step noise then comes from each shot's own noise."""
    comps = cog.load(folders["t2v"], CPU, torch.float32)
    cond = cog.encode_prompts(comps, [PROMPT, NEGATIVE], TEXT_LEN)  # (2, L, D)
    shape = cog.latent_shape(comps, FRAMES, SIZE, SIZE)
    noise = torch.cat([cog.initial_noise(shape, s, CPU) for s in (1, 2)])  # (2, F', C, H', W')

    def run(x, c):
        return sample(cog.make_sampler(comps, "dpm", 1.0), guided(lambda a, t, e: cog.velocity(comps, a, t, e), c,
                                                                  None, 1.0), x, 3)

    both = run(noise, cond)
    assert torch.equal(both, run(noise, cond))
    assert torch.allclose(both[1:], run(noise[1:], cond[1:]), atol=1e-5)  # a shot's result ignores its batch
    seeded = sample(cog.make_sampler(comps, "dpm", 1.0, seeds=[1]),
                    guided(lambda a, t, e: cog.velocity(comps, a, t, e), cond[:1], None, 1.0), noise[:1], 3)
    assert float((seeded - both[:1]).abs().max()) > 1e-3  # the step noise matters: seeds give the pipeline's


FILM = """
[film]
title = "Tiny Cog"
model = "{model}"
seed = 3

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"

[[shots]]
id = "b"
prompt = "a blue square moving up on a gray background"
frames = 17
"""


def test_reel_render_end_to_end(folders, tmp_path):
    from reel.engine.cli import app
    from reel.engine.post.contact import read_video

    spec = tmp_path / "film.toml"
    spec.write_text(FILM.replace("{model}", str(folders["t2v"])))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 rendered, 0 reused" in result.output
    for sid, n in (("a", FRAMES), ("b", 17)):
        clip, fps = read_video(out / "shots" / f"{sid}.mp4")
        assert clip.shape == (n, SIZE, SIZE, 3) and fps == 8
        m = json.loads((out / "shots" / f"{sid}.json").read_text())
        assert m["model"]["family"] == "cogvideox" and m["scheduler"] == "default" and m["steps"] == 3
        assert m["guidance"] == 6.0 and m["frames"] == n
    film, fps = read_video(out / "film.mp4")
    assert film.shape == (FRAMES + 17, SIZE, SIZE, 3) and fps == 8


def test_diffusers_lora_changes_the_output(folders, tmp_path):
    from safetensors.torch import save_file

    comps = cog.load(folders["t2v"], CPU, torch.float32)
    g = torch.Generator().manual_seed(5)
    tensors = {}
    for name, mod in comps.transformer.named_modules():
        if name.startswith("transformer_blocks.") and name.endswith(("attn1.to_q", "attn1.to_v", "ff.net.2")):
            tensors[f"transformer.{name}.lora_A.weight"] = torch.randn((4, mod.in_features), generator=g) * 0.3
            tensors[f"transformer.{name}.lora_B.weight"] = torch.randn((mod.out_features, 4), generator=g) * 0.3
    path = tmp_path / "hero.safetensors"
    save_file(tensors, str(path))
    cond = cog.encode_prompts(comps, [PROMPT], TEXT_LEN)
    x = cog.initial_noise(cog.latent_shape(comps, FRAMES, SIZE, SIZE), 0, CPU)
    t = torch.tensor(500)
    torch.set_grad_enabled(False)  # as in reel's loop (the LoRA weights require grad)
    base = cog.velocity(comps, x, t, cond)
    bank = AdapterBank(comps.transformer, cog.lora_to_diffusers)
    bank.load("hero", path)
    assert bank.formats["hero"] == "diffusers"
    bank.activate([("hero", 1.0)])
    with_lora = cog.velocity(comps, x, t, cond)
    bank.activate([])
    off = cog.velocity(comps, x, t, cond)
    torch.set_grad_enabled(True)
    assert float((with_lora - base).abs().max()) > 1e-2
    assert torch.equal(off, base)


def test_reel_render_image_to_video(folders, tmp_path):
    """A CogVideoX 1.5 I2V folder through `reel render`: a first-frame image, then a continuation."""
    from PIL import Image

    from reel.engine.cli import app
    from reel.engine.post.contact import read_video

    Image.fromarray(first_frame()).resize((48, 48)).save(tmp_path / "first.png")  # resized like the pipeline does
    spec = tmp_path / "film.toml"
    spec.write_text(f"""
[film]
model = "{folders['i2v15']}"
seed = 3

[[shots]]
id = "a"
prompt = "a red circle moving left"
image = "first.png"

[[shots]]
id = "b"
prompt = "a blue square moving up"
continue_from = "a"
""")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for sid in ("a", "b"):
        clip, fps = read_video(out / "shots" / f"{sid}.mp4")
        assert clip.shape == (FRAMES, SIZE, SIZE, 3) and fps == 8
    assert json.loads((out / "shots" / "a.json").read_text())["model"]["family"] == "cogvideox"
