"""SkyReels-V2 family on a tiny random SkyReelsV2DiffusionForcingPipeline folder (CPU, offline): parity with the
diffusers pipeline through reel's own loop for short shots and for long shots (diffusion forcing, render_long),
exact stitched frame counts, flat memory in the shot's length, locked seeds, LoRA formats, single files, the
shipped estimator config and its `reel bench` random folder.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/models/test_skyreels.py -q
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from reel.engine.sampling import guided, sample
from reel.models import skyreels
from reel.models.tiny import TINY_WORDS

PROMPT, NEGATIVE = "a red circle moving left", "a blue square"
TEXT_LEN, SIZE, SHIFT, GUIDANCE = 16, 32, 8.0, 4.0
CPU = torch.device("cpu")


def build_tiny_skyreels(path: Path, seed: int = 0, pipeline: str = "SkyReelsV2DiffusionForcingPipeline") -> Path:
    """A random tiny SkyReels-V2 folder (Wan VAE 4x spatial, 4x temporal; patch 2: sizes % 16 as the pipeline
    checks, 4k+1 frames). DF by default, with the fps embedding of SkyReels-V2-DF-1.3B (inject_sample_info)."""
    import diffusers
    from diffusers import AutoencoderKLWan, SkyReelsV2Transformer3DModel, UniPCMultistepScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    from reel.models.wordtok import build_word_tokenizer

    diffusers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(TINY_WORDS, model_max_length=TEXT_LEN)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1))
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True],
                           latents_mean=[0.1, -0.2, 0.0, 0.3], latents_std=[1.5, 0.8, 1.0, 1.2],
                           scale_factor_spatial=4, scale_factor_temporal=4)
    df = pipeline == "SkyReelsV2DiffusionForcingPipeline"
    transformer = SkyReelsV2Transformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, text_dim=32,
        freq_dim=32, ffn_dim=48, num_layers=2, rope_max_seq_len=64, inject_sample_info=df)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=SHIFT)
    pipe = getattr(diffusers, pipeline)(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                                        vae=vae, scheduler=scheduler)
    pipe.save_pretrained(path)
    defaults = {"width": SIZE, "height": SIZE, "frames": 9, "fps": 24, "steps": 3, "guidance": GUIDANCE,
                "shift": SHIFT, "max_sequence_length": TEXT_LEN, "negative_prompt": ""}
    (Path(path) / "reel.json").write_text(json.dumps(defaults, indent=2) + "\n")
    return Path(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_tiny_skyreels(tmp_path_factory.mktemp("models") / "tiny-skyreels-df")


@pytest.fixture(scope="module")
def comps(folder):
    return skyreels.load(folder, CPU, torch.float32)


@pytest.fixture(scope="module")
def pipe(folder):
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    p = SkyReelsV2DiffusionForcingPipeline.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    p.set_progress_bar_config(disable=True)
    return p


def guided_denoiser(comps, guidance: float = GUIDANCE, fps: int = 24):
    """The engine's denoiser: cond and uncond in one batch, the fps flag from batch_conditioning."""
    def cond_of(text):
        return skyreels.batch_conditioning(comps, skyreels.encode_prompts(comps, [text], TEXT_LEN),
                                           guidance=guidance, fps=fps, batch=1)

    return guided(lambda x, t, c: skyreels.velocity(comps, x, t, c), cond_of(PROMPT), cond_of(NEGATIVE), guidance)


def reference(pipe, frames: int, seed: int, steps: int, **long) -> np.ndarray:
    """SkyReelsV2DiffusionForcingPipeline's frames (F, H, W, 3) in [0, 1] (the folder's UniPC, flow_shift 8)."""
    return pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=frames,
                num_inference_steps=steps, guidance_scale=GUIDANCE, max_sequence_length=TEXT_LEN, output_type="np",
                generator=torch.Generator("cpu").manual_seed(seed), fps=24, **long).frames[0]


def as_frames(chunks) -> np.ndarray:
    return torch.cat(list(chunks), dim=2)[0].permute(1, 2, 3, 0).numpy()  # (F, H, W, 3)


def long_shot(comps, denoiser, frames: int, seed: int = 5, steps: int = 3, window: int = 17, overlap: int = 5,
              **kw) -> list[torch.Tensor]:
    return list(skyreels.render_long(comps, denoiser, frames=frames, height=SIZE, width=SIZE, window=window,
                                     overlap=overlap, steps=steps, shift=SHIFT, seed=seed, scheduler="default", **kw))


def test_registry_entry_and_folder(folder, comps):
    from reel.models.registry import resolve_model

    info = resolve_model(str(folder))
    fam = info.family
    assert fam.name == "skyreels" and info.pipeline == "SkyReelsV2DiffusionForcingPipeline" and not info.takes_image
    assert (info.temporal_factor, info.size_multiple) == (4, 8) and comps.diffusion_forcing
    assert fam.long_shots == "diffusion-forcing" and (fam.long_window, fam.long_overlap) == (97, 17)
    assert (fam.default_width, fam.default_height, fam.default_frames, fam.default_fps) == (960, 544, 97, 24)
    assert comps.scheduler_config["_class_name"] == "UniPCMultistepScheduler"


def test_short_shot_matches_the_df_pipeline(comps, pipe):
    """frames <= window: reel's sampler over the guided denoiser (t expanded per latent frame) == the pipeline."""
    noise = skyreels.initial_noise(skyreels.latent_shape(comps, 9, SIZE, SIZE), 7, CPU)  # (1, 4, 3, 8, 8)
    latents = sample(skyreels.make_sampler(comps, "default", SHIFT), guided_denoiser(comps), noise, 3)
    ours = as_frames(skyreels.decode_stream(comps, latents))
    ref = reference(pipe, 9, 7, 3)
    assert ours.shape == ref.shape == (9, SIZE, SIZE, 3) and float(ref.std()) > 0.01
    assert float(np.abs(ours - ref).max()) <= 1e-3
    # render_long of a shot within one window is the same short shot
    assert float(np.abs(as_frames(long_shot(comps, guided_denoiser(comps), 9, seed=7)) - ref).max()) <= 1e-3


def test_long_shot_matches_the_df_pipeline(comps, pipe):
    """33 frames, window 17, overlap 5: three chunks (5, 5, 3 latent frames) == the pipeline's long video."""
    chunks = long_shot(comps, guided_denoiser(comps), 33)
    assert [c.shape[2] for c in chunks] == [17, 12, 4]
    ours = as_frames(chunks)
    ref = reference(pipe, 33, 5, 3, base_num_frames=17, overlap_history=5)
    assert ours.shape == ref.shape == (33, SIZE, SIZE, 3)
    diff = float(np.abs(ours - ref).max())
    assert diff <= 1e-3, diff
    assert float(np.abs(ours[17:] - ours[:16]).max()) > 1e-2  # later chunks are not copies of the first


def test_fps_and_guidance_are_real_inputs(comps):
    x = skyreels.initial_noise(skyreels.latent_shape(comps, 9, SIZE, SIZE), 1, CPU)
    t = torch.tensor(700)
    v24, v16 = (guided_denoiser(comps, fps=f)(x, t, 0) for f in (24, 16))
    v_low = guided_denoiser(comps, guidance=1.5)(x, t, 0)
    assert float((v24 - v16).abs().max()) > 1e-4 and float((v24 - v_low).abs().max()) > 1e-4
    per_frame = torch.tensor([[700, 700, 0]])
    v = skyreels.velocity(comps, x, per_frame, {"embeds": skyreels.encode_prompts(comps, [PROMPT], TEXT_LEN)})
    assert v.shape == x.shape
    with pytest.raises(ValueError, match="do not fit"):
        skyreels.velocity(comps, x, torch.tensor([[700, 0]]), skyreels.encode_prompts(comps, [PROMPT], TEXT_LEN))


def shapes_seen(comps, frames: int, window: int = 17, overlap: int = 5):
    """(pixel chunk frame counts, latent shapes and timestep shapes the denoiser received, on_step calls) with a
    cheap stand-in denoiser (no model call: only the chunking is under test)."""
    seen, steps = [], []

    def denoiser(x, t, i):
        seen.append((tuple(x.shape), tuple(t.shape)))
        return torch.zeros_like(x)

    chunks = long_shot(comps, denoiser, frames, steps=2, window=window, overlap=overlap,
                       on_step=lambda k, i, t, x: steps.append((k, i, type(t), x.shape[2])))
    return [c.shape[2] for c in chunks], seen, steps, chunks


@pytest.mark.parametrize("frames", [17, 21, 33, 45, 61, 97])
def test_stitched_frame_count_is_exact(comps, frames):
    counts, seen, steps, chunks = shapes_seen(comps, frames)
    assert sum(counts) == frames
    assert all(c.shape[:2] == (1, 3) and c.shape[3:] == (SIZE, SIZE) for c in chunks)
    assert all(float(c.min()) >= 0.0 and float(c.max()) <= 1.0 for c in chunks)
    latent = skyreels.long_chunks((frames - 1) // 4 + 1, 5, 2)
    assert len(counts) == len(latent) and len(steps) == 2 * len(latent)
    assert all(t is float for _, _, t, _ in steps)  # on_step gets t as a Python float
    assert [s[0] for s in steps] == [k for k in range(len(latent)) for _ in range(2)]


def test_memory_is_flat_in_the_shots_length(comps):
    """Whatever `frames`, the denoiser never sees more than one window of latent frames, with t per frame."""
    for frames in (33, 65, 129):
        _, seen, _, chunks = shapes_seen(comps, frames)
        assert max(x[2] for x, _ in seen) == 5  # window 17 frames = 5 latent frames
        assert all(t == (1, x[2]) for x, t in seen)  # one timestep per latent frame
        assert max(c.shape[2] for c in chunks) <= 17
    # chunk k > 0 holds the 2 overlap latent frames clean (t = 0) and steps the rest
    seen_t = []
    long_shot(comps, lambda x, t, i: seen_t.append(t.clone()) or torch.zeros_like(x), 33, steps=2)
    assert all(float(t[0, 0]) > 0 for t in seen_t[:2])  # chunk 0: all frames noisy
    assert all(t[0, :2].eq(0).all() and t[0, 2:].gt(0).all() for t in seen_t[2:])


def test_same_seed_locks_the_long_shot(comps):
    a = as_frames(long_shot(comps, guided_denoiser(comps), 25, seed=11, steps=2))
    b = as_frames(long_shot(comps, guided_denoiser(comps), 25, seed=11, steps=2))
    c = as_frames(long_shot(comps, guided_denoiser(comps), 25, seed=12, steps=2))
    assert np.array_equal(a, b) and float(np.abs(a - c).max()) > 1e-3


def test_long_shots_refuse_bad_input(comps, tmp_path):
    def first(**kw):
        args = {"frames": 33, "window": 17, "overlap": 5, **kw}
        return next(iter(skyreels.render_long(comps, None, height=SIZE, width=SIZE, steps=2, shift=SHIFT, seed=1,
                                              scheduler="default", **args)))

    with pytest.raises(ValueError, match="frames = 30: must be 4k"):
        first(frames=30)
    with pytest.raises(ValueError, match="overlap_frames = 17"):
        first(overlap=17)
    with pytest.raises(ValueError, match="text-to-video only"):
        first(image={"condition": torch.zeros(1)})
    plain = skyreels.load(build_tiny_skyreels(tmp_path / "plain", pipeline="SkyReelsV2Pipeline"), CPU, torch.float32)
    assert not plain.diffusion_forcing
    with pytest.raises(ValueError, match="need a SkyReels-V2 DF folder"):
        next(iter(skyreels.render_long(plain, None, frames=33, height=SIZE, width=SIZE, window=17, overlap=5,
                                       steps=2, shift=SHIFT, seed=1, scheduler="default")))


def test_plain_skyreels_pipeline_folder_matches(tmp_path):
    from diffusers import SkyReelsV2Pipeline

    folder = build_tiny_skyreels(tmp_path / "t2v", seed=3, pipeline="SkyReelsV2Pipeline")
    comps = skyreels.load(folder, CPU, torch.float32)
    noise = skyreels.initial_noise(skyreels.latent_shape(comps, 9, SIZE, SIZE), 2, CPU)
    latents = sample(skyreels.make_sampler(comps, "default", SHIFT), guided_denoiser(comps), noise, 3)
    pipe = SkyReelsV2Pipeline.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=9, num_inference_steps=3,
               guidance_scale=GUIDANCE, max_sequence_length=TEXT_LEN, output_type="np",
               generator=torch.Generator("cpu").manual_seed(2)).frames[0]
    assert float(np.abs(as_frames(skyreels.decode_stream(comps, latents)) - ref).max()) <= 1e-3


def test_samplers_by_name(comps):
    x = torch.zeros(1, 2)
    for name in ("default", "unipc", "euler", "lcm"):
        seen = []
        skyreels.make_sampler(comps, name, SHIFT, seeds=[1])(lambda x, t, i: seen.append(t) or torch.zeros_like(x),
                                                             x, 4, None)
        assert len(seen) == 4, name
    with pytest.raises(ValueError, match="unknown scheduler"):
        skyreels.make_sampler(comps, "ddim", SHIFT)


def test_lora_formats_load_through_the_adapter_bank(comps, tmp_path):
    """The same update as diffusers, ComfyUI (`diffusion_model.`) and kohya/musubi (`lora_unet_`) files, converted
    by diffusers' SkyReels/Wan converters, changes the velocity identically; off restores it."""
    from reel.engine.lora_bank import AdapterBank
    from tests.lora_files import random_lora, write_lora

    lora = random_lora(comps.transformer, seed=4)
    paths = {fmt: write_lora(lora, tmp_path / f"{fmt}.safetensors", fmt) for fmt in ("diffusers", "comfyui", "kohya")}
    x = skyreels.initial_noise(skyreels.latent_shape(comps, 9, SIZE, SIZE), 0, CPU)
    cond = {"embeds": skyreels.encode_prompts(comps, [PROMPT], TEXT_LEN), "fps": 1}
    t = torch.tensor(800)
    bank = AdapterBank(comps.transformer, skyreels.lora_to_diffusers)
    with torch.no_grad():
        base = skyreels.velocity(comps, x, t, cond)
        for fmt, path in paths.items():
            bank.load(fmt, path)
        outs = {}
        for fmt in paths:
            bank.activate([(fmt, 1.0)])
            outs[fmt] = skyreels.velocity(comps, x, t, cond)
        bank.activate([])
        off = skyreels.velocity(comps, x, t, cond)
    assert float((outs["diffusers"] - base).abs().max()) > 1e-3
    assert torch.allclose(outs["comfyui"], outs["diffusers"], atol=1e-5)
    assert torch.allclose(outs["kohya"], outs["diffusers"], atol=1e-5)
    assert torch.equal(off, base)


# diffusers name -> original (Wan/SkyReels) name, the inverse of diffusers' convert_wan_transformer_to_diffusers
INVERSE = [("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
           ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
           ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
           ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
           ("condition_embedder.time_proj", "time_projection.1"), ("attn2", "cross_attn"), ("attn1", "self_attn"),
           (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
           ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"), ("proj_out", "head.head")]


def test_single_file_transformer_loads_like_the_folder(folder, comps, tmp_path):
    """A ComfyUI-style single file named in reel.json (transformer_file) loads through diffusers' from_single_file
    with the folder's config and gives the folder's velocity. (Its fps layers keep diffusers names here: diffusers'
    Wan converter, which SkyReels files go through, has no rename for SkyReels' original fps_projection.0/.2.)"""
    import shutil

    from safetensors.torch import save_file

    from diffusers import SkyReelsV2Transformer3DModel

    state = {}  # from the folder's weights (comps' transformer may carry other tests' LoRA layers)
    for k, v in SkyReelsV2Transformer3DModel.from_pretrained(folder / "transformer").state_dict().items():
        n = k
        if not n.startswith("fps_"):
            for a, b in INVERSE:
                n = n.replace(a, b)
            n = "head.modulation" if n == "scale_shift_table" else n.replace(".scale_shift_table", ".modulation")
            n = re.sub(r"\.norm2\.", ".normX.", n).replace(".norm3.", ".norm2.").replace(".normX.", ".norm3.")
        state["model.diffusion_model." + n] = v.contiguous()
    file = tmp_path / "skyreels.safetensors"
    save_file(state, str(file))
    single = tmp_path / "single"
    shutil.copytree(folder, single)
    for weights in (single / "transformer").glob("diffusion_pytorch_model*"):
        weights.unlink()
    reel = json.loads((single / "reel.json").read_text())
    (single / "reel.json").write_text(json.dumps({**reel, "transformer_file": str(file)}))
    other = skyreels.load(single, CPU, torch.float32)
    x = skyreels.initial_noise(skyreels.latent_shape(comps, 9, SIZE, SIZE), 0, CPU)
    cond = {"embeds": skyreels.encode_prompts(comps, [PROMPT], TEXT_LEN), "fps": 1}
    with torch.no_grad():
        assert torch.equal(skyreels.velocity(other, x, torch.tensor(500), cond),
                           skyreels.velocity(comps, x, torch.tensor(500), cond))


# -- the shipped estimator config and its `reel bench` random folder -----------------------------------------------

CONFIG = "skyreels-v2-df-1.3b-540p"


def test_config_counts_and_sources():
    from reel.models.random_model import build_module, read_config

    cfg = read_config(CONFIG)
    for part in ("transformer", "vae"):
        model = build_module(cfg[part], "meta")  # allocates nothing
        assert sum(p.numel() for p in model.parameters()) == cfg[part]["params"], part
    for section in ("pipeline", "transformer", "vae", "text_encoder", "long_shots"):
        assert cfg[section].get("_source"), section


def test_estimator_measures_the_transformer_on_the_meta_device():
    """engine/estimate_meta.py runs the CFG forward (2 rows) with meta_inputs, with and without the fps flag: the
    FLOPs are the same-sized Wan 2.1 1.3B's within 0.1%; the per-frame timesteps' per-token modulation raises the
    activation peak above Wan's (a real cost of diffusers' DF forward)."""
    import copy

    from reel.engine.estimate_meta import measure_transformer
    from reel.models.random_model import read_config

    cfg = read_config(CONFIG)
    wan_cost = measure_transformer(read_config("wan2.1-t2v-1.3b")["transformer"], "wan", (25, 68, 120), 2, 512)
    no_fps = copy.deepcopy(cfg["transformer"])
    no_fps["config"]["inject_sample_info"] = False
    costs = [measure_transformer(entry, "skyreels", (25, 68, 120), 2, 512) for entry in (cfg["transformer"], no_fps)]
    for cost in costs:
        assert abs(cost.flops / wan_cost.flops - 1) < 1e-3 and cost.peak_bytes > wan_cost.peak_bytes
    assert costs[0].params == cfg["transformer"]["params"] and costs[1].params == wan_cost.params


def test_shrunk_random_folder_renders_a_long_shot(tmp_path):
    """`reel bench`'s random folder (shrunk): reel's loader and the diffusers pipeline both load it; render_long
    runs on it."""
    import diffusers

    from reel.models.random_model import build_random_folder
    from reel.models.registry import resolve_model

    folder = build_random_folder(CONFIG, tmp_path / "rand", shrink=True, seed=1)
    info = resolve_model(str(folder))
    assert info.family.name == "skyreels" and info.pipeline == "SkyReelsV2DiffusionForcingPipeline"
    d = info.defaults
    pipe = diffusers.SkyReelsV2DiffusionForcingPipeline.from_pretrained(folder, local_files_only=True)
    assert pipe.transformer.config.inject_sample_info is True
    comps = skyreels.load(folder, CPU, torch.float32)
    cond = skyreels.batch_conditioning(comps, skyreels.encode_prompts(comps, [PROMPT], d["max_sequence_length"]),
                                       guidance=1.0, fps=d["fps"], batch=1)
    denoiser = guided(lambda x, t, c: skyreels.velocity(comps, x, t, c), cond, None, 1.0)
    frames = 4 * d["frames"] - 3  # several windows of reel.json's frames
    chunks = list(skyreels.render_long(comps, denoiser, frames=frames, height=d["height"], width=d["width"],
                                       window=d["frames"], overlap=1, steps=1, shift=d["shift"], seed=0,
                                       scheduler="default"))
    assert sum(c.shape[2] for c in chunks) == frames and all(torch.isfinite(c).all() for c in chunks)


def test_reel_render_end_to_end(folder, tmp_path):
    """`reel render` on the DF folder (a short shot: the engine's own loop, batched CFG, the fps flag)."""
    from typer.testing import CliRunner

    from reel.engine.cli import app
    from reel.engine.post.contact import read_video

    spec = tmp_path / "film.toml"
    spec.write_text(f'[film]\nmodel = "{folder}"\nseed = 3\n[[shots]]\nid = "a"\nprompt = "{PROMPT}"\n')
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    clip, fps = read_video(tmp_path / "out" / "shots" / "a.mp4")
    assert clip.shape == (9, SIZE, SIZE, 3) and fps == 24 and clip.std() > 1.0
    manifest = json.loads((tmp_path / "out" / "shots" / "a.json").read_text())
    assert manifest["model"]["family"] == "skyreels" and manifest["scheduler"] == "default"


def test_a_batch_of_shots_equals_each_shot_alone(comps):
    """Two prompts with their own seeds in one batch (one fps flag for the batch) == each rendered alone."""
    prompts, seeds = [PROMPT, "a blue square moving up on a gray background"], [3, 4]
    shape = skyreels.latent_shape(comps, 9, SIZE, SIZE)

    def render(batch_prompts, batch_seeds):
        n = len(batch_prompts)
        cond = skyreels.batch_conditioning(comps, skyreels.encode_prompts(comps, batch_prompts, TEXT_LEN),
                                           guidance=GUIDANCE, fps=24, batch=n)
        uncond = skyreels.batch_conditioning(comps, skyreels.encode_prompts(comps, [NEGATIVE] * n, TEXT_LEN),
                                             guidance=GUIDANCE, fps=24, batch=n)
        noise = torch.cat([skyreels.initial_noise(shape, s, CPU) for s in batch_seeds])
        denoiser = guided(lambda x, t, c: skyreels.velocity(comps, x, t, c), cond, uncond, GUIDANCE)
        return sample(skyreels.make_sampler(comps, "default", SHIFT, seeds=batch_seeds), denoiser, noise, 3)

    both = render(prompts, seeds)
    for i in range(2):
        alone = render([prompts[i]], [seeds[i]])
        assert float((both[i:i + 1] - alone).abs().max()) <= 1e-4
    assert float((both[0] - both[1]).abs().max()) > 1e-3
