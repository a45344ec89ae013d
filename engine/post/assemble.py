"""Assemble shot clips into the film, in order.

When every clip has the same size, fps and codec (always true within one film spec today), the clips
are joined with ffmpeg's concat demuxer without re-encoding; otherwise they are re-encoded through the
concat filter with the same H.264 settings as the shots.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from engine.post.encode import CRF, EncodeError, ffmpeg_exe, metadata_args
from engine.store import atomic_path


def _concat_list(clips: list[Path], list_path: Path) -> None:
    lines = []
    for clip in clips:
        escaped = str(clip.resolve()).replace("'", "'\\''")
        lines.append(f"file '{escaped}'")
    list_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def concat_clips(clips: list[Path], out: Path, same_params: bool, metadata: dict | None = None) -> Path:
    """Join `clips` into `out` (atomic). `same_params`: stream copy, else re-encode."""
    if not clips:
        raise EncodeError("no clips to assemble")
    with atomic_path(out) as tmp:
        if same_params:
            list_path = tmp.with_name(tmp.name + ".txt")
            _concat_list(clips, list_path)
            cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
                   "-i", str(list_path), "-c", "copy", "-movflags", "+faststart", *metadata_args(metadata),
                   "-f", "mp4", str(tmp)]
        else:
            inputs = [arg for clip in clips for arg in ("-i", str(clip))]
            streams = "".join(f"[{i}:v]" for i in range(len(clips)))
            cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *inputs,
                   "-filter_complex", f"{streams}concat=n={len(clips)}:v=1:a=0[v]", "-map", "[v]",
                   "-c:v", "libx264", "-crf", str(CRF), "-pix_fmt", "yuv420p", "-color_primaries", "bt709",
                   "-color_trc", "bt709", "-colorspace", "bt709", "-movflags", "+faststart",
                   *metadata_args(metadata), "-f", "mp4", str(tmp)]
        try:
            result = subprocess.run(cmd, capture_output=True)
        finally:
            if same_params:
                list_path.unlink(missing_ok=True)
        if result.returncode != 0:
            raise EncodeError(f"ffmpeg could not assemble {out}: {result.stderr.decode(errors='replace').strip()}")
    return out
