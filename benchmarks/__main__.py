"""`python -m benchmarks`: reel against diffusers on the built-in model (see bench_vs_diffusers.py).

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

from benchmarks.bench_vs_diffusers import main

if __name__ == "__main__":
    main()
