"""The `reel takes` and `reel pick` commands (engine/takes.py does the work).

    reel takes film.toml --shot chase -n 3 [--final] [--out reel-out]
    reel pick chase 2 [--out reel-out]
"""

from __future__ import annotations

from pathlib import Path

import typer


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def takes(
    spec: Path = typer.Argument(..., help="The film spec (TOML)."),
    shot: str = typer.Option(..., "--shot", help="The shot to render takes of (its id)."),
    n: int = typer.Option(3, "-n", "--takes", help="How many takes (1-16); take 1 is the shot's current seed."),
    final: bool = typer.Option(False, "--final", help="Render the takes as finals (default: fast previews)."),
    out: Path = typer.Option(Path("reel-out"), "--out", "-o", help="Output folder; takes go to OUT/takes/SHOT/."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    characters: Path = typer.Option(None, "--characters", help="A character library folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Render N takes of one shot with distinct, recorded seeds, and a side-by-side sheet to compare them."""
    from reel.engine.devices import DeviceError
    from reel.engine.load_errors import ModelLoadError
    from reel.engine.lora_bank import LoraError
    from reel.engine.post.encode import EncodeError
    from reel.engine.progress import RenderProgress
    from reel.engine.runtime import Engine, OutOfMemory
    from reel.engine.spec import load_film
    from reel.engine.takes import render_takes

    with RenderProgress(quiet=quiet) as progress:
        try:
            film = load_film(spec, library=characters)
            engine = Engine(device=device, progress=progress)
            record = render_takes(engine, film, shot, n, out, final=final, say=progress.say)
        except ModelLoadError as err:
            _fail(str(err), code=1)
        except (LoraError, DeviceError, ValueError) as err:  # spec, plan, model and take problems
            _fail(str(err))
        except KeyboardInterrupt:
            _fail("interrupted; finished takes are kept and reused by the next run", code=130)
        except (OSError, EncodeError, OutOfMemory) as err:
            _fail(f"could not render the takes into {out}: {err}", code=1)
    kind = "final" if final else "preview"
    for t in (t for t in record["takes"] if t["kind"] == kind):
        typer.echo(f"take {t['take']}: seed {t['seed']} ({t['status']}) -> {out / 'takes' / shot / t['video']}")
    sheet = out / "takes" / shot / record[f"{kind}_sheet"]
    typer.echo(f"compare: {sheet}; keep one: reel pick {shot} TAKE --out {out}")


def pick(
    shot: str = typer.Argument(..., help="The shot id."),
    take: int = typer.Argument(..., help="The take number `reel takes` printed."),
    out: Path = typer.Option(Path("reel-out"), "--out", "-o", help="The output folder the takes were rendered into."),
) -> None:
    """Keep one take: its seed goes into the shot's `seed` in the spec (nothing else in the file changes), and a
    final render of it is reused by the next `reel render` instead of rendered again."""
    from reel.engine.takes import pick as pick_take

    try:
        picked = pick_take(out, shot, take)
    except (ValueError, OSError) as err:
        _fail(str(err))
    typer.echo(f"shot {shot}: take {take}, seed {picked['seed']} locked into the spec"
               + ("; its final is in place" if picked["final_reused"] else "; `reel render` renders its final"))
