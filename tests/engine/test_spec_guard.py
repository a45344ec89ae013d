"""No existence oracle through the server: a path outside the roots is refused before reel tests whether it
exists, so the refusal is the same byte for byte whether the file is there or not — for a LoRA named by a
character library inside a root too (the spec loader gets the roots as a guard). Real HTTP through FastAPI's
TestClient, the tiny random Wan model, real files."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from reel.engine.serve import ServeConfig, create_app
from reel.engine.spec import SpecError, load_film
from reel.models.registry import SHAPES_DIR

TOML = {"Content-Type": "application/toml"}
FILM = """
[film]
model = "{model}"
steps = 2
characters = "lib"

[[shots]]
id = "a"
prompt = "{{bob}} moving left on a black background"
frames = 5
"""


@pytest.fixture
def layout(tmp_path, tiny_model):
    """root/lib/bob/character.toml naming a LoRA in a folder outside the root."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "lib" / "bob").mkdir(parents=True)
    outside.mkdir()
    lora = outside / "bob.safetensors"
    (root / "lib" / "bob" / "character.toml").write_text(f'lora = "{lora}"\ntrigger = "sks"\n')
    return root, lora, FILM.format(model=tiny_model)


def answers(tmp_path, tiny_model, root, text: str) -> list[bytes]:
    config = ServeConfig(roots=(root, tiny_model.parent), data=tmp_path / "data", devices=("cpu",))
    with TestClient(create_app(config), base_url="http://127.0.0.1:8188") as client:
        out = [client.post(route, content=text, headers=TOML) for route in ("/api/validate", "/api/jobs")]
        assert client.get("/api/jobs").json()["jobs"] == []  # nothing was queued
    assert all(r.status_code == 400 for r in out), [r.text for r in out]
    return [r.content for r in out]


def test_a_library_lora_outside_the_roots_is_refused_alike_whether_it_exists_or_not(tmp_path, tiny_model, layout):
    root, lora, text = layout
    shutil.copyfile(SHAPES_DIR / "adapters" / "preview.safetensors", lora)  # a real LoRA file
    there = answers(tmp_path, tiny_model, root, text)
    lora.unlink()
    gone = answers(tmp_path, tiny_model, root, text)
    assert there == gone
    assert b"characters.bob.lora" in there[0] and b"outside the folders this server may read" in there[0]
    assert b"does not exist" not in there[0]
    lora.mkdir()  # a folder at the same path: the same refusal again
    assert answers(tmp_path, tiny_model, root, text) == there


def test_without_a_guard_the_cli_still_says_what_is_wrong(tmp_path, tiny_model, layout):
    root, lora, text = layout
    spec = root / "film.toml"
    spec.write_text(text)
    with pytest.raises(SpecError) as info:
        load_film(spec)
    assert "does not exist" in info.value.problems[0][1]
