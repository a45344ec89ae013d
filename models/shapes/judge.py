"""The judge: reads a shapes-world clip back from its pixels (background, colour, shape, direction).

Used to test the world, to score the built-in model's samples and the VAE's reconstructions, and
to check LoRA characters (the orange star). It needs no model: nearest palette colours, a soft
foreground mask, template matching of the mask's bounding box, and the centroid's motion.

    verdict = judge_clip(frames)          # frames: (F, H, W, 3) uint8
    verdict.color, verdict.shape, verdict.direction, verdict.background, verdict.confidence
    table = score([verdict, ...], [spec, ...])   # {"color": 0.97, "shape": ..., "n": ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from reel.models.shapes.world import ALL_COLORS, ALL_SHAPES, BACKGROUNDS, ClipSpec, shape_mask

TEMPLATE = 20  # side of the normalised bounding-box crop used for shape matching


@dataclass(frozen=True)
class Verdict:
    """What the judge read from one clip.

    background/color/shape/direction: palette names ("" when nothing is visible).
    confidence: 0..1, the weakest of the four readings (1 = unambiguous).
    motion: (dx, dy) centroid displacement over the clip, fractions of width / height.
    details: per-reading scores for debugging (colour distance, shape errors, visible fraction).
    """

    background: str
    color: str
    shape: str
    direction: str
    confidence: float
    motion: tuple[float, float] = (0.0, 0.0)
    details: dict = field(default_factory=dict, compare=False, hash=False)


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> tuple[str, float, float]:
    """(name, distance, margin to the second-nearest) of the palette entry closest to `rgb`."""
    names = list(palette)
    dists = np.linalg.norm(np.array([palette[n] for n in names], np.float32) - rgb[None], axis=1)
    order = np.argsort(dists)
    second = dists[order[1]] if len(order) > 1 else np.inf
    return names[order[0]], float(dists[order[0]]), float(second - dists[order[0]])


@lru_cache(maxsize=None)
def _template(shape: str) -> np.ndarray:
    """(TEMPLATE, TEMPLATE) coverage of `shape` stretched to fill its own bounding box."""
    ss = 4
    g = (np.arange(TEMPLATE * ss) + 0.5) / (TEMPLATE * ss) - 0.5  # (T*ss,) in [-0.5, 0.5]
    # The bbox of each shape in object units: find it from a fine sampling, then map the grid onto it.
    fine = np.linspace(-0.7, 0.7, 561)
    m = shape_mask(shape, *np.meshgrid(fine, fine))  # (561, 561) rows = v, cols = u
    us, vs = fine[m.any(axis=0)], fine[m.any(axis=1)]
    u = us.min() + (g + 0.5) * (us.max() - us.min())
    v = vs.min() + (g + 0.5) * (vs.max() - vs.min())
    inside = shape_mask(shape, *np.meshgrid(u, v))  # (T*ss, T*ss)
    return inside.reshape(TEMPLATE, ss, TEMPLATE, ss).mean(axis=(1, 3)).astype(np.float32)


def _crop_resize(soft: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Bilinear resize of soft[y0:y1, x0:x1] to (TEMPLATE, TEMPLATE)."""
    from PIL import Image

    y0, y1, x0, x1 = box
    img = Image.fromarray(soft[y0:y1, x0:x1].astype(np.float32), mode="F")
    return np.asarray(img.resize((TEMPLATE, TEMPLATE), Image.BILINEAR), dtype=np.float32)


def _direction(soft: np.ndarray) -> tuple[str, float, float, float, np.ndarray]:
    """(direction, confidence, dx, dy, frames with something visible) from the soft masks (F, H, W): the
    least-squares slope of the centroid over time, in frame widths/heights per clip."""
    n_f, h, w = soft.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mass = soft.sum(axis=(1, 2))  # (F,)
    ok = mass > 0.02 * h * w * 0.05  # frames where something is visible
    cx = (soft * xx).sum(axis=(1, 2)) / np.maximum(mass, 1e-6)  # (F,)
    cy = (soft * yy).sum(axis=(1, 2)) / np.maximum(mass, 1e-6)  # (F,)
    t = np.arange(n_f, dtype=np.float32)
    if ok.sum() >= 2:
        tt = t[ok] - t[ok].mean()
        denom = float((tt * tt).sum())
        dx = float((tt * (cx[ok] - cx[ok].mean())).sum() / denom) * (n_f - 1) / w
        dy = float((tt * (cy[ok] - cy[ok].mean())).sum() / denom) * (n_f - 1) / h
    else:
        dx = dy = 0.0
    if abs(dx) >= abs(dy):
        direction = "right" if dx > 0 else "left"
    else:
        direction = "down" if dy > 0 else "up"
    big, small = max(abs(dx), abs(dy)), min(abs(dx), abs(dy))
    dir_conf = float(np.clip((big - small) / (big + 1e-6), 0, 1)) * float(np.clip(big / 0.1, 0, 1))
    return direction, dir_conf, dx, dy, ok


def _shape(soft: np.ndarray, shapes: tuple[str, ...]) -> tuple[str, float, dict[str, float], int]:
    """(shape, confidence, summed template errors, frames used): each frame's bounding-box crop of the soft
    mask (F, H, W) against the templates, frames touching the border left out."""
    n_f, h, w = soft.shape
    errors = {s: 0.0 for s in shapes}
    used = 0
    for f in range(n_f):
        m = soft[f] > 0.5
        if m.sum() < 6:
            continue
        rows, cols = np.where(m.any(axis=1))[0], np.where(m.any(axis=0))[0]
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        if y0 == 0 or x0 == 0 or y1 == h or x1 == w:
            continue
        crop = _crop_resize(soft[f], (y0, y1, x0, x1))
        for s in shapes:
            errors[s] += float(np.abs(crop - _template(s)).mean())
        used += 1
    if not used:
        return "", 0.0, errors, 0
    ranked = sorted(errors, key=errors.get)
    e0, e1 = errors[ranked[0]] / used, errors[ranked[1]] / used if len(ranked) > 1 else 1.0
    return ranked[0], float(np.clip((e1 - e0) / (e1 + 1e-6), 0, 1)), errors, used


def judge_clip(
    frames: np.ndarray,
    *,
    colors: dict[str, tuple[int, int, int]] | None = None,
    shapes: tuple[str, ...] | None = None,
) -> Verdict:
    """Read background, foreground colour, shape and direction from (F, H, W, 3) uint8 frames.

    colors/shapes restrict the answers (default: base palette plus characters, e.g. orange/star).
    """
    colors = colors or ALL_COLORS
    shapes = shapes or ALL_SHAPES
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames.shape={frames.shape}: expected (F, H, W, 3) uint8")
    x = frames.astype(np.float32)  # (F, H, W, 3)
    n_f, h, w, _ = x.shape
    # 1. background: median of a 2-pixel border ring over all frames
    ring = np.concatenate(
        [x[:, :2].reshape(-1, 3), x[:, -2:].reshape(-1, 3), x[:, :, :2].reshape(-1, 3), x[:, :, -2:].reshape(-1, 3)]
    )
    bg_rgb = np.median(ring, axis=0)  # (3,)
    background, bg_dist, bg_margin = _nearest(bg_rgb, BACKGROUNDS)
    # 2. foreground colour: median of the pixels clearly away from the background
    dist = np.linalg.norm(x - bg_rgb, axis=-1)  # (F, H, W)
    top = np.percentile(dist, 99.5)
    if top < 25.0:
        return Verdict(background, "", "", "", 0.0, details={"visible": 0.0})
    core = dist > 0.6 * top
    fg_rgb = np.median(x[core], axis=0)  # (3,)
    color, color_dist, color_margin = _nearest(fg_rgb, colors)
    # 3. soft mask: projection of each pixel onto the bg -> fg segment
    axis = fg_rgb - bg_rgb  # (3,)
    soft = np.clip(((x - bg_rgb) @ axis) / float(axis @ axis), 0.0, 1.0)  # (F, H, W)
    # 4. direction: least-squares slope of the centroid over time
    direction, dir_conf, dx, dy, ok = _direction(soft)
    # 5. shape: template match of each frame's bounding-box crop (frames not touching the border)
    shape, shape_conf, errors, used = _shape(soft, shapes)
    bg_conf = float(np.clip(bg_margin / (bg_margin + bg_dist + 1e-6), 0, 1))
    color_conf = float(np.clip(color_margin / (color_margin + color_dist + 1e-6), 0, 1))
    confidence = min(bg_conf, color_conf, dir_conf, shape_conf)
    details = {
        "bg_rgb": bg_rgb.round(1).tolist(),
        "fg_rgb": fg_rgb.round(1).tolist(),
        "shape_errors": {s: round(e / max(used, 1), 4) for s, e in errors.items()},
        "frames_used": used,
        "visible": float(ok.mean()),
    }
    return Verdict(background, color, shape, direction, confidence, (round(dx, 4), round(dy, 4)), details)


FIELDS = ("color", "background", "shape", "direction")


def score(verdicts: list[Verdict], specs: list[ClipSpec]) -> dict[str, float]:
    """Accuracy per field over paired verdicts/specs, plus "all" (every field right) and "n"."""
    if len(verdicts) != len(specs):
        raise ValueError(f"score: {len(verdicts)} verdicts but {len(specs)} specs — pass one verdict per spec")
    n = len(specs)
    out: dict[str, float] = {}
    for name in FIELDS:
        out[name] = sum(getattr(v, name) == getattr(s, name) for v, s in zip(verdicts, specs)) / max(n, 1)
    out["all"] = sum(all(getattr(v, k) == getattr(s, k) for k in FIELDS) for v, s in zip(verdicts, specs)) / max(n, 1)
    out["n"] = n
    return out
