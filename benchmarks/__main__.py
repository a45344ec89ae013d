"""`python -m benchmarks`: reel against diffusers, in one command, on the built-in model (bench_vs_diffusers.py)
and on tiny random configs of every supported family (bench_families.py); each writes its RESULTS.md section.

    .venv/bin/python -m benchmarks                    # both, with their defaults (about a minute here)
    .venv/bin/python -m benchmarks --only builtin     # or: --only families
    .venv/bin/python -m benchmarks --builtin-args "--shots 32 --compile" --families-args "--families wan,ltx"

Other benchmarks, one command each (all write their section of benchmarks/RESULTS.md):
    python -m benchmarks.bench_scaling       time against frames, resolution and batch size (+ PNG plots)
    python -m benchmarks.bench_batching      batched shots against one by one
    python -m benchmarks.bench_adapters      LoRA switching against the time of a shot
    python -m benchmarks.bench_streaming     peak memory against clip length
    python -m benchmarks.bench_upscaler      built-in x2 upscaler against bicubic and Lanczos
    python -m benchmarks.bench_estimator     GPU estimator against published measurements
    python -m benchmarks.bench_cluster       render farm: 1 against 2 CPU workers
    python -m benchmarks.bench_server        the HTTP server under a short loopback load
    python -m benchmarks.killtest            kill renders at random moments and resume (50 runs)
    python -m benchmarks.fuzz_specs          property-based spec fuzzing (10,000 examples)
"""

import argparse
import shlex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["builtin", "families"], help="run one of the two")
    parser.add_argument("--builtin-args", default="", help="arguments for bench_vs_diffusers (quoted)")
    parser.add_argument("--families-args", default="", help="arguments for bench_families (quoted)")
    args = parser.parse_args()
    if args.only in (None, "builtin"):
        from benchmarks.bench_vs_diffusers import main as builtin

        builtin(shlex.split(args.builtin_args))
    if args.only in (None, "families"):
        from benchmarks.bench_families import main as families

        families(shlex.split(args.families_args))


if __name__ == "__main__":
    main()
