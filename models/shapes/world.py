"""The shapes world: deterministic procedural clips of one object on a plain background.

Every clip is described by a frozen `ClipSpec` and rendered by the pure function `render_clip`
(same spec and size -> same bytes). Its caption follows one grammar:

    "a {color} {shape} moving {direction} on a {background} background"

Characters outside the base vocabulary (the orange star) are rendered the same way and captioned
with a trigger word instead of "{color} {shape}" (`caption(spec, trigger="sks")`).

    rng = np.random.default_rng(0)
    spec = sample_spec(rng, exclude=HELD_OUT_PAIRS)
    clip = render_clip(spec, width=64, height=64, frames=17)   # (17, 64, 64, 3) uint8
    text = caption(spec)

Geometry is in frame fractions, so any size renders the same scene proportionally: positions are
fractions of width / height, the object size is a fraction of the frame height, and the travel along
the motion axis is a fraction of the frame extent on that axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ---- palette (RGB) ------------------------------------------------------------------------------
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (40, 90, 230),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
    "purple": (150, 60, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "gray": (110, 110, 110),
    "navy": (20, 30, 90),
    "brown": (100, 65, 30),
}
# Colours and shapes that only characters use (never in base captions).
EXTRA_COLORS: dict[str, tuple[int, int, int]] = {"orange": (245, 140, 20)}
EXTRA_SHAPES: tuple[str, ...] = ("star",)
ALL_COLORS: dict[str, tuple[int, int, int]] = {**COLORS, **EXTRA_COLORS}
ALL_SHAPES: tuple[str, ...] = SHAPES + EXTRA_SHAPES

# Unit vector (dx, dy) per direction, image coordinates (y grows downwards).
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}

SIZE_RANGE = (0.25, 0.34)  # object height, fraction of the frame height
TRAVEL_RANGE = (0.36, 0.48)  # distance travelled over the clip, fraction of the frame on that axis
MARGIN = 0.02  # extra gap between object and frame border, frame fraction

# Held-out combinations for measuring generalisation: never used in training.
# The grammar has only 6 x 3 = 18 (color, shape) pairs; withholding 12 of them entirely would leave
# each colour with a single shape. So 12 (color, shape, background) combinations are held out
# instead: every colour twice, every shape four times, every background three times, every held-out
# (color, shape) pair on exactly one background. `exclude` / `only` accept (color, shape) pairs or
# (color, shape, background) triples.
HELD_OUT_PAIRS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("red", "circle", "black"),
        ("red", "triangle", "navy"),
        ("green", "square", "gray"),
        ("green", "circle", "brown"),
        ("blue", "triangle", "black"),
        ("blue", "square", "navy"),
        ("yellow", "circle", "gray"),
        ("yellow", "square", "brown"),
        ("white", "triangle", "gray"),
        ("white", "circle", "navy"),
        ("purple", "square", "black"),
        ("purple", "triangle", "brown"),
    }
)


@dataclass(frozen=True)
class ClipSpec:
    """One clip of the world.

    color: palette name (COLORS, or EXTRA_COLORS for characters).
    shape: one of ALL_SHAPES.
    direction: "left" | "right" | "up" | "down".
    background: BACKGROUNDS name.
    start_xy: object centre at frame 0, (x, y) as fractions of (width, height).
    size: object height (bounding box), fraction of the frame height.
    travel: distance moved from the first to the last frame, fraction of the frame on that axis.
    """

    color: str
    shape: str
    direction: str
    background: str
    start_xy: tuple[float, float]
    size: float
    travel: float

    def __post_init__(self) -> None:
        if self.color not in ALL_COLORS:
            raise ValueError(f"color={self.color!r}: use one of {sorted(ALL_COLORS)}")
        if self.shape not in ALL_SHAPES:
            raise ValueError(f"shape={self.shape!r}: use one of {list(ALL_SHAPES)}")
        if self.direction not in DIRECTION_VECTORS:
            raise ValueError(f"direction={self.direction!r}: use one of {list(DIRECTIONS)}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background={self.background!r}: use one of {sorted(BACKGROUNDS)}")

    def end_xy(self) -> tuple[float, float]:
        dx, dy = DIRECTION_VECTORS[self.direction]
        return (self.start_xy[0] + dx * self.travel, self.start_xy[1] + dy * self.travel)


@dataclass(frozen=True)
class Character:
    """A recurring object outside the base vocabulary, for LoRA training (e.g. the orange star).

    name: human name; color/shape: what the world draws; trigger: the default word that stands for
    it in captions ("a sks moving left on a black background").
    """

    name: str
    color: str
    shape: str
    trigger: str = "sks"

    def sample_spec(self, rng: np.random.Generator, **kwargs) -> ClipSpec:
        """A random clip of this character (direction, background, position, size, travel random)."""
        return sample_spec(rng, color=self.color, shape=self.shape, **kwargs)

    def caption(self, spec: ClipSpec, trigger: str | None = None) -> str:
        return caption(spec, trigger=trigger or self.trigger)


ORANGE_STAR = Character(name="orange star", color="orange", shape="star", trigger="sks")
CHARACTERS: dict[str, Character] = {"orange_star": ORANGE_STAR}


def _matches(combo: tuple[str, ...], color: str, shape: str, background: str) -> bool:
    return tuple(combo) == (color, shape, background)[: len(combo)]


def is_held_out(spec: ClipSpec, held: frozenset = HELD_OUT_PAIRS) -> bool:
    """True if the spec's (color, shape[, background]) is one of `held`."""
    return any(_matches(c, spec.color, spec.shape, spec.background) for c in held)


def sample_spec(
    rng: np.random.Generator,
    *,
    exclude_pairs=(),
    only_pairs=None,
    color: str | None = None,
    shape: str | None = None,
    direction: str | None = None,
    background: str | None = None,
) -> ClipSpec:
    """Draw a random spec. Fixed fields are kept; the others are drawn uniformly.

    exclude_pairs: (color, shape) pairs or (color, shape, background) triples never to return
    (pass HELD_OUT_PAIRS for training data). only_pairs: if given, return only these combinations
    (pass HELD_OUT_PAIRS for the held-out evaluation set).
    """
    only = sorted(only_pairs) if only_pairs is not None else None
    for _ in range(1000):
        c = color or str(rng.choice(list(COLORS)))
        s = shape or str(rng.choice(list(SHAPES)))
        b = background or str(rng.choice(list(BACKGROUNDS)))
        if only is not None:
            combo = only[int(rng.integers(len(only)))]
            c, s = combo[0], combo[1]
            b = combo[2] if len(combo) > 2 else b
        if not any(_matches(e, c, s, b) for e in exclude_pairs):
            break
    else:
        raise ValueError("sample_spec: every combination is excluded — loosen exclude_pairs")
    d = direction or str(rng.choice(list(DIRECTIONS)))
    size = float(rng.uniform(*SIZE_RANGE))
    travel = float(rng.uniform(*TRAVEL_RANGE))
    r = size / 2 + MARGIN
    dx, dy = DIRECTION_VECTORS[d]
    # Along the motion axis: start so that start and end both keep the object inside.
    lo, hi = r, 1.0 - r - travel
    along = float(rng.uniform(lo, hi))
    across = float(rng.uniform(r, 1.0 - r))
    if dx:
        x = along if dx > 0 else 1.0 - along
        start = (x, across)
    else:
        y = along if dy > 0 else 1.0 - along
        start = (across, y)
    return ClipSpec(c, s, d, b, (round(start[0], 5), round(start[1], 5)), round(size, 5), round(travel, 5))


def caption(spec: ClipSpec, trigger: str | None = None) -> str:
    """The clip's caption; with `trigger`, the object is named by the trigger word."""
    thing = trigger if trigger else f"{spec.color} {spec.shape}"
    return f"a {thing} moving {spec.direction} on a {spec.background} background"


def parse_caption(text: str) -> ClipSpec | None:
    """Inverse of `caption` for base-grammar captions (geometry set to the frame centre), or None."""
    words = text.strip().lower().split()
    if len(words) != 9 or words[0] != "a" or words[3] != "moving" or words[5:7] != ["on", "a"]:
        return None
    if words[8] != "background":
        return None
    try:
        return ClipSpec(words[1], words[2], words[4], words[7], (0.5, 0.5), 0.3, 0.4)
    except ValueError:
        return None


def sample_prompts(n: int, seed: int, held_out: bool = False) -> list[tuple[str, ClipSpec]]:
    """`n` evaluation (caption, spec) pairs from a fixed seed.

    held_out=False: combinations used in training; held_out=True: only HELD_OUT_PAIRS.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if held_out:
            spec = sample_spec(rng, only_pairs=sorted(HELD_OUT_PAIRS))
        else:
            spec = sample_spec(rng, exclude_pairs=HELD_OUT_PAIRS)
        out.append((caption(spec), spec))
    return out


# ---- rendering ----------------------------------------------------------------------------------
SUPERSAMPLE = 4  # sub-pixel samples per axis for anti-aliasing


def _star_polygon(points: int = 5, inner: float = 0.4) -> np.ndarray:
    """Unit star (outer radius 1, pointing up), vertices (2*points, 2) in (x, y)."""
    k = np.arange(2 * points)
    radius = np.where(k % 2 == 0, 1.0, inner)
    ang = -np.pi / 2 + k * np.pi / points
    return np.stack([radius * np.cos(ang), radius * np.sin(ang)], axis=1)


def _inside_polygon(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon for arrays of points."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = (x2 - x1) * (py - y1) / (y2 - y1 + 1e-12) + x1
        inside ^= crosses & (px < xint)
    return inside


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in object units: (u, v) offsets from the centre divided by the object height.

    Every shape's bounding box has height 1 (star: outer radius scaled so its height is 1).
    """
    if shape == "circle":
        return u * u + v * v <= 0.25
    if shape == "square":
        return (np.abs(u) <= 0.5) & (np.abs(v) <= 0.5)
    if shape == "triangle":
        # Equilateral-ish, apex up, height 1, base width 1.1; centroid-free: bbox centred.
        half_w = 0.55 * (v + 0.5)  # width grows from apex (v=-0.5) to base (v=0.5)
        return (v >= -0.5) & (v <= 0.5) & (np.abs(u) <= half_w)
    if shape == "star":
        poly = _star_polygon()
        top, bottom = poly[:, 1].min(), poly[:, 1].max()
        scale = 1.0 / (bottom - top)
        poly = poly * scale
        poly[:, 1] -= (poly[:, 1].min() + poly[:, 1].max()) / 2  # centre the bounding box
        return _inside_polygon(u, v, poly)
    raise ValueError(f"shape={shape!r}: use one of {list(ALL_SHAPES)}")


def render_clip(spec: ClipSpec, width: int = 64, height: int = 64, frames: int = 17) -> np.ndarray:
    """Render `spec` to (frames, height, width, 3) uint8. Deterministic; anti-aliased edges.

    width/height must be multiples of 8 and frames of the form 4k+1 (the Wan latent grid).
    """
    if width % 8 or height % 8 or width <= 0 or height <= 0:
        raise ValueError(f"width={width}, height={height}: both must be positive multiples of 8 (e.g. 64)")
    if frames < 1 or (frames - 1) % 4:
        raise ValueError(f"frames={frames}: needs 4k+1 frames — try 17 or 21")
    ss = SUPERSAMPLE
    # 1. sub-pixel sample grid in pixel units
    offs = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(width)[:, None] + offs[None, :]).reshape(-1)  # (W*ss,)
    ys = (np.arange(height)[:, None] + offs[None, :]).reshape(-1)  # (H*ss,)
    obj_px = spec.size * height  # object height in pixels
    bg = np.array(BACKGROUNDS[spec.background], dtype=np.float32)
    fg = np.array(ALL_COLORS[spec.color], dtype=np.float32)
    (x0, y0), (x1, y1) = spec.start_xy, spec.end_xy()
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        p = t / (frames - 1) if frames > 1 else 0.0
        cx = (x0 + (x1 - x0) * p) * width
        cy = (y0 + (y1 - y0) * p) * height
        # 2. coverage of each pixel = mean of its sub-samples inside the shape
        u = (xs[None, :] - cx) / obj_px  # (1, W*ss)
        v = (ys[:, None] - cy) / obj_px  # (H*ss, 1)
        inside = shape_mask(spec.shape, *np.broadcast_arrays(u, v))  # (H*ss, W*ss)
        cover = inside.reshape(height, ss, width, ss).mean(axis=(1, 3), dtype=np.float32)  # (H, W)
        # 3. blend
        img = bg[None, None, :] * (1.0 - cover[..., None]) + fg[None, None, :] * cover[..., None]
        out[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out
