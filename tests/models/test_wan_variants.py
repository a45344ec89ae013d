"""Wan 2.1 I2V, Wan 2.2 TI2V and Wan 2.2 A14B (two experts) through reel's own loop, against diffusers'
WanImageToVideoPipeline / WanPipeline on tiny random models; image-to-video shots end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.engine.post.contact import read_video
from reel.engine.sampling import guided, sample
from reel.models import wan
from reel.models.tiny import build_tiny_wan

runner = CliRunner()
PROMPT, NEGATIVE = "a red circle moving left", "a blue square"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan-variants")
    return {v: build_tiny_wan(root / v, seed=1, variant=v) for v in ("i2v", "ti2v", "a14b")}


def picture(size=32, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    img[:, : size // 2] = (220, 40, 40)
    img[:, size // 2:] = (40, 90, 230)
    return (img + rng.integers(0, 20, img.shape)).clip(0, 255).astype(np.uint8)


def ours(folder, length, image=None, steps=4, guidance=4.0, seed=5, frames=9, size=32):
    comps = wan.load(folder, torch.device("cpu"), torch.float32)
    cond = wan.encode_prompts(comps, [PROMPT], length)
    uncond = wan.encode_prompts(comps, [NEGATIVE], length)
    img = None
    if image is not None:
        img = wan.image_condition(comps, image, frames, size, size)
        cond, uncond = {"embeds": cond, **img}, {"embeds": uncond, **img}
    noise = wan.initial_noise(wan.latent_shape(comps, frames, size, size), seed, comps.device)
    sampler = wan.make_sampler(comps, "unipc", 3.0, image=img)
    latents = sample(sampler, guided(lambda x, t, e: wan.velocity(comps, x, t, e), cond, uncond, guidance),
                     noise, steps)
    return torch.cat(list(wan.decode_stream(comps, latents)), dim=2)[0].permute(1, 2, 3, 0).numpy()


def reference(pipe_cls, folder, length, image=None, steps=4, guidance=4.0, seed=5):
    from diffusers import UniPCMultistepScheduler

    pipe = pipe_cls.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=3.0)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"image": Image.fromarray(image)} if image is not None else {}
    return pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=32, width=32, num_frames=9, num_inference_steps=steps,
                guidance_scale=guidance, max_sequence_length=length, output_type="np",
                generator=torch.Generator("cpu").manual_seed(seed), **kwargs).frames[0]


def test_wan21_i2v_matches_pipeline(folders):
    from diffusers import WanImageToVideoPipeline

    img = picture()
    a, b = ours(folders["i2v"], 512, image=img), reference(WanImageToVideoPipeline, folders["i2v"], 512, image=img)
    assert a.shape == b.shape == (9, 32, 32, 3) and float(np.abs(a - b).max()) <= 1e-3


@pytest.mark.parametrize("with_image", [False, True])
def test_wan22_ti2v_matches_pipeline(folders, with_image):
    from diffusers import WanImageToVideoPipeline, WanPipeline

    img = picture() if with_image else None
    cls = WanImageToVideoPipeline if with_image else WanPipeline
    a, b = ours(folders["ti2v"], 16, image=img), reference(cls, folders["ti2v"], 16, image=img)
    assert float(np.abs(a - b).max()) <= 1e-3


def test_wan22_two_experts_match_pipeline_and_both_run(folders):
    from diffusers import WanPipeline

    comps = wan.load(folders["a14b"], torch.device("cpu"), torch.float32)
    calls = {"high": 0, "low": 0}
    comps.transformer.register_forward_hook(lambda *a: calls.__setitem__("high", calls["high"] + 1))
    comps.transformer_2.register_forward_hook(lambda *a: calls.__setitem__("low", calls["low"] + 1))
    x = torch.zeros(1, 4, 3, 8, 8)
    e = torch.zeros(1, 16, 32)
    wan.velocity(comps, x, torch.tensor(900.0), e)
    wan.velocity(comps, x, torch.tensor(100.0), e)
    assert calls == {"high": 1, "low": 1}
    a, b = ours(folders["a14b"], 16, steps=6), reference(WanPipeline, folders["a14b"], 16, steps=6)
    assert float(np.abs(a - b).max()) <= 1e-3


def test_image_and_continue_from_shots_end_to_end(folders, tmp_path):
    Image.fromarray(picture(48)).save(tmp_path / "first.png")
    spec = tmp_path / "film.toml"
    spec.write_text(f"""
[film]
model = "{folders['ti2v']}"
seed = 3
steps = 3

[[shots]]
id = "b"
prompt = "a blue square moving up"
continue_from = "a"

[[shots]]
id = "a"
prompt = "a red circle moving left"
image = "first.png"

[[shots]]
id = "t"
prompt = "a text only shot"
""")
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    a, _ = read_video(out / "shots" / "a.mp4")
    b, _ = read_video(out / "shots" / "b.mp4")
    target = np.asarray(Image.fromarray(picture(48)).resize((32, 32), Image.Resampling.BICUBIC), dtype=float)
    assert np.abs(a[0].astype(float) - target).mean() < np.abs(a[-1].astype(float) - target).mean() + 40
    m = json.loads((out / "shots" / "b.json").read_text())
    assert m["fingerprint"] and (out / "film.mp4").is_file()
    # editing the source shot re-renders the continuation too
    spec.write_text(spec.read_text().replace("a red circle moving left", "a red circle moving right"))
    result = runner.invoke(app, ["render", str(spec), "--out", str(out)])
    assert "2 rendered, 1 reused" in result.output


def test_image_shots_need_an_image_model(write_spec, tmp_path):
    Image.fromarray(picture()).save(tmp_path / "p.png")
    body = '[film]\nmodel = "{model}"\n[[shots]]\nid = "a"\nprompt = "x"\nimage = "p.png"\n'
    result = runner.invoke(app, ["render", str(write_spec(body)), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "text-to-video only" in result.output
    (tmp_path / "bad.png").write_text("not an image")
    body = body.replace("p.png", "bad.png")
    result = runner.invoke(app, ["validate", str(write_spec(body, "b.toml"))])
    assert result.exit_code == 2 and "not a readable image" in result.output


def test_loras_target_one_wan22_expert_or_both(folders, tmp_path, tiny_model):
    from reel.engine.plan import build_plan
    from reel.engine.runtime import Engine
    from reel.engine.spec import load_film
    from tests.lora_files import random_lora, write_lora

    comps = wan.load(folders["a14b"], torch.device("cpu"), torch.float32)
    hi = write_lora(random_lora(comps.transformer, seed=1), tmp_path / "hi.safetensors", "diffusers")
    lo = write_lora(random_lora(comps.transformer_2, seed=2), tmp_path / "lo.safetensors", "diffusers")
    body = f"""
[film]
model = "{folders['a14b']}"
steps = 2

[characters.pair]
lora = "{hi}"
lora_low = "{lo}"
trigger = "sks"

[characters.early]
lora = "{hi}"
expert = "high"
trigger = "ohwx"

[[shots]]
id = "a"
prompt = "a {{pair}} and a {{early}}"
"""
    spec = tmp_path / "film.toml"
    spec.write_text(body)
    plan = build_plan(load_film(spec))
    assert [a for a, _, _ in plan.jobs[0].adapters] == ["pair@high", "pair@low", "early@high"]
    engine = Engine("cpu")
    engine.prepare(plan)
    model = plan.film.model
    assert len(engine.bank(model, "high").loaded) == 2 and len(engine.bank(model, "low").loaded) == 1
    result = runner.invoke(app, ["render", str(spec), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    experts = [a["expert"] for a in json.loads((tmp_path / "out" / "shots" / "a.json").read_text())["adapters"]]
    assert experts == ["high", "low", "high"]
    t2v = tmp_path / "t2v.toml"
    t2v.write_text(body.replace(str(folders["a14b"]), str(tiny_model)).replace('prompt = "a {pair} and a {early}"',
                                                                                'prompt = "a {early}"'))
    result = runner.invoke(app, ["render", str(t2v), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "targets a Wan 2.2 expert" in result.output and not (tmp_path / "o2").exists()
