"""Assemble the film from its timeline with one ffmpeg command: clips in order with cuts or
crossfades, audio tracks trimmed, faded, delayed, mixed and muxed.

- Cuts only: clips joined by the concat demuxer without re-encoding (`-c:v copy`).
- Any crossfade: clips joined through a filtergraph (`concat` for cuts, `xfade` for crossfades) and
  encoded once with the film's codec preset.
- Audio: each track `atrim → volume → afade in/out → adelay`, then `amix` (no normalisation), padded
  or cut to exactly the film's duration, encoded as AAC (PCM in ProRes .mov).

The film and the concat list are temporary files beside it until ffmpeg succeeds; every failure path (ffmpeg's
error, a full disk, an interrupt) removes both, and a full disk says which file and how much space is left.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from reel.engine.post.encode import (
    Codec,
    color_args,
    container_args,
    ffmpeg_env,
    ffmpeg_exe,
    ffmpeg_failure,
    metadata_args,
)
from reel.engine.post.timeline import AudioPlacement, Timeline
from reel.engine.store import DISK_FULL, atomic_path, disk_full

AUDIO_RATE = 48000


def _concat_list(clips: list[Path], list_path: Path, film: Path) -> None:
    """Write the concat demuxer's list of `clips`; out of room, say it was the list for `film`."""
    lines = []
    for clip in clips:
        escaped = str(clip.resolve()).replace("'", "'\\''")
        lines.append(f"file '{escaped}'")
    try:
        list_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as err:
        if err.errno in DISK_FULL:
            raise disk_full(list_path, err.errno, what=f"the clip list for {film}") from err
        raise


def video_filter(timeline: Timeline) -> tuple[str, str]:
    """Filtergraph joining inputs 0..n-1 (cuts: concat, crossfades: xfade) -> (graph, output label)."""
    fps = timeline.fps
    parts = [f"[{i}:v]settb=AVTB,setpts=PTS-STARTPTS[s{i}]" for i in range(len(timeline.clips))]
    cur, cur_len = "[s0]", timeline.clips[0].frames
    for k, clip in enumerate(timeline.clips[1:], start=1):
        out = f"[v{k}]"
        if clip.fade_in:
            offset = (cur_len - clip.fade_in) / fps
            parts.append(f"{cur}[s{k}]xfade=transition=fade:duration={clip.fade_in / fps}:offset={offset}{out}")
            cur_len += clip.frames - clip.fade_in
        else:
            parts.append(f"{cur}[s{k}]concat=n=2:v=1:a=0{out}")
            cur_len += clip.frames
        cur = out
    return ";".join(parts), cur


def audio_filter(tracks: tuple[AudioPlacement, ...], first_input: int, duration: float) -> tuple[str, str]:
    """Filtergraph for audio inputs first_input.. -> (graph, output label), exactly `duration` long."""
    parts, labels = [], []
    for i, t in enumerate(tracks):
        chain = [f"atrim=start={t.trim_start}:duration={t.length}", "asetpts=PTS-STARTPTS",
                 f"aresample={AUDIO_RATE}", "aformat=sample_fmts=fltp:channel_layouts=stereo",
                 f"volume={t.volume}"]
        if t.fade_in > 0:
            chain.append(f"afade=t=in:st=0:d={t.fade_in}")
        if t.fade_out > 0:
            chain.append(f"afade=t=out:st={max(0.0, t.length - t.fade_out)}:d={t.fade_out}")
        chain.append(f"adelay=delays={round(t.start * 1000)}:all=1")
        parts.append(f"[{first_input + i}:a]{','.join(chain)}[a{i}]")
        labels.append(f"[a{i}]")
    if len(labels) > 1:
        head = f"{''.join(labels)}amix=inputs={len(labels)}:normalize=0:duration=longest,"
    else:
        head = labels[0]
    parts.append(f"{head}apad,atrim=end={duration},asetpts=PTS-STARTPTS[aout]")
    return ";".join(parts), "[aout]"


def assemble(timeline: Timeline, out: Path, codec: Codec, same_params: bool = True,
             metadata: dict | None = None) -> dict:
    """Write the film to `out` (atomic). Returns how it was made (for the manifest)."""
    clips = [c.path for c in timeline.clips]
    copy_video = same_params and not timeline.has_transitions
    with atomic_path(out) as tmp:  # removes the partial film on any failure
        list_path = tmp.with_name(tmp.name + ".txt")
        try:
            cmd = _command(timeline, clips, codec, copy_video, list_path, out, tmp, metadata)
            result = subprocess.run(cmd, capture_output=True, env=ffmpeg_env())
        finally:
            list_path.unlink(missing_ok=True)  # also a partly written list (disk full while writing it)
        if result.returncode != 0:
            raise ffmpeg_failure(out, result.returncode, result.stderr.decode(errors="replace").strip(), "assemble")
    return {"video": "concat (stream copy)" if copy_video else "filtergraph (concat/xfade, re-encoded)",
            "crossfades": sum(1 for c in timeline.clips if c.fade_in), "audio_tracks": len(timeline.audio)}


def _command(timeline: Timeline, clips: list[Path], codec: Codec, copy_video: bool, list_path: Path, out: Path,
             tmp: Path, metadata: dict | None) -> list[str]:
    """The ffmpeg command writing the film to `tmp` (for copy_video it first writes the concat list)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    if copy_video:
        _concat_list(clips, list_path, out)
        cmd += ["-f", "concat", "-safe", "0", "-i", str(list_path)]
        first_audio = 1
    else:
        for clip in clips:
            cmd += ["-i", str(clip)]
        first_audio = len(clips)
    for track in timeline.audio:
        cmd += ["-i", str(track.path)]
    graphs, maps = [], []
    if copy_video:
        maps += ["-map", "0:v"]
    else:
        graph, label = video_filter(timeline)
        graphs.append(graph)
        maps += ["-map", label]
    if timeline.audio:
        graph, label = audio_filter(timeline.audio, first_audio, timeline.duration)
        graphs.append(graph)
        maps += ["-map", label]
    if graphs:
        cmd += ["-filter_complex", ";".join(graphs)]
    cmd += maps
    cmd += ["-c:v", "copy"] if copy_video else [*codec.args(), *_pixel_args(codec)]
    if timeline.audio:
        cmd += [*codec.audio_args, "-ar", str(AUDIO_RATE)]
    return cmd + [*container_args(codec), *metadata_args(metadata), "-f", codec.muxer, str(tmp)]


def _pixel_args(codec: Codec) -> list[str]:
    """Colour conversion tags without the scale filter (the filtergraph already produced the frames)."""
    args = color_args(codec)
    i = args.index("-vf")
    return args[:i] + args[i + 2:]
