"""Cheap integrity checks of weight files before they are loaded: a truncated or garbage .safetensors
file is named with the fix, instead of surfacing as a deserialisation traceback.

    check_weight_files(Path("models/shapes/weights"))   # raises WeightsError naming the first bad file
"""

from __future__ import annotations

import json
import struct
from pathlib import Path


class WeightsError(ValueError):
    """A weight file that cannot be what it claims; the message names it."""


def check_safetensors(path: Path) -> None:
    """The header parses and the file is exactly as long as its tensors need (reads only the header)."""
    fix = "download or export it again"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise WeightsError(f"{path}: {size} bytes, too short for a safetensors file — {fix}")
            (n,) = struct.unpack("<Q", head)
            if n <= 1 or n > min(size - 8, 100 << 20):
                raise WeightsError(f"{path}: not a safetensors file (header length {n} does not fit a {size}-byte "
                                   f"file) — {fix}")
            header = json.loads(fh.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path}: unreadable safetensors header ({err}) — {fix}") from None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    need = 8 + n + (max(ends) if ends else 0)
    if size < need:
        raise WeightsError(f"{path}: truncated — {size} bytes, its tensors need {need} — {fix}")


def check_weight_files(folder: Path, extra: list[Path] = ()) -> None:
    for path in sorted(Path(folder).rglob("*.safetensors")) + [Path(p) for p in extra]:
        if path.suffix == ".safetensors":
            check_safetensors(path.resolve())
