"""Validation checks the model's real limits, read from its config: each family's limit is tied to the diffusers
class that would fail past it (the rotary table, positional embeddings, the text split), and `reel validate`
names the field with the largest value that works. Schedulers a family cannot sample with are refused too."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.models.registry import FAMILIES, ModelInfo, resolve_model

runner = CliRunner()
SHAPES_FILM = """
[film]
model = "shapes"
width = {width}
height = 32
frames = {frames}
steps = 1
{extra}

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"
"""


def info(family: str, temporal: int, multiple: int, transformer: dict, vae: dict | None = None) -> ModelInfo:
    from pathlib import Path

    return ModelInfo(name="x", path=Path("/nonexistent"), family=FAMILIES[family], temporal_factor=temporal,
                     size_multiple=multiple, transformer_config=transformer, vae_config=vae or {})


def test_wan_rotary_table_is_the_limit_the_transformer_has():
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    shapes = resolve_model("shapes")
    cfg = shapes.transformer_config
    rope = WanRotaryPosEmbed(cfg["attention_head_dim"], tuple(cfg["patch_size"]), cfg["rope_max_seq_len"])
    s, t = shapes.size_multiple // cfg["patch_size"][1], shapes.temporal_factor  # VAE factors (4, 4)
    for width, frames, fits in ((512, 17, True), (520, 17, False), (32, 253, True), (32, 257, False)):
        assert (not shapes.limit_problems(width, 32, frames, 32)) == fits, (width, frames)
        latents = torch.zeros(1, 1, (frames - 1) // t + 1, 32 // s, width // s)  # (B, C, F', H', W')
        if fits:
            rope(latents)
        else:
            with pytest.raises(RuntimeError):
                rope(latents)
    (key, message), = shapes.limit_problems(520, 32, 17, 32)
    assert key == "width" and "rope_max_seq_len" in message and "the largest width is 512" in message
    (key, message), = shapes.limit_problems(32, 32, 257, 32)
    assert key == "frames" and "at most 253 frames" in message


def test_validate_refuses_what_the_render_could_not_take(tmp_path):
    spec = tmp_path / "film.toml"
    spec.write_text(SHAPES_FILM.format(width=576, frames=5, extra=""))
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and "film.width" in result.output and "the largest width is 512" in result.output
    spec.write_text(SHAPES_FILM.format(width=512, frames=257, extra=""))
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and "film.frames" in result.output and "rope_max_seq_len" in result.output
    spec.write_text(SHAPES_FILM.format(width=32, frames=5, extra='scheduler = "ddim"'))
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and "film.scheduler" in result.output and "default, unipc, euler" in result.output
    spec.write_text(SHAPES_FILM.format(width=32, frames=5, extra="").replace("steps = 1", "steps = 1\n[speed]\n"
                                                                              'attention = "nope"'))
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and "unknown backend" in result.output
    spec.write_text(SHAPES_FILM.format(width=512, frames=5, extra=""))
    assert runner.invoke(app, ["validate", str(spec)]).exit_code == 0


def test_wan_image_to_video_needs_512_text_tokens():
    wan_i2v = info("wan", 4, 16, {"patch_size": [1, 2, 2], "rope_max_seq_len": 1024, "added_kv_proj_dim": 5120})
    (key, message), = wan_i2v.limit_problems(832, 480, 81, 226)
    assert key == "max_sequence_length" and "512" in message
    assert wan_i2v.limit_problems(832, 480, 81, 512) == []


def test_cogvideox_positional_embeddings_and_the_15_rotary_table():
    from diffusers.models.embeddings import CogVideoXPatchEmbed, get_3d_rotary_pos_embed

    base = {"patch_size": 2, "sample_width": 4, "sample_height": 4, "sample_frames": 9, "max_text_seq_length": 16,
            "use_rotary_positional_embeddings": True}
    rotary = info("cogvideox", 8, 16, base)  # CogVideoX-5b: any size, any text length
    assert rotary.limit_problems(64, 48, 17, 20) == []
    learned = info("cogvideox", 8, 16, {**base, "use_learned_positional_embeddings": True})  # 5B-I2V
    assert learned.limit_problems(32, 32, 9, 16) == []
    assert {k for k, _ in learned.limit_problems(48, 32, 9, 20)} == {"width", "max_sequence_length"}
    embed = CogVideoXPatchEmbed(patch_size=2, in_channels=4, embed_dim=48, text_embed_dim=8, sample_width=4,
                                sample_height=4, sample_frames=9, max_text_seq_length=16,
                                use_positional_embeddings=False, use_learned_positional_embeddings=True)
    embed(torch.zeros(1, 16, 8), torch.zeros(1, 3, 4, 4, 4))  # (B, L, D), (B, F', C, H', W'): the sample size
    with pytest.raises(ValueError):
        embed(torch.zeros(1, 16, 8), torch.zeros(1, 3, 4, 4, 6))
    sincos = info("cogvideox", 8, 16, {**base, "use_rotary_positional_embeddings": False})  # CogVideoX-2b
    assert [k for k, _ in sincos.limit_problems(64, 64, 17, 20)] == ["max_sequence_length"]
    v15 = info("cogvideox", 8, 16, {**base, "patch_size_t": 2})  # rotary table of sample/patch = 2 positions
    assert v15.limit_problems(32, 32, 9, 16) == []
    (key, message), = v15.limit_problems(48, 32, 9, 16)
    assert key == "width" and "the largest width is 32" in message
    for grid, fits in (((2, 2), True), ((2, 3), False)):
        if fits:
            get_3d_rotary_pos_embed(16, None, grid, 2, grid_type="slice", max_size=(2, 2))
        else:
            with pytest.raises(RuntimeError):
                get_3d_rotary_pos_embed(16, None, grid, 2, grid_type="slice", max_size=(2, 2))


def test_ltx_temporal_patches_and_hunyuan_any_size():
    ltx = info("ltx", 8, 32, {"patch_size": 1, "patch_size_t": 2}, {"temporal_compression_ratio": 8})
    assert ltx.limit_problems(704, 480, 9, 128) == []  # 2 latent frames
    (key, message), = ltx.limit_problems(704, 480, 17, 128)  # 3 latent frames
    assert key == "frames" and "temporal patches of 2" in message
    hunyuan = info("hunyuan", 4, 16, {"patch_size": 2, "patch_size_t": 1})
    assert hunyuan.limit_problems(4096, 4096, 1001, 1000) == []


def test_schedulers_per_family_and_hunyuans_folder_scheduler(tmp_path):
    assert info("wan", 4, 16, {}).scheduler_problem("ddim") is not None
    assert info("wan", 4, 16, {}).scheduler_problem("euler") is None
    assert info("cogvideox", 8, 16, {}).scheduler_problem("dpm") is None
    assert "ddim, dpm" in info("cogvideox", 8, 16, {}).scheduler_problem("unipc")
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "UniPCMultistepScheduler"}')
    hunyuan = dataclasses.replace(info("hunyuan", 4, 16, {}), path=tmp_path)
    assert "euler" in hunyuan.scheduler_problem("default") and hunyuan.scheduler_problem("euler") is None


def test_a_config_reel_cannot_read_is_a_problem_not_a_traceback():
    broken = info("wan", 4, 16, {"patch_size": "two", "rope_max_seq_len": "many"})
    (key, message), = broken.limit_problems(32, 32, 5, 16)
    assert key == "model" and "cannot read" in message


def test_limits_can_be_left_out_for_estimating_another_model(tmp_path):
    from reel.engine.spec import SpecError, load_film

    spec = tmp_path / "film.toml"
    spec.write_text(SHAPES_FILM.format(width=1280, frames=17, extra="").replace("height = 32", "height = 720"))
    with pytest.raises(SpecError):
        load_film(spec)
    assert load_film(spec, limits=False).width == 1280  # `reel estimate --model-config` sizes another model
