"""The estimator and the CUDA memory planner know every registered family by its registry name.

A tiny random folder of each family goes through `reel estimate` and through accel.plan_memory (what a
CUDA load with `weights = "auto"` runs) with the GPU's free memory faked: torch.cuda's two queries are
replaced, nothing of reel's. "hunyuanvideo" against the registry's "hunyuan" once broke both.

    .venv/bin/python -m pytest tests/engine/test_estimate_families.py -q
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from reel.engine.accel import SpeedConfig, plan_memory
from reel.engine.cli import app
from reel.engine.estimate import load_model_config, shipped_configs
from reel.engine.spec import load_film
from reel.models.registry import FAMILIES

runner = CliRunner()
GIB = 2**30


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory, tiny_model) -> dict[str, object]:
    """{registry family name: a tiny random diffusers folder of that family}: Wan's is the suite's tiny model, every
    other family's comes from `build_tiny_NAME(path)` in tests/models/test_NAME.py."""
    import importlib

    root = tmp_path_factory.mktemp("families")
    folders = {"wan": tiny_model}
    for name in sorted(set(FAMILIES) - {"wan"}):
        folders[name] = getattr(importlib.import_module(f"tests.models.test_{name}"), f"build_tiny_{name}")(root / name)
    return folders


def test_every_registered_family_has_a_tiny_folder_here(family_folders):
    assert set(family_folders) == set(FAMILIES)


def test_shipped_configs_name_registered_families():
    for name in shipped_configs():
        assert load_model_config(name)["family"] in FAMILIES, name


def _spec(tmp_path, folder) -> object:
    path = tmp_path / "film.toml"
    path.write_text(f'[film]\nmodel = "{folder}"\n[[shots]]\nid = "a"\nprompt = "a red circle"\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reel_estimate_runs_for_every_family(family, family_folders, tmp_path):
    result = runner.invoke(app, ["estimate", str(_spec(tmp_path, family_folders[family])), "--gpu", "h100"])
    assert result.exit_code == 0, result.output
    assert "peak" in result.output and "H100" in result.output


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cuda_memory_plan_for_every_family_with_faked_free_memory(family, family_folders, tmp_path, monkeypatch):
    film = load_film(_spec(tmp_path, family_folders[family]))
    assert film.model.family.name == family
    components = SimpleNamespace(device=torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "faked GPU")

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * GIB, 80 * GIB))
    roomy = plan_memory(components, SpeedConfig(), film)
    assert (roomy["offload"], roomy["vae_tiling"], roomy["weights"]) == ("none", False, "bf16"), roomy
    assert roomy["why"]

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1024, 80 * GIB))  # 1 KiB free
    tight = plan_memory(components, SpeedConfig(), film)
    assert tight["offload"] == "group" and tight["vae_tiling"] is True, tight

    explicit = plan_memory(components, SpeedConfig(offload="model", vae_tiling=False, weights="fp8"), film)
    assert (explicit["offload"], explicit["vae_tiling"], explicit["weights"]) == ("model", False, "fp8")
