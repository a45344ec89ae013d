"""HunyuanVideo 1.5 family on tiny random models saved as real HunyuanVideo15Pipeline and
HunyuanVideo15ImageToVideoPipeline folders (CPU, offline): parity with the diffusers pipelines through reel's own
loop, batching, locked seeds, LoRA formats, `reel render`, and the shipped estimator config.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/models/test_hunyuan15.py
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reel.engine.lora_bank import AdapterBank
from reel.engine.sampling import guided, sample
from reel.models import hunyuan15

PROMPT = 'a red circle moving left on a black background with the text "hello"'
OTHER = "a blue square moving up on a gray background"
NEGATIVE = "gray"
TEXT_LEN, W, H, FRAMES, STEPS, GUIDANCE, SHIFT = 16, 32, 32, 9, 3, 4.0, 5.0
CPU = torch.device("cpu")


def build_tiny_hunyuan15(path: Path, seed: int = 0, *, i2v: bool = False, meanflow: bool = False) -> Path:
    """A random tiny HunyuanVideo 1.5 folder: Qwen2.5-VL text tower (3 layers, 32 wide) with a word tokenizer that
    crops the pipeline's chat head at its 108 tokens, ByT5 (real byte tokenizer, 1 layer), VAE 16x spatial / 4x
    temporal with 4 latent channels (sizes % 16, 4k+1 frames), a 1-block transformer; I2V adds SigLIP (28 px)."""
    from diffusers import (AutoencoderKLHunyuanVideo15, ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler,
                           HunyuanVideo15ImageToVideoPipeline, HunyuanVideo15Pipeline,
                           HunyuanVideo15Transformer3DModel)
    from transformers import (ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, SiglipImageProcessor,
                              SiglipVisionConfig, SiglipVisionModel, T5Config, T5EncoderModel)

    from reel.models.standin_encoders import qwen_like_tokenizer

    torch.manual_seed(seed)
    tokenizer = qwen_like_tokenizer(TEXT_LEN, words=(PROMPT + " " + OTHER + " " + NEGATIVE).replace('"', "").split())
    text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        rope_scaling={"type": "mrope", "rope_type": "default", "mrope_section": [2, 1, 1]}))
    tokenizer_2 = ByT5Tokenizer()
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=16, d_kv=8, d_ff=24, num_layers=1,
                                             num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=1,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=32, text_embed_2_dim=16,
        image_embed_dim=8, rope_axes_dim=(4, 4, 4), target_size=32, task_type="i2v" if i2v else "t2v",
        use_meanflow=meanflow)
    vae = AutoencoderKLHunyuanVideo15(latent_channels=4, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1,
                                      spatial_compression_ratio=16, temporal_compression_ratio=4)
    parts = dict(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
                 scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT), text_encoder_2=text_encoder_2,
                 tokenizer_2=tokenizer_2, guider=ClassifierFreeGuidance(guidance_scale=GUIDANCE))
    if i2v:
        image_encoder = SiglipVisionModel(SiglipVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                                             num_attention_heads=2, image_size=28, patch_size=14))
        pipe = HunyuanVideo15ImageToVideoPipeline(image_encoder=image_encoder,
                                                  feature_extractor=SiglipImageProcessor(size={"height": 28,
                                                                                               "width": 28}), **parts)
    else:
        pipe = HunyuanVideo15Pipeline(**parts)
    pipe.save_pretrained(path)
    defaults = {"width": W, "height": H, "frames": FRAMES, "fps": 24, "steps": STEPS, "guidance": GUIDANCE,
                "shift": SHIFT, "max_sequence_length": TEXT_LEN, "negative_prompt": NEGATIVE}
    (path / "reel.json").write_text(json.dumps(defaults, indent=2) + "\n")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_tiny_hunyuan15(tmp_path_factory.mktemp("models") / "tiny-hv15")


@pytest.fixture(scope="module")
def comps(folder):
    return hunyuan15.load(folder, CPU, torch.float32)


def diffusers_pipe(folder: Path, guidance: float = GUIDANCE):
    """The folder's own diffusers pipeline, with reel's text length and guidance set where the pipeline keeps them
    (its tokenizer_max_length attribute and its guider's guidance_scale: __call__ takes neither)."""
    import diffusers

    cls = json.loads((folder / "model_index.json").read_text())["_class_name"]
    pipe = getattr(diffusers, cls).from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.tokenizer_max_length = TEXT_LEN
    pipe.guider = pipe.guider.new(guidance_scale=guidance)
    return pipe


def reel_video(comps, prompts: list[str], seeds: list[int], *, guidance: float = GUIDANCE, image=None,
               scheduler: str = "default") -> np.ndarray:
    """reel's loop (engine.sampling.guided + sample) as the engine runs a batch: (B, F, H, W, 3) in [0, 1]."""
    cond = hunyuan15.encode_prompts(comps, prompts, TEXT_LEN)
    uncond = hunyuan15.encode_prompts(comps, [NEGATIVE] * len(prompts), TEXT_LEN)
    image_cond = None
    if image is not None:
        from reel.engine.sampling import cat_cond

        image_cond = cat_cond([hunyuan15.image_condition(comps, image, FRAMES, H, W, seed=s) for s in seeds])
        cond, uncond = {**cond, **image_cond}, {**uncond, **image_cond}
    shape = hunyuan15.latent_shape(comps, FRAMES, H, W)  # (4, 3, 2, 2)
    noise = torch.cat([hunyuan15.initial_noise(shape, s, CPU) for s in seeds])
    sampler = hunyuan15.make_sampler(comps, scheduler, SHIFT, shape=shape, image=image_cond, seeds=seeds)
    latents = sample(sampler, guided(lambda x, t, c: hunyuan15.velocity(comps, x, t, c), cond, uncond, guidance),
                     noise, STEPS)
    video = torch.cat(list(hunyuan15.decode_stream(comps, latents, seeds=seeds, frames=FRAMES)), dim=2)
    return video.permute(0, 2, 3, 4, 1).numpy()  # (B, F, H, W, 3)


def test_registry_factors_and_defaults(folder, comps):
    from reel.models.registry import resolve_model

    info = resolve_model(str(folder))
    assert info.family.name == "hunyuan15" and info.pipeline == "HunyuanVideo15Pipeline" and not info.takes_image
    assert info.temporal_factor == comps.temporal_factor == 4
    assert info.size_multiple == comps.spatial_factor * comps.transformer.config.patch_size == 16
    assert info.family.guidance == "cfg" and info.scheduler_problem("default") is None
    assert info.defaults["max_sequence_length"] == TEXT_LEN and info.defaults["negative_prompt"] == NEGATIVE


def test_prompt_embeddings_equal_the_pipelines(folder, comps):
    pipe = diffusers_pipe(folder)
    ours = hunyuan15.encode_prompts(comps, [PROMPT, OTHER, ""], TEXT_LEN)
    with torch.no_grad():  # as __call__ runs it
        embeds, mask, embeds_2, mask_2 = pipe.encode_prompt(prompt=[PROMPT, OTHER, ""], device=CPU,
                                                             dtype=torch.float32, batch_size=3)
    assert ours["embeds"].shape == (3, TEXT_LEN, 32) and ours["embeds_2"].shape == (3, 256, 16)
    assert torch.equal(ours["embeds"], embeds) and torch.equal(ours["mask"], mask.long())
    assert torch.equal(ours["embeds_2"], embeds_2) and torch.equal(ours["mask_2"], mask_2.long())
    # the chat head is cropped at the pipeline's 108 tokens: the prompt's words start the mask
    assert comps.crop_start == 108 and int(ours["mask"][1].sum()) == len(OTHER.split()) + 5  # + <|im_end|> ... \n
    assert int(ours["mask_2"][0].sum()) > 0 and int(ours["mask_2"][1].sum()) == 0  # glyph text only when quoted


def test_t2v_frames_match_hunyuanvideo15pipeline(folder, comps):
    pipe = diffusers_pipe(folder)
    ref = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=H, width=W, num_frames=FRAMES,
               num_inference_steps=STEPS, generator=torch.Generator("cpu").manual_seed(1234),
               output_type="np").frames[0]  # (F, H, W, 3)
    ours = reel_video(comps, [PROMPT], [1234])[0]
    assert ours.shape == ref.shape == (FRAMES, H, W, 3)
    diff = float(np.abs(ours - ref).max())
    print(f"T2V parity max abs diff {diff:.2e}")
    assert diff <= 1e-4 and float(ref.std()) > 0.01  # not two blank videos
    assert float(np.abs(reel_video(comps, [PROMPT], [1234], guidance=1.0)[0] - ours).max()) > 1e-3  # cfg acts


@pytest.mark.parametrize("meanflow", [False, True])
def test_i2v_frames_match_hunyuanvideo15imagetovideopipeline(tmp_path, meanflow):
    from PIL import Image

    folder = build_tiny_hunyuan15(tmp_path / "tiny-hv15-i2v", seed=1, i2v=True, meanflow=meanflow)
    comps = hunyuan15.load(folder, CPU, torch.float32)
    image = np.random.default_rng(3).integers(0, 255, (H, W, 3), dtype=np.uint8)  # its size bucket is H x W
    pipe = diffusers_pipe(folder)
    ref = pipe(image=Image.fromarray(image), prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=FRAMES,
               num_inference_steps=STEPS, generator=torch.Generator("cpu").manual_seed(77),
               output_type="np").frames[0]
    ours = reel_video(comps, [PROMPT], [77], image=image)[0]
    assert ours.shape == ref.shape == (FRAMES, H, W, 3)
    diff = float(np.abs(ours - ref).max())
    print(f"I2V (meanflow={meanflow}) parity max abs diff {diff:.2e}")
    assert diff <= 1e-4
    other = np.random.default_rng(4).integers(0, 255, (H, W, 3), dtype=np.uint8)
    assert float(np.abs(reel_video(comps, [PROMPT], [77], image=other)[0] - ours).max()) > 1e-3  # the image acts
    with pytest.raises(ValueError, match="text-to-video HunyuanVideo 1.5 folder"):
        hunyuan15.image_condition(hunyuan15.load(build_tiny_hunyuan15(tmp_path / "t2v"), CPU, torch.float32),
                                  image, FRAMES, H, W)


def test_two_prompts_batched_equal_each_alone_and_seeds_are_locked(comps):
    both = reel_video(comps, [PROMPT, OTHER], [5, 6])
    alone = [reel_video(comps, [p], [s])[0] for p, s in ((PROMPT, 5), (OTHER, 6))]
    assert float(np.abs(both[0] - alone[0]).max()) <= 1e-5 and float(np.abs(both[1] - alone[1]).max()) <= 1e-5
    assert np.array_equal(reel_video(comps, [PROMPT], [5])[0], alone[0])  # same seed twice: identical
    assert float(np.abs(reel_video(comps, [PROMPT], [8])[0] - alone[0]).max()) > 1e-3  # another seed: different


def test_samplers(comps, folder):
    from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import retrieve_timesteps

    ref = diffusers_pipe(folder).scheduler
    retrieve_timesteps(ref, 5, "cpu", sigmas=np.linspace(1.0, 0.0, 6)[:-1])
    seen = []
    hunyuan15.make_sampler(comps, "default", SHIFT)(lambda x, t, i: seen.append(t) or torch.ones_like(x),
                                                    torch.zeros(1, 2), 5, None)
    assert torch.equal(torch.stack(seen), ref.timesteps)
    for name in ("euler", "unipc", "lcm"):
        video = reel_video(comps, [PROMPT], [2], scheduler=name)
        assert video.shape == (1, FRAMES, H, W, 3) and np.isfinite(video).all()
    with pytest.raises(ValueError, match="unknown scheduler"):
        hunyuan15.make_sampler(comps, "ddim", SHIFT)


# -- LoRA --------------------------------------------------------------------------------------------------------
# original (Tencent / ComfyUI / musubi-tuner) module in double block 0 -> the diffusers module(s) it becomes
DOUBLE = {"img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "img_attn_proj": ("attn.to_out.0",),
          "txt_attn_q": ("attn.add_q_proj",), "txt_attn_k": ("attn.add_k_proj",), "txt_attn_v": ("attn.add_v_proj",),
          "txt_attn_proj": ("attn.to_add_out",), "img_mlp.fc1": ("ff.net.0.proj",), "img_mlp.fc2": ("ff.net.2",),
          "txt_mlp.fc2": ("ff_context.net.2",), "img_mod.linear": ("norm1.linear",)}


def write_loras(transformer, tmp: Path, rank: int = 2, alpha: float = 4.0) -> dict[str, Path]:
    """The same low-rank update to block 0 in three formats: diffusers (`transformer.`, lora_A/B), ComfyUI
    (`diffusion_model.` original names, lora_down/up + alpha) and kohya / musubi-tuner (`lora_unet_`, + alpha)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    mods = dict(transformer.named_modules())
    files = {"diffusers": {}, "comfyui": {}, "kohya": {}}
    for orig, targets in DOUBLE.items():
        lins = [mods[f"transformer_blocks.0.{t}"] for t in targets]
        a = torch.randn((rank, lins[0].in_features), generator=g) * 0.5  # (r, in), shared by a fused q, k, v
        bs = [torch.randn((lin.out_features, rank), generator=g) * 0.5 for lin in lins]  # (out, r) each
        for t, b in zip(targets, bs):
            files["diffusers"][f"transformer.transformer_blocks.0.{t}.lora_A.weight"] = a
            files["diffusers"][f"transformer.transformer_blocks.0.{t}.lora_B.weight"] = b
        for fmt, name in (("comfyui", f"diffusion_model.double_blocks.0.{orig}"),
                          ("kohya", f"lora_unet_double_blocks_0_{orig.replace('.', '_')}")):
            files[fmt][f"{name}.lora_down.weight"] = a
            files[fmt][f"{name}.lora_up.weight"] = torch.cat(bs) * (rank / alpha)
            files[fmt][f"{name}.alpha"] = torch.tensor(alpha)
    paths = {}
    for fmt, tensors in files.items():
        paths[fmt] = tmp / f"hero-{fmt}.safetensors"
        save_file({k: v.clone().contiguous() for k, v in tensors.items()}, str(paths[fmt]))
    return paths


def test_lora_formats_convert_alike_and_load_through_the_adapter_bank(folder, tmp_path):
    from safetensors.torch import load_file

    comps = hunyuan15.load(folder, CPU, torch.float32)  # its own: adapters stay out of the other tests
    paths = write_loras(comps.transformer, tmp_path)
    converted = {fmt: hunyuan15.lora_to_diffusers(load_file(str(p))) for fmt, p in paths.items()}
    assert set(converted["comfyui"]) == set(converted["kohya"]) == set(converted["diffusers"])
    assert len(converted["diffusers"]) == 2 * 12  # lora_A and lora_B of 12 Linears
    for key, value in converted["diffusers"].items():
        assert torch.allclose(converted["comfyui"][key], value) and torch.allclose(converted["kohya"][key], value)
    cond = hunyuan15.encode_prompts(comps, [PROMPT], TEXT_LEN)
    x = hunyuan15.initial_noise(hunyuan15.latent_shape(comps, FRAMES, H, W), 0, CPU)
    t = torch.tensor(900.0)
    bank = AdapterBank(comps.transformer, hunyuan15.lora_to_diffusers)
    with torch.no_grad():
        base = hunyuan15.velocity(comps, x, t, cond)
        outs = {}
        for fmt, path in paths.items():
            bank.load(f"hero_{fmt}", path)
            bank.activate([(f"hero_{fmt}", 1.0)])
            outs[fmt] = hunyuan15.velocity(comps, x, t, cond)
        bank.activate([])
        off = hunyuan15.velocity(comps, x, t, cond)
    assert float((outs["diffusers"] - base).abs().max()) > 1e-3
    assert torch.allclose(outs["comfyui"], outs["diffusers"], atol=1e-5)
    assert torch.allclose(outs["kohya"], outs["diffusers"], atol=1e-5)
    assert torch.equal(off, base)
    with pytest.raises(ValueError, match="single_blocks.0.linear1"):
        hunyuan15.lora_to_diffusers({"diffusion_model.single_blocks.0.linear1.lora_A.weight": torch.zeros(2, 4),
                                     "diffusion_model.single_blocks.0.linear1.lora_B.weight": torch.zeros(4, 2)})


# -- reel render --------------------------------------------------------------------------------------------------
FILM = """
[film]
title = "Tiny HunyuanVideo 1.5"
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
    for sid, n in (("a", FRAMES), ("b", 5)):
        clip, fps = read_video(out / "shots" / f"{sid}.mp4")
        assert clip.shape == (n, H, W, 3) and fps == 24 and clip.std() > 1.0
        m = json.loads((out / "shots" / f"{sid}.json").read_text())
        assert m["model"]["family"] == "hunyuan15" and m["frames"] == n and m["steps"] == STEPS
        assert m["guidance"] == GUIDANCE and m["scheduler"] == "default" and m["shift"] == SHIFT
    film, fps = read_video(out / "film.mp4")
    assert film.shape == (FRAMES + 5, H, W, 3) and fps == 24


# -- the shipped estimator config and `reel bench`'s random folder ------------------------------------------------
CONFIG = "hunyuanvideo-1.5-t2v"


def test_config_parameter_counts_and_sources():
    from reel.models.random_model import build_module, read_config

    cfg = read_config(CONFIG)
    for part in ("transformer", "vae"):
        model = build_module(cfg[part], "meta")
        assert sum(p.numel() for p in model.parameters()) == cfg[part]["params"], part

    def numbers_without_source(node, where="", sourced=False) -> list[str]:
        """Numbers in a section with no "_source" of its own or its parent's (a part's covers its config)."""
        if not isinstance(node, dict):
            return []
        here = sourced or "_source" in node
        bare = [] if here else [f"{where}.{k}" for k, v in node.items()
                                if isinstance(v, (int, float, list)) and not isinstance(v, bool)]
        return bare + [m for k, v in node.items() for m in numbers_without_source(v, f"{where}.{k}", "_source" in node)]

    assert numbers_without_source(cfg) == []


def test_shrunk_random_folder_loads_with_reel_and_diffusers(tmp_path):
    import diffusers

    from reel.models.random_model import build_random_folder
    from reel.models.registry import resolve_model

    folder = build_random_folder(CONFIG, tmp_path / "hv15", shrink=True, seed=1)
    info = resolve_model(str(folder))
    assert info.family.name == "hunyuan15" and info.defaults["steps"] == 2
    comps = hunyuan15.load(folder, CPU, torch.float32)
    assert comps.crop_start == 108  # the stand-in tokenizer crops the chat head like Qwen2.5-VL's
    d = info.defaults
    cond = hunyuan15.encode_prompts(comps, [PROMPT], 32)
    shape = hunyuan15.latent_shape(comps, d["frames"], d["height"], d["width"])
    noise = hunyuan15.initial_noise(shape, 0, CPU)
    with torch.no_grad():
        v = hunyuan15.velocity(comps, noise, torch.tensor(500.0), cond)
    assert v.shape == noise.shape and torch.isfinite(v).all()
    video = next(hunyuan15.decode_stream(comps, noise))
    assert video.shape == (1, 3, d["frames"], d["height"], d["width"])
    pipe = diffusers.HunyuanVideo15Pipeline.from_pretrained(folder, local_files_only=True)
    assert pipe.transformer.config.in_channels == 65 and pipe.guider.guidance_scale == 6.0


I2V_FILM = """
[film]
title = "Tiny HunyuanVideo 1.5 I2V"
model = "{model}"
seed = 3

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"
image = "{image}"

[[shots]]
id = "b"
prompt = "a blue square moving up on a gray background"
continue_from = "a"
"""


def test_reel_render_image_to_video_and_continuation(tmp_path):
    from PIL import Image

    from reel.engine.cli import app
    from reel.engine.post.contact import read_video

    folder = build_tiny_hunyuan15(tmp_path / "tiny-hv15-i2v", i2v=True)
    image = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(image)
    spec = tmp_path / "film.toml"
    spec.write_text(textwrap.dedent(I2V_FILM).replace("{model}", str(folder)).replace("{image}", str(image)))
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 rendered, 0 reused" in result.output
    for sid in ("a", "b"):
        clip, fps = read_video(tmp_path / "out" / "shots" / f"{sid}.mp4")
        assert clip.shape == (FRAMES, H, W, 3) and fps == 24 and clip.std() > 1.0


def test_the_folders_guider_and_scheduler_give_its_defaults(tmp_path):
    """A cfg-distilled folder's guider says guidance 1.0 and a 720p scheduler shift 9: reel reads them as the
    pipeline does (reel.json still overrides)."""
    import json as json_

    from reel.models.registry import resolve_model

    folder = build_tiny_hunyuan15(tmp_path / "m")
    (folder / "reel.json").unlink(missing_ok=True)
    guider = folder / "guider" / "guider_config.json"
    guider.write_text(json_.dumps({**json_.loads(guider.read_text()), "guidance_scale": 1.0}))
    sched = folder / "scheduler" / "scheduler_config.json"
    sched.write_text(json_.dumps({**json_.loads(sched.read_text()), "shift": 9.0}))
    info = resolve_model(str(folder))
    assert info.defaults["shift"] == 9.0 and info.defaults["guidance"] == 1.0
    (folder / "reel.json").write_text(json_.dumps({"shift": 5.0}))
    assert resolve_model(str(folder)).defaults["shift"] == 5.0
