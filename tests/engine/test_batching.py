"""Batched shots equal the same shots rendered alone; prompt embeddings are cached on disk."""

from __future__ import annotations

import torch

from reel.engine.plan import build_plan
from reel.engine.runtime import Engine
from reel.engine.sampling import guided, sample
from reel.engine.spec import load_film

FILM = """
[film]
model = "{model}"
seed = 9
steps = 4
guidance = 3.0

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"

[[shots]]
id = "b"
prompt = "a blue square moving up on a gray background"

[[shots]]
id = "c"
prompt = "a green triangle moving down on a navy background"
negative_prompt = "a white circle"
"""


def batch_latents(engine, plan, jobs):
    family, comps = engine.load(plan.film.model)
    key = str(plan.film.model.path)
    first = jobs[0]
    cond = engine.embed(family, comps, key, [j.prompt for j in jobs], first.max_sequence_length)
    uncond = engine.embed(family, comps, key, [j.negative_prompt for j in jobs], first.max_sequence_length)
    shape = family.latent_shape(comps, first.frames, first.height, first.width)
    noise = torch.cat([family.initial_noise(shape, j.seed, comps.device) for j in jobs])
    sampler = family.make_sampler(comps, first.scheduler, first.shift)
    return sample(sampler, guided(lambda x, t, e: family.velocity(comps, x, t, e), cond, uncond, first.guidance),
                  noise, first.steps)


def test_batched_shots_equal_shots_alone(write_spec):
    plan = build_plan(load_film(write_spec(FILM)), batch_size=3)
    assert [[j.shot_id for j in b] for b in plan.batches] == [["a", "b", "c"]]
    engine = Engine("cpu")
    together = batch_latents(engine, plan, plan.batches[0])  # (3, C, F', H', W')
    for i, job in enumerate(plan.jobs):
        alone = batch_latents(engine, plan, (job,))  # (1, C, F', H', W')
        assert float((together[i] - alone[0]).abs().max()) <= 1e-4


def test_prompt_embeddings_cached_on_disk_across_engines(write_spec):
    plan = build_plan(load_film(write_spec(FILM)))
    calls = []
    first = Engine("cpu")
    family, comps = first.load(plan.film.model)
    hook = comps.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    key = str(plan.film.model.path)
    e1 = first.embed(family, comps, key, ["a red circle", "a red circle", "a blue square"], 16)  # (3, L, D)
    assert len(calls) == 2  # once per unique prompt
    hook.remove()
    second = Engine("cpu")
    family2, comps2 = second.load(plan.film.model)
    comps2.text_encoder.register_forward_hook(lambda *a: calls.append(2))
    e2 = second.embed(family2, comps2, key, ["a blue square", "a red circle"], 16)
    assert calls == [1, 1]  # the second engine never ran its text encoder
    assert torch.equal(e2[0], e1[2]) and torch.equal(e2[1], e1[0])
    assert list(second.embed_cache.root.rglob("*.safetensors"))
    e3 = second.embed(family2, comps2, key, ["a red circle"], 12)  # other settings: a new entry
    assert e3.shape[1] == 12 and calls == [1, 1, 2]


def test_batch_size_auto_and_bad_values(write_spec, tmp_path):
    from typer.testing import CliRunner

    from reel.engine.accel import auto_batch_size
    from reel.engine.cli import app

    film = load_film(write_spec(FILM))
    assert auto_batch_size(film, "cpu") == 4
    runner = CliRunner()
    result = runner.invoke(app, ["render", str(write_spec(FILM)), "--out", str(tmp_path / "o"), "--batch-size", "auto",
                                 "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["render", str(write_spec(FILM)), "--out", str(tmp_path / "p"), "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size 0" in result.output and not (tmp_path / "p").exists()
