"""What `reel demo` renders with: the built-in `shapes` model, or, while its weights are not trained
yet, a tiny randomly initialised Wan model (which makes noise; the demo says so)."""

from __future__ import annotations

from collections.abc import Callable

from reel.engine.settings import cache_dir
from reel.models.registry import BUILTIN_MODELS


def demo_model_override(say: Callable[[str], None]) -> str | None:
    """None when the built-in model is trained; else the path of a tiny random stand-in model."""
    if (BUILTIN_MODELS["shapes"] / "model_index.json").is_file():
        return None
    from reel.models.tiny import build_tiny_wan

    path = cache_dir() / "tiny-random-wan"
    if not (path / "model_index.json").is_file():
        build_tiny_wan(path)
    say("NOTE: the built-in `shapes` model has no trained weights in this checkout yet, so this demo renders "
        f"with a tiny RANDOMLY INITIALISED Wan model ({path}): expect noise, not shapes.")
    return str(path)
