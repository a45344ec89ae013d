"""From a validated Film to a RenderPlan: every shot resolved to a ShotJob, grouped into batches.
Imports no torch.

Seeds are locked: a shot's seed is its explicit `seed`, else `stable_seed(film.seed, shot.id)`, so
adding, removing or reordering shots never moves another shot's seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from reel.engine.cast import cast_prompt
from reel.models.long_shots import long_window
from reel.engine.spec import Film

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
    adapters: tuple  # ((adapter name, weight or schedule), ...) active adapters
    width: int
    height: int
    frames: int
    steps: int
    guidance: float
    shift: float
    scheduler: str
    step_cache: float | None = None
    cfg_skip_last: float = 0.0
    image: bool = False  # image-conditioned shots run apart from text-only ones
    long: tuple = ()  # a long shot in chunks: (shot id, window, overlap) — it runs alone
    audio: bool = False  # shots whose sound is decoded run apart from those without


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
    adapters: tuple = ()  # ((adapter name, LoRA file, weight or schedule tuple), ...)
    characters: tuple = ()  # names of the characters cast in this shot
    codec: str = "h264"  # the clip's encoder preset
    upscale: str | None = None  # upscaler applied while streaming to the encoder
    watermark: str | None = None  # visible text drawn on every frame
    preview: bool = False  # a fast preview of the shot (few steps, preview adapter)
    preview_decoder: str | None = None  # previews: tiny latent decoder file instead of the VAE
    step_cache: float | None = None  # First-Block-Cache threshold (changes pixels slightly)
    cfg_skip_last: float = 0.0  # fraction of final steps without the unconditional pass
    image: str | None = None  # image-to-video: first-frame image file
    continue_from: str | None = None  # image-to-video: the shot whose last frame starts this one
    depth: int = 0  # length of the continue_from chain before this shot (renders after its sources)
    window: int = 0  # a long shot: frames per chunk (0: one pass), models/long_shots.py
    overlap: int = 0  # a long shot: frames each chunk repeats of the one before
    audio: bool = False  # the model's own sound is decoded and kept beside the clip (LTX-2 finals)
    audio_volume: float = 1.0  # that sound's level in the film's mix (not a pixel input: not fingerprinted)

    @property
    def batch_key(self) -> BatchKey:
        return BatchKey(self.model_path, tuple((a[0], a[2]) for a in self.adapters), self.width, self.height,
                        self.frames, self.steps, self.guidance, self.shift, self.scheduler, self.step_cache,
                        self.cfg_skip_last, bool(self.image or self.continue_from),
                        (self.shot_id, self.window, self.overlap) if self.window else (), self.audio)

    def fingerprint(self, weights_hash: str, lora_hashes: dict | None = None, inputs: dict | None = None) -> str:
        """Hash of every input that decides the shot's pixels (the render store skips on a match).

        `lora_hashes` maps each adapter's LoRA file path to its content hash; `inputs` holds the hashes of
        other inputs (the first-frame image's content, or the fingerprint of the shot continued from)."""
        fields = asdict(self)
        # left out: what does not decide pixels (index, seed_source, depth), and paths whose content is hashed
        # instead (model_path -> weights_hash, adapters -> lora_hashes, image and preview_decoder -> inputs)
        for not_pixels_or_hashed in ("index", "model_path", "seed_source", "adapters", "depth", "image",
                                     "preview_decoder", "audio_volume"):
            fields.pop(not_pixels_or_hashed)
        for added_later in ("window", "overlap", "audio"):  # at their defaults, fingerprints stay as they were
            if not fields[added_later]:
                fields.pop(added_later)
        fields["weights_hash"] = weights_hash
        fields["inputs"] = inputs or {}
        fields["adapters"] = [[name, (lora_hashes or {}).get(path, path), weight]
                              for name, path, weight in self.adapters]
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class RenderPlan:
    """Ordered batches of ShotJobs; `jobs` in film order. Everything the runtime needs about the shots is
    here, resolved once: it never re-resolves jobs from the Film."""

    film: Film
    jobs: tuple[ShotJob, ...]  # the shots to render
    batches: tuple[tuple[ShotJob, ...], ...]
    preview: bool = False
    film_jobs: tuple[ShotJob, ...] = ()  # every shot of the film in this mode, film order (assembly, audio, sources)
    other_jobs: tuple[ShotJob, ...] = ()  # every shot in the other mode (finals of previews, previews of finals);
    #                                       () when the film has no preview adapter

    def __post_init__(self) -> None:
        if self.jobs and not self.film_jobs:
            raise ValueError("a RenderPlan needs film_jobs (every shot of the film): build it with build_plan")

    def job(self, shot_id: str, preview: bool) -> ShotJob | None:
        """The film's job for a shot, as a preview or as a final render (None: not planned)."""
        jobs = self.film_jobs if preview == self.preview else self.other_jobs
        return next((j for j in jobs if j.shot_id == shot_id), None)


def shot_seed(film: Film, index: int) -> tuple[int, str]:
    """(seed, where it came from): the shot's seed, else its first seeded character's, else derived."""
    shot = film.shots[index]
    if shot.seed is not None:
        return shot.seed, "explicit"
    for name in shot.characters:
        if film.characters[name].seed is not None:
            return film.characters[name].seed, f"character:{name}"
    return stable_seed(film.seed, shot.id), "derived"


def preview_job(film: Film, job: ShotJob) -> ShotJob:
    """The preview of a final job: same seed, size and frames; few steps with the preview adapter."""
    from dataclasses import replace

    p = film.preview
    if p is None:
        raise PlanError(f"{film.source}: no preview adapter for model {film.model.name!r} — set film.preview_lora "
                        "to a few-step LoRA (e.g. a lightx2v or CausVid LoRA with preview_scheduler = \"unipc\"), "
                        "or distill one with `reel distill-preview`")
    return replace(job, steps=p.steps, guidance=p.guidance, scheduler=p.scheduler, shift=p.shift, preview=True,
                   audio=False,  # previews skip the model's sound
                   adapters=job.adapters + (("preview", str(p.lora), 1.0),), upscale=None,
                   preview_decoder=str(p.decoder) if p.decoder and not job.window else None,  # long shots: the VAE
                   codec="h264-draft" if job.codec == "h264" else job.codec)  # drafts: x264 ultrafast, same CRF


def resolve_job(film: Film, index: int) -> ShotJob:
    shot = film.shots[index]
    seed, seed_source = shot_seed(film, index)
    frames = shot.frames if shot.frames is not None else film.frames
    window, overlap = long_window(film.model)
    if frames <= window:
        window = overlap = 0  # fits one window: one pass
    cast = {name: film.characters[name] for name in shot.characters}
    adapters = tuple((adapter, str(path), c.weight) for c in cast.values() for adapter, path in c.adapters())
    return ShotJob(
        shot_id=shot.id,
        index=index,
        prompt=cast_prompt(shot.prompt.strip(), cast),
        negative_prompt=shot.negative_prompt if shot.negative_prompt is not None else film.negative_prompt,
        seed=seed,
        seed_source=seed_source,
        width=film.width,
        height=film.height,
        frames=frames,
        fps=film.fps,
        steps=shot.steps if shot.steps is not None else film.steps,
        guidance=shot.guidance if shot.guidance is not None else film.guidance,
        shift=film.shift,
        scheduler=film.scheduler,
        max_sequence_length=film.max_sequence_length,
        model_name=film.model.name,
        model_path=str(film.model.path),
        adapters=adapters,
        characters=shot.characters,
        codec=film.codec,
        upscale=film.upscale,
        watermark=film.watermark,
        step_cache=film.speed.step_cache,
        cfg_skip_last=film.speed.cfg_skip_last,
        image=shot.image,
        continue_from=shot.continue_from,
        depth=_depth(film, index),
        window=window,
        overlap=overlap,
        audio=film.model.family.audio and shot.audio is not False,
        audio_volume=shot.audio_volume if shot.audio_volume is not None else 1.0,
    )


def _depth(film: Film, index: int) -> int:
    ids = {s.id: i for i, s in enumerate(film.shots)}
    depth, shot = 0, film.shots[index]
    while shot.continue_from is not None and depth <= len(film.shots):
        depth, shot = depth + 1, film.shots[ids[shot.continue_from]]
    return depth


def build_plan(film: Film, only: list[str] | None = None, batch_size: int = 1, preview: bool = False) -> RenderPlan:
    """Resolve every shot (or the `only` subset) and group shots with equal BatchKeys into batches.
    `preview`: plan the fast previews instead of the final renders."""
    if batch_size < 1:
        raise PlanError(f"batch size must be at least 1, got {batch_size}")
    ids = [s.id for s in film.shots]
    if only:
        unknown = [s for s in only if s not in ids]
        if unknown:
            raise PlanError(f"--shots names {', '.join(map(repr, unknown))}, not in {film.source}; "
                            f"its shots are: {', '.join(ids)}")
    if only:  # a shot that continues another needs it: render the sources too
        ids = {s.id: s for s in film.shots}
        wanted, stack = set(only), list(only)
        while stack:
            src = ids[stack.pop()].continue_from
            if src is not None and src not in wanted:
                wanted.add(src)
                stack.append(src)
        only = [s.id for s in film.shots if s.id in wanted]
    finals = tuple(resolve_job(film, i) for i in range(len(film.shots)))
    previews = tuple(preview_job(film, j) for j in finals) if preview or film.preview is not None else ()
    film_jobs, other_jobs = (previews, finals) if preview else (finals, previews)
    jobs = tuple(j for j in film_jobs if not only or j.shot_id in only)
    # 1. shots with equal BatchKeys share batches (first-appearance order of each key)
    groups: dict[tuple, list[ShotJob]] = {}
    for job in jobs:  # a batch never mixes chain depths: a continued shot runs after its source
        groups.setdefault((job.depth, job.batch_key), []).append(job)
    batches = []
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            batches.append(tuple(group[start:start + batch_size]))
    # 2. batches with the same adapter set run one after another: few LoRA switches
    first_seen: dict[tuple, int] = {}
    for b in batches:
        first_seen.setdefault(b[0].batch_key.adapters, len(first_seen))
    batches.sort(key=lambda b: (b[0].depth, first_seen[b[0].batch_key.adapters], b[0].index))
    return RenderPlan(film=film, jobs=jobs, batches=tuple(batches), preview=preview, film_jobs=film_jobs,
                      other_jobs=other_jobs)


def adapter_switches(plan: RenderPlan) -> int:
    """How many times the active adapter set changes while rendering the plan."""
    sets = [b[0].batch_key.adapters for b in plan.batches]
    return sum(1 for prev, cur in zip(sets, sets[1:]) if prev != cur)
