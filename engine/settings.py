"""Where reel keeps its caches. One home for settings; one environment variable.

REEL_CACHE_DIR overrides the cache folder (default: $XDG_CACHE_HOME/reel, else ~/.cache/reel).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (created on first use by whoever writes into it)."""
    explicit = os.environ.get("REEL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "reel"
