"""The `reel` command line.

    reel render film.toml --out out/          render every shot and assemble out/film.mp4
    reel render film.toml --out out/ --shots intro,chase --force
    reel validate film.toml                   check a spec without rendering
    reel demo                                 render examples/demo.toml into reel-out/demo/

Exit codes: 0 done, 2 bad input (spec, flags, model folder; nothing written), 1 failure while rendering.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from engine.plan import PlanError, build_plan
from engine.spec import SpecError, load_film
from models.registry import ModelError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_SPEC = REPO_ROOT / "examples" / "demo.toml"

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="reel: a film as a shot list, rendered with open video diffusion models.")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _parse_shots(shots: str | None) -> list[str] | None:
    if shots is None:
        return None
    ids = [s.strip() for s in shots.split(",") if s.strip()]
    if not ids:
        _fail("--shots is empty — give shot ids separated by commas, e.g. --shots intro,chase")
    return ids


def _render(spec: Path, out: Path, force: bool, shots: str | None, device: str, quiet: bool,
            batch_size: int, model: str | None = None, characters: Path | None = None):
    from engine.characters import LoraError
    from engine.progress import RenderProgress
    from engine.runtime import DeviceError, Engine

    # 1. everything that can be checked before a file is written
    try:
        film = load_film(spec, model_override=model, library=characters)
        plan = build_plan(film, only=_parse_shots(shots), batch_size=batch_size)
    except (SpecError, PlanError, ModelError) as err:
        _fail(str(err))
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} exists and is not a folder — choose another output folder")
    # 2. render
    with RenderProgress(quiet=quiet) as progress:
        try:
            engine = Engine(device=device, progress=progress)
        except DeviceError as err:
            _fail(str(err))
        progress.say(f"{film.title}: {len(plan.jobs)} shot(s), {film.width}x{film.height}, {film.fps} fps, "
                     f"model {film.model.name}, device {engine.device}")
        try:  # model, LoRAs, upscaler, audio: every input error surfaces here, before a file is written
            engine.prepare(plan)
        except (LoraError, ValueError) as err:
            _fail(str(err))
        try:
            result = engine.render(plan, out, force=force)
        except KeyboardInterrupt:
            _fail("interrupted; finished shots are kept and reused by the next run", code=130)
        except OSError as err:
            _fail(f"could not write to {out}: {err}", code=1)
    return film, result


@app.command()
def render(
    spec: Path = typer.Argument(..., help="The film spec (TOML)."),
    out: Path = typer.Option(Path("reel-out"), "--out", "-o", help="Output folder (shots/, film.mp4, manifests)."),
    force: bool = typer.Option(False, "--force", help="Render every selected shot again, even if unchanged."),
    shots: str = typer.Option(None, "--shots", help="Only these shot ids, comma separated (e.g. intro,chase)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Shots that share settings per forward batch."),
    model: str = typer.Option(None, "--model", help="Override the spec's model (built-in name or folder)."),
    characters: Path = typer.Option(None, "--characters", help="A character library folder (NAME/character.toml "
                                    "beside its LoRA files), searched after the spec's own characters."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Render a film spec: one clip per shot in OUT/shots/, the assembled OUT/film.mp4, and manifests."""
    _film, result = _render(spec, out, force, shots, device, quiet, batch_size, model, characters)
    if not quiet:
        rendered = sum(s.status == "rendered" for s in result.shots)
        typer.echo(f"done: {rendered} rendered, {len(result.shots) - rendered} reused; "
                   f"film: {result.film_video or result.film_status}")


@app.command()
def validate(spec: Path = typer.Argument(..., help="The film spec (TOML)."),
             characters: Path = typer.Option(None, "--characters", help="A character library folder.")) -> None:
    """Check a film spec (fields, frame counts, sizes, ids, characters, model folder) without rendering."""
    try:
        film = load_film(spec, library=characters)
        plan = build_plan(film)
    except (SpecError, PlanError, ModelError) as err:
        _fail(str(err))
    typer.echo(f"{spec}: ok — {len(plan.jobs)} shot(s), model {film.model.name} ({film.model.family.name}), "
               f"{film.width}x{film.height}, {film.frames} frames at {film.fps} fps, {film.steps} steps")


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
    from engine.post.upscale import UpscaleError, load_upscaler, upscale_video
    from engine.runtime import DeviceError, pick_device

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
    if not quiet:
        typer.echo(f"\n{src} -> {dst} ({upscaler.scale}x, {upscaler.name})")


@app.command()
def demo(
    out: Path = typer.Option(Path("reel-out/demo"), "--out", "-o", help="Output folder."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    force: bool = typer.Option(False, "--force", help="Render again even if unchanged."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Render the demo film (examples/demo.toml) with the built-in model, plus a contact sheet PNG."""
    from engine.demo import demo_model_override
    from engine.post.contact import contact_sheet

    override = demo_model_override(lambda msg: typer.echo(msg, err=True))
    film, result = _render(DEMO_SPEC, out, force, None, device, quiet, 1, override)
    sheet = contact_sheet([(s.shot_id, s.video) for s in result.shots], out / "contact_sheet.png")
    if not quiet:
        typer.echo(f"demo: {result.film_video} and {sheet}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
