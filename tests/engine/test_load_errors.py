"""A model that fails to load reports its real cause: a package, a version conflict, or the weights.

Before, every RuntimeError became "check the folder is complete (re-download it)", which is what a user saw
when a local `kernels/` folder shadowed the package transformers 5.25 imports.

    .venv/bin/python -m pytest tests/engine/test_load_errors.py -q
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reel.engine.load_errors import ModelLoadError, load_failure
from reel.engine.weights_check import WeightsError

SPEC = '[film]\nmodel = "{model}"\n[[shots]]\nid = "a"\nprompt = "a red circle"\n'


def _reel(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reel.engine.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def _raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as err:
            raise outer from err
    except BaseException as caught:
        return caught


def _transformers_imports_kernels() -> bool:
    if importlib.util.find_spec("kernels") is None:
        return False
    major, minor = (int(p) for p in importlib.metadata.version("transformers").split(".")[:2])
    return (major, minor) >= (5, 25)


@pytest.mark.skipif(not _transformers_imports_kernels(), reason="needs transformers >= 5.25 with `kernels` installed")
def test_a_shadowed_package_is_named_not_blamed_on_the_weights(tmp_path, tiny_model):
    """The clash as a user met it: a folder named `kernels` ahead of Hugging Face's on the path."""
    shadow = tmp_path / "shadow" / "kernels"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('"""Not Hugging Face\'s kernels."""\n')
    spec = tmp_path / "film.toml"
    spec.write_text(SPEC.format(model=tiny_model))
    out = tmp_path / "out"
    run = _reel(["render", str(spec), "--out", str(out), "-q"], cwd=tmp_path, env={"PYTHONPATH": str(shadow.parent)})
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "failed to import" in run.stderr and "CUDAProperties" in run.stderr
    assert f"`kernels` resolves to {shadow / '__init__.py'}" in run.stderr
    assert f"kernels {importlib.metadata.version('kernels')}" in run.stderr and "shadows the installed" in run.stderr
    assert f"transformers {importlib.metadata.version('transformers')}" in run.stderr
    assert "download" not in run.stderr
    assert not (out / "shots").exists() or not any((out / "shots").iterdir())


def test_incomplete_weights_still_say_download_again(tmp_path, tiny_model):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    spec = tmp_path / "film.toml"
    spec.write_text(SPEC.format(model=broken))
    run = _reel(["render", str(spec), "--out", str(tmp_path / "out"), "-q"], cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert f"{broken}: the model could not be loaded" in run.stderr and "download it again" in run.stderr


def test_a_lazy_import_failure_inside_a_runtime_error_names_the_module():
    """diffusers and transformers wrap a failed lazy import in a RuntimeError; the ImportError is the cause."""
    inner = ImportError("No module named 'sentencepiece'", name="sentencepiece")
    err = load_failure(Path("/models/x"), _raised_from(RuntimeError("Failed to import diffusers.models..."), inner))
    assert isinstance(err, ModelLoadError)
    text = str(err)
    assert "/models/x: the model could not be loaded: a Python package failed to import" in text
    assert "`sentencepiece` is not importable" in text and "no installed distribution" in text
    assert "diffusers " in text and "download" not in text


def test_an_installed_package_is_named_with_its_version():
    err = load_failure(Path("/m"), ImportError("cannot import name 'Nope' from 'safetensors'", name="safetensors"))
    assert f"installed by: safetensors {importlib.metadata.version('safetensors')}" in str(err)
    assert "shadows" not in str(err)  # resolves into site-packages: not a shadow


def test_a_version_conflict_lists_the_installed_versions():
    err = load_failure(Path("/m"), ValueError("This model requires peft>=9.0 but the installed version is older"))
    assert isinstance(err, ModelLoadError) and "version conflict" in str(err)
    assert f"peft {importlib.metadata.version('peft')}" in str(err) and "download" not in str(err)


def test_other_failures_are_reported_as_they_are():
    err = load_failure(Path("/m"), RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert isinstance(err, ModelLoadError) and "illegal memory access" in str(err) and "download" not in str(err)
    err = load_failure(Path("/m"), RuntimeError("Error(s) in loading state_dict: size mismatch for proj.weight"))
    assert isinstance(err, WeightsError) and "download it again" in str(err)
