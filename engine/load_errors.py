"""Why a model failed to load, in words that point at the real cause.

    try:
        comps = family.load(path, device, dtype)
    except Exception as err:
        raise load_failure(path, err) from err

Three causes, told apart by the exception chain (diffusers and transformers wrap a failed lazy import in a
RuntimeError whose __cause__ is the ImportError):
1. a package that fails to import, or is shadowed by a folder of the same name (a local `kernels/` hid
   Hugging Face's `kernels`, which transformers >= 5.25 imports): the message names the module, the file it
   resolved to, the distributions that install that name and their versions;
2. a version conflict (a library asks for another version of a package): the versions installed now;
3. weights that are incomplete or do not match their config: only then "download it again".
Anything else is reported as it is, with the versions of the libraries involved. Weights problems are
WeightsError (bad input: exit 2, like a bad spec); the others are ModelLoadError (the installation: exit 1).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

from reel.engine.weights_check import WeightsError

LIBRARIES = ("torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "huggingface-hub")
WEIGHT_SIGNS = ("no file named", "does not appear to have a file named", "missing key", "unexpected key",
                "size mismatch", "safetensor", "header", "incomplete", "truncated", "unexpected eof",
                "corrupt", "checkpoint", "state_dict", "is not a valid json", "expecting value")
PACKAGES = LIBRARIES + ("tokenizers", "numpy", "kernels", "sentencepiece", "ftfy", "protobuf", "triton")
VERSION_WORDS = re.compile(r"\b(version|requires?|required|incompatible)\b|(==|>=|<=|~=)\s*\d", re.IGNORECASE)


class ModelLoadError(RuntimeError):
    """A model that failed to load for a reason outside its folder: a package, a version conflict, or unknown."""


def _chain(err: BaseException) -> list[BaseException]:
    """err and every exception it was raised from or during, outermost first."""
    seen: list[BaseException] = []
    while err is not None and not any(err is s for s in seen):
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def installed_versions(names=LIBRARIES) -> str:
    """`torch 2.13.0, diffusers 0.42.1, ...` for the libraries a model load goes through."""
    return ", ".join(f"{name} {_version(name)}" for name in names)


def _import_culprit(err: ImportError) -> str:
    """What a failed import says about the package: where the name resolves, who installs it, their versions."""
    module = err.name or ""
    top = module.split(".")[0]
    if not top:
        match = re.search(r"from '([\w.]+)'|No module named '([\w.]+)'", str(err))
        top = ((match.group(1) or match.group(2)) if match else "").split(".")[0]
    if not top:
        return ""
    dists = importlib.metadata.packages_distributions().get(top, [])
    owners = ", ".join(f"{d} {_version(d)}" for d in sorted(set(dists))) or "no installed distribution"
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    origin = (spec.origin if spec and spec.origin else
              ", ".join(spec.submodule_search_locations) if spec and spec.submodule_search_locations else None)
    where = f"`{top}` resolves to {origin}" if origin else f"`{top}` is not importable"
    text = f"{where}; installed by: {owners}"
    if origin and dists and "site-packages" not in origin and "dist-packages" not in origin:
        text += (f" — a folder named `{top}` in the current directory or on PYTHONPATH shadows the installed "
                 f"package: run from another directory or rename that folder")
    return text


def load_failure(path: Path, err: BaseException) -> ModelLoadError | WeightsError:
    """The error to raise when `family.load(path, ...)` raised `err`."""
    chain = _chain(err)
    head = f"{path}: the model could not be loaded"
    imports = [e for e in chain if isinstance(e, ImportError)]
    if imports:
        root = imports[-1]
        culprit = _import_culprit(root)
        return ModelLoadError(
            f"{head}: a Python package failed to import ({type(root).__name__}: {str(root)[:300]})"
            + (f"; {culprit}" if culprit else "")
            + f". Installed: {installed_versions()}. Fix the installation (make setup installs the locked "
              "versions); the model folder is not the problem")
    text = " ".join(str(e) for e in chain).lower()
    inner = chain[-1]
    what = f"{type(inner).__name__}: {str(inner)[:300]}"
    conflict = VERSION_WORDS.search(text) and any(re.search(rf"\b{re.escape(p)}\b", text) for p in PACKAGES)
    if conflict and not any(sign in text for sign in WEIGHT_SIGNS):
        return ModelLoadError(f"{head} ({what}): this looks like a version conflict between installed packages. "
                              f"Installed: {installed_versions()}. Install the locked versions (make setup)")
    if any(sign in text for sign in WEIGHT_SIGNS):
        return WeightsError(f"{head} ({what}) — the weights look incomplete or do not match the folder's "
                              "configs: check the folder is complete (download it again)")
    return ModelLoadError(f"{head} ({what}). Installed: {installed_versions()}")
