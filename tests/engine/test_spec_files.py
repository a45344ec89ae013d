"""The files a spec names: no file-system error or nesting depth ends in a traceback (each becomes a problem
naming its field), a folder given for a file says so, and every file is checked to be what its field says
before a render needs it (LoRA, upscaler and preview-decoder headers, audio that decodes and fits the film,
complete model weights). Real files on disk; the built-in model."""

from __future__ import annotations

import json
import shutil
import wave

import pytest
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.engine.spec import SpecError, film_from_dict, load_film, parse_toml
from reel.models.registry import SHAPES_DIR

runner = CliRunner()
LONG = "x" * 300  # one path component longer than the file system allows
FILM = """
[film]
model = "shapes"
width = 32
height = 32
frames = 5
steps = 1
{film}

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"
{shot}
{rest}
"""
HERO = '\n[characters.hero]\ntrigger = "red"\nlora = "{value}"\n'


@pytest.fixture
def files(tmp_path):
    """Real inputs beside the spec: a LoRA and the x2 upscaler of the built-in model, its preview decoder,
    a WAV, text posing as audio, a truncated LoRA, a folder."""
    adapters = SHAPES_DIR / "adapters"
    shutil.copyfile(adapters / "preview.safetensors", tmp_path / "hero.safetensors")
    shutil.copyfile(SHAPES_DIR / "upscalers" / "x2.safetensors", tmp_path / "up.safetensors")
    shutil.copyfile(adapters / "preview_decoder.safetensors", tmp_path / "dec.safetensors")
    data = (tmp_path / "hero.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[:len(data) // 2])
    (tmp_path / "folder.safetensors").mkdir()
    (tmp_path / "notes.wav").write_text("not audio\n" * 50)
    with wave.open(str(tmp_path / "music.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x10" * 8000)  # 1 s
    return tmp_path


def spec(tmp_path, film: str = "", shot: str = "", rest: str = ""):
    path = tmp_path / "film.toml"
    path.write_text(FILM.format(film=film, shot=shot, rest=rest), encoding="utf-8")
    return path


def problems(path) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        load_film(path)
    return dict(info.value.problems)


# the spec fields that name a file or folder, written with `value`; (film, shot, rest, the field named)
FIELDS = {
    "model": (lambda v: "", "", "", "film.model"),
    "upscale": (lambda v: f'upscale = "{v}"', "", "", "film.upscale"),
    "preview_lora": (lambda v: f'preview_lora = "{v}"', "", "", "film.preview_lora"),
    "preview_decoder": (lambda v: f'preview_lora = "hero.safetensors"\npreview_decoder = "{v}"', "", "",
                        "film.preview_decoder"),
    "characters": (lambda v: f'characters = "{v}"', "", "", "film.characters"),
    "audio": (lambda v: "", "", '\n[[audio]]\nfile = "{v}"\n', "audio[0].file"),
    "lora": (lambda v: "", 'characters = ["hero"]\n', HERO, "characters.hero.lora"),
    "image": (lambda v: "", 'image = "{v}"\n', "", "shots[0].image (shot 'a')"),
}


def field_spec(tmp_path, name: str, value: str):
    film, shot, rest, field = FIELDS[name]
    text = FILM.format(film=film(value), shot=shot.format(v=value), rest=rest.format(v=value, value=value))
    if name == "model":
        text = text.replace('model = "shapes"', f'model = "{value}"')
    path = tmp_path / "film.toml"
    path.write_text(text, encoding="utf-8")
    return path, field


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_a_name_longer_than_the_file_system_allows_is_a_problem_of_its_field(files, name):
    path, field = field_spec(files, name, f"{LONG}/{LONG}.safetensors")
    found = problems(path)
    assert field in found and "longer than the file system allows" in found[field], found
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output and field in result.output


@pytest.mark.parametrize("name", sorted(set(FIELDS) - {"characters", "model"}))
def test_a_folder_given_for_a_file_says_it_is_a_directory(files, name):
    path, field = field_spec(files, name, "folder.safetensors")
    found = problems(path)
    assert "is a directory, not a file" in found[field] and "does not exist" not in found[field], found


def test_nul_characters_in_paths_and_text_are_problems(files):
    data = parse_toml(spec(files))
    data["film"]["model"] = "models/a\x00b"
    with pytest.raises(SpecError) as info:
        film_from_dict(data, files / "film.toml")
    assert info.value.problems[0][0] == "film.model" and "NUL" in info.value.problems[0][1]
    data = parse_toml(spec(files, rest='\n[[audio]]\nfile = "music.wav"\n'))
    data["audio"][0]["file"] = "a\x00.wav"
    data["film"]["title"] = "x\x00y"
    with pytest.raises(SpecError) as info:
        film_from_dict(data, files / "film.toml")
    found = dict(info.value.problems)
    assert "NUL" in found["audio[0].file"] and "NUL" in found["film.title"]


@pytest.mark.parametrize("text", [
    "x = " + "[" * 5000 + "]" * 5000,
    "[film]\ntitle = " + "{a=" * 3000 + "1" + "}" * 3000,
    FILM.format(film="title = " + "[" * 300 + '"t"' + "]" * 300, shot="", rest=""),
    FILM.format(film="", shot="frames = " + "[" * 60 + "5" + "]" * 60, rest=""),
])
def test_deeply_nested_toml_is_a_problem_not_a_recursion_error(tmp_path, text):
    path = tmp_path / "film.toml"
    path.write_text(text)
    with pytest.raises(SpecError):
        load_film(path)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert len(result.output) < 5000  # nested values are shown shortened


@pytest.mark.parametrize("name, value, needle", [
    ("lora", "up.safetensors", "none of the LoRA formats reel reads"),
    ("lora", "truncated.safetensors", "not a readable .safetensors file (truncated"),
    ("lora", str(SHAPES_DIR / "weights" / "transformer" / "diffusion_pytorch_model.safetensors"),
     "full checkpoint rather than a LoRA"),
    ("preview_lora", "dec.safetensors", "none of the LoRA formats reel reads"),
    ("upscale", "hero.safetensors", "not a model architecture spandrel"),
    ("upscale", "truncated.safetensors", "truncated"),
    ("preview_decoder", "hero.safetensors", "not a reel preview decoder"),
    ("audio", "notes.wav", "not a media file"),
    ("audio", "hero.safetensors", "not a media file"),
])
def test_files_of_the_wrong_kind_are_refused_before_rendering(files, name, value, needle):
    path, field = field_spec(files, name, value)
    found = problems(path)
    assert needle in found[field], found


def test_the_right_files_pass(files):
    path = spec(files, film='upscale = "up.safetensors"\npreview_lora = "hero.safetensors"\n'
                            'preview_decoder = "dec.safetensors"',
                shot='characters = ["hero"]\n', rest=HERO.format(value="hero.safetensors") +
                '\n[[audio]]\nfile = "music.wav"\nat = 0.1\n')
    film = load_film(path)
    assert film.upscale.endswith("up.safetensors") and film.preview.decoder.name == "dec.safetensors"
    assert film.audio[0].path == (files / "music.wav").resolve()


def test_audio_that_would_start_after_the_film_or_past_its_end_is_refused(files):
    found = problems(spec(files, rest='\n[[audio]]\nfile = "music.wav"\nat = 30.0\n'))
    assert "after the film ends" in found["audio"]
    found = problems(spec(files, rest='\n[[audio]]\nfile = "music.wav"\ntrim_start = 5.0\n'))
    assert "past the file's end" in found["audio"]


def test_a_preview_decoder_for_other_latents_is_refused(files, write_spec):
    path = write_spec(f'[film]\nmodel = "{{model}}"\npreview_lora = "{files / "hero.safetensors"}"\n'
                      f'preview_decoder = "{files / "dec.safetensors"}"\n'
                      '[[shots]]\nid = "a"\nprompt = "a red circle"\n')
    found = problems(path)
    assert "made for 8-channel latents, the model has 4" in found["film.preview_decoder"]


def test_incomplete_weights_and_unreadable_model_json_fail_validate(tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    path = tmp_path / "film.toml"
    path.write_text(f'[film]\nmodel = "{model}"\n[[shots]]\nid = "a"\nprompt = "a red circle"\n')
    assert runner.invoke(app, ["validate", str(path)]).exit_code == 0
    good = (model / "reel.json").read_text()
    (model / "reel.json").write_text(json.dumps({"width": "wide", "fps": 0, "scheduler": "ddim"}))
    with pytest.raises(SpecError) as info:
        load_film(path)
    found = info.value.problems
    assert any(f == "film.model" and "width = 'wide' is not a whole number" in m for f, m in found)
    assert any(f == "film.model" and "fps = 0 is not a whole number from 1 to 240" in m for f, m in found)
    assert any(f == "film.model (reel.json scheduler)" and "ddim" in m for f, m in found)
    (model / "reel.json").write_text("[1, 2]")
    assert "not an object" in problems(path)["film.model"]
    (model / "reel.json").write_text(good)
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:10_000])
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "truncated" in result.output and str(weights) in result.output


def test_a_character_no_shot_casts_is_checked_and_mentioned(files):
    found = problems(spec(files, rest=HERO.format(value="missing.safetensors")))
    assert "does not exist" in found["characters.hero.lora"]
    found = problems(spec(files, rest=HERO.format(value="up.safetensors")))
    assert "none of the LoRA formats" in found["characters.hero.lora"]
    path = spec(files, rest=HERO.format(value="hero.safetensors"))
    assert load_film(path).unused_characters == ("hero",) and load_film(path).characters == {}
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0 and "characters.hero is defined but no shot casts it" in result.output


def test_wan22_experts_on_a_single_transformer_and_long_titles_are_refused(files):
    rest = HERO.format(value="hero.safetensors") + 'expert = "high"\n'
    found = problems(spec(files, shot='characters = ["hero"]\n', rest=rest))
    assert "Wan 2.2 expert" in found["characters.hero.expert"]
    found = problems(spec(files, film=f'title = "{"t" * 1001}"'))
    assert "keep it under 1000" in found["film.title"]
