"""Characters in a film spec: definitions, the reusable character library, prompt substitution.
Imports no torch.

A character is defined in the spec (`[characters.NAME]`) or in a library folder
(`LIB/NAME/character.toml` beside its LoRA files), with:
    lora        a file or a list of files (paths relative to the file that defines the character)
    trigger     the words that replace `{NAME}` in a shot's prompt
    weight      a number (default 1.0), or a schedule over the denoising steps: a list of keyframes
                spread evenly from the first step to the last, linearly interpolated
                (`[1.0, 0.4]` = 1.0 at the first step falling to 0.4 at the last)
    description optional words appended to every prompt the character appears in (", <description>")
    expert      Wan 2.2 A14B only: "both" (default), "high" or "low" — which expert `lora` applies to
    lora_low    Wan 2.2 A14B only: file(s) for the low-noise expert; `lora` then goes to the high-noise one
    seed        optional. Seed precedence for a shot: the shot's own `seed`, else the `seed` of the
                first character listed in the shot that has one (so every shot of that character
                starts from the same noise), else stable_seed(film seed, shot id).

A shot lists `characters = ["NAME", ...]`; writing `{NAME}` in the prompt also casts the character.
"""

from __future__ import annotations

import difflib
import re
import reprlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reel.engine.spec_paths import Guard, existing, spec_path

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")
LORA_SUFFIXES = (".safetensors",)
CHARACTER_FILE = "character.toml"


class CharacterSection(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    lora: str | list[str]
    lora_low: str | list[str] | None = None
    expert: Literal["both", "high", "low"] = "both"
    trigger: str
    weight: float | list[float] = 1.0
    description: str | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


@dataclass(frozen=True)
class Character:
    """A validated character: absolute LoRA paths, its trigger and weight (or schedule)."""

    name: str
    loras: tuple[Path, ...]
    trigger: str
    weight: float | tuple[float, ...]  # a constant, or keyframes over the steps
    description: str | None
    seed: int | None
    source: Path  # the file that defined it (spec or character.toml)
    expert: str = "both"  # which Wan 2.2 expert `loras` apply to
    loras_low: tuple[Path, ...] = ()  # low-noise expert files (then `loras` go to the high-noise expert)

    def adapters(self) -> tuple[tuple[str, Path], ...]:
        """(adapter name, file) per LoRA file: `NAME`, `NAME__i` for several files; `@high` / `@low` mark the
        Wan 2.2 expert an adapter belongs to (no mark: every transformer)."""
        high = "high" if self.loras_low else ("" if self.expert == "both" else self.expert)
        out = []
        for files, mark in ((self.loras, high), (self.loras_low, "low")):
            for i, f in enumerate(files):
                name = self.name if len(files) == 1 else f"{self.name}__{i}"
                out.append((f"{name}@{mark}" if mark else name, f))
        return tuple(out)


def weight_at(weight: float | tuple[float, ...], step: int, total: int) -> float:
    """The weight at 0-based `step` of `total`: constant, or linear between evenly spread keyframes."""
    if isinstance(weight, (int, float)):
        return float(weight)
    keys = list(weight)
    if len(keys) == 1 or total <= 1:
        return float(keys[0])
    pos = step / (total - 1) * (len(keys) - 1)
    lo = min(int(pos), len(keys) - 2)
    frac = pos - lo
    return float(keys[lo] * (1 - frac) + keys[lo + 1] * frac)


def parse_character(name: str, data: object, source: Path, where: str, problems: list,
                    guard: Guard | None = None) -> Character | None:
    """Validate one character table; append (field, message) problems instead of raising. `guard` (a server's
    roots) sees every LoRA path before reel tests whether the file exists."""
    if not NAME_RE.match(name):
        problems.append((where, f"character name {name!r} must start with a letter and use letters, digits "
                                "and '_' (it is written as {name} in prompts)"))
        return None
    try:
        sec = CharacterSection.model_validate(data)
    except ValidationError as err:
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(e["loc"][-1]), list(CharacterSection.model_fields), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                msg = f"unknown key — {hint}allowed: {', '.join(CharacterSection.model_fields)}"
            elif e["type"] == "missing":
                msg = "required but missing — add it"
            else:
                msg = f"{e['msg']} (got {reprlib.repr(e.get('input'))})"
            problems.append((f"{where}.{field}", msg))
        return None
    loras = _lora_files(name, "lora", sec.lora, source, where, problems, guard)
    if not loras:
        problems.append((f"{where}.lora", "lists no files — give at least one .safetensors LoRA"))
    if not sec.trigger.strip():
        problems.append((f"{where}.trigger", "is empty — give the words the LoRA was trained with (e.g. 'sks')"))
    for key in ("trigger", "description"):
        if "\0" in (getattr(sec, key) or ""):
            problems.append((f"{where}.{key}", "holds a NUL character (\\0) — remove it"))
    weight = sec.weight if isinstance(sec.weight, float) else tuple(sec.weight)
    if isinstance(weight, tuple) and not weight:
        problems.append((f"{where}.weight", "an empty schedule — give a number or a list of keyframes"))
    low = _lora_files(name, "lora_low", sec.lora_low, source, where, problems, guard)
    if low and sec.expert != "both":
        problems.append((f"{where}.expert", "with lora_low, `lora` is the high-noise expert's — remove expert"))
    return Character(name, tuple(p for p in loras if p is not None), sec.trigger.strip(), weight, sec.description,
                     sec.seed, source, expert=sec.expert, loras_low=tuple(p for p in low if p is not None))


def _lora_files(name: str, key: str, value: str | list[str] | None, source: Path, where: str, problems: list,
                guard: Guard | None) -> list[Path | None]:
    """The LoRA files of a character's `lora` or `lora_low` (relative to the file that defines it); None for
    each file with a problem. The guard names the field as a spec would (`characters.NAME.lora[i]`)."""
    files = [] if value is None else ([value] if isinstance(value, str) else list(value))
    out: list[Path | None] = []
    for i, f in enumerate(files):
        index = f"[{i}]" if isinstance(value, list) else ""
        path = spec_path(f, source.parent)
        field = f"{where}.{key}{index}"
        guarded = None if guard is None else (lambda _f, p: guard(f"characters.{name}.{key}{index}", p))
        found = existing(field, path, problems, guard=guarded,
                         hint=f"check the path (relative paths start at {source.parent})",
                         missing=f"LoRA file {path} does not exist — check the path (relative paths start at "
                                 f"{source.parent})")
        if found is not None and found.suffix not in LORA_SUFFIXES:
            problems.append((field, f"{found.name}: LoRA files must be .safetensors (pickled .pt/.ckpt files can run "
                                    "code when loaded) — convert it to safetensors"))
            found = None
        out.append(found)
    return out


def load_library(folder: Path, problems: list, field: str = "film.characters",
                 guard: Guard | None = None) -> dict[str, Path]:
    """Map character names to their character.toml in a library folder (LIB/NAME/character.toml)."""
    found = existing(field, folder, problems, guard=guard, want="dir", hint="create it or fix the path",
                     missing=f"character library {folder} is not a folder — create it or fix the path")
    if found is None:
        return {}
    try:
        files = sorted(folder.glob(f"*/{CHARACTER_FILE}"))
    except OSError as err:
        problems.append((field, f"character library {folder} cannot be listed ({err.strerror or err})"))
        return {}
    return {p.parent.name: p for p in files}


def load_library_character(name: str, path: Path, problems: list, guard: Guard | None = None) -> Character | None:
    """A library character from its character.toml (the guard sees the file first: a link may lead out)."""
    if guard is not None and (refusal := guard(f"characters.{name}", path)) is not None:
        problems.append(refusal)
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        problems.append((str(path), f"cannot be read as TOML ({str(err)[:200] or type(err).__name__})"))
        return None
    return parse_character(name, data, path, f"{path}", problems, guard)


def cast_prompt(prompt: str, characters: dict[str, Character]) -> str:
    """Replace `{NAME}` with the character's trigger and append each cast character's description."""
    text = PLACEHOLDER_RE.sub(lambda m: characters[m.group(1)].trigger if m.group(1) in characters
                              else m.group(0), prompt)
    for c in characters.values():
        if c.description:
            text = f"{text}, {c.description}"
    return text


def placeholders(prompt: str) -> list[str]:
    return PLACEHOLDER_RE.findall(prompt)
