"""`reel bench`: reel against the family's diffusers pipeline on the same weights, in one process, interleaved.

    reel bench wan2.1-t2v-1.3b --device cuda                  # random weights at real size, built on the GPU
    reel bench wan2.1-t2v-1.3b --device cuda --record         # ... and add the rows to benchmarks/RESULTS.md and
                                                              #     the measured table `auto` reads (CUDA only)
    reel bench ~/models/Wan2.1-T2V-1.3B-Diffusers --steps 6   # a local folder
    reel bench shapes --device cuda                           # the built-in model
    reel bench wan2.1-t2v-1.3b --device cpu --shrink --width 64 --height 64 --frames 5 --steps 2   # a CPU dry run

The model is a local folder, a built-in model, or a shipped config (models/configs/: `reel estimate --list`); for a
config, random weights at real size are built on the device (reel.models.random_model) with a small stand-in text
encoder, and the output says so. Each path (engine/bench_paths.py: the default, each attention backend, the fused
kernels, regional compile, CUDA graphs, fp8 matmuls, the lossy set) is one Engine with that path's `[speed]`; a path
that cannot run here is listed with every reason. After one warm-up shot each (its time is the "first shot" figure,
compile included), `--rounds` rounds time every side once, the order reversed each round; medians are reported.

Reported per side: s/step, denoise time, decode+encode time (diffusers: decode to numpy, and with export_to_video),
peak memory (CUDA: allocator peak; CPU: RSS growth), achieved TFLOP/s of the denoising loop and its share of this
device's measured matmul peak, and PSNR of the frames against diffusers'. Writes OUT/bench.json, OUT/bench.md and
OUT/bench.png; the rendered clips stay in OUT/clips/.
"""

from __future__ import annotations

import platform
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch

from reel.engine.bench_measure import matmul_peak_tflops, psnr, step_flops
from reel.engine.bench_paths import DEFAULT_PATHS, BenchPath, paths_from_option

DEFAULT_PROMPT = "a red circle moving left on a black background"


@dataclass(frozen=True)
class BenchSetting:
    """What one `reel bench` run measures (None: the model's own default)."""

    model: str
    device: str = "auto"
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    steps: int = 6
    guidance: float | None = None
    seed: int = 0
    prompt: str = DEFAULT_PROMPT
    rounds: int = 2
    paths: str = ",".join(DEFAULT_PATHS)
    shrink: bool = False  # configs only: scaled-down random weights (CPU dry runs and tests)
    budget: float = 0.0  # seconds: sides not started by then are reported as not run (0: no limit)


def run_bench(setting: BenchSetting, out: Path, say: Callable[[str], None] = print) -> dict:
    """Run the benchmark; returns the results dict that OUT/bench.json holds."""
    from reel.engine.bench_report import write_outputs
    from reel.engine.devices import pick_device

    device = pick_device(setting.device)
    paths = paths_from_option(setting.paths)
    if setting.rounds < 1:
        raise ValueError(f"--rounds {setting.rounds}: at least 1")
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:  # the random weights and warm-up clips in OUT/work go, whatever happens
        # 1. the model: a folder, a built-in model, or random weights from a shipped config
        folder, random_info = _model_folder(setting, device, work, say)
        # 2. every side, each loaded and warmed up once
        clock = _Clock(setting.budget)
        runners, skipped, first = _start_runners(setting, paths, folder, device, work, clock, say)
        # 3. interleaved rounds
        runs = _rounds(runners, skipped, setting.rounds, out / "clips", clock, say)
        if not any(n != "diffusers" for n in runs):
            raise RuntimeError("no reel path finished: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        # 4. what it all means, written down
        results = _summarise(setting, device, folder, random_info, runners, skipped, first, runs, say)
        for runner in runners.values():
            runner.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_outputs(results, out)
    return results


def _model_folder(setting: BenchSetting, device: torch.device, work: Path, say) -> tuple[Path, dict | None]:
    from reel.engine.estimate import shipped_configs
    from reel.models.registry import resolve_model

    if setting.model in shipped_configs():
        from reel.models.random_model import build_random_folder

        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        say(f"building random {'scaled-down ' if setting.shrink else ''}weights for {setting.model} on {device} "
            "(real configs, a small stand-in text encoder) ...")
        start = time.perf_counter()
        folder = build_random_folder(setting.model, work / "model", device=device, dtype=dtype, shrink=setting.shrink,
                                     seed=setting.seed)
        say(f"  built in {time.perf_counter() - start:.1f} s")
        return folder, {"config": setting.model, "shrink": setting.shrink,
                        "text_encoder": "random stand-in (1 layer, the real hidden size)", "weights": "random"}
    if setting.shrink:
        raise ValueError("--shrink scales a shipped config down; it does not apply to a model folder")
    return resolve_model(setting.model).path, None


def _shot_and_film(setting: BenchSetting) -> tuple[dict, dict]:
    shot = {"id": "bench", "prompt": setting.prompt, "steps": setting.steps}
    if setting.frames is not None:
        shot["frames"] = setting.frames
    if setting.guidance is not None:
        shot["guidance"] = setting.guidance
    film = {"seed": setting.seed, "title": "reel bench"}
    film.update({k: v for k, v in (("width", setting.width), ("height", setting.height)) if v is not None})
    return shot, film


class _Clock:
    """The run's time budget (0: none): sides not started when it runs out are reported as not run."""

    def __init__(self, budget: float):
        self.budget, self.start = budget, time.perf_counter()

    def out(self) -> bool:
        return self.budget > 0 and time.perf_counter() - self.start > self.budget


def _drop(runners: dict, skipped: dict, name: str, why: str, say) -> None:
    """Take a side out of the run (its reason goes in the table) and free what it holds."""
    runner = runners.pop(name)
    runner.close()
    skipped[name] = why
    say(f"{name}: {why}")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _first_frame(folder: Path, setting: BenchSetting, work: Path) -> dict:
    """For an image-to-video-only model (Wan I2V, ...): {"image": a first frame both sides start from} — a smooth
    colour gradient at the shot's size, written to OUT/work; {} for models that take text alone."""
    import numpy as np
    from PIL import Image

    from reel.models.registry import resolve_model

    model = resolve_model(str(folder))
    if not (model.takes_image and model.pipeline in model.family.image_pipelines):
        return {}
    w, h = setting.width or model.defaults.get("width", 64), setting.height or model.defaults.get("height", 64)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), np.full((h, w), 96.0)], axis=-1)  # (H, W, 3)
    Image.fromarray(rgb.astype(np.uint8)).save(work / "first.png")
    return {"image": "first.png"}


def _start_runners(setting, paths: list[BenchPath], folder: Path, device, work: Path, clock: _Clock, say):
    """{name: runner} for diffusers and every path that can run here, {path: why not} for the rest, and each
    runner's warm-up Run (its first shot: compile and autotuning land there). A side that fails is dropped with its
    error; the others go on."""
    from reel.engine.bench_runners import DiffusersRunner, ReelRunner

    shot, film = _shot_and_film(setting)
    shot |= _first_frame(folder, setting, work)
    runners, skipped, first = {}, {}, {}
    for path in paths:
        try:
            runner = ReelRunner(path, folder, shot, film, device, work)
            say(f"reel [{path.name}]: loading ...")
            runner.prepare()
        except Exception as err:  # noqa: BLE001 - the reasons a path cannot run here are its result
            skipped[path.name] = f"{type(err).__name__}: {err}"
            say(f"reel [{path.name}]: cannot run here — {err}")
            continue
        runners[path.name] = runner
    if not runners:
        raise RuntimeError("no reel path can run here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    any_reel = next(iter(runners.values()))
    say("diffusers: loading the pipeline ...")
    family, comps = any_reel.engine.load(any_reel.film.model)
    runners = {"diffusers": DiffusersRunner(folder, any_reel.job, comps, family, device, any_reel.engine.dtype),
               **runners}
    for name in list(runners):
        if clock.out():
            _drop(runners, skipped, name, f"not run: the time budget ({clock.budget:g} s) ran out", say)
            continue
        say(f"{name}: warm-up shot ...")
        try:
            first[name] = runners[name].run(work / "warm" / name)
        except Exception as err:  # noqa: BLE001 - a side that fails is reported, the others are still measured
            _drop(runners, skipped, name, f"failed in its warm-up: {type(err).__name__}: {err}", say)
            continue
        say(f"  first shot {first[name].total_s:.2f} s ({first[name].s_per_step:.3f} s/step)")
    return runners, skipped, first


def _rounds(runners: dict, skipped: dict, rounds: int, clips: Path, clock: _Clock, say) -> dict[str, list]:
    names = list(runners)
    runs: dict[str, list] = {n: [] for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            if name not in runners or (clock.out() and runs[name]):
                continue  # dropped, or out of time with a round already timed
            if clock.out():
                _drop(runners, skipped, name, f"not run: the time budget ({clock.budget:g} s) ran out", say)
                continue
            try:
                run = runners[name].run(clips / name)
            except Exception as err:  # noqa: BLE001 - reported in the table; the other sides go on
                _drop(runners, skipped, name, f"failed in round {r + 1}: {type(err).__name__}: {err}", say)
                continue
            if r > 0:
                run.frames = None  # the first timed round's frames are the ones compared
            runs[name].append(run)
            say(f"round {r + 1}/{rounds} {name}: {run.s_per_step:.3f} s/step, denoise {run.denoise_s:.2f} s, "
                f"decode {run.decode_s:.2f} s")
    return {n: v for n, v in runs.items() if n in runners}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def _side(runs: list, first, flops: float, peak: float, reference=None) -> dict:
    med = lambda key: statistics.median(getattr(r, key) for r in runs)  # noqa: E731
    s_step = med("s_per_step")
    side = {"s_per_step": s_step, "denoise_s": med("denoise_s"), "decode_s": med("decode_s"), "total_s": med("total_s"),
            "peak_bytes": max(r.peak_bytes for r in runs), "first_shot_s": first.total_s,
            "first_shot_s_per_step": first.s_per_step, "tflops": flops / s_step / 1e12 if s_step > 0 else None,
            "rounds_s_per_step": [r.s_per_step for r in runs]}
    side["share_of_peak"] = side["tflops"] / peak if side["tflops"] and peak else None
    if runs[0].extra:
        side.update({k: statistics.median(r.extra[k] for r in runs) for k in runs[0].extra})
    side["psnr_db"] = psnr(runs[0].frames, reference) if reference is not None else None
    return side


def _summarise(setting, device, folder, random_info, runners, skipped, first, runs, say) -> dict:
    from reel.engine.runtime import package_versions

    reel_any = next(r for n, r in runners.items() if n != "diffusers")
    job = reel_any.job
    flops = step_flops(reel_any.film.model, job.width, job.height, job.frames, job.guidance, job.max_sequence_length)
    dtype = torch.bfloat16 if device.type == "cuda" else reel_any.engine.dtype
    say(f"measuring this device's {str(dtype).replace('torch.', '')} matmul peak ...")
    peak = matmul_peak_tflops(device, dtype)
    ref = runs.get("diffusers")  # None: diffusers' pipeline failed here (its reason is in `skipped`)
    sides = {"diffusers": _side(ref, first["diffusers"], flops, peak)} if ref else {}
    for name, runner in runners.items():
        if name != "diffusers":
            sides[name] = _side(runs[name], first[name], flops, peak, ref[0].frames if ref else None)
            sides[name].update(applied=runner.applied, lossy=runner.path.lossy, setting=runner.path.setting,
                               value=runner.path.value, speed=runner.path.speed,
                               vs_diffusers=sides["diffusers"]["s_per_step"] / sides[name]["s_per_step"] if ref
                               else None)
    return {"date": date.today().isoformat(), "device": _device_name(device), "device_type": device.type,
            "versions": package_versions(), "model": setting.model, "folder": str(folder), "random": random_info,
            "shot": {"width": job.width, "height": job.height, "frames": job.frames, "steps": job.steps,
                     "guidance": job.guidance, "scheduler": job.scheduler, "shift": job.shift, "seed": job.seed,
                     "max_sequence_length": job.max_sequence_length, "dtype": str(dtype).replace("torch.", "")},
            "rounds": setting.rounds, "step_flops": flops, "matmul_peak_tflops": peak,
            "matmul_peak_dtype": str(dtype).replace("torch.", ""), "sides": sides, "skipped": skipped}
