"""Shared fixtures: a tiny random Wan model saved to disk, spec writing, video reading. Offline, CPU."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Triton kernels run in its CPU interpreter in tests; it must be set before anything imports triton
# (torch.compile's inductor does, in test_speed).
os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep reel's caches (weight hashes, embeddings) out of the user's home during tests."""
    monkeypatch.setenv("REEL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "reel-cache"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random tiny Wan T2V model written as a diffusers folder (VAE 4x/4x, patch 2: sizes % 8, 4k+1 frames)."""
    from reel.models.tiny import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("models") / "tiny-wan", seed=0)


@pytest.fixture
def write_spec(tmp_path, tiny_model):
    """write_spec(body, name="film.toml") -> Path; `{model}` in the body is the tiny model's folder."""

    def _write(body: str, name: str = "film.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(body).replace("{model}", str(tiny_model)), encoding="utf-8")
        return path

    return _write


def probe(path: Path) -> str:
    """ffmpeg's own description of a media file (its stderr from `ffmpeg -i`)."""
    import subprocess

    import imageio_ffmpeg

    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True)
    return out.stderr.decode(errors="replace")
