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
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


def parse_character(name: str, data: object, source: Path, where: str, problems: list) -> Character | None:
    """Validate one character table; append (field, message) problems instead of raising."""
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
                msg = f"{e['msg']} (got {e.get('input')!r})"
            problems.append((f"{where}.{field}", msg))
        return None
    files = [sec.lora] if isinstance(sec.lora, str) else list(sec.lora)
    loras = []
    for i, f in enumerate(files):
        path = Path(f).expanduser()
        path = path if path.is_absolute() else (source.parent / path)
        field = f"{where}.lora" + (f"[{i}]" if isinstance(sec.lora, list) else "")
        if not path.is_file():
            problems.append((field, f"LoRA file {path} does not exist — check the path (relative paths start "
                                    f"at {source.parent})"))
        elif path.suffix not in LORA_SUFFIXES:
            problems.append((field, f"{path.name}: LoRA files must be .safetensors (pickled .pt/.ckpt files can "
                                    "run code when loaded) — convert it to safetensors"))
        loras.append(path.resolve())
    if not files:
        problems.append((f"{where}.lora", "lists no files — give at least one .safetensors LoRA"))
    if not sec.trigger.strip():
        problems.append((f"{where}.trigger", "is empty — give the words the LoRA was trained with (e.g. 'sks')"))
    weight = sec.weight if isinstance(sec.weight, float) else tuple(sec.weight)
    if isinstance(weight, tuple) and not weight:
        problems.append((f"{where}.weight", "an empty schedule — give a number or a list of keyframes"))
    low = []
    low_files = [] if sec.lora_low is None else ([sec.lora_low] if isinstance(sec.lora_low, str)
                                                 else list(sec.lora_low))
    for f in low_files:
        path = Path(f).expanduser()
        path = path if path.is_absolute() else (source.parent / path)
        if not path.is_file():
            problems.append((f"{where}.lora_low", f"LoRA file {path} does not exist — check the path"))
        elif path.suffix not in LORA_SUFFIXES:
            problems.append((f"{where}.lora_low", f"{path.name}: LoRA files must be .safetensors — convert it"))
        low.append(path.resolve())
    if low and sec.expert != "both":
        problems.append((f"{where}.expert", "with lora_low, `lora` is the high-noise expert's — remove expert"))
    return Character(name, tuple(loras), sec.trigger.strip(), weight, sec.description, sec.seed, source,
                     expert=sec.expert, loras_low=tuple(low))


def load_library(folder: Path, problems: list) -> dict[str, Path]:
    """Map character names to their character.toml in a library folder (LIB/NAME/character.toml)."""
    if not folder.is_dir():
        problems.append(("film.characters", f"character library {folder} is not a folder — create it or fix "
                                            "the path"))
        return {}
    return {p.parent.name: p for p in sorted(folder.glob(f"*/{CHARACTER_FILE}"))}


def load_library_character(name: str, path: Path, problems: list) -> Character | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        problems.append((str(path), f"cannot be read as TOML ({err})"))
        return None
    return parse_character(name, data, path, f"{path}", problems)


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
