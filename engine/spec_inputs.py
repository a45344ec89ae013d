"""What the files a validated film names hold, checked before a render needs them: the model's weights are
complete, LoRA files are LoRAs, an upscaler file is a super-resolution model spandrel loads, a preview decoder
fits the model's latents, audio files decode as audio and fit the film, this ffmpeg has the codec's encoder.

Safetensors files are checked from their header (names, shapes, offsets), never their weights; audio is decoded
once, as the render's own check does. The module imports no torch; the upscaler and preview-decoder checks
import it when a spec names such a file (their architectures are built on the meta device, without weights).

    problems = film_input_problems(film, guard)      # [(field, message)], [] when every input will load
    message = lora_problem(Path("hero.safetensors"))  # None for a file the LoRA loader takes
"""

from __future__ import annotations

import json
from pathlib import Path

from reel.engine.spec_paths import Guard, existing, spec_path
from reel.engine.weights_check import FIX, WeightsError, check_weight_files, safetensors_header

LORA_WEIGHT_MARKS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up")


def lora_format(keys: list[str]) -> str:
    """The layout of a LoRA's tensor names: comfyui, kohya, diffusers, original (the model's own) or unknown."""
    if any(k.startswith("diffusion_model.") for k in keys):
        return "comfyui"
    if any(k.startswith("lora_unet_") for k in keys):
        return "kohya"
    if any(k.startswith("transformer.") for k in keys):
        return "diffusers"
    if any(k.startswith(("double_blocks.", "single_blocks.", "blocks.")) for k in keys):
        return "original"  # the model's own layout without a prefix (e.g. HunyuanVideo's)
    return "unknown"


def _unreadable(path: Path, err: WeightsError) -> str:
    detail = str(err).removeprefix(f"{path}: ").removesuffix(f" — {FIX}")
    return f"{path}: not a readable .safetensors file ({detail}) — re-download or re-export it"


def lora_problem(path: Path) -> str | None:
    """Why the LoRA loader would refuse `path`, from its header: unreadable, no tensors, no format reel reads,
    or no LoRA weights at all (a full checkpoint). Whether the keys fit the model is checked when it loads."""
    try:
        header = safetensors_header(path)
    except WeightsError as err:
        return _unreadable(path, err)
    keys = [k for k in header if k != "__metadata__"]
    if not keys:
        return f"{path}: holds no tensors — it is not a LoRA"
    if lora_format(keys) == "unknown":
        return (f"{path}: keys look like none of the LoRA formats reel reads (diffusers `transformer.`, ComfyUI "
                f"`diffusion_model.`, kohya/musubi `lora_unet_`); first key: {keys[0][:120]!r}")
    if not any(mark in k for k in keys for mark in LORA_WEIGHT_MARKS):
        return (f"{path}: holds no LoRA weights (lora_A/lora_B or lora_down/lora_up) — is this a full checkpoint "
                "rather than a LoRA?")
    return None


def upscaler_problem(path: Path) -> str | None:
    """Why load_upscaler would refuse the model file `path`: a file type spandrel does not read, an architecture
    it does not know, not a 3-channel super-resolution model of scale 2 to 8. The architecture is built on the
    meta device from the header's shapes (pickles: torch.load onto meta); if that fails, the file is loaded."""
    import torch

    from reel.engine.post.upscale import MODEL_SUFFIXES, UpscaleError, import_spandrel, load_upscaler

    if path.suffix.lower() not in MODEL_SUFFIXES:
        return (f"{path}: '{path.suffix}' is not a model file type spandrel reads — use one of "
                f"{', '.join(MODEL_SUFFIXES)}")
    spandrel = import_spandrel()
    loader = spandrel.ModelLoader(device="meta")
    try:
        if path.suffix.lower() == ".safetensors":
            header = safetensors_header(path)
            state = spandrel.canonicalize_state_dict(
                {k: torch.empty(v["shape"], device="meta") for k, v in header.items() if k != "__metadata__"})
        else:
            state = loader.load_state_dict_from_file(path)
        with torch.device("meta"):
            descriptor = loader.load_from_state_dict(state)
    except WeightsError as err:
        return str(err)
    except spandrel.UnsupportedModelError:
        return (f"{path}: not a model architecture spandrel {spandrel.__version__} knows — use an ESRGAN, "
                "Real-ESRGAN, SwinIR, ... super-resolution model file, or 'lanczos2'")
    except Exception:  # noqa: BLE001 - an architecture that cannot be built without weights: load it for real
        try:
            load_upscaler(str(path), "cpu")
        except UpscaleError as err:
            return str(err)
        return None
    arch = descriptor.architecture.name
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose != "SR":
        return f"{path}: a {arch} {descriptor.purpose} model, not super-resolution — use an SR model (ESRGAN, ...)"
    if not 2 <= descriptor.scale <= 8:
        return f"{path}: {arch} with scale {descriptor.scale} is not supported — use a 2x, 3x, 4x or 8x model"
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        return (f"{path}: {arch} maps {descriptor.input_channels} to {descriptor.output_channels} channels; video "
                "frames need an RGB (3 -> 3) model")
    return None


def preview_decoder_problem(path: Path, model) -> str | None:
    """Why load_preview_decoder would refuse `path` for `model` (a ModelInfo): not a reel preview decoder,
    tensors that do not match its config, or latents of another channel count or compression."""
    import torch

    from reel.models.preview_decoder import FORMAT, PreviewDecoder

    try:
        header = safetensors_header(path)
    except WeightsError as err:
        return _unreadable(path, err)
    meta = header.get("__metadata__") if isinstance(header.get("__metadata__"), dict) else {}
    if meta.get("format") != FORMAT:
        return (f"{path}: not a reel preview decoder (format {str(meta.get('format'))[:40]!r}, expected {FORMAT!r}) "
                "— make one with scripts/train_preview_decoder.py, or write \"vae\"")
    try:
        with torch.device("meta"):
            decoder = PreviewDecoder(**json.loads(meta.get("config", "")))
    except Exception as err:  # noqa: BLE001 - JSON, argument and layer-size errors all mean a broken config
        return f"{path}: its config is not a preview decoder's ({type(err).__name__}: {str(err)[:120]}) — re-create it"
    want = {k: list(v.shape) for k, v in decoder.state_dict().items()}
    have = {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    if want != have:
        wrong = sorted(set(want) ^ set(have)) or [k for k in sorted(want) if want[k] != have[k]]
        return f"{path}: weights do not match its config (first: {wrong[0][:80]!r}) — re-create it"
    if model.family.vae_latent is not None:
        t, s, z = model.family.vae_latent(model.vae_config)
        if decoder.config["z_dim"] != z:
            return f"{path}: made for {decoder.config['z_dim']}-channel latents, the model has {z}"
        if (decoder.config["t"], decoder.config["s"]) != (t, s):
            return (f"{path}: made for a VAE compressing {decoder.config['t']}x in time and {decoder.config['s']}x "
                    f"in space, the model's compresses {t}x and {s}x")
    return None


def film_input_problems(film, guard: Guard | None = None) -> list[tuple[str, str]]:
    """Every input of a validated Film that its render would refuse, as (field, message) problems."""
    problems = _weights_problems(film, guard)
    for name, c in film.characters.items():
        for key, files in (("lora", c.loras), ("lora_low", c.loras_low)):
            for path in files:
                if (message := lora_problem(path)) is not None:
                    problems.append((f"characters.{name}.{key}", message))
        if (c.loras_low or c.expert != "both") and film.model.experts == 1:
            problems.append((f"characters.{name}.expert", f"targets a Wan 2.2 expert, but {film.model.name} has one "
                                                          "transformer — remove `expert`/`lora_low` or use a Wan 2.2 "
                                                          "A14B model"))
    if film.upscale and Path(film.upscale).is_absolute():
        if (message := upscaler_problem(Path(film.upscale))) is not None:
            problems.append(("film.upscale", message))
    problems += _audio_problems(film)
    from reel.engine.post.encode import EncodeError, get_codec, pick_encoder

    try:
        pick_encoder(get_codec(film.codec))
    except EncodeError as err:
        problems.append(("film.codec", str(err)))
    return problems


def _weights_problems(film, guard: Guard | None) -> list[tuple[str, str]]:
    """The model folder's .safetensors files (and a single-file transformer its reel.json names) are complete."""
    problems: list[tuple[str, str]] = []
    extra = []
    single = film.model.defaults.get("transformer_file")
    if single is not None:
        field = f"film.model ({film.model.path}/reel.json transformer_file)"
        if not isinstance(single, str):
            return [(field, f"must be a file path, got {str(single)[:80]!r}")]
        found = existing(field, spec_path(single, film.model.path), problems, guard=guard,
                         hint="run `reel import-model` again")
        if found is None:
            return problems
        extra.append(found)
    try:
        check_weight_files(film.model.path, extra)
    except WeightsError as err:
        problems.append(("film.model", str(err)))
    except OSError as err:
        problems.append(("film.model", f"{film.model.path}: its weight files cannot be listed ({err})"))
    return problems


def _audio_problems(film) -> list[tuple[str, str]]:
    """Every audio file decodes as audio (as the render checks it), and every track starts inside the film."""
    if not film.audio:
        return []
    from reel.engine.post.probe import MediaError, check_audio
    from reel.engine.post.timeline import TimelineError, place_audio, place_clips

    problems, durations = [], {}
    for i, track in enumerate(film.audio):
        if track.path not in durations:
            try:
                durations[track.path] = check_audio(track.path)
            except (MediaError, OSError) as err:
                problems.append((f"audio[{i}].file", str(err)))
                durations[track.path] = None
    if problems:
        return problems
    clips = place_clips([(s.id, Path(s.id), s.frames if s.frames is not None else film.frames, s.transition_frames)
                         for s in film.shots])
    try:
        place_audio(film.audio, clips, film.fps, durations)
    except TimelineError as err:
        problems.append(("audio", str(err)))
    return problems
