"""Characters: LoRA formats, exact base output without characters, stacking, per-step strength,
the character library, seeds, manifests, planning, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reel.engine.cast import weight_at
from reel.engine.cli import app
from reel.engine.plan import adapter_switches, build_plan
from reel.engine.post.contact import read_video
from reel.engine.runtime import Engine
from reel.engine.spec import SpecError, load_film
from reel.models import wan
from tests.lora_files import random_lora, write_lora

runner = CliRunner()

FILM = """
[film]
model = "{model}"
seed = 5
steps = 4

[characters.hero]
lora = "{lora}"
trigger = "sks"
weight = 1.0

[[shots]]
id = "with-hero"
prompt = "a {hero} moving left on a black background"

[[shots]]
id = "plain"
prompt = "a red circle moving left on a black background"
"""

PLAIN_ONLY = """
[film]
model = "{model}"
seed = 5
steps = 4

[[shots]]
id = "plain"
prompt = "a red circle moving left on a black background"
"""


@pytest.fixture(scope="module")
def comps(tiny_model):
    return wan.load(tiny_model, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def loras(tmp_path_factory, comps):
    """The same LoRA in three formats, plus a second character's LoRA."""
    root = tmp_path_factory.mktemp("loras")
    hero = random_lora(comps.transformer, seed=1)
    files = {fmt: write_lora(hero, root / f"hero-{fmt}.safetensors", fmt) for fmt in ("diffusers", "comfyui", "kohya")}
    files["villain"] = write_lora(random_lora(comps.transformer, seed=2), root / "villain.safetensors", "comfyui")
    return files


def latents_for(tiny_model, spec_path, shot_id, engine=None):
    """Render one shot's latents through the engine's own loop (no files written)."""
    engine = engine or Engine("cpu")
    plan = build_plan(load_film(spec_path))
    engine.prepare(plan)
    job = next(j for j in plan.jobs if j.shot_id == shot_id)
    family, comps = engine.load(plan.film.model)
    bank = engine.bank(plan.film.model)
    adapters = tuple((engine.peft_name(a, p), w) for a, p, w in job.adapters)
    hook = bank.schedule(adapters, job.steps)
    seen = []
    from reel.engine.sampling import guided, sample, with_step_hook

    key = str(plan.film.model.path)
    cond = engine.embed(family, comps, key, [job.prompt], job.max_sequence_length)
    uncond = engine.embed(family, comps, key, [job.negative_prompt], job.max_sequence_length)
    noise = family.initial_noise(family.latent_shape(comps, job.frames, job.height, job.width), job.seed, comps.device)
    sampler = family.make_sampler(comps, job.scheduler, job.shift)

    def record(state):
        layer = comps.transformer.blocks[0].attn1.to_q
        seen.append({k: float(v) for k, v in getattr(layer, "scaling", {}).items()
                     if k in getattr(layer, "active_adapters", [])})

    denoiser = guided(lambda x, t, e: family.velocity(comps, x, t, e), cond, uncond, job.guidance)
    if hook is not None:
        denoiser = with_step_hook(denoiser, hook)
    out = sample(sampler, denoiser, noise, job.steps, on_step=record, shot_ids=(job.shot_id,))
    return out, seen, engine


def spec_with(write_spec, lora, body=FILM, name="film.toml"):
    return write_spec(body.replace("{lora}", str(lora)), name)


def test_three_formats_render_identically_and_differ_from_base(write_spec, tiny_model, loras):
    results = {}
    for fmt in ("diffusers", "comfyui", "kohya"):
        spec = spec_with(write_spec, loras[fmt], name=f"{fmt}.toml")
        results[fmt], _, engine = latents_for(tiny_model, spec, "with-hero")
        assert list(engine.bank(load_film(spec).model).formats.values()) == [fmt]
    assert torch.allclose(results["diffusers"], results["comfyui"], atol=1e-5)
    assert torch.allclose(results["diffusers"], results["kohya"], atol=1e-5)
    no_lora = FILM.replace('[characters.hero]\nlora = "{lora}"\ntrigger = "sks"\nweight = 1.0\n', "") \
        .replace("{hero}", "sks")
    base, _, _ = latents_for(tiny_model, write_spec(no_lora, "base.toml"), "with-hero")
    assert (results["diffusers"] - base).abs().max() > 1e-2


def test_shot_without_characters_equals_base_model_exactly(write_spec, tiny_model, loras):
    spec = spec_with(write_spec, loras["comfyui"])
    with_adapters, _, engine = latents_for(tiny_model, spec, "plain")
    assert engine.bank(load_film(spec).model).loaded  # the hero LoRA is loaded into this transformer
    only_plain = write_spec(PLAIN_ONLY, "plain.toml")
    base, _, _ = latents_for(tiny_model, only_plain, "plain")
    assert float((with_adapters - base).abs().max()) == 0.0


def test_stacked_characters_and_weights(write_spec, tiny_model, loras):
    body = FILM + f'\n[characters.villain]\nlora = "{loras["villain"]}"\ntrigger = "ohwx"\nweight = 0.5\n' \
        + '\n[[shots]]\nid = "both"\nprompt = "a {hero} and a {villain}"\n'
    spec = spec_with(write_spec, loras["diffusers"], body)
    plan = build_plan(load_film(spec))
    both = next(j for j in plan.jobs if j.shot_id == "both")
    assert both.characters == ("hero", "villain") and both.prompt == "a sks and a ohwx"
    assert [(a, w) for a, _, w in both.adapters] == [("hero", 1.0), ("villain", 0.5)]
    stacked, seen, _ = latents_for(tiny_model, spec, "both")
    assert sorted(seen[0].values()) == [0.5, 1.0]  # alpha = rank in diffusers format, so scaling = weight
    hero_only = spec_with(write_spec, loras["diffusers"], body.replace("{villain}", "ohwx"), "hero.toml")
    alone, _, _ = latents_for(tiny_model, hero_only, "both")
    assert (stacked - alone).abs().max() > 1e-3


def test_per_step_weight_schedule(write_spec, tiny_model, loras):
    assert [weight_at((1.0, 0.0), i, 5) for i in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert [weight_at((1.0, 0.2, 0.2), i, 5) for i in range(5)] == pytest.approx([1.0, 0.6, 0.2, 0.2, 0.2])
    assert weight_at(0.7, 3, 5) == 0.7
    spec = spec_with(write_spec, loras["diffusers"], FILM.replace("weight = 1.0", "weight = [1.0, 0.0]").replace(
        "steps = 4", "steps = 5"))
    scheduled, seen, _ = latents_for(tiny_model, spec, "with-hero")
    assert [list(s.values())[0] for s in seen] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    flat = spec_with(write_spec, loras["diffusers"], FILM.replace("weight = 1.0", "weight = [1.0, 1.0]").replace(
        "steps = 4", "steps = 5"), "flat.toml")
    const = spec_with(write_spec, loras["diffusers"], FILM.replace("steps = 4", "steps = 5"), "const.toml")
    a, _, _ = latents_for(tiny_model, flat, "with-hero")
    b, _, _ = latents_for(tiny_model, const, "with-hero")
    assert (a - b).abs().max() < 1e-5  # a constant weight is fused into the weights: same up to rounding
    assert (scheduled - b).abs().max() > 1e-3


def test_render_records_loras_in_manifests_and_reuses(write_spec, tmp_path, loras):
    spec, out = spec_with(write_spec, loras["kohya"]), tmp_path / "out"
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    m = json.loads((out / "shots" / "with-hero.json").read_text())
    assert m["characters"] == ["hero"] and m["prompt"] == "a sks moving left on a black background"
    (adapter,) = m["adapters"]
    assert adapter["file"] == str(loras["kohya"]) and adapter["sha256"].startswith("sha256:")
    assert adapter["weight"] == 1.0 and adapter["trigger"] == "sks" and adapter["format"] == "kohya"
    assert json.loads((out / "shots" / "plain.json").read_text())["adapters"] == []
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
    assert "0 rendered, 2 reused" in result.output
    # a changed LoRA file (same path) changes the fingerprint: the shot renders again
    write_lora(random_lora(Engine("cpu").load(load_film(spec).model)[1].transformer, seed=9), loras["kohya"], "kohya")
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
    assert "1 rendered, 1 reused" in result.output


def test_character_library_and_seed(write_spec, tmp_path, loras):
    lib = tmp_path / "lib" / "hero"
    lib.mkdir(parents=True)
    (lib / "hero.safetensors").write_bytes(loras["comfyui"].read_bytes())
    (lib / "character.toml").write_text('lora = "hero.safetensors"\ntrigger = "sks"\nweight = 0.8\nseed = 77\n')
    body = FILM.split("[characters.hero]")[0] + '[[shots]]\nid = "a"\nprompt = "a {hero} moving up"\n' \
        + '[[shots]]\nid = "b"\nprompt = "sks on a gray background"\ncharacters = ["hero"]\n' \
        + '[[shots]]\nid = "c"\nprompt = "a {hero}"\nseed = 3\n'
    spec = write_spec(body)
    with pytest.raises(SpecError, match="unknown character 'hero'"):
        load_film(spec)
    film = load_film(spec, library=tmp_path / "lib")
    jobs = {j.shot_id: j for j in build_plan(film).jobs}
    assert film.characters["hero"].loras == ((lib / "hero.safetensors").resolve(),)
    assert (jobs["a"].seed, jobs["a"].seed_source) == (77, "character:hero")
    assert jobs["b"].seed == 77 and (jobs["c"].seed, jobs["c"].seed_source) == (3, "explicit")
    assert jobs["a"].adapters[0][2] == 0.8
    in_spec = write_spec(body.replace("seed = 5", 'seed = 5\ncharacters = "lib"'), "lib.toml")
    assert load_film(in_spec).characters["hero"].trigger == "sks"
    result = runner.invoke(app, ["validate", str(spec), "--characters", str(tmp_path / "lib")])
    assert result.exit_code == 0, result.output


def test_planning_groups_shots_by_adapter_set(write_spec, loras):
    body = FILM.split("[[shots]]")[0] + "".join(
        f'[[shots]]\nid = "s{i}"\nprompt = "{"a {hero}" if i % 2 == 0 else "a red circle"}"\n' for i in range(6))
    plan = build_plan(load_film(spec_with(write_spec, loras["diffusers"], body)))
    assert [b[0].shot_id for b in plan.batches] == ["s0", "s2", "s4", "s1", "s3", "s5"]
    assert adapter_switches(plan) == 1


@pytest.mark.parametrize("edit,needle", [
    (lambda b, t: b.replace("{lora}", str(t / "missing.safetensors")), "characters.hero.lora: LoRA file"),
    (lambda b, t: b.replace('a {hero} moving', 'a {heroo} moving'), "unknown character 'heroo' — did you mean 'hero'"),
    (lambda b, t: b.replace('prompt = "a red circle', 'characters = ["hero"]\nprompt = "a red circle'),
     "casts 'hero' but never says {hero}"),
    (lambda b, t: b.replace("weight = 1.0", "weigth = 1.0"), "did you mean 'weight'"),
    (lambda b, t: b.replace('trigger = "sks"', 'trigger = " "'), "characters.hero.trigger: is empty"),
])
def test_bad_character_specs_exit_2(write_spec, tmp_path, loras, edit, needle):
    spec = write_spec(edit(FILM, tmp_path).replace("{lora}", str(loras["diffusers"])))
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not out.exists()


def test_unreadable_and_incompatible_loras_exit_2_before_writing(write_spec, tmp_path, comps):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    big = random_lora(comps.transformer, seed=3)
    wide = {k: (torch.randn(a.shape[0], a.shape[1] * 2), b) for k, (a, b) in big.items()}
    deep = dict(big)
    deep["blocks.7.attn1.to_q"] = tuple(t.clone() for t in big["blocks.0.attn1.to_q"])
    cases = {
        garbage: "not a readable .safetensors file",
        write_lora(wide, tmp_path / "wide.safetensors", "diffusers"): "trained for another model size",
        write_lora(deep, tmp_path / "deep.safetensors", "diffusers"): "for a deeper model (this one has 2 blocks)",
        write_lora(big, tmp_path / "musubi-partial.safetensors", "kohya"): None,
    }
    partial = tmp_path / "musubi-partial.safetensors"
    from safetensors.torch import load_file, save_file

    t = load_file(str(partial))
    t.pop("lora_unet_blocks_1_ffn_2.lora_up.weight")
    save_file(t, str(partial))
    cases[partial] = "cannot convert this kohya LoRA"
    for lora, needle in cases.items():
        out = tmp_path / f"out-{lora.stem}"
        spec = spec_with(write_spec, lora, name=f"{lora.stem}.toml")
        result = runner.invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu"])
        assert result.exit_code == 2, (lora, result.output)
        assert str(lora) in result.output and needle in result.output, result.output
        assert not out.exists()


def test_same_frames_from_render_for_plain_shot_with_and_without_loras(write_spec, tmp_path, loras):
    """End to end through files: the plain shot's pixels do not depend on other shots' LoRAs."""
    with_lora = spec_with(write_spec, loras["diffusers"])
    without = write_spec(PLAIN_ONLY, "nolora.toml")
    for spec, out in ((with_lora, tmp_path / "a"), (without, tmp_path / "b")):
        assert runner.invoke(app, ["render", str(spec), "--out", str(out), "--device", "cpu", "-q"]).exit_code == 0
    a, _ = read_video(tmp_path / "a" / "shots" / "plain.mp4")
    b, _ = read_video(tmp_path / "b" / "shots" / "plain.mp4")
    assert np.array_equal(a, b)


def test_fused_adapters_match_unfused_and_restore_the_base_exactly(comps, loras):
    """Constant-weight adapters are merged into the weights for speed; the output matches the unfused LoRA
    and unfusing restores every base weight bit for bit."""
    from reel.engine.lora_bank import AdapterBank

    tr = comps.transformer
    bank = AdapterBank(tr, wan.lora_to_diffusers)
    bank.load("fuse_hero", loras["comfyui"])
    bank.load("fuse_villain", loras["villain"])
    x = torch.randn(1, tr.config.in_channels, 2, 8, 8, generator=torch.Generator().manual_seed(0))  # (B, C, F', H', W')
    t = torch.tensor([500.0])
    ctx = torch.randn(1, 8, tr.config.text_dim, generator=torch.Generator().manual_seed(1))  # (B, L, D)

    def run():
        with torch.no_grad():
            return tr(x, t, ctx, return_dict=False)[0]

    bank.activate([])
    base = run()
    before = {k: v.clone() for k, v in tr.state_dict().items() if "lora" not in k}
    pair = (("fuse_hero", 0.7), ("fuse_villain", 0.5))
    assert bank.schedule(pair, 4, fuse=False) is None
    unfused = run()
    bank.activate([])
    assert bank.schedule(pair, 4) is None and bank._saved is not None  # constant weights: fused
    fused = run()
    assert (fused - unfused).abs().max() < 1e-5 and (fused - base).abs().max() > 1e-3
    bank.activate([("fuse_hero", 1.0)])  # a switch unfuses first
    assert bank._saved is None
    bank.activate([])
    assert torch.equal(run(), base)
    assert all(torch.equal(v, before[k]) for k, v in tr.state_dict().items() if "lora" not in k)
    bank.transformer.delete_adapters(["fuse_hero", "fuse_villain"])


def test_rendering_the_same_plan_again_sees_an_edited_lora(write_spec, tmp_path, comps):
    """A long-lived Engine (the server) renders one plan object twice; the LoRA file was edited in between:
    its content hash is taken again, so the shot is rendered again, not reused."""
    import shutil

    lora = tmp_path / "hero.safetensors"
    write_lora(random_lora(comps.transformer, seed=21), lora, "diffusers")
    plan = build_plan(load_film(spec_with(write_spec, lora)))
    engine = Engine("cpu")
    first = {s.shot_id: s.status for s in engine.render(plan, tmp_path / "out").shots}
    again = {s.shot_id: s.status for s in engine.render(plan, tmp_path / "out").shots}
    edited = tmp_path / "edited.safetensors"
    write_lora(random_lora(comps.transformer, seed=22), edited, "diffusers")
    shutil.copyfile(edited, lora)
    after_edit = {s.shot_id: s.status for s in engine.render(plan, tmp_path / "out").shots}
    assert first == {"with-hero": "rendered", "plain": "rendered"}
    assert again == {"with-hero": "reused", "plain": "reused"}
    assert after_edit == {"with-hero": "rendered", "plain": "reused"}
