"""The `reel` command line.

    reel render film.toml --out out/          render every shot and assemble out/film.mp4
    reel render film.toml --out out/ --shots intro,chase --force
    reel validate film.toml                   check a spec without rendering
    reel demo                                 render the demo film (examples/demo.toml) into reel-out/demo/

Exit codes: 0 done, 2 bad input (spec, flags, model folder; nothing written), 1 failure while rendering.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import typer

from reel.engine.bench_cli import bench
from reel.engine.plan import PlanError, build_plan
from reel.engine.takes_cli import pick, takes
from reel.kernels.attention import BACKENDS, BackendError
from reel.engine.spec import SpecError, load_film
from reel.models.registry import SHAPES_DIR, ModelError

DEMO_SPEC = SHAPES_DIR / "demo.toml"  # package data of the built-in model; examples/demo.toml links to it

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="reel: a film as a shot list, rendered with open video diffusion models.")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _batch_size(value: str, film, device: str, preview: bool) -> int:
    """--batch-size N, or auto: the largest batch the estimator fits in free VRAM (CUDA), 4 on the CPU."""
    if value != "auto":
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            _fail(f"--batch-size {value}: give a whole number >= 1, or auto")
        return n
    from reel.engine.accel import auto_batch_size

    return auto_batch_size(film, device, preview)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _parse_shots(shots: str | None) -> list[str] | None:
    if shots is None:
        return None
    ids = [s.strip() for s in shots.split(",") if s.strip()]
    if not ids:
        _fail("--shots is empty — give shot ids separated by commas, e.g. --shots intro,chase")
    return ids


def _render(spec: Path, out: Path, force: bool, shots: str | None, device: str, quiet: bool,
            batch_size: str, model: str | None = None, characters: Path | None = None, preview: bool = False,
            speed: dict | None = None, cluster: str | None = None, workers: int | None = None):
    from reel.engine.lora_bank import LoraError
    from reel.engine.load_errors import ModelLoadError
    from reel.engine.post.encode import EncodeError
    from reel.engine.progress import RenderProgress
    from reel.engine.devices import DeviceError
    from reel.engine.runtime import Engine, OutOfMemory
    from reel.engine.store import DISK_FULL, BusyError, DiskFullError, disk_full

    # 1. everything that can be checked before a file is written
    try:
        film = load_film(spec, model_override=model, library=characters)
        film = _with_speed(film, speed or {})
        plan = build_plan(film, only=_parse_shots(shots), batch_size=_batch_size(batch_size, film, device, preview),
                          preview=preview)
    except (SpecError, PlanError, ModelError, BackendError) as err:
        _fail(str(err))
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} exists and is not a folder — choose another output folder")
    parent = next(p for p in (out, *out.resolve().parents) if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        _fail(f"--out {out}: {parent} is not writable — choose a folder you can write to")
    # 2. render (SIGTERM cleans up like Ctrl-C: temporary files removed, finished shots kept)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    with RenderProgress(quiet=quiet) as progress:
        try:
            engine = Engine(device=device, progress=progress)
        except DeviceError as err:
            _fail(str(err))
        progress.say(f"{film.title}: {len(plan.jobs)} shot(s), {film.width}x{film.height}, {film.fps} fps, "
                     f"model {film.model.name}, device {engine.device}")
        if cluster:
            return film, _render_cluster(plan, out, force, cluster, workers, progress)
        try:  # model, LoRAs, upscaler, audio: every input error surfaces here, before a file is written
            engine.prepare(plan)
        except (LoraError, ValueError) as err:
            _fail(str(err))
        except ModelLoadError as err:  # the installation, not the input: a package or a version conflict
            _fail(str(err), code=1)
        except KeyboardInterrupt:
            _fail("interrupted while loading; nothing was written", code=130)
        try:
            result = engine.render(plan, out, force=force)
        except KeyboardInterrupt:
            _fail("interrupted; finished shots are kept and reused by the next run", code=130)
        except BusyError as err:
            _fail(str(err))
        except (OSError, EncodeError) as err:
            if isinstance(err, OSError) and err.errno in DISK_FULL:  # the file, its folder's free space, the fix
                named = err if isinstance(err, DiskFullError) else disk_full(Path(err.filename or out), err.errno)
                _fail(f"{named}; finished shots are kept and reused", code=1)
            _fail(f"could not write to {out}: {err}", code=1)
        except OutOfMemory as err:
            _fail(str(err), code=1)
    return film, result


def _render_cluster(plan, out: Path, force: bool, address: str, workers: int | None, progress):
    from reel.engine.cluster import ClusterError, WorkerInputError, render_on_cluster

    try:
        return render_on_cluster(plan, out, address=address, workers=workers, force=force, progress=progress)
    except (WorkerInputError, ValueError) as err:
        _fail(str(err))
    except ClusterError as err:
        _fail(str(err), code=1)


def _with_speed(film, flags: dict):
    """The spec's [speed] table with command-line flags on top; checks the attention and compile names early."""
    import dataclasses

    from reel.engine.speed import COMPILE_MODES

    given = {k: v for k, v in flags.items() if v is not None}
    if given.get("compile") not in (None, *COMPILE_MODES):
        raise BackendError(f"--compile {given['compile']}: unknown mode — use one of {', '.join(COMPILE_MODES)}")
    speed = dataclasses.replace(film.speed, **given)
    if given.get("step_cache") is not None and not film.model.family.step_cache:
        raise BackendError(f"--step-cache: {film.model.family.name} models have no step cache yet (diffusers' "
                           "First-Block-Cache does not know their transformer blocks) — leave it out")
    if speed.attention != "auto" and speed.attention not in BACKENDS:
        raise BackendError(f"attention {speed.attention!r}: unknown backend — use auto or one of {', '.join(BACKENDS)}")
    return dataclasses.replace(film, speed=speed)


STEP_CACHE_HELP = "First-Block-Cache threshold (e.g. 0.05): reuse block residuals when the first block barely changes."
CFG_SKIP_HELP = "Fraction of the final steps that skip the unconditional pass (e.g. 0.25)."
ATTENTION_HELP = f"Attention backend: auto or one of {', '.join(BACKENDS)}; forcing one that can't run lists why."
COMPILE_HELP = ("torch.compile the transformer: auto (CUDA: the mode a recorded GPU measurement shows faster, else "
                "off; CPU: off), off, regional (each repeated block, one shared graph), full (the whole transformer) "
                "or cuda-graphs (whole transformer with CUDA graphs; CUDA only). The first call compiles (slow).")
NO_COMPILE_HELP = "Same as --compile off."
FP8_HELP = ("fp8 matmuls for the linear layers of the transformer's blocks (lossy, off by default; CUDA with compute "
            "capability >= 8.9, or slowly on the CPU for checking the numbers).")


def _compile_flag(compile_: str | None, no_compile: bool) -> str | None:
    """--compile MODE / --no-compile as the [speed] compile value (None: the spec's)."""
    if no_compile and compile_ not in (None, "off"):
        _fail(f"--compile {compile_} and --no-compile contradict each other — give one")
    return "off" if no_compile else compile_


@app.command()
def render(
    spec: Path = typer.Argument(..., help="The film spec (TOML)."),
    out: Path = typer.Option(Path("reel-out"), "--out", "-o", help="Output folder (shots/, film.mp4, manifests)."),
    force: bool = typer.Option(False, "--force", help="Render every selected shot again, even if unchanged."),
    shots: str = typer.Option(None, "--shots", help="Only these shot ids, comma separated (e.g. intro,chase)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N."),
    batch_size: str = typer.Option("1", "--batch-size", help="Shots that share settings per forward batch: a number, "
                                   "or auto (from free VRAM and the estimator on CUDA; 4 on the CPU)."),
    model: str = typer.Option(None, "--model", help="Override the spec's model (built-in name or folder)."),
    characters: Path = typer.Option(None, "--characters", help="A character library folder (NAME/character.toml "
                                    "beside its LoRA files), searched after the spec's own characters."),
    preview: bool = typer.Option(False, "--preview", help="Render fast previews into OUT/preview/ instead (same "
                                 "seeds; a few steps with the preview adapter, no guidance)."),
    step_cache: float = typer.Option(None, "--step-cache", help=STEP_CACHE_HELP),
    cfg_skip_last: float = typer.Option(None, "--cfg-skip-last", help=CFG_SKIP_HELP),
    attention: str = typer.Option(None, "--attention", help=ATTENTION_HELP),
    compile_: str = typer.Option(None, "--compile", help=COMPILE_HELP),
    no_compile: bool = typer.Option(False, "--no-compile", help=NO_COMPILE_HELP),
    fp8_matmul: bool = typer.Option(None, "--fp8-matmul/--no-fp8-matmul", help=FP8_HELP),
    threads: int = typer.Option(None, "--threads", help="CPU threads for torch."),
    offload: str = typer.Option(None, "--offload", help="auto, none, model or group (CUDA memory savers; auto picks "
                                "from the estimator and the free VRAM)."),
    vae_tiling: bool = typer.Option(None, "--vae-tiling/--no-vae-tiling", help="Tiled VAE decode (default auto)."),
    weights: str = typer.Option(None, "--weights", help="auto, bf16, fp16 or fp8 transformer weights on CUDA."),
    cluster: str = typer.Option(None, "--cluster", help="Render on Ray: local (this machine), auto (a running "
                                "cluster) or ray://HOST:PORT. Needs pip install 'reel[cluster]'."),
    workers: int = typer.Option(None, "--workers", min=1, help="Ray workers (default: one per GPU, else per CPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Render a film spec: one clip per shot in OUT/shots/, the assembled OUT/film.mp4, and manifests."""
    speed = {"step_cache": step_cache, "cfg_skip_last": cfg_skip_last, "attention": attention,
             "compile": _compile_flag(compile_, no_compile), "fp8_matmul": fp8_matmul,
             "threads": threads, "offload": offload, "vae_tiling": vae_tiling, "weights": weights}
    _film, result = _render(spec, out, force, shots, device, quiet, batch_size, model, characters, preview, speed,
                            cluster, workers)
    if not quiet:
        rendered = sum(s.status == "rendered" for s in result.shots)
        typer.echo(f"done: {rendered} rendered, {len(result.shots) - rendered} reused; "
                   f"film: {result.film_video or result.film_status}")


@app.command()
def validate(spec: Path = typer.Argument(..., help="The film spec (TOML)."),
             characters: Path = typer.Option(None, "--characters", help="A character library folder.")) -> None:
    """Check a film spec without rendering: fields, frame counts, sizes against the model's limits, ids,
    characters, the model folder and its weights, and that every file it names is what its field says (LoRAs,
    upscaler, preview decoder: headers; audio: decoded). A spec validate accepts renders."""
    try:
        film = _with_speed(load_film(spec, library=characters), {})  # attention and compile names, as render
        plan = build_plan(film)
    except (SpecError, PlanError, ModelError, BackendError) as err:
        _fail(str(err))
    typer.echo(f"{spec}: ok — {len(plan.jobs)} shot(s), model {film.model.name} ({film.model.family.name}), "
               f"{film.width}x{film.height}, {film.frames} frames at {film.fps} fps, {film.steps} steps")
    for job in plan.jobs:
        if job.window:
            from reel.models.long_shots import describe

            typer.echo(f"shot {job.shot_id}: {job.frames} frames, longer than the model's window — "
                       f"{describe(job.frames, job.window, job.overlap, film.model.temporal_factor)}")
        if job.audio:
            typer.echo(f"shot {job.shot_id}: with the model's own sound (volume {job.audio_volume:g} in the film)")
    for name in film.unused_characters:
        typer.echo(f"note: characters.{name} is defined but no shot casts it (write {{{name}}} in a prompt)")


@app.command()
def upscale(
    src: Path = typer.Argument(..., help="The video to upscale."),
    dst: Path = typer.Argument(..., help="Where to write the upscaled H.264 .mp4 (same fps)."),
    model: str = typer.Option("x2", "--model", "-m", help="x2 (built-in), lanczos2, lanczos4, or a model file "
                              "spandrel loads (ESRGAN, Real-ESRGAN, SwinIR, ...)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Upscale a video frame by frame (tiled, streamed: memory does not grow with its length)."""
    from reel.engine.post.upscale import UpscaleError, load_upscaler, upscale_video
    from reel.engine.devices import DeviceError, pick_device
    from reel.engine.store import DiskFullError

    try:
        upscaler = load_upscaler(model, pick_device(device))
    except (UpscaleError, DeviceError) as err:
        _fail(str(err))
    if dst.resolve() == src.resolve():
        _fail(f"{dst}: the output would overwrite the input — choose another output path")

    def show(done: int, total: int | None) -> None:
        if not quiet:
            typer.echo(f"\r  {done}/{total or '?'} frames", err=True, nl=False)

    try:
        upscale_video(src, dst, upscaler, on_progress=show)
    except UpscaleError as err:
        _fail(str(err))
    except DiskFullError as err:  # the partial output is already removed; the message names file and free space
        _fail(str(err), code=1)
    if not quiet:
        typer.echo(f"\n{src} -> {dst} ({upscaler.scale}x, {upscaler.name})")


@app.command()
def preview(
    spec: Path = typer.Argument(..., help="The film spec (TOML)."),
    out: Path = typer.Option(Path("reel-out"), "--out", "-o", help="Output folder; previews go to OUT/preview/."),
    force: bool = typer.Option(False, "--force", help="Render every selected preview again."),
    shots: str = typer.Option(None, "--shots", help="Only these shot ids, comma separated."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    batch_size: str = typer.Option("4", "--batch-size", help="Shots per forward batch: a number or auto."),
    characters: Path = typer.Option(None, "--characters", help="A character library folder."),
    compile_: str = typer.Option(None, "--compile", help=COMPILE_HELP),
    no_compile: bool = typer.Option(False, "--no-compile", help=NO_COMPILE_HELP),
    fp8_matmul: bool = typer.Option(None, "--fp8-matmul/--no-fp8-matmul", help=FP8_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Preview a film in seconds: every shot in a few steps with the preview adapter and the final render's
    seeds, plus OUT/preview/contact_sheet.png and OUT/preview/storyboard.gif. Approve, then `reel render`."""
    speed = {"compile": _compile_flag(compile_, no_compile), "fp8_matmul": fp8_matmul}
    _film, result = _render(spec, out, force, shots, device, quiet, batch_size, None, characters, preview=True,
                            speed=speed)
    if not quiet:
        rendered = sum(s.status == "rendered" for s in result.shots)
        typer.echo(f"preview: {rendered} rendered, {len(result.shots) - rendered} reused; "
                   f"{result.film_video or result.film_status}")


@app.command("distill-preview")
def distill_preview_cmd(
    dataset: Path = typer.Argument(..., help="Folder of captioned clips the base model knows (as for train-lora)."),
    base: str = typer.Option(None, "--base", help="Base model (default shapes)."),
    out: Path = typer.Option(None, "--out", help="The preview LoRA file to write (.safetensors)."),
    config: Path = typer.Option(None, "--config", help="A TOML file of settings; flags override it."),
    steps: int = typer.Option(None, "--steps", help="Optimisation steps (default 500)."),
    rank: int = typer.Option(None, "--rank", help="LoRA rank (default 16)."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default 1e-4)."),
    teacher_steps: int = typer.Option(None, "--teacher-steps", help="Teacher ODE grid (default 32)."),
    skip: int = typer.Option(None, "--skip", help="Grid steps per teacher solve (default 4)."),
    teacher_guidance: float = typer.Option(None, "--teacher-guidance", help="CFG folded in (default: model's)."),
    preview_steps: int = typer.Option(None, "--preview-steps", help="Steps previews render with (default 4)."),
    validate_every: int = typer.Option(None, "--validate-every", help="Steps between validation sheets (0: never)."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints."),
    work_dir: Path = typer.Option(None, "--work-dir", help="Checkpoints and logs (default OUT.train)."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
    stop_after: int = typer.Option(None, "--stop-after", help="Stop with a checkpoint after this many steps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Distil a few-step preview LoRA from a base model (latent consistency distillation, LCM-LoRA's recipe)."""
    from reel.engine.train.config import ConfigError, build_config
    from reel.engine.train.data import DatasetError
    from reel.engine.train.lora import TrainError, train_lora

    flags = {"kind": "preview", "dataset": str(dataset), "base": base, "out": str(out) if out else None,
             "steps": steps, "rank": rank, "lr": lr, "teacher_steps": teacher_steps, "skip": skip,
             "teacher_guidance": teacher_guidance, "preview_steps": preview_steps, "validate_every": validate_every,
             "checkpoint_every": checkpoint_every, "work_dir": str(work_dir) if work_dir else None, "device": device}
    say = (lambda msg: None) if quiet else (lambda msg: typer.echo(msg, err=True))
    try:
        cfg = build_config(flags, config)
        result = train_lora(cfg, say=say, resume=resume, stop_after=stop_after,
                            on_step=None if quiet else _step_printer(cfg.steps))
    except (ConfigError, DatasetError, TrainError) as err:
        _fail(str(err))
    say(f"\npreview LoRA: {result.lora} after {result.steps_done}/{cfg.steps} steps; logs in {result.work_dir}")


def _step_printer(total: int):
    def show(step: int, _total: int, loss: float) -> None:
        if step == 1 or step % 10 == 0 or step == total:
            typer.echo(f"\r  step {step}/{total}  loss {loss:.4f}", err=True, nl=False)
    return show


@app.command("train-lora")
def train_lora_cmd(
    dataset: Path = typer.Argument(..., help="Folder of clips (.mp4 .webm .gif) and/or images (.png .jpg .webp), "
                                   "each with a same-name .txt caption; optional dataset.toml."),
    base: str = typer.Option(None, "--base", help="Base model: a built-in name (default shapes) or a diffusers "
                             "folder."),
    trigger: str = typer.Option(None, "--trigger", help="The word the captions use for the character, e.g. sks."),
    out: Path = typer.Option(None, "--out", help="The LoRA file to write (.safetensors); a ComfyUI copy goes "
                             "beside it."),
    config: Path = typer.Option(None, "--config", help="A TOML file of training settings; flags override it."),
    rank: int = typer.Option(None, "--rank", help="LoRA rank (default 16)."),
    alpha: float = typer.Option(None, "--alpha", help="LoRA alpha (default 16)."),
    steps: int = typer.Option(None, "--steps", help="Optimisation steps (default 500)."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default 1e-4)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Samples per step (default 1)."),
    grad_accum: int = typer.Option(None, "--grad-accum", help="Gradient accumulation steps (default 1)."),
    schedule: str = typer.Option(None, "--schedule", help="constant or cosine, after warmup (default constant)."),
    warmup_steps: int = typer.Option(None, "--warmup-steps", help="Linear warmup steps (default 20)."),
    frames: int = typer.Option(None, "--frames", help="Frames per sample (model default; Wan: 4k+1)."),
    width: int = typer.Option(None, "--width", help="Sample width (model default)."),
    height: int = typer.Option(None, "--height", help="Sample height (model default)."),
    extract: str = typer.Option(None, "--extract", help="Frames from a clip: head or uniform (default uniform)."),
    repeats: int = typer.Option(None, "--repeats", help="Times each item appears per epoch (default 1)."),
    seed: int = typer.Option(None, "--seed", help="Training seed (default 0)."),
    uncond_preservation: float = typer.Option(
        None, "--uncond-preservation", help="Fraction of samples that keep the empty-prompt prediction as the base "
        "model makes it, so classifier-free guidance strengthens the character instead of cancelling it "
        "(default 0.25; 0: off)."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints (default 100)."),
    validate_every: int = typer.Option(None, "--validate-every", help="Steps between validation renders (0: never)."),
    work_dir: Path = typer.Option(None, "--work-dir", help="Checkpoints, loss log and validation sheets "
                                  "(default: OUT without suffix + .train)."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N."),
    gradient_checkpointing: bool = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing",
                                                help="Recompute activations to save memory (default: on a GPU only)."),
    mixed_precision: str = typer.Option(None, "--mixed-precision", help="auto, bf16 or no (default auto: bf16 "
                                        "autocast on CUDA and on CPUs with native bf16)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in the work dir."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad dataset files instead of stopping."),
    stop_after: int = typer.Option(None, "--stop-after", help="Stop (with a checkpoint) after this many steps in "
                                   "this run; continue later with --resume."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Train a character LoRA from a folder of captioned clips and images."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from reel.engine.train.config import ConfigError, build_config
    from reel.engine.train.data import DatasetError
    from reel.engine.train.lora import TrainError, train_lora

    flags = {"dataset": str(dataset), "base": base, "trigger": trigger, "out": str(out) if out else None,
             "rank": rank, "alpha": alpha, "steps": steps, "lr": lr, "batch_size": batch_size,
             "grad_accum": grad_accum, "schedule": schedule, "warmup_steps": warmup_steps, "frames": frames,
             "width": width, "height": height, "extract": extract, "repeats": repeats, "seed": seed,
             "uncond_preservation": uncond_preservation, "checkpoint_every": checkpoint_every,
             "validate_every": validate_every,
             "work_dir": str(work_dir) if work_dir else None, "device": device,
             "gradient_checkpointing": gradient_checkpointing, "mixed_precision": mixed_precision}
    say = (lambda msg: None) if quiet else (lambda msg: typer.echo(msg, err=True))
    try:
        cfg = build_config(flags, config)
        with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                      TimeRemainingColumn(), disable=quiet, transient=True) as bar:
            task = bar.add_task("train", total=cfg.steps, loss="-")
            result = train_lora(cfg, say=say, skip_bad=skip_bad, resume=resume, stop_after=stop_after,
                                on_step=lambda s, n, loss: bar.update(task, completed=s, loss=f"{loss:.4f}"))
    except (ConfigError, DatasetError, TrainError) as err:
        _fail(str(err))
    if result.steps_done < cfg.steps:
        say(f"stopped at step {result.steps_done}/{cfg.steps}; continue with --resume")
    else:
        say(f"LoRA: {result.lora} (ComfyUI: {result.comfyui}); loss log and plot in {result.work_dir}")


@app.command()
def models(search: list[Path] = typer.Option(None, "--search", help="More folders to look for models in.")) -> None:
    """Model families reel runs, the folder layout each expects, and the model folders found locally."""
    from reel.engine.doctor import models_report

    typer.echo(models_report(search or []))


@app.command()
def estimate(
    spec: Path = typer.Argument(..., help="The film spec (TOML)."),
    gpu: str = typer.Option(..., "--gpu", help="h100, h200, a100, l40s or 4090."),
    model_config: str = typer.Option(None, "--model-config", help="Estimate a shipped model config instead of the "
                                     "spec's folder (e.g. wan2.1-t2v-14b), before downloading it."),
) -> None:
    """Predict time per shot and per film and peak VRAM on a GPU, from FLOPs counted on the meta device."""
    from reel.engine.estimate import estimate_film, format_estimate

    try:
        # with --model-config the shipped model's limits apply, not those of the folder the spec names
        film = load_film(spec, limits=model_config is None)
        result = estimate_film(film, gpu, model_config=model_config)
    except (SpecError, ModelError, ValueError) as err:
        _fail(str(err))
    typer.echo(format_estimate(result))


@app.command("import-model")
def import_model(
    file: Path = typer.Argument(..., help="A single-file transformer: original or ComfyUI .safetensors, or .gguf."),
    base: Path = typer.Option(..., "--base", help="A diffusers folder of the same family (text encoder, VAE, ...)."),
    out: Path = typer.Option(..., "--out", help="The model folder to create (links to --base, no copies)."),
) -> None:
    """Make a model folder from a single-file transformer and a diffusers folder of the same family."""
    from reel.models.single_file import SingleFileError, import_single_file

    try:
        folder = import_single_file(file, base, out)
    except (SingleFileError, ModelError) as err:
        _fail(str(err))
    typer.echo(f"{folder}: use it as a film's model (model = \"{folder}\")")


@app.command()
def doctor() -> None:
    """Check this machine: torch and CUDA, VRAM, ffmpeg encoders, attention backends, packages, disk."""
    from reel.engine.doctor import doctor_report

    typer.echo(doctor_report())


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; any non-loopback one needs a token."),
    port: int = typer.Option(8188, "--port", help="TCP port (0: any free port, printed at start)."),
    token: str = typer.Option(None, "--token", envvar="REEL_TOKEN", help="Bearer token every API call must send: "
                              "at least 16 characters (surrounding whitespace is stripped); required off loopback."),
    root: list[Path] = typer.Option(None, "--root", help="A folder specs may name files in (repeatable); relative "
                                    "paths in a spec start at the first."),
    data: Path = typer.Option(Path("reel-server"), "--data", help="Queue database and job outputs."),
    device: list[str] = typer.Option(None, "--device", help="A device to render on, one worker each (repeatable; "
                                     "default auto)."),
    max_body: int = typer.Option(1 << 20, "--max-body", help="Largest spec accepted, in bytes."),
) -> None:
    """Serve a render queue over HTTP: JSON API, live progress (SSE) and a web page at http://HOST:PORT/."""
    from reel.engine.serve import ServeConfig, ServeError, serve as run_server

    try:
        run_server(ServeConfig(host=host, port=port, token=token, roots=tuple(root or ()), data=data,
                               devices=tuple(device or ("auto",)), max_body=max_body))
    except ServeError as err:
        _fail(str(err))


@app.command()
def demo(
    out: Path = typer.Option(Path("reel-out/demo"), "--out", "-o", help="Output folder."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    force: bool = typer.Option(False, "--force", help="Render again even if unchanged."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Render the demo film (examples/demo.toml) with the built-in model, plus a contact sheet PNG."""
    from reel.engine.post.contact import contact_sheet

    film, result = _render(DEMO_SPEC, out, force, None, device, quiet, 1)
    sheet = contact_sheet([(s.shot_id, s.video) for s in result.shots], out / "contact_sheet.png")
    if not quiet:
        typer.echo(f"demo: {result.film_video} and {sheet}")


app.command("bench")(bench)  # engine/bench_cli.py
app.command("takes")(takes)  # engine/takes_cli.py
app.command("pick")(pick)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
