"""LoRA training data: a folder of clips and/or images, each with a same-name .txt caption (the
kohya / musubi-tuner convention), checked as a whole before training starts.

    items, problems = scan_dataset(Path("data/hero"), frames=17)
    sample = load_sample(items[0], width=64, height=64, frames=17, extract="uniform")  # (F, H, W, 3) uint8

Clips: .mp4 .webm .gif .mov .mkv; images: .png .jpg .jpeg .webp (an image is a one-frame sample).
Problems (no caption, empty caption, undecodable file, a clip with too few frames) are collected for
every file so the user sees them all at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".mov", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class DatasetError(ValueError):
    """A dataset that cannot be trained on; lists every bad file and the fix."""


@dataclass(frozen=True)
class Item:
    path: Path
    caption: str
    kind: str  # "video" | "image"
    content_hash: str  # sha256 of the media file's bytes
    frames_available: int  # decoded frames (1 for images)


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_clip(path: Path) -> np.ndarray:
    """All frames of a clip (N, H, W, 3) uint8; raises ValueError if ffmpeg cannot decode it."""
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        w, h = meta["size"]
        frames = [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader]
    except (OSError, RuntimeError, StopIteration, KeyError) as err:
        raise ValueError("ffmpeg cannot decode it "
                         f"({str(err).strip().splitlines()[-1][:160] if str(err).strip() else 'no frames'})") from None
    if not frames:
        raise ValueError("it has no frames")
    return np.stack(frames)


def read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))[None]  # (1, H, W, 3)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"not a readable image ({err})") from None


def scan_dataset(folder: Path, frames: int) -> tuple[list[Item], list[str]]:
    """Every usable item and every problem (one line per bad file)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: dataset folder not found — give a folder of clips/images with .txt captions")
    items, problems = [], []
    media = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES)
    for path in media:
        caption_path = path.with_suffix(".txt")
        if not caption_path.is_file():
            problems.append(f"{path.name}: no caption — write it in {caption_path.name}")
            continue
        caption = caption_path.read_text(encoding="utf-8", errors="replace").strip()
        if not caption:
            problems.append(f"{path.name}: {caption_path.name} is empty — describe the clip")
            continue
        kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"
        try:
            count = len(read_clip(path)) if kind == "video" else len(read_image(path))
        except ValueError as err:
            problems.append(f"{path.name}: {err}")
            continue
        if kind == "video" and count < frames:
            problems.append(f"{path.name}: {count} frames, fewer than the {frames} a sample needs — use a longer "
                            "clip or lower `frames`")
            continue
        items.append(Item(path, caption, kind, file_hash(path), count))
    orphans = sorted(p.name for p in folder.glob("*.txt") if not any(p.stem == m.stem for m in media))
    problems += [f"{name}: a caption without a clip or image beside it" for name in orphans]
    return items, problems


def resize_cover(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to cover (width, height) keeping the aspect, then centre-crop: (N, h, w, 3) -> (N, H, W, 3)."""
    from PIL import Image

    n, h, w, _ = frames.shape
    if (w, h) == (width, height):
        return frames
    scale = max(width / w, height / h)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    left, top = (sw - width) // 2, (sh - height) // 2
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        img = Image.fromarray(frames[i]).resize((sw, sh), Image.Resampling.LANCZOS)
        out[i] = np.asarray(img)[top:top + height, left:left + width]
    return out


def load_sample(item: Item, width: int, height: int, frames: int, extract: str) -> np.ndarray:
    """The training frames of one item: (F, H, W, 3) uint8 (F = 1 for images)."""
    if item.kind == "image":
        return resize_cover(read_image(item.path), width, height)
    clip = read_clip(item.path)
    if extract == "head":
        picks = np.arange(frames)
    elif extract == "uniform":
        picks = np.linspace(0, len(clip) - 1, num=frames).round().astype(int)
    else:
        raise ValueError(f"frame extraction {extract!r}: use 'head' or 'uniform'")
    return resize_cover(clip[picks], width, height)


def dataset_hash(items: list[Item]) -> str:
    digest = hashlib.sha256()
    for it in items:
        digest.update(f"{it.path.name}\0{it.content_hash}\0{it.caption}\n".encode())
    return digest.hexdigest()
