"""reel's own overhead per denoising step, against another install of reel (the commit before a change).

    .venv/bin/python -m benchmarks.bench_overhead --baseline-python /tmp/old/venv/bin/python --label bccaf60

The baseline is a second Python environment with another reel installed (a wheel of the earlier commit; see
RESULTS.md for how it was made). Both run the same child program, alternately, `--rounds` times each:
1. the loop alone: the built-in model's scheduler (UniPC), guidance 5 (cond and uncond in one batch), a batch
   of 4 shots, a velocity that costs nothing (zeros), 200 steps: what reel adds around the model per step;
2. the loop with the real model: one batch of 4 built-in-model shots, 20 steps, the transformer included
   (with the CPU fast paths a CPU render uses, on both sides).
The report is the median of each side and new/baseline ratios; with --record it becomes a RESULTS.md section.
The child program works with either sampling API (the 11-argument `denoise` or `sample` over a sampler).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r'''
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from reel.engine import sampling
from reel.models import wan
from reel.models.registry import resolve_model
info = resolve_model("shapes")
comps = wan.load(info.path, torch.device("cpu"), torch.float32)
try:  # since the architecture change the engine applies the CPU fast paths (before, wan.load did)
    from reel.engine.accel import apply_cpu_fast_paths
    apply_cpu_fast_paths(comps, info.family)
except ImportError:
    pass
d = info.defaults
cond = wan.encode_prompts(comps, ["a red circle moving right on a black background"] * 4, 32)  # (4, L, D)
uncond = wan.encode_prompts(comps, [""] * 4, 32)
noise = torch.cat([wan.initial_noise(wan.latent_shape(comps, 17, 64, 64), s, comps.device) for s in range(4)])

def run(velocity, steps):
    if hasattr(sampling, "denoise"):  # the API before the architecture change
        sched = wan.make_scheduler(comps, "unipc", float(d["shift"]))
        return sampling.denoise(velocity, noise, sched, steps, cond, uncond, 5.0, on_step=lambda s: None)
    sampler = wan.make_sampler(comps, "unipc", float(d["shift"]))
    return sampling.sample(sampler, sampling.guided(velocity, cond, uncond, 5.0), noise, steps,
                           on_step=lambda s: None)

free = lambda x, t, e: torch.zeros_like(x)
model = lambda x, t, e: wan.velocity(comps, x, t, e)
with torch.no_grad():
    run(free, 5); run(model, 2)  # warm-up
    t = time.perf_counter(); run(free, 200); loop = (time.perf_counter() - t) / 200
    t = time.perf_counter(); run(model, 20); full = (time.perf_counter() - t) / 20
print(json.dumps({"loop_ms_per_step": loop * 1000, "model_ms_per_step": full * 1000}))
'''


def measure(python: str, threads: int) -> dict:
    out = subprocess.run([python, "-c", CHILD, str(threads)], capture_output=True, text=True, check=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline-python", required=True, help="Python of the environment with the earlier reel")
    p.add_argument("--label", default="baseline", help="what the baseline is (e.g. its commit)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    runs = {"baseline": [], "this": []}
    for i in range(args.rounds):  # interleaved: machine noise hits both sides alike
        for side, python in (("baseline", args.baseline_python), ("this", sys.executable)):
            runs[side].append(measure(python, args.threads))
            print(f"round {i + 1}/{args.rounds} {side}: {runs[side][-1]}", flush=True)
    med = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
    rows = [f"| {k.replace('_', ' ')} | {med['baseline'][k]:.3f} | {med['this'][k]:.3f} | "
            f"{med['this'][k] / med['baseline'][k]:.3f} |" for k in med["this"]]
    table = "\n".join(["| per step (median of %d) | %s | this tree | this / %s |" % (args.rounds, args.label,
                                                                                     args.label),
                       "|---|---|---|---|", *rows])
    print(table)
    if args.record:
        from benchmarks.results import write_section

        cmd = f"`.venv/bin/python -m benchmarks.bench_overhead --baseline-python BASELINE --label {args.label}`"
        write_section("overhead", "## reel's own overhead per step, against the commit before\n\n" + cmd + "\n\n"
                      "Built-in model, a batch of 4 shots (64x64, 17 frames), UniPC, guidance 5 (cond + uncond in one "
                      "batch), CPU fp32. `loop`: a velocity that costs nothing, 200 steps: what reel adds around the "
                      "model. `model`: the real transformer, 20 steps. Both sides in one run, alternating. The "
                      "baseline: `git archive COMMIT pyproject.toml README.md engine models kernels` unpacked, built "
                      "with `pip wheel --no-deps`, installed into a `venv --without-pip` whose site-packages has a "
                      ".pth line naming .venv's (the same dependencies).\n\n"
                      + table, {"median": med, "runs": runs, "baseline": args.label})
    return 0


if __name__ == "__main__":
    sys.exit(main())
