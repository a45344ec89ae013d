"""Preview outputs: a contact sheet (a row per shot) and an animated storyboard GIF of the film.

    preview_sheets([("intro", Path("preview/shots/intro.mp4")), ...], Path("preview/film.mp4"), Path("preview"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reel.engine.post.contact import contact_sheet, read_video
from reel.engine.store import atomic_path


def storyboard_gif(film: Path, out: Path, fps: float | None = None, max_side: int = 256) -> Path:
    """The whole film as an animated GIF (frames scaled down to at most `max_side`)."""
    from PIL import Image

    frames, film_fps = read_video(film)  # (N, H, W, 3)
    h, w = frames.shape[1:3]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    images = [Image.fromarray(f) for f in frames]
    if size != (w, h):
        images = [im.resize(size, Image.Resampling.LANCZOS) for im in images]
    # one palette for the whole film (median cut over up to 64 evenly spaced frames), then a plain
    # nearest-colour mapping per frame: per-frame adaptive palettes cost ~4 ms a frame and made the
    # storyboard the slowest part of a 100-shot preview
    picks = np.linspace(0, len(images) - 1, num=min(64, len(images))).round().astype(int)
    mosaic = Image.fromarray(np.concatenate([np.asarray(images[i]) for i in picks], axis=0))
    palette = mosaic.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    images = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    duration_ms = round(1000 / (fps or film_fps))
    with atomic_path(out) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0,
                       optimize=False)
    return out


def preview_sheets(shots: list[tuple[str, Path]], film: Path, root: Path, counts: list[int] | None = None
                   ) -> dict[str, str]:
    sheet = contact_sheet(shots, root / "contact_sheet.png", counts=counts)
    gif = storyboard_gif(film, root / "storyboard.gif")
    return {"contact_sheet": sheet.name, "storyboard": gif.name}
