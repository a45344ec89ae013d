"""Contact sheets: one PNG showing frames of each shot, a row per shot.

    contact_sheet([("intro", Path("out/shots/intro.mp4")), ...], Path("out/contact_sheet.png"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.store import atomic_path


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """All frames (N, H, W, 3) uint8 and the fps of a video file, through imageio-ffmpeg."""
    import imageio_ffmpeg

    from engine.post.encode import DECODE_PARAMS

    reader = imageio_ffmpeg.read_frames(str(path), output_params=list(DECODE_PARAMS))  # accurate YUV->RGB rounding
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader]
    return np.stack(frames), float(meta["fps"])


def contact_sheet(shots: list[tuple[str, Path]], out: Path, columns: int = 9, label_width: int = 96) -> Path:
    """Write a PNG with a row per shot: its id, then `columns` evenly spaced frames."""
    from PIL import Image, ImageDraw

    rows = []
    for shot_id, video in shots:
        frames, _ = read_video(video)  # (N, H, W, 3)
        picks = np.linspace(0, len(frames) - 1, num=min(columns, len(frames))).round().astype(int)
        rows.append((shot_id, frames[picks]))
    h, w = rows[0][1].shape[1:3]
    pad = 2
    sheet = Image.new("RGB", (label_width + columns * (w + pad), len(rows) * (h + pad)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, (shot_id, frames) in enumerate(rows):
        y = r * (h + pad)
        draw.text((4, y + h // 2 - 6), shot_id[:14], fill=(230, 230, 230))
        for c, frame in enumerate(frames):
            sheet.paste(Image.fromarray(frame), (label_width + c * (w + pad), y))
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
