"""The film spec: TOML in, a validated `Film` out. Imports no torch.

    film = load_film("examples/demo.toml")   # raises SpecError listing every problem

Every problem names the file, the field path (`shots[3].frames`) and the fix. Nothing is rounded or
overridden silently: a frame count the model cannot take is an error that proposes the nearest valid
counts. Values the spec leaves out come from the model's defaults (its reel.json, else its family's).
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reel.engine.speed import SpeedConfig, SpeedSection
from reel.engine.cast import Character, load_library, load_library_character, parse_character, placeholders
from reel.engine.spec_inputs import film_input_problems, lora_problem
from reel.engine.spec_paths import Guard, existing, spec_path
from reel.engine.spec_post import (
    AudioSection,
    AudioTrack,
    TransitionName,
    check_audio_tracks,
    check_transitions,
    resolve_upscale,
)
from reel.engine.spec_preview import Preview, preview_settings
from reel.models.registry import BUILTIN_MODELS, ModelError, ModelInfo, resolve_model
from reel.models.long_shots import latent_chunks, long_window, scheme_problem, window_problem

SHOT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RESERVED_IDS = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
MAX_SEED = 2**63 - 1
MAX_TITLE = 1000  # characters: the title is one ffmpeg metadata argument


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
    seconds: float | None = Field(None, gt=0.0, le=3600.0)  # instead of frames: seconds x fps + 1, to the frame rule
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    steps: int | None = Field(None, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0.0, le=100.0)
    negative_prompt: str | None = None
    characters: list[str] | None = None
    audio: bool | None = None  # models that make sound (LTX-2): false drops the shot's own audio
    audio_volume: float | None = Field(None, ge=0.0, le=4.0)  # the shot's own audio in the film's mix
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
    frames: int | None = None  # a `seconds` shot has its frames here (seconds x fps + 1, to the frame rule)
    seconds: float | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    audio: bool | None = None  # None: the model's sound if it makes any
    audio_volume: float | None = None  # None: 1.0
    characters: tuple[str, ...] = ()  # cast: listed names, then names written as {NAME} in the prompt
    transition: str = "cut"  # how the shot starts: "cut" or "crossfade" from the previous shot
    transition_seconds: float | None = None
    transition_frames: int = 0  # crossfade frames into this shot (0 = cut)
    image: str | None = None  # absolute path of the first-frame image
    continue_from: str | None = None  # id of the shot whose last frame starts this one


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
    unused_characters: tuple[str, ...] = ()  # [characters.NAME] no shot casts (checked, not loaded)

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


def _repr(value: object) -> str:
    """A value for a message: nested and long values shortened (a deeply nested list cannot overflow repr)."""
    return reprlib.repr(value)


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
            msg = f"must be {want}, got {_repr(e.get('input'))}"
        elif kind == "too_short" and loc == ("shots",):
            msg = "a film needs at least one [[shots]] table with an id and a prompt"
        else:
            msg = f"{e['msg']} (got {_repr(e.get('input'))})"
        problems.append((_path(loc, data), msg))
    return problems


# ---- loading -------------------------------------------------------------------------------------------
def parse_toml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(path, [("", "file not found — check the path")]) from None
    except (OSError, ValueError) as err:  # UnicodeDecodeError; a NUL character in the path
        raise SpecError(path, [("", f"cannot be read ({err})")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(path, [("", f"not valid TOML: {err}")]) from None
    except RecursionError:
        raise SpecError(path, [("", "nested too deeply to be a film spec — arrays and tables a few levels deep "
                                    "at most")]) from None


def load_film(path: str | Path, model_override: str | None = None, library: Path | None = None,
              limits: bool = True) -> Film:
    """Read, validate and resolve a film spec; raise SpecError with every problem found.

    `library`: a character library folder that extends the spec's own (the CLI's --characters). `limits`: see
    film_from_dict."""
    path = Path(path)
    data = parse_toml(path)
    return film_from_dict(data, path, model_override=model_override, library=library, limits=limits)


def film_from_dict(data: dict, source: Path, model_override: str | None = None,
                   library: Path | None = None, guard: Guard | None = None, limits: bool = True) -> Film:
    """A Film from a parsed spec; raises SpecError listing every problem with its field path.

    Every input the film names is checked as its render will need it (files are what their field says, the
    model's weights are complete, sizes fit the transformer). `guard(field, path)` (a server's roots) sees
    every path before reel tests whether it exists; a refusal it returns becomes the field's problem.
    `limits=False` leaves out what only the model folder's transformer limits (its rotary table, positional
    embeddings, text tokens): for estimating the film on another model (`reel estimate --model-config`)."""
    try:
        return _film_from_dict(data, source, model_override, library, guard, limits)
    except SpecError:
        raise
    except (OSError, ValueError, RecursionError, UnicodeError) as err:  # no spec ends in a traceback
        kind = "too deeply nested" if isinstance(err, RecursionError) else "unreadable"
        raise SpecError(source, [("", f"cannot be checked ({kind}: {str(err)[:300]})")]) from None


def _film_from_dict(data: dict, source: Path, model_override: str | None, library: Path | None,
                    guard: Guard | None, limits: bool) -> Film:
    try:
        spec = SpecFile.model_validate(data)
    except ValidationError as err:
        raise SpecError(source, _pydantic_problems(err, data)) from None
    except RecursionError:
        raise SpecError(source, [("", "nested too deeply to be a film spec")]) from None
    problems: list[tuple[str, str]] = []
    f = spec.film

    _check_text(spec, problems)

    # 1. the model (read from JSON only), its defaults for what the spec leaves out, its limits
    model = _model(model_override or f.model, source, guard)
    v = _film_values(f, model, problems)
    shots = _shots_in_seconds(spec.shots, model, v["fps"], problems)  # spec.shots, with frames for `seconds`
    _check_shots(shots, model, problems)
    _check_long_and_audio(shots, model, v["fps"], problems)
    if spec.speed.step_cache is not None and not model.family.step_cache:
        problems.append(("speed.step_cache", f"{model.family.name} models have no step cache yet (diffusers' "
                                             "First-Block-Cache does not know their transformer blocks) — remove it"))
    if limits:
        _check_limits(shots, model, v, problems)
    images = _check_images(shots, model, source, problems, guard)

    # 2. characters: the spec's own (every one), then the libraries' (those a shot casts)
    characters, casts, unused = _resolve_cast(spec, source, library, problems, guard)

    # 3. post-production: upscaler, transitions, audio; previews
    upscale = resolve_upscale(f.upscale, source, problems, guard)
    shot_frames = [s.frames if s.frames is not None else v["frames"] for s in shots]
    fades = check_transitions(shots, shot_frames, v["fps"], problems)
    audio = check_audio_tracks(spec.audio, [s.id for s in shots], source, problems, guard)
    preview = preview_settings(f, model, source, problems, guard)
    if problems:
        raise SpecError(source, problems)

    film = Film(
        source=source, title=f.title, model=model, seed=f.seed, **v,
        shots=tuple(Shot(**{**s.model_dump(), "characters": cast, "transition_frames": fade, "image": image})
                    for s, cast, fade, image in zip(shots, casts, fades, images)),
        characters=characters, codec=f.codec, upscale=upscale, watermark=f.watermark, audio=audio, preview=preview,
        speed=SpeedConfig(**spec.speed.model_dump()), unused_characters=unused,
    )
    # 4. what the named files hold (headers, audio decodes, complete weights), once everything else is right
    problems = film_input_problems(film, guard)
    if problems:
        raise SpecError(source, problems)
    return film


def _model(ref: str, source: Path, guard: Guard | None) -> ModelInfo:
    """The spec's model, resolved (a folder path passes the guard first); SpecError on film.model otherwise."""
    if guard is not None and ref not in BUILTIN_MODELS:
        refusal = guard("film.model", spec_path(ref, source.parent.resolve()))
        if refusal is not None:
            raise SpecError(source, [refusal])
    try:
        return resolve_model(ref, base_dir=source.parent.resolve())
    except ModelError as err:
        raise SpecError(source, [("film.model", str(err))]) from None


# the model's defaults a spec may leave out: (type, lowest, highest), as FilmSection bounds the spec's own
MODEL_DEFAULTS = {"width": (int, 8, 8192), "height": (int, 8, 8192), "fps": (int, 1, 240),
                  "frames": (int, 1, 100_000), "steps": (int, 1, 1000), "guidance": (float, 0.0, 100.0),
                  "shift": (float, 1e-9, 100.0), "max_sequence_length": (int, 1, 100_000)}


def _film_values(f: FilmSection, model: ModelInfo, problems: list) -> dict:
    """Film-level values: the spec's, else the model's defaults (checked as strictly as the spec's own), with
    the size, frame rule and scheduler checked against the model."""
    d = model.defaults
    out: dict = {}
    for key, (kind_, lo, hi) in MODEL_DEFAULTS.items():
        value = getattr(f, key, None)
        if value is None:
            value = d.get(key)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or (kind_ is int and not isinstance(value, int)) or not math.isfinite(value) \
                    or not lo <= value <= hi:
                setting = f"set film.{key} or fix it there" if key in FilmSection.model_fields else "fix it there"
                problems.append(("film.model", f"{model.path}/reel.json: {key} = {_repr(value)} is not a "
                                               f"{'whole number' if kind_ is int else 'number'} from {lo:g} to "
                                               f"{hi:g} — {setting}"))
                value = kind_(lo)
        out[key] = kind_(value)
    out["negative_prompt"] = f.negative_prompt if f.negative_prompt is not None else str(d.get("negative_prompt", ""))
    out["scheduler"] = f.scheduler or str(d.get("scheduler", "unipc"))
    if (message := model.scheduler_problem(out["scheduler"])) is not None:
        problems.append(("film.scheduler" if f.scheduler else "film.model (reel.json scheduler)", message))
    _check_size(model, out["width"], out["height"], problems)
    _check_frames(model, out["frames"], "film.frames", problems)
    return out


def _shots_in_seconds(shots: list, model: ModelInfo, fps: int, problems: list) -> list:
    """Shots written in `seconds` get frames: seconds x fps + 1, up to the model's frame rule (12 s at 24 fps is
    289 frames for a 4k+1 model)."""
    out = []
    for i, s in enumerate(shots):
        if s.seconds is not None:
            if s.frames is not None:
                problems.append((f"shots[{i}].seconds (shot {s.id!r})", "the shot sets both frames and seconds — "
                                                                        "keep one"))
            else:
                k = model.temporal_factor
                target = round(s.seconds * fps) + 1
                frames = -(-(target - 1) // k) * k + 1
                if frames > 100_000:  # the bound `frames` itself has
                    problems.append((f"shots[{i}].seconds (shot {s.id!r})", f"{s.seconds:g} s at {fps} fps is "
                                                                            f"{frames} frames, over 100,000 — "
                                                                            "split it into several shots"))
                s = s.model_copy(update={"frames": frames})
        out.append(s)
    return out


def _check_long_and_audio(shots: list, model: ModelInfo, fps: int, problems: list) -> None:
    """A model with a long-shot scheme has a usable window; a shot's audio settings need a model that makes sound,
    and such a model sizes its sound track for its own frame rate (models/ltx2.py latent_shape)."""
    window, overlap = long_window(model)
    if (message := scheme_problem(model)) is not None:
        problems.append(("film.model", f"{model.path}/reel.json: {message}"))
    elif window and (message := window_problem(model, window, overlap)) is not None:
        problems.append(("film.model", f"{model.path}/reel.json: {message}"))
    own = model.defaults.get("fps")
    if model.family.audio and fps != own and any(s.audio is not False for s in shots):
        problems.append(("film.fps", f"{fps} fps: {model.family.name} models make each shot's sound for the model's "
                                     f"own frame rate, {own} fps — set film.fps = {own}, or \"fps\": {fps} in "
                                     f"{model.path}/reel.json"))
    block = model.transformer_config.get("num_frame_per_block") or 1  # SkyReels-V2 DF's causal blocks
    for i, s in enumerate(shots):
        if window and (s.frames or 0) > window and isinstance(block, int) and block > 1:
            sizes = [n for _, n in latent_chunks(s.frames, window, overlap, model.temporal_factor)]
            if any(n % block for n in sizes):
                problems.append((f"shots[{i}].frames (shot {s.id!r})",
                                 f"{s.frames} frames give chunks of {sizes} latent frames, which do not fill this "
                                 f"transformer's causal blocks of {block} (num_frame_per_block) — choose a length "
                                 "whose every chunk is a multiple of it"))
        if window and (s.frames or 0) > window and (s.image or s.continue_from):
            problems.append((f"shots[{i}].{'image' if s.image else 'continue_from'} (shot {s.id!r})",
                             f"a long shot ({s.frames} frames, over the model's {window}-frame window) renders "
                             "text-to-video only — drop the first frame, or keep the shot within one window"))
        if model.family.audio:
            continue
        for key in ("audio", "audio_volume"):
            if getattr(s, key) is not None and (key == "audio_volume" or s.audio):
                problems.append((f"shots[{i}].{key} (shot {s.id!r})",
                                 f"{model.family.name} models make no sound of their own (LTX-2 does) — remove "
                                 f"`{key}`, or give the film sound with [[audio]] tracks"))


def _check_limits(shots: list, model: ModelInfo, v: dict, problems: list) -> None:
    """What the transformer's config cannot take (rotary tables, fixed positional embeddings, text tokens),
    for the film's size and every shot's frame count that passed the frame rule."""
    if v["width"] % model.size_multiple or v["height"] % model.size_multiple:
        return
    counts = {v["frames"]: "film.frames"}
    for i, s in enumerate(shots):
        if s.frames is not None and s.frames not in counts:
            counts[s.frames] = f"shots[{i}].frames (shot {s.id!r})"
    seen = set()
    window, _ = long_window(model)
    for frames, where in counts.items():
        if not model.frames_ok(frames):
            continue
        if window and frames > window:  # rendered in chunks of `window` frames: that is what the model sees
            frames, where = window, "film.model"
        for key, message in model.limit_problems(v["width"], v["height"], frames, v["max_sequence_length"]):
            field_ = {"width": "film.width", "height": "film.height", "frames": where}.get(key, "film.model")
            if field_ == "film.model" and key == "frames":
                message = f"{model.path}/reel.json: window_frames = {frames}: {message}"
            if (field_, message) not in seen:
                seen.add((field_, message))
                problems.append((field_, message))


def _check_text(spec: SpecFile, problems: list) -> None:
    """Text that reaches ffmpeg's arguments (the title) or prompts and labels holds no NUL character; the title
    stays short enough for a metadata tag."""
    texts = [(f"film.{k}", getattr(spec.film, k)) for k in ("title", "negative_prompt", "watermark")]
    for i, s in enumerate(spec.shots):
        texts += [(f"shots[{i}].{k} (shot {s.id!r})", getattr(s, k)) for k in ("prompt", "negative_prompt")]
    for field_, text in texts:
        if text is not None and "\0" in text:
            problems.append((field_, "holds a NUL character (\\0), which no video metadata or label can carry — "
                                     "remove it"))
    if len(spec.film.title) > MAX_TITLE:
        problems.append(("film.title", f"is {len(spec.film.title)} characters long — keep it under {MAX_TITLE} "
                                       "(it is written into every file's metadata)"))


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


def _resolve_cast(spec: SpecFile, source: Path, library: Path | None, problems: list, guard: Guard | None
                  ) -> tuple[dict[str, Character], list[tuple[str, ...]], tuple[str, ...]]:
    """Check every shot's characters and {NAME} placeholders and load the characters they cast; check the spec's
    own characters no shot casts too (returned by name: `reel validate` mentions them)."""
    libraries: dict[str, Path] = {}
    for folder, field_ in ((library, "--characters"), (_library_path(spec.film.characters, source), "film.characters")):
        if folder is not None:
            for name, path in load_library(folder, problems, field_, guard).items():
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
                    c = parse_character(name, spec.characters[name], source, f"characters.{name}", problems, guard)
                else:
                    c = load_library_character(name, libraries[name], problems, guard)
                if c is None:
                    continue
                characters[name] = c
            c = characters[name]
            if name not in written and c.trigger.lower() not in s.prompt.lower():
                problems.append((f"{where}.prompt (shot {s.id!r})",
                                 f"casts {name!r} but never says {{{name}}} (or its trigger {c.trigger!r}) — "
                                 f"write {{{name}}} where the character appears, so its trigger is in the prompt"))
    unused = tuple(name for name in spec.characters if name not in characters and all(name not in c for c in casts))
    for name in unused:  # checked as if cast: its problems surface now, not when a shot first casts it
        c = parse_character(name, spec.characters[name], source, f"characters.{name}", problems, guard)
        for key, files in (("lora", c.loras if c else ()), ("lora_low", c.loras_low if c else ())):
            problems += [(f"characters.{name}.{key}", m) for m in map(lora_problem, files) if m is not None]
    return characters, casts, unused


def _library_path(value: str | None, source: Path) -> Path | None:
    return None if value is None else spec_path(value, source.parent)


def _image(field_: str, path: Path, problems: list, guard: Guard | None) -> str | None:
    """The absolute path of a readable image file (the guard sees it before reel looks)."""
    found = existing(field_, path, problems, guard=guard, hint="give a PNG, JPEG or WebP first frame")
    if found is None:
        return None
    try:
        from PIL import Image

        with Image.open(found) as img:
            img.verify()
    except Exception as err:  # noqa: BLE001 - PIL raises many types for non-images
        problems.append((field_, f"{found} is not a readable image ({str(err)[:200]})"))
        return None
    return str(found)


def _check_images(shots: list[ShotSection], model: ModelInfo, source: Path, problems: list,
                  guard: Guard | None = None) -> list[str | None]:
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
            path = _image(f"{where}.image (shot {s.id!r})", spec_path(s.image, source.parent), problems, guard)
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
