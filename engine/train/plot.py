"""A loss curve as a PNG, drawn with PIL (no plotting library needed).

    loss_plot([(1, 0.9), (2, 0.7), ...], Path("loss.png"))
"""

from __future__ import annotations

from pathlib import Path

from reel.engine.store import atomic_path


def loss_plot(points: list[tuple[int, float]], out: Path, width: int = 640, height: int = 320,
              smooth: int = 20) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    pad = 40
    if points:
        steps = [p[0] for p in points]
        losses = [p[1] for p in points]
        avg = [sum(losses[max(0, i - smooth + 1):i + 1]) / len(losses[max(0, i - smooth + 1):i + 1])
               for i in range(len(losses))]
        lo, hi = min(losses), max(losses)
        hi = hi if hi > lo else lo + 1e-6
        s0, s1 = min(steps), max(max(steps), min(steps) + 1)

        def xy(step, loss):
            return (pad + (step - s0) / (s1 - s0) * (width - 2 * pad),
                    height - pad - (loss - lo) / (hi - lo) * (height - 2 * pad))

        draw.line([xy(s, v) for s, v in zip(steps, losses)], fill=(180, 200, 235), width=1)
        draw.line([xy(s, v) for s, v in zip(steps, avg)], fill=(30, 80, 200), width=2)
        draw.text((pad, 8), f"loss (raw and {smooth}-step mean): {lo:.4f} .. {hi:.4f}", fill=(0, 0, 0))
        draw.text((pad, height - pad + 8), f"step {s0}", fill=(0, 0, 0))
        draw.text((width - pad - 60, height - pad + 8), f"step {s1}", fill=(0, 0, 0))
    draw.rectangle([pad, pad, width - pad, height - pad], outline=(0, 0, 0))
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
    return out
