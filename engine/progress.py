"""Progress display for renders: a bar over the film's shots, a bar over each batch's steps, and a
one-line summary per shot. `quiet=True` prints nothing (errors still go to stderr)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from reel.engine.sampling import StepState


class RenderProgress:
    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or Console(stderr=True, highlight=False)
        self._progress: Progress | None = None
        self._film_task = None
        self._step_task = None

    def __enter__(self) -> RenderProgress:
        if not self.quiet:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), console=self.console, transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def say(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    def film(self, total_shots: int) -> None:
        if self._progress is not None:
            self._film_task = self._progress.add_task("shots", total=total_shots)

    def batch(self, shot_ids: tuple[str, ...], steps: int) -> None:
        if self._progress is None:
            return
        label = ", ".join(shot_ids) if len(shot_ids) <= 3 else f"{shot_ids[0]} +{len(shot_ids) - 1}"
        if self._step_task is not None:
            self._progress.remove_task(self._step_task)
        self._step_task = self._progress.add_task(f"  {label}: steps", total=steps)

    def step(self, state: StepState) -> None:
        if self._progress is not None and self._step_task is not None:
            self._progress.update(self._step_task, completed=state.step)

    def denoised(self, shot_ids: tuple[str, ...]) -> None:
        """A batch's sampler has returned its latents (decoding follows); after its last step()."""

    def shot_done(self, line: str) -> None:
        if self._progress is not None and self._film_task is not None:
            self._progress.advance(self._film_task)
        self.say(line)
