"""The film spec: TOML in, a validated `Film` out. Imports no torch.

    film = load_film("examples/demo.toml")   # raises SpecError listing every problem

Every problem names the file, the field path (`shots[3].frames`) and the fix. Nothing is rounded or
overridden silently: a frame count the model cannot take is an error that proposes the nearest valid
counts. Values the spec leaves out come from the model's defaults (its reel.json, else its family's).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reel.engine.speed import SpeedConfig, SpeedSection
from reel.engine.cast import Character, load_library, load_library_character, parse_character, placeholders
from reel.engine.spec_post import (
    AudioSection,
    AudioTrack,
    TransitionName,
    check_audio_tracks,
    check_transitions,
    resolve_upscale,
)
from reel.models.registry import ModelError, ModelInfo, resolve_model

SHOT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RESERVED_IDS = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
MAX_SEED = 2**63 - 1


class SpecError(ValueError):
    """A spec that cannot be rendered. `problems` holds (field path, message) pairs."""

    def __init__(self, source: Path | str, problems: list[tuple[str, str]]):
        self.source = str(source)
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        lines = [f"{self.source}: {count}"]
        lines += [f"  {path}: {msg}" if path else f"  {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


# ---- the file as written (strict: "17" is not a number, unknown keys are errors) -----------------
class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class FilmSection(_Strict):
    title: str = "Untitled"
    model: str = "shapes"
    width: int | None = Field(None, ge=8, le=8192)
    height: int | None = Field(None, ge=8, le=8192)
    fps: int | None = Field(None, ge=1, le=240)
    frames: int | None = Field(None, ge=1, le=100_000)
    steps: int | None = Field(None, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0.0, le=100.0)
    shift: float | None = Field(None, gt=0.0, le=100.0)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    negative_prompt: str | None = None
    scheduler: Literal["default", "unipc", "euler", "ddim", "dpm"] | None = None
    characters: str | None = None  # a character library folder (LIB/NAME/character.toml)
    codec: Literal["h264", "h265", "prores", "av1"] = "h264"
    upscale: str | None = None
    watermark: str | None = None
    preview_lora: str | None = None  # few-step LoRA for `reel preview` (default: the model's own)
    preview_steps: int | None = Field(None, ge=1, le=16)
    preview_scheduler: Literal["lcm", "euler", "unipc"] | None = None
    preview_shift: float | None = Field(None, gt=0.0, le=100.0)
    preview_guidance: float | None = Field(None, ge=0.0, le=100.0)
    preview_decoder: str | None = None  # tiny latent decoder for previews, or "vae" (default: the model's own)


class ShotSection(_Strict):
    id: str
    prompt: str
    frames: int | None = Field(None, ge=1, le=100_000)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    steps: int | None = Field(None, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0.0, le=100.0)
    negative_prompt: str | None = None
    characters: list[str] | None = None
    transition: TransitionName = "cut"
    transition_seconds: float | None = Field(None, gt=0.0, le=60.0)
    image: str | None = None  # image-to-video: the first frame (a file, relative to the spec)
    continue_from: str | None = None  # image-to-video: start from the last frame of this shot


class SpecFile(_Strict):
    film: FilmSection = FilmSection()
    speed: SpeedSection = SpeedSection()
    characters: dict[str, dict] = {}
    shots: list[ShotSection] = Field(min_length=1)
    audio: list[AudioSection] = []


_SECTION_FIELDS = {"film": FilmSection, "shots": ShotSection, "audio": AudioSection, "speed": SpeedSection,
                   "": SpecFile}


# ---- the validated film (what the rest of reel sees) ---------------------------------------------
@dataclass(frozen=True)
class Shot:
    """One shot as written; None means "the film's value"."""

    id: str  # safe as a file name: [A-Za-z0-9][A-Za-z0-9_-]*
    prompt: str
    frames: int | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    characters: tuple[str, ...] = ()  # cast: listed names, then names written as {NAME} in the prompt
    transition: str = "cut"  # how the shot starts: "cut" or "crossfade" from the previous shot
    transition_seconds: float | None = None
    transition_frames: int = 0  # crossfade frames into this shot (0 = cut)
    image: str | None = None  # absolute path of the first-frame image
    continue_from: str | None = None  # id of the shot whose last frame starts this one


@dataclass(frozen=True)
class Preview:
    """Fast-preview settings: a few-step LoRA, its sampler, no classifier-free guidance by default."""

    lora: Path
    steps: int
    scheduler: str  # "lcm" (consistency sampling) | "euler" | "unipc"
    shift: float
    guidance: float
    decoder: Path | None = None  # tiny preview decoder (models/preview_decoder.py); None: the model's VAE


@dataclass(frozen=True)
class Film:
    """A validated film: film-level values resolved against the model's defaults."""

    source: Path  # the spec file
    title: str
    model: ModelInfo
    width: int  # pixels
    height: int  # pixels
    fps: int  # frames per second
    frames: int  # default frames per shot
    steps: int  # denoising steps
    guidance: float  # classifier-free guidance scale (<= 1 disables the unconditional pass)
    shift: float  # flow-matching timestep shift
    seed: int  # film seed; shot seeds derive from it and the shot id
    negative_prompt: str
    scheduler: str  # "default" (the model folder's own) | "unipc" | "euler" (flow models) | "ddim" | "dpm" (CogVideoX)
    max_sequence_length: int  # text tokens per prompt (padded)
    shots: tuple[Shot, ...]
    characters: dict[str, Character] = field(default_factory=dict)  # every character a shot casts
    codec: str = "h264"  # h264 | h265 | prores | av1
    upscale: str | None = None  # "x2" | "lanczos2" | "lanczos4" | model file path
    watermark: str | None = None  # visible text on every frame
    audio: tuple[AudioTrack, ...] = ()
    preview: Preview | None = None  # how `reel preview` renders; None: no preview adapter known
    speed: SpeedConfig = field(default_factory=SpeedConfig)  # opt-in speed-ups ([speed] table)

    def shot(self, shot_id: str) -> Shot:
        for s in self.shots:
            if s.id == shot_id:
                return s
        raise KeyError(shot_id)


# ---- error formatting ------------------------------------------------------------------------------
def _path(loc: tuple, data: dict) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    if len(loc) >= 2 and loc[0] == "shots" and isinstance(loc[1], int):
        shots = data.get("shots")
        if isinstance(shots, list) and loc[1] < len(shots) and isinstance(shots[loc[1]], dict):
            sid = shots[loc[1]].get("id")
            if isinstance(sid, str):
                out += f" (shot {sid!r})"
    return out


def _did_you_mean(loc: tuple) -> str:
    section = "" if len(loc) == 1 else str(loc[0])
    model = _SECTION_FIELDS.get(section)
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    allowed = ", ".join(model.model_fields)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key — {hint}allowed keys: {allowed}"


def _pydantic_problems(err: ValidationError, data: dict) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        loc, kind = tuple(e["loc"]), e["type"]
        if kind == "extra_forbidden":
            msg = _did_you_mean(loc)
        elif kind == "missing" and loc == ("shots",):
            msg = "a film needs at least one [[shots]] table with an id and a prompt"
        elif kind == "missing":
            msg = "required but missing — add it"
        elif kind in ("int_type", "float_type", "string_type", "bool_type", "list_type", "model_type", "dict_type"):
            want = {"int_type": "a whole number", "float_type": "a number", "string_type": "a string in quotes",
                    "list_type": "a list ([[shots]] tables)", "model_type": "a table", "dict_type": "a table",
                    "bool_type": "true or false"}[kind]
            msg = f"must be {want}, got {e.get('input')!r}"
        elif kind == "too_short" and loc == ("shots",):
            msg = "a film needs at least one [[shots]] table with an id and a prompt"
        else:
            msg = f"{e['msg']} (got {e.get('input')!r})"
        problems.append((_path(loc, data), msg))
    return problems


# ---- loading -------------------------------------------------------------------------------------------
def parse_toml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(path, [("", "file not found — check the path")]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(path, [("", f"cannot be read ({err})")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(path, [("", f"not valid TOML: {err}")]) from None


def load_film(path: str | Path, model_override: str | None = None, library: Path | None = None) -> Film:
    """Read, validate and resolve a film spec; raise SpecError with every problem found.

    `library`: a character library folder that extends the spec's own (the CLI's --characters)."""
    path = Path(path)
    data = parse_toml(path)
    return film_from_dict(data, path, model_override=model_override, library=library)


def film_from_dict(data: dict, source: Path, model_override: str | None = None,
                   library: Path | None = None) -> Film:
    """A Film from a parsed spec; raises SpecError listing every problem with its field path."""
    try:
        spec = SpecFile.model_validate(data)
    except ValidationError as err:
        raise SpecError(source, _pydantic_problems(err, data)) from None
    problems: list[tuple[str, str]] = []
    f = spec.film

    # 1. the model (read from JSON only)
    model_ref = model_override or f.model
    try:
        model = resolve_model(model_ref, base_dir=source.parent.resolve())
    except ModelError as err:
        raise SpecError(source, [("film.model", str(err))]) from None
    d = model.defaults

    # 2. film-level values, spec first, then the model's defaults
    width = f.width if f.width is not None else int(d["width"])
    height = f.height if f.height is not None else int(d["height"])
    _check_size(model, width, height, problems)
    frames = f.frames if f.frames is not None else int(d["frames"])
    _check_frames(model, frames, "film.frames", problems)

    # 3. shots: ids, prompts, frames
    _check_shots(spec.shots, model, problems)
    images = _check_images(spec.shots, model, source, problems)

    # 4. characters: the spec's own, then the libraries; only those a shot casts are loaded
    characters, casts = _resolve_cast(spec, source, library, problems)

    # 5. post-production: upscaler, transitions, audio
    fps = f.fps if f.fps is not None else int(d["fps"])
    upscale = resolve_upscale(f.upscale, source, problems)
    shot_frames = [s.frames if s.frames is not None else frames for s in spec.shots]
    fades = check_transitions(spec.shots, shot_frames, fps, problems)
    audio = check_audio_tracks(spec.audio, [s.id for s in spec.shots], source, problems)
    preview = _preview_settings(f, model, source, problems)
    if problems:
        raise SpecError(source, problems)

    return Film(
        source=source,
        title=f.title,
        model=model,
        width=width,
        height=height,
        fps=fps,
        frames=frames,
        steps=f.steps if f.steps is not None else int(d["steps"]),
        guidance=f.guidance if f.guidance is not None else float(d["guidance"]),
        shift=f.shift if f.shift is not None else float(d["shift"]),
        seed=f.seed,
        negative_prompt=f.negative_prompt if f.negative_prompt is not None else str(d.get("negative_prompt", "")),
        scheduler=f.scheduler or str(d.get("scheduler", "unipc")),
        max_sequence_length=int(d.get("max_sequence_length", 512)),
        shots=tuple(Shot(**{**s.model_dump(), "characters": cast, "transition_frames": fade, "image": image})
                    for s, cast, fade, image in zip(spec.shots, casts, fades, images)),
        characters=characters,
        codec=f.codec,
        upscale=upscale,
        watermark=f.watermark,
        audio=audio,
        preview=preview,
        speed=SpeedConfig(**spec.speed.model_dump()),
    )


def _check_size(model: ModelInfo, width: int, height: int, problems: list) -> None:
    """Width and height are multiples of the model's VAE factor x patch size."""
    m = model.size_multiple
    for name, value in (("width", width), ("height", height)):
        if value % m:
            lo, hi = max(m, value // m * m), (value // m + 1) * m
            problems.append((f"film.{name}", f"{value} is not a multiple of {m}, which {model.family.name} models "
                                             f"need (VAE factor x patch size) — try {lo} or {hi}"))


def _check_shots(shots: list, model: ModelInfo, problems: list) -> None:
    """Each shot: an id usable as a file name and unique ignoring case, a prompt, a frame count the model takes."""
    seen: dict[str, int] = {}
    for i, s in enumerate(shots):
        where = f"shots[{i}]"
        if not SHOT_ID_RE.match(s.id) or s.id.lower() in RESERVED_IDS:
            problems.append((f"{where}.id", f"{s.id!r} cannot be a file name — use 1-64 letters, digits, '-' or '_', "
                                            "starting with a letter or digit (e.g. 'shot-01')"))
        key = s.id.lower()
        if key in seen:
            problems.append((f"{where}.id", f"{s.id!r} is already used by shots[{seen[key]}] (ids are compared "
                                            "ignoring case, since they become file names) — give each shot its own id"))
        else:
            seen[key] = i
        if not s.prompt.strip():
            problems.append((f"{where}.prompt (shot {s.id!r})", "is empty — describe what the shot shows"))
        if s.frames is not None:
            _check_frames(model, s.frames, f"{where}.frames (shot {s.id!r})", problems)


def _check_frames(model: ModelInfo, frames: int, where: str, problems: list) -> None:
    if model.frames_ok(frames):
        return
    k = model.temporal_factor
    options = " or ".join(str(x) for x in model.nearest_frames(frames))
    problems.append((where, f"{frames} frames: {model.family.name} models need {k}k+1 frames — try {options}"))


def _resolve_cast(spec: SpecFile, source: Path, library: Path | None,
                  problems: list) -> tuple[dict[str, Character], list[tuple[str, ...]]]:
    """Check every shot's characters and {NAME} placeholders; load the characters they cast."""
    libraries: dict[str, Path] = {}
    for folder in (library, _library_path(spec.film.characters, source)):
        if folder is not None:
            for name, path in load_library(folder, problems).items():
                libraries.setdefault(name, path)
    known = sorted({*spec.characters, *libraries})
    characters: dict[str, Character] = {}
    casts: list[tuple[str, ...]] = []
    for i, s in enumerate(spec.shots):
        where = f"shots[{i}]"
        listed = list(s.characters or [])
        written = placeholders(s.prompt)
        cast = tuple(dict.fromkeys(listed + written))
        casts.append(cast)
        for name in cast:
            field_ = f"{where}.characters (shot {s.id!r})" if name in listed else f"{where}.prompt (shot {s.id!r})"
            if name not in spec.characters and name not in libraries:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                defined = ", ".join(known) if known else "none"
                problems.append((field_, f"unknown character {name!r} — {hint}defined: {defined}; add "
                                         f"[characters.{name}] or a library with {name}/character.toml"))
                continue
            if name not in characters:
                if name in spec.characters:
                    c = parse_character(name, spec.characters[name], source, f"characters.{name}", problems)
                else:
                    c = load_library_character(name, libraries[name], problems)
                if c is None:
                    continue
                characters[name] = c
            c = characters[name]
            if name not in written and c.trigger.lower() not in s.prompt.lower():
                problems.append((f"{where}.prompt (shot {s.id!r})",
                                 f"casts {name!r} but never says {{{name}}} (or its trigger {c.trigger!r}) — "
                                 f"write {{{name}}} where the character appears, so its trigger is in the prompt"))
    return characters, casts


def _library_path(value: str | None, source: Path) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else source.parent / path


def _preview_settings(f: FilmSection, model: ModelInfo, source: Path, problems: list) -> Preview | None:
    """The spec's preview_* fields over the model's reel.json `preview` block (paths relative to it)."""
    base = dict(model.defaults.get("preview") or {})
    scheduler = f.preview_scheduler or str(base.get("scheduler", "lcm"))
    if f.preview_lora is not None and scheduler == "lcm" and not model.family.flow_matching:
        problems.append(("film.preview_scheduler", f"consistency (lcm) previews need a flow-matching model; "
                                                   f"{model.family.name} is not — set preview_scheduler = \"default\""))
        return None
    if f.preview_lora is not None:
        lora = Path(f.preview_lora).expanduser()
        lora = lora if lora.is_absolute() else source.parent / lora
        if not lora.is_file():
            problems.append(("film.preview_lora", f"{lora} does not exist — point it at a few-step LoRA file"))
            return None
    elif not model.family.flow_matching:
        return None
    elif "lora" in base:
        lora = model.path / base["lora"]
        if not lora.is_file():
            return None  # the model names a preview LoRA it does not ship: `reel preview` says so
    else:
        return None
    decoder = _preview_decoder(f, model, base, source, problems)
    return Preview(
        decoder=decoder,
        lora=lora.resolve(),
        steps=f.preview_steps or int(base.get("steps", 4)),
        scheduler=f.preview_scheduler or str(base.get("scheduler", "lcm")),
        shift=f.preview_shift if f.preview_shift is not None else float(base.get("shift", model.defaults["shift"])),
        guidance=f.preview_guidance if f.preview_guidance is not None else float(base.get("guidance", 1.0)),
    )


def _preview_decoder(f: FilmSection, model: ModelInfo, base: dict, source: Path, problems: list) -> Path | None:
    """The preview decoder: the spec's preview_decoder ("vae" for the model's own VAE, or a file), else the
    one the model ships (reel.json preview.decoder), else None (the VAE)."""
    if f.preview_decoder == "vae":
        return None
    if f.preview_decoder is not None:
        if not model.family.preview_decoder:
            problems.append(("film.preview_decoder", f"preview decoders read Wan-family latents; {model.family.name} "
                                                     "previews decode with the model's VAE — remove preview_decoder"))
            return None
        path = Path(f.preview_decoder).expanduser()
        path = path if path.is_absolute() else source.parent / path
        if not path.is_file():
            problems.append(("film.preview_decoder", f"{path} does not exist — point it at a decoder made by "
                                                     "scripts/train_preview_decoder.py, or write \"vae\""))
            return None
        return path.resolve()
    if "decoder" in base and model.family.preview_decoder and (model.path / base["decoder"]).is_file():
        return (model.path / base["decoder"]).resolve()
    return None


def _check_images(shots: list[ShotSection], model: ModelInfo, source: Path, problems: list) -> list[str | None]:
    """Image-to-video inputs: readable images, shots that exist and come without cycles, a model that takes
    images; an image-only model needs one for every shot."""
    ids = {s.id: i for i, s in enumerate(shots)}
    out: list[str | None] = []
    image_only = model.takes_image and model.pipeline in model.family.image_pipelines
    for i, s in enumerate(shots):
        where = f"shots[{i}]"
        path = None
        if s.image is not None and s.continue_from is not None:
            problems.append((f"{where} (shot {s.id!r})", "gives both image and continue_from — keep one"))
        elif s.image is not None or s.continue_from is not None:
            if not model.takes_image:
                problems.append((f"{where}.{'image' if s.image else 'continue_from'} (shot {s.id!r})",
                                 f"model {model.name!r} ({model.pipeline}) is text-to-video only — "
                                 "use an image-to-video "
                                 "model (Wan I2V, Wan 2.2 TI2V, LTX-Video, CogVideoX I2V)"))
        elif image_only:
            problems.append((f"{where} (shot {s.id!r})", f"model {model.name!r} ({model.pipeline}) needs an input "
                                                         "image — add image = \"first.png\" "
                                                         "or continue_from = \"shot\""))
        if s.image is not None:
            p = Path(s.image).expanduser()
            p = p if p.is_absolute() else source.parent / p
            try:
                from PIL import Image

                with Image.open(p) as img:
                    img.verify()
                path = str(p.resolve())
            except FileNotFoundError:
                problems.append((f"{where}.image (shot {s.id!r})", f"{p} does not exist"))
            except Exception as err:  # PIL raises many types for non-images
                problems.append((f"{where}.image (shot {s.id!r})", f"{p} is not a readable image ({err})"))
        if s.continue_from is not None and s.continue_from not in ids:
            problems.append((f"{where}.continue_from (shot {s.id!r})",
                             f"{s.continue_from!r} is not a shot of this film; shots: {', '.join(ids)}"))
        out.append(path)
    # cycles: follow continue_from links
    for i, s in enumerate(shots):
        seen, cur = set(), s
        while cur.continue_from is not None and cur.continue_from in ids:
            if cur.id in seen:
                problems.append((f"shots[{i}].continue_from (shot {s.id!r})", "forms a cycle of continue_from links"))
                break
            seen.add(cur.id)
            cur = shots[ids[cur.continue_from]]
    return out
