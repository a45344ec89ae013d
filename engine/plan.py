"""From a validated Film to a RenderPlan: every shot resolved to a ShotJob, grouped into batches.
Imports no torch.

Seeds are locked: a shot's seed is its explicit `seed`, else `stable_seed(film.seed, shot.id)`, so
adding, removing or reordering shots never moves another shot's seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from engine.spec import Film

SEED_BITS = 63


class PlanError(ValueError):
    """A render request that does not fit the film (e.g. --shots naming an unknown id)."""


def stable_seed(film_seed: int, shot_id: str) -> int:
    """A 63-bit seed from the film seed and the shot id, the same on every machine and Python."""
    digest = hashlib.sha256(f"reel-seed-v1:{film_seed}:{shot_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << SEED_BITS) - 1)


@dataclass(frozen=True)
class BatchKey:
    """What must match for shots to share one transformer forward pass."""

    model: str  # model folder path
    adapters: tuple  # ((name, weight), ...) active adapters
    width: int
    height: int
    frames: int
    steps: int
    guidance: float
    shift: float
    scheduler: str


@dataclass(frozen=True)
class ShotJob:
    """One shot resolved: everything that decides its pixels."""

    shot_id: str
    index: int  # position in the film
    prompt: str  # final prompt
    negative_prompt: str
    seed: int
    seed_source: str  # "explicit" | "derived"
    width: int  # pixels
    height: int  # pixels
    frames: int
    fps: int
    steps: int
    guidance: float
    shift: float
    scheduler: str
    max_sequence_length: int
    model_name: str
    model_path: str
    adapters: tuple = ()  # ((name, weight), ...)

    @property
    def batch_key(self) -> BatchKey:
        return BatchKey(self.model_path, self.adapters, self.width, self.height, self.frames, self.steps,
                        self.guidance, self.shift, self.scheduler)

    def fingerprint(self, weights_hash: str) -> str:
        """Hash of every input that decides the shot's pixels (the render store skips on a match)."""
        fields = asdict(self)
        for volatile in ("index", "model_path", "seed_source"):
            fields.pop(volatile)
        fields["weights_hash"] = weights_hash
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class RenderPlan:
    """Ordered batches of ShotJobs; `jobs` in film order."""

    film: Film
    jobs: tuple[ShotJob, ...]
    batches: tuple[tuple[ShotJob, ...], ...]


def resolve_job(film: Film, index: int) -> ShotJob:
    shot = film.shots[index]
    explicit = shot.seed is not None
    return ShotJob(
        shot_id=shot.id,
        index=index,
        prompt=shot.prompt.strip(),
        negative_prompt=shot.negative_prompt if shot.negative_prompt is not None else film.negative_prompt,
        seed=shot.seed if explicit else stable_seed(film.seed, shot.id),
        seed_source="explicit" if explicit else "derived",
        width=film.width,
        height=film.height,
        frames=shot.frames if shot.frames is not None else film.frames,
        fps=film.fps,
        steps=shot.steps if shot.steps is not None else film.steps,
        guidance=shot.guidance if shot.guidance is not None else film.guidance,
        shift=film.shift,
        scheduler=film.scheduler,
        max_sequence_length=film.max_sequence_length,
        model_name=film.model.name,
        model_path=str(film.model.path),
        adapters=(),
    )


def build_plan(film: Film, only: list[str] | None = None, batch_size: int = 1) -> RenderPlan:
    """Resolve every shot (or the `only` subset) and group shots with equal BatchKeys into batches."""
    if batch_size < 1:
        raise PlanError(f"batch size must be at least 1, got {batch_size}")
    ids = [s.id for s in film.shots]
    if only:
        unknown = [s for s in only if s not in ids]
        if unknown:
            raise PlanError(f"--shots names {', '.join(map(repr, unknown))}, not in {film.source}; "
                            f"its shots are: {', '.join(ids)}")
    jobs = tuple(resolve_job(film, i) for i, s in enumerate(film.shots) if not only or s.id in only)
    if batch_size == 1:  # film order, one shot per batch
        return RenderPlan(film=film, jobs=jobs, batches=tuple((job,) for job in jobs))
    groups: dict[BatchKey, list[ShotJob]] = {}  # first-appearance order of each key
    for job in jobs:
        groups.setdefault(job.batch_key, []).append(job)
    batches = []
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            batches.append(tuple(group[start:start + batch_size]))
    return RenderPlan(film=film, jobs=jobs, batches=tuple(batches))
