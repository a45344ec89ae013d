"""The built-in `shapes` model: its weights load in diffusers' WanPipeline and in reel with the same
frames, fixed-seed shots pass the judge on colour, and the weights stay small. Skipped until the
weights are trained (scripts/train_shapes_model.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reel.models.registry import BUILTIN_MODELS, resolve_model

WEIGHTS = BUILTIN_MODELS["shapes"]
pytestmark = pytest.mark.skipif(not (WEIGHTS / "model_index.json").is_file(),
                                reason="the built-in model is not trained yet (scripts/train_shapes_model.py)")


def test_weights_are_small_and_self_describing():
    size = sum(p.stat().st_size for p in WEIGHTS.rglob("*") if p.is_file())
    assert size <= 30 * 2**20
    info = resolve_model("shapes")
    assert (info.defaults["width"], info.defaults["frames"]) == (64, 17) and info.temporal_factor == 4


def test_engine_matches_wanpipeline_on_the_builtin_weights():
    from diffusers import UniPCMultistepScheduler, WanPipeline

    from reel.engine.sampling import guided, sample
    from reel.models import wan

    d = resolve_model("shapes").defaults
    length, steps, guidance, shift = int(d["max_sequence_length"]), 4, float(d["guidance"]), float(d["shift"])
    prompt = "a red circle moving right on a black background"
    pipe = WanPipeline.from_pretrained(WEIGHTS, local_files_only=True, dtype=torch.float32)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=shift)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt=prompt, negative_prompt="", height=64, width=64, num_frames=17, num_inference_steps=steps,
               guidance_scale=guidance, max_sequence_length=length, output_type="np",
               generator=torch.Generator("cpu").manual_seed(3)).frames[0]
    comps = wan.load(WEIGHTS, torch.device("cpu"), torch.float32)
    cond, uncond = wan.encode_prompts(comps, [prompt], length), wan.encode_prompts(comps, [""], length)
    noise = wan.initial_noise(wan.latent_shape(comps, 17, 64, 64), 3, comps.device)
    lat = sample(wan.make_sampler(comps, "unipc", shift),
                 guided(lambda x, t, e: wan.velocity(comps, x, t, e), cond, uncond, guidance), noise, steps)
    ours = torch.cat(list(wan.decode_stream(comps, lat)), dim=2)[0].permute(1, 2, 3, 0).numpy()
    assert float(np.abs(ours - ref).max()) <= 1e-3


def test_fixed_seed_shots_pass_the_judge_on_colour(tmp_path):
    from reel.engine.plan import build_plan
    from reel.engine.post.contact import read_video
    from reel.engine.runtime import Engine
    from reel.engine.spec import film_from_dict
    from reel.models.shapes.judge import judge_clip

    shots = [("red", "a red circle moving right on a black background"),
             ("blue", "a blue square moving up on a gray background"),
             ("yellow", "a yellow triangle moving left on a navy background")]
    film = film_from_dict({"film": {"seed": 2026}, "shots": [{"id": c, "prompt": p} for c, p in shots]},
                          tmp_path / "film.toml")
    Engine("cpu").render(build_plan(film), tmp_path / "out")
    for color, _ in shots:
        frames, _ = read_video(tmp_path / "out" / "shots" / f"{color}.mp4")
        assert judge_clip(frames).color == color


def test_shipped_preview_adapters_render_the_final_composition(tmp_path):
    """The built-in model ships a preview LoRA and a preview decoder: `reel preview` uses both, and the
    preview of a fixed-seed shot reads the same colour and direction as its final render."""
    import json

    from reel.engine.plan import build_plan
    from reel.engine.post.contact import read_video
    from reel.engine.runtime import Engine
    from reel.engine.spec import film_from_dict
    from reel.models.shapes.judge import judge_clip

    film = film_from_dict({"film": {"seed": 2026}, "shots": [
        {"id": "a", "prompt": "a red circle moving right on a black background"},
        {"id": "b", "prompt": "a green square moving down on a brown background"}]}, tmp_path / "film.toml")
    assert film.preview is not None and film.preview.decoder is not None, "the model ships no preview adapters"
    engine = Engine("cpu")
    engine.render(build_plan(film, batch_size=2, preview=True), tmp_path / "out")
    engine.render(build_plan(film, batch_size=2), tmp_path / "out")
    for sid in ("a", "b"):
        m = json.loads((tmp_path / "out" / "preview" / "shots" / f"{sid}.json").read_text())
        assert (m["steps"] == 4 and m["guidance"] == 1.0
                and m["preview_decoder"]["file"].endswith("preview_decoder.safetensors"))
        p = judge_clip(read_video(tmp_path / "out" / "preview" / "shots" / f"{sid}.mp4")[0])
        f = judge_clip(read_video(tmp_path / "out" / "shots" / f"{sid}.mp4")[0])
        assert (p.color, p.direction) == (f.color, f.direction)


def test_vae_draws_the_character_it_was_widened_to():
    """scripts/widen_shapes_vae.py: the VAE's decode of an orange star reads orange and star, small stars
    included (before the widening: every star read as a circle and orange often as red)."""
    from diffusers import AutoencoderKLWan

    from reel.models.shapes.judge import judge_clip
    from reel.models.shapes.world import ORANGE_STAR, render_clip
    from scripts.train_shapes.vae import reconstruct

    vae = AutoencoderKLWan.from_pretrained(WEIGHTS / "vae").eval()
    rng = np.random.default_rng(20_000_003)  # the widening script's evaluation clips (never trained on)
    specs = [ORANGE_STAR.sample_spec(rng) for _ in range(16)]
    clips = np.stack([render_clip(s) for s in specs])  # (16, 17, 64, 64, 3)
    verdicts = [judge_clip(c) for c in reconstruct(vae, clips)]
    assert all(v.color == "orange" for v in verdicts)
    # 15 of 16 measured after stage 3 (the sharper decoder); 10 after stage 2, 0 with the first VAE
    assert sum(v.shape == "star" for v in verdicts) >= 13
    large = [v.shape for v, s in zip(verdicts, specs) if s.size >= 0.32]
    assert large and all(shape == "star" for shape in large)


def test_widening_script_mixes_extra_shapes_into_every_batch():
    from reel.models.shapes.world import COLORS, SHAPES, is_held_out
    from scripts.train_shapes.common import TrainConfig
    from scripts.widen_shapes_vae import batch_specs, training_batch

    for step in range(5):
        specs = batch_specs(step, 8, seed=0)
        extra = [s.color not in COLORS or s.shape not in SHAPES for s in specs]
        assert extra == [False, True] * 4
        assert not any(is_held_out(s) for s in specs[0::2])
    cfg = TrainConfig()
    x = training_batch(step=0, batch=4, cfg=cfg)  # (4, 3, f, crop, crop) in [-1, 1]
    assert tuple(x.shape) == (4, 3, cfg.vae_frames, cfg.vae_crop, cfg.vae_crop)
    assert float(x.min()) >= -1 and float(x.max()) <= 1


def test_gradient_difference_costs_blur_not_a_sharp_copy():
    """Stage 3's extra loss: zero for an exact copy, positive for a blurred one even where MSE barely moves."""
    import torch

    from scripts.train_shapes.vae import gradient_difference

    x = torch.zeros(1, 3, 2, 16, 16)  # (B, 3, f, h, w)
    x[..., 4:12, 4:12] = 1.0  # a sharp square
    blurred = torch.nn.functional.avg_pool3d(x, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    assert float(gradient_difference(x, x)) == 0.0
    assert float(gradient_difference(blurred, x)) > 0.05


def test_character_dataset_is_balanced_over_directions_and_backgrounds(tmp_path):
    """The LoRA benchmark's 24 clips: every direction and background 6 times, all 16 pairs, captions with
    the trigger next to each clip (a random draw once gave 4 gray and 2 "left" clips)."""
    from collections import Counter

    from scripts.world_dataset import write_dataset

    specs = write_dataset(tmp_path, clips=24, seed=5, character="orange_star", trigger="sks")
    assert set(Counter(s.direction for s in specs).values()) == {6}
    assert set(Counter(s.background for s in specs).values()) == {6}
    assert len({(s.direction, s.background) for s in specs}) == 16
    assert all((s.color, s.shape) == ("orange", "star") for s in specs)
    assert len(list(tmp_path.glob("*.mp4"))) == 24
    assert (tmp_path / "clip0000.txt").read_text().startswith("a sks moving ")
