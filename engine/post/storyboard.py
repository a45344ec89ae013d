"""Preview outputs: a contact sheet (a row per shot) and an animated storyboard GIF of the film.

    preview_sheets([("intro", Path("preview/shots/intro.mp4")), ...], Path("preview/film.mp4"), Path("preview"))
"""

from __future__ import annotations

from pathlib import Path

from engine.post.contact import contact_sheet, read_video
from engine.store import atomic_path


def storyboard_gif(film: Path, out: Path, fps: float | None = None, max_side: int = 256) -> Path:
    """The whole film as an animated GIF (frames scaled down to at most `max_side`)."""
    from PIL import Image

    frames, film_fps = read_video(film)  # (N, H, W, 3)
    h, w = frames.shape[1:3]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    images = [Image.fromarray(f).resize(size, Image.Resampling.LANCZOS) for f in frames]
    duration_ms = round(1000 / (fps or film_fps))
    with atomic_path(out) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return out


def preview_sheets(shots: list[tuple[str, Path]], film: Path, root: Path) -> dict[str, str]:
    sheet = contact_sheet(shots, root / "contact_sheet.png")
    gif = storyboard_gif(film, root / "storyboard.gif")
    return {"contact_sheet": sheet.name, "storyboard": gif.name}
