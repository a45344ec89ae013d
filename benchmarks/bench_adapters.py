"""LoRA adapter switching against the time of a shot, and how planning reduces switches.

    .venv/bin/python -m benchmarks.bench_adapters                 # the built-in model
    .venv/bin/python -m benchmarks.bench_adapters --model PATH --repeats 100

Writes the `adapters` section of benchmarks/RESULTS.md and benchmarks/results/adapters.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmarks.results import model_under_test, write_section
from reel.engine.plan import adapter_switches, build_plan
from reel.engine.runtime import Engine
from reel.engine.spec import film_from_dict
from reel.engine.store import RenderStore


def random_lora_file(transformer, path: Path, rank: int, seed: int) -> Path:
    """A diffusers-format LoRA on every attention and feed-forward linear (random, for timing)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("blocks.") and (".attn" in name or ".ffn" in name):
            tensors[f"transformer.{name}.lora_A.weight"] = torch.randn((rank, module.in_features), generator=g) * 0.01
            tensors[f"transformer.{name}.lora_B.weight"] = torch.randn((module.out_features, rank), generator=g) * 0.01
    save_file(tensors, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()

    model_ref, note = model_under_test(args.model)
    work = Path(tempfile.mkdtemp(prefix="reel-bench-adapters-"))
    engine = Engine("cpu")
    base = film_from_dict({"film": {"model": model_ref, "seed": 1},
                           "shots": [{"id": "x", "prompt": "a red circle moving left on a black background"}]},
                          work / "film.toml")
    _, comps = engine.load(base.model)
    a = random_lora_file(comps.transformer, work / "a.safetensors", 16, 1)
    b = random_lora_file(comps.transformer, work / "b.safetensors", 16, 2)

    # 1. a film alternating two characters and no character
    shots, order = [], ["a", "", "b", "a", "", "b", "a", ""]
    for i, who in enumerate(order):
        prompt = f"a {{{who}}} moving left on a black background" if who else "a red circle moving left"
        shots.append({"id": f"s{i}", "prompt": prompt})
    spec = {"film": {"model": model_ref, "seed": 1},
            "characters": {"a": {"lora": str(a), "trigger": "sks"}, "b": {"lora": str(b), "trigger": "ohwx"}},
            "shots": shots}
    film = film_from_dict(spec, work / "film.toml")
    plan = build_plan(film)
    naive = sum(1 for p, c in zip(order, order[1:]) if p != c)
    grouped = adapter_switches(plan)

    # 2. load once, then time switches between adapter sets
    t0 = time.perf_counter()
    engine.prepare(plan)
    load_s = time.perf_counter() - t0
    bank = engine.bank(film.model)
    names = {who: engine.peft_name(who, str(p)) for who, p in (("a", a), ("b", b))}
    sets = [[(names["a"], 1.0)], [], [(names["b"], 0.8)], [(names["a"], 1.0), (names["b"], 0.5)]]
    switch_times = []
    for i in range(args.repeats):
        t = time.perf_counter()
        bank.activate(sets[i % len(sets)])
        switch_times.append(time.perf_counter() - t)

    # 3. the time of one shot (with an adapter active), rendered for real into a temp store
    store = RenderStore(work / "out")
    store.prepare()
    job = next(j for j in plan.jobs if j.characters == ("a",))
    whash, lhash = engine.weights_hash(film.model), engine.lora_hashes(plan)
    engine.render_batch(plan, (job,), store, whash, lhash)  # warm-up
    shot_times = []
    for _ in range(3):
        t = time.perf_counter()
        engine.render_batch(plan, (job,), store, whash, lhash)
        shot_times.append(time.perf_counter() - t)

    switch_ms = statistics.median(switch_times) * 1000
    shot_s = statistics.median(shot_times)
    md = f"""## LoRA adapter switching{note}

`.venv/bin/python -m benchmarks.bench_adapters --model {args.model} --repeats {args.repeats}`

| measure | value |
|---|---|
| model | {film.model.name if not note else 'tiny random Wan'} ({job.width}x{job.height}, {job.frames} frames, \
{job.steps} steps) |
| load + check 2 LoRA files (rank 16, every attention/FFN linear), once per run | {load_s * 1000:.1f} ms |
| switch adapter set (`set_adapters` / `disable_lora`), median of {args.repeats} | {switch_ms:.2f} ms |
| one shot with an adapter active (median of 3) | {shot_s:.3f} s |
| switch time / shot time | {switch_ms / 1000 / shot_s * 100:.2f} % |
| switches for an 8-shot film alternating a / none / b: film order vs reel's plan | {naive} vs {grouped} |
"""
    write_section("adapters", md, {"load_s": load_s, "switch_ms_median": switch_ms, "shot_s_median": shot_s,
                                   "switches_film_order": naive, "switches_planned": grouped,
                                   "model": film.model.name, "note": note})
    print(md)


if __name__ == "__main__":
    main()
