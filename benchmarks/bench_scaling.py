"""How one denoising step (transformer with CFG, batched cond+uncond) scales with frames, resolution and
batch size, with fitted power-law exponents and log-log PNG plots.

    .venv/bin/python -m benchmarks.bench_scaling                     # built-in model
    .venv/bin/python -m benchmarks.bench_scaling --repeats 5

Writes the `scaling` section of benchmarks/RESULTS.md and benchmarks/results/scaling_*.png.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.plots import fit_power, line_plot
from benchmarks.results import HERE, model_under_test, write_section
from reel.models import wan


def step_seconds(comps, frames: int, size: int, batch: int, repeats: int, text_len: int) -> float:
    """Median wall time of one CFG step (2*batch rows through the transformer)."""
    shape = wan.latent_shape(comps, frames, size, size)
    x = torch.randn(2 * batch, *shape)  # (2B, C, F', H', W')
    text = torch.randn(2 * batch, text_len, comps.text_encoder.config.d_model)
    t = torch.tensor(500.0)
    times = []
    with torch.no_grad():
        wan.velocity(comps, x, t, text)  # warm-up
        for _ in range(repeats):
            s = time.perf_counter()
            wan.velocity(comps, x, t, text)
            times.append(time.perf_counter() - s)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from reel.engine.accel import apply_cpu_fast_paths
    from reel.models.registry import resolve_model

    ref, note = model_under_test(args.model)
    info = resolve_model(ref)
    comps = wan.load(info.path, torch.device("cpu"), torch.float32)
    apply_cpu_fast_paths(comps, info.family)  # as a CPU render runs (engine/accel.py, cpu_fast_paths = auto)
    d = info.defaults
    base_frames, base_size, text_len = int(d["frames"]), int(d["width"]), int(d.get("max_sequence_length", 512))
    m = info.size_multiple
    sweeps = {
        "frames": ([17, 33, 49, 65], lambda v: step_seconds(comps, v, base_size, 1, args.repeats, text_len)),
        "resolution": ([64, 128, 192, 256], lambda v: step_seconds(comps, base_frames, v // m * m, 1, args.repeats,
                                                                   text_len)),
        "batch": ([1, 2, 4, 8], lambda v: step_seconds(comps, base_frames, base_size, v, args.repeats, text_len)),
    }
    rows, data = [], {}
    for name, (values, fn) in sweeps.items():
        ys = [fn(v) for v in values]
        a, _ = fit_power(values, ys)
        png = line_plot(f"s/step vs {name}", values, ys, HERE / "results" / f"scaling_{name}.png", name, "s/step")
        data[name] = {"values": values, "seconds": ys, "exponent": a}
        rows.append(f"| {name} | {', '.join(map(str, values))} | {', '.join(f'{y:.4f}' for y in ys)} | {a:.2f} | "
                    f"[{png.name}](results/{png.name}) |")
    md = f"""## Scaling of one denoising step{note}

`.venv/bin/python -m benchmarks.bench_scaling --repeats {args.repeats}`

One CFG step (cond+uncond batched) of the transformer, CPU fp32, median of {args.repeats}; the other two
variables at the model's defaults ({base_size}x{base_size}, {base_frames} frames, batch 1). Exponent: fitted
t ~ x^a on log-log axes (tokens grow linearly with frames and quadratically with the side).

| variable | values | seconds per step | exponent | plot |
|---|---|---|---|---|
{chr(10).join(rows)}
"""
    write_section("scaling", md, data)
    print(md)


if __name__ == "__main__":
    main()
