"""Long shots: which models render shots longer than their window, and the chunks such a shot is rendered in.
Torch-free (the spec and `reel validate` use it before anything loads).

A model whose family has a long-shot scheme (registry `long_shots`, e.g. SkyReels-V2 diffusion forcing) renders a
shot of more than `window` frames as chunks of at most `window` frames; each chunk after the first starts from the
last `overlap` frames of the one before. The arithmetic is diffusers' SkyReelsV2DiffusionForcingPipeline's, in
latent frames (a causal video VAE: latent frame 0 is pixel frame 0, latent frame j > 0 is pixel frames 4j-3..4j):

    window_latent = (window - 1) // t + 1,  overlap_latent = (overlap - 1) // t + 1
    chunk 0: latent frames [0, window_latent); chunk k: the next (window_latent - overlap_latent) frames after the
    `overlap_latent` frames it repeats, the last one shorter.

    from reel.models.long_shots import long_window, chunks
    window, overlap = long_window(model)          # (0, 0): the model has no long-shot scheme
    chunks(289, 97, 17, 4)                        # [(0, 97), (77, 177), (157, 257), (237, 289)] pixel ranges
"""

from __future__ import annotations


SCHEMES = ("diffusion-forcing",)


def long_window(model) -> tuple[int, int]:
    """(window, overlap) in frames for a ModelInfo whose shots longer than `window` render in chunks, else (0, 0):
    its family's scheme (SkyReels-V2 DF folders), or a Wan folder's reel.json "long_shots": "diffusion-forcing"
    (window: "window_frames", else the folder's default frames; overlap: "overlap_frames", else 2 latent frames)."""
    family, d = model.family, model.defaults
    window, overlap = _whole(d.get("window_frames")), _whole(d.get("overlap_frames"))
    if family.long_shots:
        if family.long_pipelines and model.pipeline not in family.long_pipelines:
            return 0, 0  # a plain SkyReelsV2Pipeline folder: its transformer is not trained for diffusion forcing
        return window or family.long_window, overlap or family.long_overlap
    if d.get("long_shots") in SCHEMES and family.long_opt_in and not model.takes_image:  # Wan T2V folders
        return window or _whole(d.get("frames")) or family.default_frames, overlap or model.temporal_factor + 1
    return 0, 0


def _whole(value) -> int:
    """A reel.json frame count, or 0 when it is missing or not a whole number (scheme_problem says which)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def scheme_problem(model) -> str | None:
    """Why a folder's reel.json "long_shots", "window_frames" or "overlap_frames" cannot be used, or None."""
    for key in ("window_frames", "overlap_frames"):
        value = model.defaults.get(key)
        if value is not None and not _whole(value):
            return f"{key} = {value!r}: a whole number of frames — fix the model's reel.json"
    value = model.defaults.get("long_shots")
    if value is None or model.family.long_shots:
        return None
    if value not in SCHEMES:
        return f"long_shots = {value!r}: the scheme reel knows is \"diffusion-forcing\" — fix the model's reel.json"
    if not model.family.long_opt_in:
        return (f"long_shots: {model.family.name} transformers take no per-frame timesteps — remove it from the "
                "model's reel.json")
    if model.takes_image:
        return ("long_shots: diffusion forcing runs text-to-video Wan folders only (this one takes a first frame) — "
                "remove it from the model's reel.json")
    return None


def window_problem(model, window: int, overlap: int) -> str | None:
    """Why a (window, overlap) pair cannot chunk shots of this model, or None."""
    t = model.temporal_factor
    if not model.frames_ok(window):
        return f"window_frames = {window}: a chunk needs {t}k+1 frames like any shot — set it in the model's reel.json"
    if not 1 <= overlap < window or (overlap - 1) // t + 1 >= (window - 1) // t + 1:
        return (f"overlap_frames = {overlap}: chunks must repeat at least 1 and fewer latent frames than a window of "
                f"{window} frames holds — set it in the model's reel.json")
    return None


def latent_chunks(frames: int, window: int, overlap: int, temporal: int) -> list[tuple[int, int]]:
    """[(first latent frame, latent frames)] of each chunk, overlaps included (the pipeline's loop)."""
    total = (frames - 1) // temporal + 1
    base = (window - 1) // temporal + 1
    keep = (overlap - 1) // temporal + 1
    if total <= base:
        return [(0, total)]
    out, done = [(0, base)], base
    while done < total:
        new = min(total - done, base - keep)
        out.append((done - keep, keep + new))
        done += new
    return out


def chunks(frames: int, window: int, overlap: int, temporal: int) -> list[tuple[int, int]]:
    """[(first pixel frame, end pixel frame)) of each chunk, overlaps included, for plans and progress."""
    def pixel(latent: int) -> int:
        return 0 if latent == 0 else temporal * latent - temporal + 1

    return [(pixel(start), min(frames, temporal * (start + n - 1) + 1)) for start, n in
            latent_chunks(frames, window, overlap, temporal)]


def describe(frames: int, window: int, overlap: int, temporal: int) -> str:
    """"4 chunks of at most 25 latent frames (window_frames = 97): frames 0-96, 77-176, ..." for the plan."""
    parts = chunks(frames, window, overlap, temporal)
    ranges = ", ".join(f"{a}-{b - 1}" for a, b in parts)
    keep, base = (overlap - 1) // temporal + 1, (window - 1) // temporal + 1
    return (f"{len(parts)} chunks of at most {base} latent frames (window_frames = {window}): frames {ranges} (each "
            f"chunk starts from the last {keep} latent frames of the one before: overlap_frames = {overlap})")
