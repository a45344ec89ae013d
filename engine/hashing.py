"""Content hashes for manifests: sha256 of weight files, cached by path + mtime + size.

    weights_hash(Path("models/shapes/weights"))  # "sha256:<hex>" over every safetensors file inside
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from reel.engine.settings import cache_dir
from reel.engine.store import atomic_write_json, read_json

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt")
CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _cache_path() -> Path:
    return cache_dir() / "file-hashes.json"


def cached_file_sha256(path: Path) -> str:
    """sha256 of a file, reused while its path, mtime and size are unchanged."""
    path = path.resolve()
    st = path.stat()
    key = f"{path}|{st.st_mtime_ns}|{st.st_size}"
    cache = read_json(_cache_path()) or {}
    if key in cache:
        return cache[key]
    value = file_sha256(path)
    cache[key] = value
    try:
        atomic_write_json(_cache_path(), cache)
    except OSError:
        pass  # a read-only cache only costs time
    return value


def weights_hash(target: Path) -> str:
    """One hash over a weights file, or over every weight file below a folder (names included)."""
    target = Path(target)
    if target.is_file():
        return "sha256:" + cached_file_sha256(target)
    files = sorted(Path(root) / name for root, _, names in os.walk(target, followlinks=True) for name in names
                   if Path(name).suffix in WEIGHT_SUFFIXES)  # follows the linked folders of imported models
    digest = hashlib.sha256()
    for f in files:
        digest.update(json.dumps([str(f.relative_to(target)), cached_file_sha256(f)]).encode())
    return "sha256:" + digest.hexdigest()
