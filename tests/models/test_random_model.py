"""Random model folders from the shipped configs (models/random_model.py), for `reel bench`: the real-size
architecture matches each config's parameter count (on the meta device: nothing allocated), and a shrunk copy
of every config loads with reel's family loader and with the diffusers pipeline its model_index.json names,
runs a transformer forward and a VAE decode through reel's family module, and (Wan 2.1 1.3B) renders a film.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/models/test_random_model.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reel.models.family import family_module
from reel.models.random_model import build_module, build_random_folder, main, read_config, shipped_configs
from reel.models.registry import FAMILIES, resolve_model

CPU = torch.device("cpu")
SHIPPED = ("cogvideox-5b", "hunyuanvideo", "hunyuanvideo-1.5-t2v", "ltx-2", "ltx-video", "skyreels-v2-df-1.3b-540p",
           "wan2.1-i2v-14b", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-t2v-a14b", "wan2.2-ti2v-5b")
PROMPT = "a red circle moving left on a black background"


def test_every_shipped_model_config_is_listed():
    assert tuple(shipped_configs()) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_real_size_parameter_counts_match_the_config(name):
    cfg = read_config(name)
    for part in ("transformer", "transformer_2", "vae"):
        if part in cfg:
            model = build_module(cfg[part], "meta")  # allocates nothing
            assert sum(p.numel() for p in model.parameters()) == cfg[part]["params"], part


@pytest.mark.parametrize("name", SHIPPED)
def test_real_size_stand_ins_have_the_widths_the_transformer_reads(name):
    """Built on the meta device: the stand-ins' hidden sizes are the real encoders' (what the transformer reads)."""
    from reel.models.standin_encoders import standin_parts

    cfg = read_config(name)
    parts = standin_parts(cfg, shrink=False, device="meta", dtype=torch.bfloat16, seed=0)
    te = parts["text_encoder"].config
    te = te.get_text_config() if hasattr(te, "get_text_config") else te  # Gemma 3 nests its text model's config
    assert (getattr(te, "d_model", None) or te.hidden_size) == cfg["text_encoder"]["hidden_size"]
    assert (getattr(te, "num_layers", None) or te.num_hidden_layers) <= 2
    assert parts["tokenizer"].model_max_length == cfg["pipeline"]["max_sequence_length"]
    for extra in ("text_encoder_2", "image_encoder"):
        assert (extra in parts) == (extra in cfg)
        if extra in cfg:
            assert parts[extra].config.hidden_size == cfg[extra]["hidden_size"]
    if "image_encoder" in cfg:  # ViT-H/14 at 224 px: 257 tokens, as the real encoder gives
        assert (parts["image_encoder"].config.image_size // parts["image_encoder"].config.patch_size) ** 2 + 1 == \
            cfg["image_encoder"]["tokens"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("random")
    return {name: build_random_folder(name, root / name, shrink=True, seed=1) for name in SHIPPED}


@pytest.mark.parametrize("name", SHIPPED)
def test_shrunk_folder_loads_with_reel_and_runs(name, folders):
    """reel's family loader: a transformer forward on the stand-in's embeddings, a VAE decode at reel.json's size."""
    folder, cfg = folders[name], read_config(name)
    info = resolve_model(str(folder))
    assert info.family is FAMILIES[cfg["family"]] and info.pipeline == cfg["pipeline"]["_class_name"]
    d = info.defaults
    assert info.frames_ok(d["frames"]) and d["width"] % info.size_multiple == 0 and d["steps"] == 2
    assert d["max_sequence_length"] == cfg["pipeline"]["max_sequence_length"]
    module = family_module(info.family)
    comps = module.load(folder, CPU, torch.float32)
    assert type(comps.transformer).__name__ == cfg["transformer"]["_class_name"]
    assert set(module.experts(comps)) == ({"high", "low"} if "transformer_2" in cfg else {"high"})
    frames, height, width = d["frames"], d["height"], d["width"]
    cond = module.encode_prompts(comps, [PROMPT], d["max_sequence_length"])
    if info.pipeline in info.family.image_pipelines:  # Wan 2.1 I2V: its CLIP stand-in and image latents
        image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
        cond = {"embeds": cond, **module.image_condition(comps, image, frames, height, width, seed=0)}
    cond = module.batch_conditioning(comps, cond, guidance=d["guidance"], fps=d["fps"], batch=1)
    shape = module.latent_shape(comps, frames, height, width)
    noise = module.initial_noise(shape, 0, CPU)  # (1, *shape)
    with torch.no_grad():
        out = module.velocity(comps, noise, torch.tensor(500.0), cond)
    assert out.shape == noise.shape and torch.isfinite(out).all()
    video = torch.cat(list(module.decode_stream(comps, noise, seeds=[0], frames=frames)), dim=2)
    assert video.shape == (1, 3, frames, height, width)


@pytest.mark.parametrize("name", SHIPPED)
def test_shrunk_folder_loads_with_the_diffusers_pipeline(name, folders):
    import diffusers

    folder, cfg = folders[name], read_config(name)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == cfg["pipeline"]["_class_name"]
    pipe = getattr(diffusers, index["_class_name"]).from_pretrained(folder, local_files_only=True)
    tr = pipe.transformer.config
    assert type(pipe.transformer).__name__ == cfg["transformer"]["_class_name"]
    for key in ("in_channels", "out_channels", "patch_size", "patch_size_t", "qk_norm", "image_dim"):
        if key in cfg["transformer"]["config"]:
            want = cfg["transformer"]["config"][key]
            assert (list(tr[key]) if isinstance(tr[key], tuple) else tr[key]) == want, key
    assert type(pipe.vae).__name__ == cfg["vae"]["_class_name"]
    assert pipe.tokenizer.model_max_length == cfg["pipeline"]["max_sequence_length"]
    text_dim = next(tr[k] for k in ("text_dim", "caption_channels", "text_embed_dim") if tr.get(k))
    te = pipe.text_encoder.config
    te = te.get_text_config() if hasattr(te, "get_text_config") else te
    hidden = getattr(te, "d_model", None) or te.hidden_size
    assert hidden == text_dim
    if "transformer_2" in cfg:
        assert pipe.transformer_2 is not None and pipe.config.boundary_ratio == cfg["pipeline"]["boundary_ratio"]
    if cfg["pipeline"].get("expand_timesteps"):
        assert pipe.config.expand_timesteps is True
    if cfg["transformer"]["config"].get("image_dim"):
        assert pipe.image_encoder.config.hidden_size == cfg["transformer"]["config"]["image_dim"]
    info = json.loads((folder / "random.json").read_text())
    assert info["random"] is True and info["config"] == name and info["shrink"] is True and info["seed"] == 1
    assert "stand-in" in info["text_encoder"]


def test_hunyuan_stand_in_tokenizer_crops_the_template_like_llama3(folders):
    """The diffusers pipeline's default crop_start (95) fits the stand-in: reel.json needs no prompt_template."""
    from reel.models.standin_encoders import template_crop_start

    comps = family_module(FAMILIES["hunyuan"]).load(folders["hunyuanvideo"], CPU, torch.float32)
    assert template_crop_start(comps.tokenizer) == 95
    assert "prompt_template" not in json.loads((folders["hunyuanvideo"] / "reel.json").read_text())


def test_engine_renders_a_film_on_the_shrunk_wan(folders, tmp_path):
    from reel.engine.plan import build_plan
    from reel.engine.post.contact import read_video
    from reel.engine.runtime import Engine
    from reel.engine.spec import film_from_dict

    spec = {"film": {"title": "Random", "model": str(folders["wan2.1-t2v-1.3b"]), "seed": 2},
            "shots": [{"id": "a", "prompt": PROMPT}]}
    plan = build_plan(film_from_dict(spec, tmp_path / "film.toml"))
    Engine("cpu").render(plan, tmp_path / "out")
    clip, _ = read_video(tmp_path / "out" / "shots" / "a.mp4")
    assert clip.shape == (5, 32, 32, 3)


def test_bad_config_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ValueError, match="not a shipped model config.*wan2.1-t2v-1.3b") as err:
        build_random_folder("wan3-t2v", tmp_path / "x")
    assert "gpus" not in str(err.value) and not (tmp_path / "x").exists()


def test_a_class_diffusers_lacks_is_named(tmp_path):
    cfg = read_config("ltx-video")
    cfg["transformer"]["_class_name"] = "LTXVideoTransformer9DModel"
    with pytest.raises(ValueError, match="transformer._class_name.*no class 'LTXVideoTransformer9DModel'"):
        build_random_folder(cfg, tmp_path / "x")


def test_a_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        build_random_folder("ltx-video", tmp_path / "x", shrink=True)


def test_cli_prints_a_line_per_part(tmp_path, capsys):
    assert main(["wan2.2-t2v-a14b", str(tmp_path / "a14b"), "--shrink", "--dtype", "fp32", "--seed", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [p for p in ("transformer:", "transformer_2:", "vae:", "stand-in encoders:") if any(p in s for s in lines)] \
        == ["transformer:", "transformer_2:", "vae:", "stand-in encoders:"]
    assert lines[-1] == str(tmp_path / "a14b")
    assert json.loads((tmp_path / "a14b" / "random.json").read_text())["dtype"] == "float32"
    assert main(["nope", str(tmp_path / "n")]) == 2 and "choose one of" in capsys.readouterr().err
