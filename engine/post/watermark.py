"""A visible text watermark drawn into frames before they are encoded (PIL's built-in font: no
system fonts needed).

    marked = Watermark("AI-generated").apply(frames)   # (N, H, W, 3) uint8 -> same shape
"""

from __future__ import annotations

import numpy as np


class Watermark:
    def __init__(self, text: str, opacity: float = 0.6):
        from PIL import Image, ImageDraw, ImageFont

        self.text = text
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._mods = (Image, ImageDraw, ImageFont)
        self.opacity = opacity

    def _layer(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(colour (H, W, 3), alpha (H, W, 1)) for a frame size, bottom-right corner, cached."""
        if (height, width) not in self._cache:
            Image, ImageDraw, ImageFont = self._mods
            size = max(8, height // 10)
            try:
                font = ImageFont.load_default(size=size)
            except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
                font = ImageFont.load_default()
            mask = Image.new("L", (width, height), 0)
            draw = ImageDraw.Draw(mask)
            left, top, right, bottom = draw.textbbox((0, 0), self.text, font=font)
            x = max(1, width - (right - left) - max(2, width // 40))
            y = max(1, height - (bottom - top) - max(2, height // 40)) - top
            draw.text((x + 1, y + 1), self.text, fill=128, font=font)  # shadow, for light backgrounds
            shadow = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
            mask2 = Image.new("L", (width, height), 0)
            ImageDraw.Draw(mask2).text((x, y), self.text, fill=255, font=font)
            text = np.asarray(mask2, dtype=np.float32)[..., None] / 255.0
            alpha = np.clip(np.maximum(text, shadow) * self.opacity, 0, 1)  # (H, W, 1)
            colour = np.where(text > 0, 255.0, 0.0) * np.ones((1, 1, 3), np.float32)  # white text, dark shadow
            self._cache[(height, width)] = (colour, alpha)
        return self._cache[(height, width)]

    def apply(self, frames: np.ndarray) -> np.ndarray:
        colour, alpha = self._layer(frames.shape[1], frames.shape[2])
        out = frames.astype(np.float32) * (1 - alpha) + colour * alpha  # (N, H, W, 3)
        return out.round().clip(0, 255).astype(np.uint8)
