"""Editor export: the film's timeline as OpenTimelineIO (.otio), FCP 7 XML (.xml) and CMX 3600 EDL
(.edl) through OTIO's adapters, so DaVinci Resolve or Premiere can open the cut and keep editing.

Clips reference the shot files by absolute file:// URL. A crossfade of d frames becomes an SMPTE
dissolve centred on the cut (out_offset = d - d//2 frames of the outgoing clip's extra media,
in_offset = d//2 of the incoming), which reproduces the rendered film's timing exactly. Audio tracks
become one OTIO audio track each (a gap, then the clip); volume and fades ride in clip metadata.
"""

from __future__ import annotations

from pathlib import Path

from reel.engine.post.timeline import Timeline
from reel.engine.store import atomic_path

EXPORTS = {"otio": ("otio_json", ".otio"), "fcp7": ("fcp_xml", ".xml"), "edl": ("cmx_3600", ".edl")}


def _rt(value: float, rate: float):
    import opentimelineio as otio

    return otio.opentime.RationalTime(value, rate)


def _range(start: float, duration: float, rate: float):
    import opentimelineio as otio

    return otio.opentime.TimeRange(_rt(start, rate), _rt(duration, rate))


def build_otio(timeline: Timeline, title: str, audio_durations: dict[Path, float] | None = None,
               with_audio: bool = True):
    """An otio.schema.Timeline equal to the rendered film."""
    import opentimelineio as otio

    fps = float(timeline.fps)
    tl = otio.schema.Timeline(name=title)
    tl.global_start_time = _rt(0, fps)
    video = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    clips = timeline.clips
    for k, clip in enumerate(clips):
        head = clip.fade_in // 2  # media used by the incoming side of the dissolve before this clip's cut
        tail = clips[k + 1].fade_in - clips[k + 1].fade_in // 2 if k + 1 < len(clips) else 0
        ref = otio.schema.ExternalReference(target_url=clip.path.resolve().as_uri(),
                                            available_range=_range(0, clip.frames, fps))
        if clip.fade_in:
            d = clip.fade_in
            video.append(otio.schema.Transition(name=f"dissolve-{clip.shot_id}",
                                                transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                                                in_offset=_rt(d // 2, fps), out_offset=_rt(d - d // 2, fps)))
        video.append(otio.schema.Clip(name=clip.shot_id, media_reference=ref,
                                      source_range=_range(head, clip.frames - head - tail, fps),
                                      metadata={"reel": {"shot_id": clip.shot_id}}))
    tl.tracks.append(video)
    if with_audio:
        for track in timeline.audio:
            audio = otio.schema.Track(name=track.name, kind=otio.schema.TrackKind.Audio)
            if track.start > 0:
                audio.append(otio.schema.Gap(source_range=_range(0, track.start * fps, fps)))
            total = (audio_durations or {}).get(track.path, track.trim_start + track.length)
            ref = otio.schema.ExternalReference(target_url=track.path.resolve().as_uri(),
                                                available_range=_range(0, total * fps, fps))
            audio.append(otio.schema.Clip(name=track.path.name, media_reference=ref,
                                          source_range=_range(track.trim_start * fps, track.length * fps, fps),
                                          metadata={"reel": {"volume": track.volume, "fade_in": track.fade_in,
                                                             "fade_out": track.fade_out}}))
            tl.tracks.append(audio)
    return tl


def export_timeline(timeline: Timeline, title: str, out_stem: Path,
                    audio_durations: dict[Path, float] | None = None) -> dict[str, str]:
    """Write OUT_STEM.otio, .xml (FCP 7) and .edl; return {format: file name, or 'unavailable: why'}."""
    import opentimelineio as otio

    written = {}
    for key, (adapter, ext) in EXPORTS.items():
        path = out_stem.with_suffix(ext)
        tl = build_otio(timeline, title, audio_durations, with_audio=(key != "edl"))  # EDL: one video track
        try:
            with atomic_path(path) as tmp:
                text = otio.adapters.write_to_string(tl, adapter_name=adapter)
                tmp.write_text(text, encoding="utf-8")
            written[key] = path.name
        except (otio.exceptions.OTIOError, ValueError, KeyError) as err:  # adapter plugin missing or refused
            why = str(err)
            if "SMPTE timecode" in why:
                why = f"{timeline.fps} fps is not a SMPTE timecode rate (EDL and FCP 7 XML need 24, 25, 30, 50, 60...)"
            written[key] = f"unavailable: {why}"
    return written
