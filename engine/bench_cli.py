"""The `reel bench` command (engine/bench.py does the work; this file is its command line).

    reel bench wan2.1-t2v-1.3b --device cuda [--paths default,cudnn,compile-regional] [--rounds 2] [--record]
    reel bench shapes --device cuda --steps 20
    reel bench wan2.1-t2v-1.3b --device cpu --shrink --width 64 --height 64 --frames 5 --steps 2 --out /tmp/b
"""

from __future__ import annotations

from pathlib import Path

import typer

from reel.engine.bench_paths import BENCH_PATHS, DEFAULT_PATHS


def bench(
    model: str = typer.Argument(..., help="A model folder, a built-in model (shapes), or a shipped config "
                                "(reel estimate's configs, e.g. wan2.1-t2v-1.3b: random weights at real size)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if available), cpu, cuda, cuda:N."),
    width: int = typer.Option(None, "--width", help="Pixels (default: the model's)."),
    height: int = typer.Option(None, "--height", help="Pixels (default: the model's)."),
    frames: int = typer.Option(None, "--frames", help="Frames (default: the model's)."),
    steps: int = typer.Option(6, "--steps", min=1, help="Denoising steps per shot."),
    guidance: float = typer.Option(None, "--guidance", help="Guidance scale (default: the model's)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Noise seed (and the random weights' seed)."),
    rounds: int = typer.Option(2, "--rounds", min=1, help="Timed rounds after the warm-up (order reversed each)."),
    paths: str = typer.Option(",".join(DEFAULT_PATHS), "--paths", help="reel paths to time, comma separated, or all: "
                              + ", ".join(BENCH_PATHS) + "."),
    shrink: bool = typer.Option(False, "--shrink", help="With a shipped config: scaled-down random weights (a quick "
                                "CPU dry run of the whole benchmark)."),
    budget: float = typer.Option(0, "--budget", min=0, help="Seconds: sides not started by then are reported as not "
                                 "run and the results are written (0: no limit)."),
    out: Path = typer.Option(Path("reel-bench"), "--out", "-o", help="Folder for bench.json, bench.md, bench.png and "
                             "the clips."),
    record: bool = typer.Option(False, "--record", help="Add the table to --results and, on CUDA, the measured rows "
                                "that [speed] auto reads (engine/measured_speedups.json)."),
    results: Path = typer.Option(Path("benchmarks/RESULTS.md"), "--results", help="The RESULTS.md --record adds to."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the table."),
) -> None:
    """Time reel against the family's diffusers pipeline on the same weights: s/step, denoise, decode+encode, peak
    memory, TFLOP/s and its share of this device's matmul peak, PSNR; one process, interleaved, after a warm-up."""
    from reel.engine.bench import BenchSetting, run_bench
    from reel.engine.bench_report import markdown
    from reel.engine.bench_report import record as record_results

    if record and not results.is_file():
        raise_fail(f"--record: {results} does not exist — run from a reel checkout or pass --results PATH")
    setting = BenchSetting(model, device, width, height, frames, steps, guidance, seed, rounds=rounds, paths=paths,
                           shrink=shrink, budget=budget)
    say = (lambda text: None) if quiet else (lambda text: typer.echo(text, err=True))
    try:
        res = run_bench(setting, out, say)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise_fail(str(err))
    typer.echo(markdown(res))
    typer.echo(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}")
    if record:
        rows = record_results(res, results)
        typer.echo(f"recorded in {results}" + (f" and {len(rows)} measured row(s) for auto" if rows else
                                               " (a CPU run adds no measured rows: auto decides CUDA speed-ups)"))


def raise_fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
