"""reel against diffusers' WanPipeline on the same weights, seeds and steps, same process, interleaved.

    .venv/bin/python -m benchmarks                                   # built-in model, 8-shot film
    .venv/bin/python -m benchmarks.bench_vs_diffusers --shots 8 --rounds 2 --batch-size 4 --step-cache 0.08

Per round, in alternating order: diffusers renders the film shot by shot (pipe(...) then
export_to_video), reel renders it with `Engine.render` (cold prompt cache each round); then reel with
the step cache. Reports shots per minute, seconds per step, frames per second, peak RSS growth per phase,
PSNR of reel's decoded clips against diffusers' float frames, shapes-judge scores, and the share of
reel's wall time spent outside the text encoder, transformer and VAE. Writes the `vs_diffusers`
section of benchmarks/RESULTS.md and benchmarks/results/vs_diffusers.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from benchmarks.results import model_under_test, write_section
from reel.engine.embed_cache import EmbedCache
from reel.engine.plan import build_plan
from reel.engine.post.contact import read_video
from reel.engine.runtime import Engine
from reel.engine.spec import film_from_dict


class PeakRSS:
    """Sample this process's RSS every 5 ms; `growth` = peak during the block minus RSS before it (MiB)."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.growth = (self.peak - self.base) / 2**20


class ModelTimer:
    """Wall time inside the text encoder, transformer and VAE decoder (forward hooks)."""

    def __init__(self, comps):
        self.seconds = 0.0
        self._start = {}
        self.handles = []
        for module in (comps.text_encoder, comps.transformer, comps.vae.decoder, comps.vae.post_quant_conv):
            self.handles.append(module.register_forward_pre_hook(self._pre))
            self.handles.append(module.register_forward_hook(self._post))

    def _pre(self, module, args):
        self._start[id(module)] = time.perf_counter()

    def _post(self, module, args, out):
        self.seconds += time.perf_counter() - self._start.pop(id(module))

    def remove(self):
        for h in self.handles:
            h.remove()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def diffusers_film(pipe, jobs, out: Path) -> dict[str, np.ndarray]:
    """Shot by shot, as a diffusers user would: pipe(...) then export_to_video. Returns float frames."""
    from diffusers import UniPCMultistepScheduler
    from diffusers.utils import export_to_video

    frames = {}
    for job in jobs:
        pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=job.shift)
        video = pipe(prompt=job.prompt, negative_prompt=job.negative_prompt, height=job.height, width=job.width,
                     num_frames=job.frames, num_inference_steps=job.steps, guidance_scale=job.guidance,
                     max_sequence_length=job.max_sequence_length,
                     generator=torch.Generator("cpu").manual_seed(job.seed), output_type="np").frames[0]
        export_to_video(list(video), str(out / f"{job.shot_id}.mp4"), fps=job.fps)
        frames[job.shot_id] = video  # (F, H, W, 3) float in [0, 1]
    return frames


def judge_scores(videos: dict[str, np.ndarray], specs: dict) -> dict[str, float] | None:
    try:
        from reel.models.shapes.judge import judge_clip
    except ImportError:
        return None
    hits = {"color": 0, "background": 0, "shape": 0, "direction": 0}
    for sid, frames in videos.items():
        verdict = judge_clip(frames)
        for key in hits:
            hits[key] += int(getattr(verdict, key) == getattr(specs[sid], key))
    return {k: 100.0 * v / len(videos) for k, v in hits.items()}


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    from diffusers import WanPipeline

    note, work, film, specs, jobs = _film(args)
    pipe = WanPipeline.from_pretrained(film.model.path, local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    engines, films, comps, compile_s = _warm_engines(args, pipe, film, jobs, work)
    runs, rss, inside, ref_frames, raw_frames = _timed_rounds(args, pipe, jobs, engines, films, comps, work)
    quality = _quality(engines, jobs, work, raw_frames, ref_frames, specs)
    rows, data = _table_rows(args, jobs, runs, rss, quality)
    outside = 100 * (1 - statistics.median(inside))
    losses = _judge_losses(engines, quality, data)
    md = _markdown(args, note, jobs[0], rows, compile_s, outside, losses)
    write_section("vs_diffusers", md, {"runs": data, "outside_models_pct": outside, "note": note,
                                       "compile_seconds": compile_s})
    print(md)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (module doc)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--step-cache", type=float, default=0.08)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false",
                        help="skip the row with [speed] weights = \"bf16\" (CPU bf16 compute)")
    parser.add_argument("--compile", action="store_true",
                        help="add rows with CPU bf16 + torch.compile (compile time reported apart, in the warm-up)")
    return parser.parse_args(argv)


def _film(args: argparse.Namespace):
    """(the model's note, a fresh work folder, the film of --shots world prompts, each shot's world spec by shot
    id, the film's jobs)."""
    from reel.models.shapes.world import sample_prompts

    model, note = model_under_test(args.model)
    work = Path(tempfile.mkdtemp(prefix="reel-bench-vs-"))
    prompts = sample_prompts(args.shots, seed=11)
    spec = {"film": {"model": model, "seed": 7},
            "shots": [{"id": f"s{i}", "prompt": p} for i, (p, _) in enumerate(prompts)]}
    film = film_from_dict(spec, work / "film.toml")
    specs = {f"s{i}": s for i, (_, s) in enumerate(prompts)}
    return note, work, film, specs, build_plan(film).jobs


def _warm_engines(args: argparse.Namespace, pipe, film, jobs, work: Path):
    """(engines by row name, films by row name, the fp32 engine's components, torch.compile seconds or None):
    every engine loaded and warmed up, and diffusers too (first-call costs out of the measurement)."""
    cached_film = dataclasses.replace(film, speed=dataclasses.replace(film.speed, step_cache=args.step_cache))
    bf16_film = dataclasses.replace(film, speed=dataclasses.replace(film.speed, weights="bf16"))
    engine = Engine("cpu")
    engine.prepare(build_plan(film))
    _, comps = engine.load(film.model)
    # warm up both (first-call costs out of the measurement)
    diffusers_film(pipe, jobs[:1], work)
    engine.render(build_plan(film, only=[jobs[0].shot_id]), work / "warm")
    engines = {"reel": engine, "reel_cache": engine}
    films = {"reel": film, "reel_cache": cached_film}
    if args.bf16:  # a second engine keeps its bf16 model loaded (one engine would reload it every round)
        engines["reel_bf16"], films["reel_bf16"] = Engine("cpu"), bf16_film
        engines["reel_bf16"].render(build_plan(bf16_film, only=[jobs[0].shot_id]), work / "warm16")
        engines["reel_bf16_cache"] = engines["reel_bf16"]
        films["reel_bf16_cache"] = dataclasses.replace(
            bf16_film, speed=dataclasses.replace(bf16_film.speed, step_cache=args.step_cache))
    compile_s = None
    if args.compile:  # a third engine: compiled once per process, warmed on a full batch so no shape recompiles
        comp_film = dataclasses.replace(film, speed=dataclasses.replace(film.speed, weights="bf16", compile="full"))
        engines["reel_bf16_compile"], films["reel_bf16_compile"] = Engine("cpu"), comp_film
        films["reel_bf16_compile_cache"] = dataclasses.replace(
            comp_film, speed=dataclasses.replace(comp_film.speed, step_cache=args.step_cache))
        engines["reel_bf16_compile_cache"] = engines["reel_bf16_compile"]
        full = [j.shot_id for j in jobs[:args.batch_size]]
        t = time.perf_counter()
        for name in ("reel_bf16_compile", "reel_bf16_compile_cache"):
            engines[name].render(build_plan(films[name], batch_size=args.batch_size, only=full), work / f"warm-{name}")
        compile_s = time.perf_counter() - t
    return engines, films, comps, compile_s


def _timed_rounds(args: argparse.Namespace, pipe, jobs, engines: dict, films: dict, comps, work: Path):
    """--rounds of every run, in alternating order, each with a cold prompt cache: (seconds by run, peak RSS
    growth by run in MiB, reel's share of wall time inside the models per round, diffusers' float frames by
    shot id (F, H, W, 3), each reel run's frames before encoding by shot id (F, H, W, 3) uint8, round 0)."""
    runs = {"diffusers": [], **{name: [] for name in engines}}
    rss = {k: [] for k in runs}
    inside = []
    ref_frames = None
    raw_frames: dict[str, dict] = {}
    for r in range(args.rounds):
        order = ["diffusers", *engines] if r % 2 == 0 else [*reversed(list(engines)), "diffusers"]
        for name in order:
            out = work / f"r{r}-{name}"
            out.mkdir()
            for e in engines.values():
                e._embeds.clear()
                e.embed_cache = EmbedCache(out / "embed-cache")  # cold prompt cache: no cross-run reuse
            timer = ModelTimer(comps) if name == "reel" else None
            raw: dict[str, list] = {}
            for e in engines.values():
                e.on_frames = (lambda sid, f, raw=raw: raw.setdefault(sid, []).append(f)) if r == 0 else None
            with PeakRSS() as mem:
                t = time.perf_counter()
                if name == "diffusers":
                    ref_frames = diffusers_film(pipe, jobs, out)
                else:
                    engines[name].render(build_plan(films[name], batch_size=args.batch_size), out)
                runs[name].append(time.perf_counter() - t)
            rss[name].append(mem.growth)
            if timer:
                inside.append(timer.seconds / runs[name][-1])
                timer.remove()
            if r == 0 and name != "diffusers":
                raw_frames[name] = {sid: np.concatenate(chunks) for sid, chunks in raw.items()}
    return runs, rss, inside, ref_frames, raw_frames


def _quality(engines: dict, jobs, work: Path, raw_frames: dict, ref_frames: dict, specs: dict) -> dict:
    """By run: PSNR of reel's frames before encoding against diffusers' frames (parity) and of its decoded H.264
    clips, and the judge's scores (diffusers: the judge only)."""
    quality = {}
    for name in engines:
        out = work / f"r0-{name}"
        decoded = {j.shot_id: read_video(out / "shots" / f"{j.shot_id}.mp4")[0] for j in jobs}
        quality[name] = {
            "psnr_db": statistics.mean(psnr(raw_frames[name][s], np.round(ref_frames[s] * 255)) for s in decoded),
            "psnr_after_h264_db": statistics.mean(psnr(decoded[s], np.round(ref_frames[s] * 255)) for s in decoded),
            "judge": judge_scores(decoded, specs)}
    ref_u8 = {s: (np.round(v * 255)).astype(np.uint8) for s, v in ref_frames.items()}  # (F, H, W, 3) uint8
    quality["diffusers"] = {"psnr_db": None, "judge": judge_scores(ref_u8, specs)}
    return quality


def _table_rows(args: argparse.Namespace, jobs, runs: dict, rss: dict, quality: dict) -> tuple[list[str], dict]:
    """(the markdown table's rows, the JSON's runs): one per run that ran, medians over the rounds."""
    job = jobs[0]
    total_frames = sum(j.frames for j in jobs)
    rows, data = [], {}
    d_med = statistics.median(runs["diffusers"])
    for name, label in (("diffusers", "diffusers WanPipeline, shot by shot"),
                        ("reel", f"reel, batch {args.batch_size}"),
                        ("reel_cache", f"reel, batch {args.batch_size} + step cache {args.step_cache}"),
                        ("reel_bf16", f"reel, batch {args.batch_size}, CPU bf16 compute"),
                        ("reel_bf16_cache", f"reel, batch {args.batch_size}, CPU bf16 + step cache {args.step_cache}"),
                        ("reel_bf16_compile", f"reel, batch {args.batch_size}, CPU bf16 + torch.compile"),
                        ("reel_bf16_compile_cache",
                         f"reel, batch {args.batch_size}, CPU bf16 + torch.compile + step cache {args.step_cache}")):
        if name not in runs:
            continue
        med = statistics.median(runs[name])
        q = quality[name]
        judge = q["judge"]
        judge_txt = ", ".join(f"{k[:3]} {v:.0f}" for k, v in judge.items()) if judge else "judge n/a"
        psnr_txt = (f"{q['psnr_db']:.1f} dB ({q['psnr_after_h264_db']:.1f} after H.264)" if q["psnr_db"] is not None
                    else "reference")
        rows.append(f"| {label} | {args.shots / med * 60:.1f} | {med / (args.shots * job.steps):.3f} | "
                    f"{total_frames / med:.1f} | {d_med / med:.2f}x | {statistics.median(rss[name]):.0f} MiB | "
                    f"{psnr_txt} | {judge_txt} |")
        data[name] = {"seconds": runs[name], "rss_growth_mib": rss[name], **q}
    return rows, data


def _judge_losses(engines: dict, quality: dict, data: dict) -> list[str]:
    """Each reel run's judge scores against diffusers' own frames (positive = reel scores lower), one line each;
    the drops are added to `data`. Empty without the judge."""
    ref_judge = quality["diffusers"]["judge"]
    losses = []
    if ref_judge:
        for name in engines:
            j = quality[name]["judge"]
            drop = {k: ref_judge[k] - j[k] for k in ref_judge}
            data[name]["judge_drop_vs_diffusers"] = drop
            worst = max(drop, key=drop.get)
            losses.append(f"{name}: largest drop {drop[worst]:+.1f} points ({worst}), mean "
                          f"{statistics.mean(drop.values()):+.1f}")
    return losses


def _markdown(args: argparse.Namespace, note: str, job, rows: list[str], compile_s: float | None, outside: float,
              losses: list[str]) -> str:
    """The `vs_diffusers` section of benchmarks/RESULTS.md."""
    command = (f"`.venv/bin/python -m benchmarks.bench_vs_diffusers --shots {args.shots} --rounds {args.rounds} "
               f"--batch-size {args.batch_size} --step-cache {args.step_cache}{'' if args.bf16 else ' --no-bf16'}"
               f"{' --compile' if args.compile else ''}`")
    setup = (f"{args.shots} shots of {job.width}x{job.height}, {job.frames} frames, {job.steps} steps, guidance "
             f"{job.guidance}, same weights\nand seeds, CPU fp32 (bf16 only where the row says so), one process, "
             f"{args.rounds} interleaved rounds (median). Seconds per step = film time / (shots x steps),")
    compiled = (f"torch.compile rows: compiling took {compile_s:.0f} s once per process (two warm-up batches, "
                "outside the timed rounds; inductor's on-disk cache shortens it in later processes).\n\n"
                if compile_s else "")
    return f"""## reel vs diffusers' WanPipeline{note}

{command}

{setup}
so it includes text encoding, decoding and encoding. PSNR: reel's frames (before encoding; and its H.264 clips
decoded) against diffusers' frames.

| run | shots / min | s / step | frames / s | vs diffusers | peak RSS growth | PSNR | judge (% right) |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{compiled}Share of reel's wall time outside the text encoder, transformer and VAE: {outside:.1f} % (target <= 10 %).

Judge scores against diffusers' own frames (positive = reel scores lower; target for the step cache <= 2 points):
{chr(10).join("- " + x for x in losses) or "- judge n/a"}
"""


if __name__ == "__main__":
    main()
