"""The film spec: good specs resolve against the model's defaults; every bad input is named with its fix."""

from __future__ import annotations

import json

import pytest

from reel.engine.spec import SpecError, load_film

GOOD = """
[film]
title = "t"
model = "{model}"
seed = 7

[[shots]]
id = "intro"
prompt = "a red circle moving left on a black background"

[[shots]]
id = "two"
prompt = "a blue square moving up on a gray background"
frames = 13
seed = 99
"""


def problems(write_spec, body: str) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        load_film(write_spec(body))
    return info.value.problems


def test_good_spec_takes_model_defaults(write_spec, tiny_model):
    film = load_film(write_spec(GOOD))
    assert (film.width, film.height, film.frames, film.fps, film.steps) == (32, 32, 9, 8, 4)
    assert film.model.path == tiny_model.resolve()
    assert film.model.temporal_factor == 4 and film.model.size_multiple == 8
    assert [s.id for s in film.shots] == ["intro", "two"]
    assert film.shots[1].frames == 13 and film.shots[1].seed == 99
    assert film.max_sequence_length == 16


def test_unknown_key_suggests_the_right_one(write_spec):
    found = problems(write_spec, GOOD.replace('seed = 7', 'seed = 7\nwidht = 64'))
    assert found[0][0] == "film.widht"
    assert "did you mean 'width'" in found[0][1]


def test_unknown_shot_key_names_the_shot(write_spec):
    found = problems(write_spec, GOOD.replace("frames = 13", "frame = 13"))
    assert found[0][0] == "shots[1].frame (shot 'two')"
    assert "did you mean 'frames'" in found[0][1]


def test_wrong_type_is_not_coerced(write_spec):
    found = problems(write_spec, GOOD.replace("frames = 13", 'frames = "13"'))
    assert found == [("shots[1].frames (shot 'two')", "must be a whole number, got '13'")]


def test_frames_the_model_cannot_take_propose_nearest_and_never_round(write_spec):
    found = problems(write_spec, GOOD.replace("frames = 13", "frames = 20"))
    assert found[0][0] == "shots[1].frames (shot 'two')"
    assert "20 frames" in found[0][1] and "4k+1" in found[0][1] and "try 21 or 17" in found[0][1]


def test_film_frames_and_sizes_checked(write_spec):
    body = GOOD.replace("seed = 7", "seed = 7\nwidth = 36\nheight = 30\nframes = 8")
    found = dict(problems(write_spec, body))
    assert "multiple of 8" in found["film.width"] and "try 32 or 40" in found["film.width"]
    assert "try 24 or 32" in found["film.height"]
    assert "try 9 or 5" in found["film.frames"]


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "with space", "CON", "", "-lead", "x" * 65, "ünï"])
def test_unsafe_shot_ids_rejected(write_spec, bad_id):
    found = problems(write_spec, GOOD.replace('id = "intro"', f"id = {json.dumps(bad_id)}"))
    assert found[0][0] == "shots[0].id" and "cannot be a file name" in found[0][1]


def test_duplicate_ids_rejected_ignoring_case(write_spec):
    found = problems(write_spec, GOOD.replace('id = "two"', 'id = "INTRO"'))
    assert found[0][0] == "shots[1].id" and "already used by shots[0]" in found[0][1]


def test_empty_prompt_rejected(write_spec):
    found = problems(write_spec, GOOD.replace('prompt = "a blue square moving up on a gray background"',
                                              'prompt = "   "'))
    assert found[0][0] == "shots[1].prompt (shot 'two')" and "empty" in found[0][1]


def test_missing_prompt_and_no_shots(write_spec):
    found = problems(write_spec, '[film]\nmodel = "{model}"\n[[shots]]\nid = "a"\n')
    assert found == [("shots[0].prompt (shot 'a')", "required but missing — add it")]
    found = problems(write_spec, '[film]\nmodel = "{model}"\n')
    assert found[0][0] == "shots" and "at least one" in found[0][1]


def test_model_path_missing_or_not_diffusers(write_spec, tmp_path):
    found = problems(write_spec, GOOD.replace('model = "{model}"', 'model = "no/such/folder"'))
    assert found[0][0] == "film.model" and "does not exist" in found[0][1]
    (tmp_path / "plain").mkdir()
    found = problems(write_spec, GOOD.replace('model = "{model}"', f'model = "{tmp_path / "plain"}"'))
    assert found[0][0] == "film.model" and "not a diffusers folder" in found[0][1]


def test_unsupported_pipeline_class(write_spec, tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    found = problems(write_spec, GOOD.replace('model = "{model}"', f'model = "{folder}"'))
    assert "does not support" in found[0][1] and "wan" in found[0][1]


def test_broken_toml_and_missing_file(write_spec, tmp_path):
    found = problems(write_spec, "[film\ntitle = 1")
    assert "not valid TOML" in found[0][1] and "line 1" in found[0][1]
    with pytest.raises(SpecError, match="file not found"):
        load_film(tmp_path / "nope.toml")


def test_many_problems_reported_together(write_spec):
    body = GOOD.replace("frames = 13", "frames = 20").replace('id = "intro"', 'id = "a b"')
    with pytest.raises(SpecError) as info:
        load_film(write_spec(body))
    assert len(info.value.problems) == 2
    assert str(info.value).startswith(str(write_spec(body)) + ": 2 problems")


def test_out_of_range_and_nan(write_spec):
    found = dict(problems(write_spec, GOOD.replace("seed = 7", "seed = -1\nguidance = nan")))
    assert "greater than or equal to 0" in found["film.seed"]
    assert "film.guidance" in found
