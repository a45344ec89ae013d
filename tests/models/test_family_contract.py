"""Every registered family implements models/family.py's contract, with the same signatures, and its
capability flags say the truth; the engine asks the flags, never the family's name or its attributes.

    .venv/bin/python -m pytest tests/models/test_family_contract.py -q
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from reel.models.family import Components, FamilyModule, family_module
from reel.models.registry import FAMILIES

REPO = Path(__file__).resolve().parents[2]
CONTRACT = [name for name, value in vars(FamilyModule).items()
            if callable(value) and not name.startswith("_")]


def _without_self(sig: inspect.Signature) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in sig.parameters.values() if p.name != "self"]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_module_has_the_contract_signatures(name):
    module = family_module(FAMILIES[name])
    assert isinstance(module, FamilyModule)
    assert len(CONTRACT) >= 15
    for fn in CONTRACT:
        want = _without_self(inspect.signature(getattr(FamilyModule, fn)))
        got = _without_self(inspect.signature(getattr(module, fn)))
        assert got == want, f"{module.__name__}.{fn}{inspect.signature(getattr(module, fn))}"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_flags_are_well_formed(name):
    family = FAMILIES[name]
    assert family.guidance in ("cfg", "embedded")
    assert set(family.image_pipelines) <= set(family.pipeline_classes)
    assert family.single_file_keys, "detect_family needs tensor names to recognise the family's single files"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, tiny_model) -> dict[str, object]:
    """{family: (module, components)} from a tiny random folder of each family: Wan's is the suite's tiny model,
    every other family's comes from `build_tiny_NAME(path)` in tests/models/test_NAME.py."""
    import importlib

    root = tmp_path_factory.mktemp("contract")
    folders = {"wan": tiny_model}
    for name in sorted(set(FAMILIES) - {"wan"}):
        builder = getattr(importlib.import_module(f"tests.models.test_{name}"), f"build_tiny_{name}")
        folders[name] = builder(root / name)
    assert set(folders) == set(FAMILIES)
    out = {}
    for name, folder in folders.items():
        module = family_module(FAMILIES[name])
        out[name] = (module, module.load(folder, torch.device("cpu"), torch.float32))
    return out


def _plain_fields(comps) -> dict:
    """The components' plain fields and copies of their dicts (a leading underscore marks a memo cache, which
    may fill: CogVideoX's RoPE tables per size)."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in vars(comps).items()
            if isinstance(v, (int, float, str, bool, tuple, dict, type(None))) and not k.startswith("_")}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_components_and_flags_hold_for_a_loaded_model(name, loaded):
    family = FAMILIES[name]
    module, comps = loaded[name]
    assert isinstance(comps, Components)
    assert "high" in module.experts(comps) and isinstance(module.embed_key(comps), str)
    before, fields = _plain_fields(comps), set(vars(comps))
    shape = module.latent_shape(comps, 9, 32, 32)
    text = module.encode_prompts(comps, ["a red circle"], FAMILIES[name].default_max_sequence_length // 8 or 8)
    cond = module.batch_conditioning(comps, text, guidance=5.0, fps=12, batch=1)
    if family.guidance == "embedded":
        assert isinstance(cond, dict) and "guidance" in cond
    noise = module.initial_noise(shape, 3, comps.device)
    assert noise.shape == (1, *shape)
    assert torch.equal(noise, module.initial_noise(shape, 3, comps.device))  # the seed decides the noise
    with torch.no_grad():
        v = module.velocity(comps, noise, torch.tensor(500.0), cond)
    assert v.shape == noise.shape and v.dtype == torch.float32
    chunks = list(module.decode_stream(comps, noise, seeds=[3], frames=9))
    frames = module.to_uint8_frames(torch.cat(chunks, dim=2))
    assert frames.shape == (1, 9, 32, 32, 3) and frames.dtype == np.uint8
    assert _plain_fields(comps) == before and set(vars(comps)) == fields  # nothing changed in the components
    if not family.preview_decoder:
        with pytest.raises(ValueError, match="previews decode with the model's VAE"):
            next(iter(module.decode_preview(comps, torch.nn.Identity(), noise)))
    if not family.image_pipelines:
        with pytest.raises(ValueError, match="text-to-video only"):
            module.image_condition(comps, np.zeros((32, 32, 3), np.uint8), 9, 32, 32)
    if family.audio:
        wave, rate = module.decode_audio(comps, noise, seeds=[3])
        assert wave.ndim == 3 and wave.shape[0] == 1 and wave.dtype == torch.float32 and rate > 0
    else:
        with pytest.raises(ValueError, match="make no sound track"):
            module.decode_audio(comps, noise, seeds=[3])
    assert family.long_shots in ("", "diffusion-forcing")
    if family.long_shots:
        assert 1 <= family.long_overlap < family.long_window
    else:
        with pytest.raises(ValueError, match="no long-shot scheme"):
            next(iter(module.render_long(comps, None, frames=33, height=32, width=32, window=17, overlap=5, steps=2,
                                         shift=1.0, seed=3, scheduler="default")))


ASKS_THE_FAMILY = ("engine/runtime.py", "engine/accel.py", "engine/spec.py", "engine/estimate.py",
                   "models/single_file.py")


@pytest.mark.parametrize("path", ASKS_THE_FAMILY)
def test_the_engine_asks_flags_not_names_or_attributes(path):
    """No family-name strings compared, no class names, no probing of what a family module or its
    components happen to have (hasattr/getattr on them, inspect.signature)."""
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    names = set(FAMILIES) | {"hunyuanvideo"}
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            consts = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
            if any(c in names for c in consts):
                wrong.append(f"line {node.lineno}: compares with a family name")
        if isinstance(node, ast.Attribute) and node.attr == "__name__":
            wrong.append(f"line {node.lineno}: looks at a class name")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr"):
            target = ast.unparse(node.args[0])
            if any(word in target for word in ("family", "comps", "components", "module")):
                wrong.append(f"line {node.lineno}: {node.func.id}({target}, ...)")
        if isinstance(node, ast.Attribute) and node.attr == "signature" and ast.unparse(node.value) == "inspect":
            wrong.append(f"line {node.lineno}: inspect.signature")
    assert not wrong, f"{path}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_estimator_reads_every_familys_vae_from_the_registry(name, loaded):
    from reel.engine.estimate_meta import vae_factors

    module, comps = loaded[name]
    t, s, channels = vae_factors(FAMILIES[name].vae_class, dict(comps.vae.config))
    assert (t, s) == (comps.temporal_factor, comps.spatial_factor)
    assert channels > 0
