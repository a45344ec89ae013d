"""Where reel's package data lies: read through importlib.resources, so a wheel install finds the same
files as a checkout (editable install).

    folder = package_folder("reel.models.shapes")   # Path of the built-in model's package
    weights = folder / "weights"

Each data folder is a regular package (it has an __init__.py), the anchor importlib.resources needs:
reel.models.shapes (weights, adapters, upscaler, the demo film), reel.models.configs (estimator configs),
reel.engine.web (the studio page).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path


class PackageDataError(RuntimeError):
    """reel's package data is not on the file system (a zipped install); the message says what to do."""


@cache
def package_folder(package: str) -> Path:
    """The folder holding `package`'s data files. Model weights are memory-mapped from disk and diffusers
    loads folders by path, so the data must be real files: a zip import is refused with the fix."""
    root = files(package)
    if not isinstance(root, Path):
        raise PackageDataError(f"{package}: reel's data files are inside an archive ({root!r}); "
                               "install reel as files on disk (pip install reel, not a zipped import)")
    return root
