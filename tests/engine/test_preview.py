"""Fast previews: consistency sampling, preview distillation, `reel preview` outputs and the links
between a preview and its final render."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from reel.engine.cli import app
from reel.engine.sampling import consistency, guided, sample, shifted_sigmas
from tests.engine.test_train_lora import make_dataset

runner = CliRunner()

FILM = """
[film]
model = "{model}"
seed = 8
steps = 6
{extra}

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"

[[shots]]
id = "b"
prompt = "a blue square moving up on a gray background"
"""


def test_consistency_sampler_is_per_shot_and_ends_clean():
    sig = shifted_sigmas(4, 3.0)
    assert sig[0] == pytest.approx(1.0) and bool((sig[1:] < sig[:-1]).all())
    v = lambda x, t, e: x * 0.5 + e.mean()  # noqa: E731  (a fixed, simple velocity field)
    noise = torch.randn(2, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    e = torch.zeros(2, 1, 1)
    both = sample(consistency(3.0, [11, 22]), guided(v, e, None, 1.0), noise, 4)
    alone = sample(consistency(3.0, [22]), guided(v, e[1:], None, 1.0), noise[1:], 4)
    assert torch.equal(both[1:], alone)  # a shot's re-noising never depends on its batch mates
    one_step = sample(consistency(3.0, [11]), guided(v, e[:1], None, 1.0), noise[:1], 1)
    assert torch.allclose(one_step, noise[:1] - 1.0 * (noise[:1] * 0.5))  # x0 = x - sigma * v at sigma 1


@pytest.fixture(scope="module")
def preview_lora(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("distill")
    data = make_dataset(root / "data", n=2, image=False)
    out = root / "preview.safetensors"
    result = runner.invoke(app, ["distill-preview", str(data), "--base", str(tiny_model), "--out", str(out),
                                 "--steps", "3", "--rank", "4", "--teacher-steps", "8", "--skip", "2",
                                 "--validate-every", "3", "--checkpoint-every", "3", "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_distilled_preview_lora_is_marked_and_validated(preview_lora):
    with safe_open(str(preview_lora), "pt") as f:
        meta = f.metadata()
    assert (meta["reel_kind"] == "preview" and meta["reel_preview_steps"] == "4"
            and meta["reel_preview_scheduler"] == "lcm")
    assert (preview_lora.with_suffix(".train") / "validation" / "step-0000003.png").is_file()


def test_preview_then_final_share_seeds_and_link(write_spec, tmp_path, preview_lora):
    spec = write_spec(FILM.replace("{extra}", f'preview_lora = "{preview_lora}"'))
    out = tmp_path / "out"
    result = runner.invoke(app, ["preview", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    root = out / "preview"
    assert (root / "film.mp4").is_file() and (root / "contact_sheet.png").is_file()
    gif = Image.open(root / "storyboard.gif")
    assert gif.n_frames == 18  # two 9-frame shots
    pa = json.loads((root / "shots" / "a.json").read_text())
    assert pa["preview"] is True and pa["steps"] == 4 and pa["guidance"] == 1.0 and pa["scheduler"] == "lcm"
    assert [a["character"] for a in pa["adapters"]] == ["preview"]
    assert pa["codec"] == "h264-draft"  # drafts: x264 ultrafast at the final's CRF
    assert json.loads((root / "film.json").read_text())["exports"] == {"contact_sheet": "contact_sheet.png",
                                                                       "storyboard": "storyboard.gif"}
    assert not (out / "shots").exists()  # previews never overwrite finals
    result = runner.invoke(app, ["render", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    fa = json.loads((out / "shots" / "a.json").read_text())
    assert fa["seed"] == pa["seed"] and fa["steps"] == 6 and fa["adapters"] == []
    assert fa["codec"] == "h264"
    assert fa["counterpart"]["kind"] == "preview" and fa["counterpart"]["fingerprint"] == pa["fingerprint"]
    assert pa["counterpart"]["kind"] == "final" and pa["counterpart"]["fingerprint"] == fa["fingerprint"]
    assert (out / fa["counterpart"]["manifest"].replace("../", "", 1)).is_file()
    result = runner.invoke(app, ["render", str(spec), "--out", str(out), "--preview"])
    assert "0 rendered, 2 reused" in result.output


def test_published_few_step_lora_with_unipc(write_spec, tmp_path, preview_lora):
    extra = f'preview_lora = "{preview_lora}"\npreview_scheduler = "unipc"\npreview_steps = 3\npreview_shift = 5.0'
    out = tmp_path / "out"
    result = runner.invoke(app, ["preview", str(write_spec(FILM.replace("{extra}", extra))), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    m = json.loads((out / "preview" / "shots" / "b.json").read_text())
    assert (m["scheduler"], m["steps"], m["shift"]) == ("unipc", 3, 5.0)


def test_preview_without_adapter_is_a_clear_error(write_spec, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["preview", str(write_spec(FILM.replace("{extra}", ""))), "--out", str(out)])
    assert result.exit_code == 2 and "no preview adapter" in result.output and not out.exists()
    result = runner.invoke(app, ["preview", str(write_spec(FILM.replace("{extra}", 'preview_lora = "nope.st"'))),
                                 "--out", str(out)])
    assert result.exit_code == 2 and "film.preview_lora" in result.output
