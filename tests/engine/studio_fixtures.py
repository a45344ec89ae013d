"""Shared set-up of the studio tests and benchmark: a root holding the demo film (small frames and steps so a
shot renders in about a second on the CPU) and a short WAV."""

from __future__ import annotations

import subprocess
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "models" / "shapes" / "demo.toml"
FAST = "seed = 2026\nframes = 9\nfps = 8\nsteps = 2\n"


def demo_root(root: Path, shots: int | None = None) -> Path:
    """ROOT/demo.toml (the demo, fast) and ROOT/music.wav (2 s of a tone); `shots`: keep the first N shots, or
    repeat the demo's shots up to N."""
    root.mkdir(parents=True, exist_ok=True)
    text = DEMO.read_text().replace("seed = 2026\n", FAST)
    if shots is not None:
        head, *tables = text.split("[[shots]]")
        tables = [(tables[i % len(tables)].replace('id = "', f'id = "s{i}-', 1)).rstrip() + "\n\n"
                  for i in range(shots)]
        text = head + "".join(f"[[shots]]{t}" for t in tables)
    (root / "demo.toml").write_text(text)
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=2", "-ar", "22050", str(root / "music.wav")], check=True)
    return root / "demo.toml"


def duration_of(path: Path) -> float:
    """A media file's duration in seconds, from ffmpeg's own description of it."""
    import re

    from tests.conftest import probe

    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", probe(path)).groups()
    return int(h) * 3600 + int(m) * 60 + float(s)
