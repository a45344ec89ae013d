"""The prompt-embedding cache on disk: the text encoder never runs twice for the same prompt, model
and settings, across runs and processes.

Key: sha256 of (text encoder + tokenizer content hash, prompt, padded length, dtype). Value: one
safetensors file `REEL_CACHE_DIR/embeds/<key[:2]>/<key>.safetensors` holding the (L, D) embedding,
written atomically. A corrupt or unreadable entry is treated as missing and written again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from reel.engine.hashing import weights_hash
from reel.engine.settings import cache_dir
from reel.engine.store import atomic_path


def encoder_hash(model_path: Path, extra: str = "") -> str:
    """Content hash of what decides embeddings: every text encoder's weights and every tokenizer's files
    (text_encoder*/, tokenizer*/), plus `extra` (a family's own settings, e.g. its prompt template)."""
    digest = hashlib.sha256(extra.encode())
    for enc in sorted(model_path.glob("text_encoder*")):
        digest.update(weights_hash(enc).encode())
    for tok in sorted(model_path.glob("tokenizer*")):
        for f in sorted(p for p in tok.rglob("*") if p.is_file()):
            digest.update(f"{tok.name}/{f.name}".encode())
            digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


class EmbedCache:
    def __init__(self, root: Path | None = None):
        self.root = root or cache_dir() / "embeds"

    def key(self, enc_hash: str, prompt: str, length: int, dtype: torch.dtype) -> str:
        return hashlib.sha256(f"{enc_hash}\0{length}\0{dtype}\0{prompt}".encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | dict | None:
        """The cached embedding (a tensor, or a dict of tensors for families with several), or None."""
        from safetensors.torch import load_file

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            data = load_file(str(path))
        except Exception:  # corrupt entry: recompute
            return None
        if set(data) == {"embedding"}:
            return data["embedding"]
        return {k[len("cond."):]: v for k, v in data.items() if k.startswith("cond.")} or None

    def put(self, key: str, embedding: torch.Tensor | dict) -> None:
        from safetensors.torch import save_file

        if isinstance(embedding, dict):
            tensors = {f"cond.{k}": v.detach().cpu().contiguous() for k, v in embedding.items()}
        else:
            tensors = {"embedding": embedding.detach().cpu().contiguous()}
        path = self.path(key)
        try:
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp))
        except OSError:
            pass  # a full or read-only cache only costs time
