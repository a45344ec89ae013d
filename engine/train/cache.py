"""Preprocessing cache for LoRA training: VAE latents on disk, keyed by the file's content, the VAE's
weights and the sample settings (text embeddings use the engine's own prompt cache). A second run over
the same data reuses them; a changed clip, model or setting misses.

    cache = LatentCache()
    key = cache.key(item.content_hash, vae_hash, (64, 64, 17, "uniform"))
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from reel.engine.settings import cache_dir
from reel.engine.store import atomic_path


class LatentCache:
    def __init__(self, root: Path | None = None):
        self.root = root or cache_dir() / "train-latents"
        self.hits = 0
        self.misses = 0

    def key(self, content_hash: str, vae_hash: str, settings: tuple) -> str:
        return hashlib.sha256(f"{content_hash}\0{vae_hash}\0{settings!r}".encode()).hexdigest()

    def get(self, key: str) -> torch.Tensor | None:
        from safetensors.torch import load_file

        path = self.root / key[:2] / f"{key}.safetensors"
        if path.is_file():
            try:
                latent = load_file(str(path))["latent"]
                self.hits += 1
                return latent
            except Exception:
                pass  # corrupt entry: encode again
        self.misses += 1
        return None

    def put(self, key: str, latent: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = self.root / key[:2] / f"{key}.safetensors"
        try:
            with atomic_path(path) as tmp:
                save_file({"latent": latent.detach().cpu().contiguous()}, str(tmp))
        except OSError:
            pass
