"""Tests for the shapes world (models/shapes/world.py) and its vocabulary.

    .venv/bin/python -m pytest tests/models/test_shapes_world.py -q
"""

import numpy as np
import pytest

from reel.models.shapes import world
from reel.models.shapes.vocab import TEXT_LEN, build_tokenizer, vocabulary
from reel.models.shapes.world import (
    BACKGROUNDS,
    COLORS,
    HELD_OUT_PAIRS,
    ORANGE_STAR,
    caption,
    is_held_out,
    parse_caption,
    render_clip,
    sample_prompts,
    sample_spec,
)


def _fg_mask(clip, spec):
    bg = np.array(BACKGROUNDS[spec.background], np.float32)
    return np.linalg.norm(clip.astype(np.float32) - bg, axis=-1) > 30  # (F, H, W)


def test_render_is_deterministic_and_shaped():
    spec = sample_spec(np.random.default_rng(0))
    a = render_clip(spec)
    b = render_clip(spec)
    assert a.shape == (17, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert render_clip(spec, width=96, height=32, frames=9).shape == (9, 32, 96, 3)


def test_same_seed_same_spec():
    assert sample_spec(np.random.default_rng(7)) == sample_spec(np.random.default_rng(7))


@pytest.mark.parametrize("seed", range(12))
def test_object_size_motion_and_visibility(seed):
    spec = sample_spec(np.random.default_rng(seed))
    clip = render_clip(spec)
    mask = _fg_mask(clip, spec)
    ys, xs = np.where(mask[0])
    height = ys.max() - ys.min() + 1
    assert 64 / 4 - 2 <= height <= 64 / 3 + 2  # a quarter to a third of the frame height
    for f in range(17):  # fully visible: never touches the border
        m = mask[f]
        assert m.sum() > 50
        assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
    c0 = np.array(np.where(mask[0])[::-1]).mean(axis=1)  # (x, y)
    c1 = np.array(np.where(mask[-1])[::-1]).mean(axis=1)
    dx, dy = world.DIRECTION_VECTORS[spec.direction]
    travel = (c1 - c0) @ np.array([dx, dy])
    assert travel >= 64 / 3


def test_colors_are_palette_colors():
    spec = sample_spec(np.random.default_rng(3), color="purple", background="navy")
    clip = render_clip(spec)
    pixels = {tuple(p) for p in clip.reshape(-1, 3)}
    assert COLORS["purple"] in pixels and BACKGROUNDS["navy"] in pixels


def test_caption_and_trigger():
    spec = sample_spec(np.random.default_rng(1), color="red", shape="circle", direction="left", background="black")
    assert caption(spec) == "a red circle moving left on a black background"
    assert parse_caption(caption(spec)).color == "red"
    star = ORANGE_STAR.sample_spec(np.random.default_rng(2), direction="left", background="black")
    assert ORANGE_STAR.caption(star) == "a sks moving left on a black background"
    assert caption(star, trigger="ohwx").startswith("a ohwx moving")
    assert star.color == "orange" and star.shape == "star"
    assert render_clip(star).shape == (17, 64, 64, 3)


def test_held_out_split():
    assert len(HELD_OUT_PAIRS) >= 12
    rng = np.random.default_rng(0)
    for _ in range(500):
        assert not is_held_out(sample_spec(rng, exclude_pairs=HELD_OUT_PAIRS))
    held = sample_prompts(20, seed=0, held_out=True)
    assert all(is_held_out(spec) for _, spec in held)
    seen = sample_prompts(20, seed=0, held_out=False)
    assert all(not is_held_out(spec) for _, spec in seen)
    assert sample_prompts(5, seed=3) == sample_prompts(5, seed=3)


def test_bad_sizes_say_what_to_fix():
    spec = sample_spec(np.random.default_rng(0))
    with pytest.raises(ValueError, match="4k\\+1"):
        render_clip(spec, frames=16)
    with pytest.raises(ValueError, match="multiples of 8"):
        render_clip(spec, width=60)
    with pytest.raises(ValueError, match="use one of"):
        world.ClipSpec("pink", "circle", "left", "black", (0.5, 0.5), 0.3, 0.4)


def test_vocabulary_covers_captions():
    tok = build_tokenizer()
    words = set(vocabulary())
    assert {"orange", "star", "sks", "ohwx"} <= words
    for text, _ in sample_prompts(50, seed=1):
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids and ids[-1] == tok.eos_token_id
    enc = tok("", padding="max_length", max_length=TEXT_LEN, truncation=True)
    assert enc["input_ids"][0] == tok.eos_token_id and sum(enc["attention_mask"]) == 1
