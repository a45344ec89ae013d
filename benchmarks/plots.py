"""Small log-log line plots as PNG, drawn with PIL (no plotting library), and power-law fits.

    exponent, coeff = fit_power([17, 33, 65], [0.1, 0.21, 0.45])     # t ~ coeff * x^exponent
    line_plot("seconds per step vs frames", [17, 33, 65], [0.1, 0.21, 0.45], Path("frames.png"))
"""

from __future__ import annotations

import math
from pathlib import Path


def fit_power(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares fit of log y = a log x + b; returns (a, e^b)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    a = sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / max(1e-12, sum((x - mx) ** 2 for x in lx))
    return a, math.exp(my - a * mx)


def line_plot(title: str, xs: list[float], ys: list[float], out: Path, xlabel: str = "", ylabel: str = "",
              width: int = 480, height: int = 320) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    pad = 48
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    x0, x1 = min(lx), max(lx) if max(lx) > min(lx) else min(lx) + 1
    y0, y1 = min(ly), max(ly) if max(ly) > min(ly) else min(ly) + 1

    def p(x, y):
        return (pad + (x - x0) / (x1 - x0) * (width - 2 * pad),
                height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad))

    d.rectangle([pad, pad, width - pad, height - pad], outline="black")
    pts = [p(x, y) for x, y in zip(lx, ly)]
    d.line(pts, fill=(30, 80, 200), width=2)
    for (px, py), x, y in zip(pts, xs, ys):
        d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(200, 40, 40))
        d.text((px + 4, py - 14), f"{y:.3g}", fill="black")
        d.text((px - 6, height - pad + 6), f"{x:g}", fill="black")
    a, _ = fit_power(xs, ys)
    d.text((pad, 12), f"{title} (log-log; fitted exponent {a:.2f})", fill="black")
    d.text((width // 2 - 20, height - 18), xlabel, fill="black")
    d.text((4, pad - 16), ylabel, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
