"""Peak memory against clip length: decode, upscale and encode stream chunk by chunk, so 4x the frames
should cost at most 10% more peak RSS.

    .venv/bin/python -m benchmarks.bench_streaming                  # built-in model, x2 upscaler
    .venv/bin/python -m benchmarks.bench_streaming --frames 17 --factor 4

Each measurement is a fresh `reel` process (its peak RSS from the kernel: ru_maxrss of the child).
Writes the `streaming` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.results import model_under_test, write_section

REEL = [sys.executable, "-m", "reel.engine.cli"]


def peak_rss_mb(cmd: list[str]) -> float:
    """Run `cmd` to completion and return its peak resident set size in MiB."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode(errors='replace')}")
    return usage.ru_maxrss / 1024


def film_spec(path: Path, model: str, frames: int, upscale: str) -> Path:
    path.write_text(f'[film]\nmodel = "{model}"\nframes = {frames}\nupscale = "{upscale}"\nsteps = 4\n'
                    f'[[shots]]\nid = "long"\nprompt = "a red circle moving right on a black background"\n')
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--upscale", default="x2")
    args = parser.parse_args()
    model, note = model_under_test("shapes")
    work = Path(tempfile.mkdtemp(prefix="reel-bench-stream-"))
    short, long_ = args.frames, (args.frames - 1) * args.factor + 1
    rows, data = [], {}
    # 1. a whole render (denoise + streamed decode/upscale/encode)
    for frames in (short, long_):
        spec = film_spec(work / f"f{frames}.toml", model, frames, args.upscale)
        data[f"render_{frames}"] = peak_rss_mb([*REEL, "render", str(spec), "--out", str(work / f"out{frames}"),
                                                "--device", "cpu", "--quiet"])
    # 2. upscaling an existing clip (decode -> upscale -> encode only)
    for frames in (short, long_):
        clip = work / f"out{frames}" / "shots" / "long.mp4"
        data[f"upscale_{frames}"] = peak_rss_mb([*REEL, "upscale", str(clip), str(work / f"up{frames}.mp4"),
                                                 "--model", args.upscale, "--quiet"])
    for stage in ("render", "upscale"):
        a, b = data[f"{stage}_{short}"], data[f"{stage}_{long_}"]
        verdict = "meets" if b <= a * 1.10 else "MISSES"
        rows.append(f"| `reel {stage}` | {a:.0f} MiB | {b:.0f} MiB | {100 * (b / a - 1):+.1f} % | {verdict} |")
    md = f"""## Streaming: peak RSS against clip length{note}

`.venv/bin/python -m benchmarks.bench_streaming --frames {args.frames} --factor {args.factor} --upscale {args.upscale}`

| process | {short} frames | {long_} frames | growth | target <= +10 % |
|---|---|---|---|---|
{chr(10).join(rows)}

The render row includes the denoiser, whose attention grows with the number of latent frames; the
upscale row is decode -> upscale ({args.upscale}) -> encode alone.
"""
    write_section("streaming", md, data)
    print(md)


if __name__ == "__main__":
    main()
