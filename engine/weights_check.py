"""Cheap integrity checks of weight files before they are loaded: a truncated or garbage .safetensors
file is named with the fix, instead of surfacing as a deserialisation traceback.

    check_weight_files(Path("models/shapes/weights"))   # raises WeightsError naming the first bad file
    header = safetensors_header(Path("hero.safetensors"))  # {tensor name: {dtype, shape, data_offsets}, ...}
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

FIX = "download or export it again"


class WeightsError(ValueError):
    """A weight file that cannot be what it claims; the message names it."""


def safetensors_header(path: Path) -> dict:
    """The parsed header of a .safetensors file (tensor entries and `__metadata__`), after checking that it
    parses and that the file is exactly as long as its tensors need. Reads the header only, not the weights."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise WeightsError(f"{path}: {size} bytes, too short for a safetensors file — {FIX}")
            (n,) = struct.unpack("<Q", head)
            if n <= 1 or n > min(size - 8, 100 << 20):
                raise WeightsError(f"{path}: not a safetensors file (header length {n} does not fit a {size}-byte "
                                   f"file) — {FIX}")
            header = json.loads(fh.read(n))
    except (OSError, ValueError, RecursionError) as err:  # JSON and UTF-8 errors are ValueErrors
        if isinstance(err, WeightsError):
            raise
        raise WeightsError(f"{path}: unreadable safetensors header ({err}) — {FIX}") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: not a safetensors file (its header is not a JSON object) — {FIX}")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        shapes = [[int(d) for d in v["shape"]] for k, v in header.items() if k != "__metadata__"]
    except (TypeError, ValueError, KeyError, IndexError):
        raise WeightsError(f"{path}: not a safetensors file (a tensor entry lacks its shape or offsets) — "
                           f"{FIX}") from None
    if any(d < 0 for s in shapes for d in s):
        raise WeightsError(f"{path}: not a safetensors file (a negative tensor size) — {FIX}")
    need = 8 + n + (max(ends) if ends else 0)
    if size < need:
        raise WeightsError(f"{path}: truncated — {size} bytes, its tensors need {need} — {FIX}")
    return header


def check_safetensors(path: Path) -> None:
    """The header parses and the file is exactly as long as its tensors need (reads only the header)."""
    safetensors_header(path)


def check_weight_files(folder: Path, extra: list[Path] = ()) -> None:
    for path in sorted(Path(folder).rglob("*.safetensors")) + [Path(p) for p in extra]:
        if path.suffix == ".safetensors":
            check_safetensors(path.resolve())
