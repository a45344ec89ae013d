"""`reel models` and `reel doctor`: what reel can run on this machine, and what to do about what it can't.

    reel models [--search DIR ...]     families, their rules and folder layout, and the model folders found
    reel doctor                        torch and CUDA, VRAM, ffmpeg and its encoders, attention backends,
                                       optional packages, disk space, hub settings
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from reel.models.registry import BUILTIN_MODELS, FAMILIES, ModelError, resolve_model

SEARCH_DIRS = ("~/models", "~/.cache/huggingface/hub", "./models")


def find_model_folders(roots: list[Path]) -> list[tuple[Path, str]]:
    """(folder, description) for every folder with a model_index.json under the roots (3 levels deep)."""
    found = []
    for root in roots:
        root = root.expanduser()
        if not root.is_dir():
            continue
        for index in sorted(root.glob("**/model_index.json")):
            if len(index.relative_to(root).parts) > 6:
                continue
            try:
                info = resolve_model(str(index.parent))
                found.append((index.parent, f"{info.family.name} ({info.pipeline}), frames {info.temporal_factor}k+1, "
                                            f"sizes multiple of {info.size_multiple}"))
            except ModelError as err:
                found.append((index.parent, f"not usable: {err}"))
    return found


def models_report(extra_dirs: list[Path]) -> str:
    lines = ["Families reel renders (all through its own loop: seeds, characters, batching, previews, post):"]
    for fam in FAMILIES.values():
        lines.append(f"  {fam.name:10s} pipelines {', '.join(fam.pipeline_classes)}; defaults {fam.default_width}x"
                     f"{fam.default_height}, {fam.default_frames} frames at {fam.default_fps} fps, {fam.default_steps} "
                     f"steps, guidance {fam.default_guidance}, shift {fam.default_shift}")
        if fam.image_pipelines:
            lines.append(f"             image-to-video: {', '.join(fam.image_pipelines)}")
        lines.append(f"             download e.g.: huggingface-cli download {fam.hub_example} --local-dir DIR")
    lines.append("Folder layout expected: " + next(iter(FAMILIES.values())).layout)
    lines.append("Wan 2.2: TI2V (expand_timesteps) takes text or an image; A14B adds transformer_2 (two experts).")
    lines.append("")
    shapes = BUILTIN_MODELS["shapes"]
    state = "trained weights present" if (shapes / "model_index.json").is_file() else \
        "no weights yet (python scripts/train_shapes_model.py)"
    lines.append(f"Built-in: shapes at {shapes}: {state}")
    roots = [Path(d) for d in SEARCH_DIRS] + extra_dirs
    found = find_model_folders(roots)
    lines.append(f"Model folders found under {', '.join(str(r) for r in roots)}:")
    lines += [f"  {folder}: {desc}" for folder, desc in found] or ["  none (point a film's `model` at a folder)"]
    return "\n".join(lines)


def _ffmpeg_lines() -> list[str]:
    from reel.engine.post.encode import CODECS, available_encoders, ffmpeg_exe

    try:
        exe = ffmpeg_exe()
    except Exception as err:
        return [f"  ffmpeg: MISSING ({err}) — pip install imageio-ffmpeg"]
    have = available_encoders()
    codecs = ", ".join(f"{name} {'ok' if any(e in have for e in c.encoders) else 'missing'}"
                       for name, c in CODECS.items())
    return [f"  ffmpeg: {exe}", f"  encoders: {codecs}"]


def doctor_report() -> str:
    import torch

    from reel.kernels.attention import BACKENDS

    ok, lines = True, ["reel doctor"]
    lines.append(f"  torch {torch.__version__}; CUDA build {torch.version.cuda or 'none'}; "
                 f"CUDA available: {torch.cuda.is_available()}")
    device, dtype = torch.device("cpu"), torch.float32
    if torch.cuda.is_available():
        device, dtype = torch.device("cuda"), torch.bfloat16
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            cap = torch.cuda.get_device_capability(i)
            lines.append(f"  GPU {i}: {torch.cuda.get_device_name(i)}, "
                         f"{total / 2**30:.1f} GB ({free / 2**30:.1f} free), "
                         f"compute {cap[0]}.{cap[1]}")
    else:
        lines.append(f"  no GPU: reel renders on the CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch "
                     "threads); install a CUDA build of torch for a GPU")
    lines += _ffmpeg_lines()
    lines.append("  attention backends (head size 128):")
    for name, backend in BACKENDS.items():
        reasons = backend.validate(device, dtype, 128)
        lines.append(f"    {name:14s} {'ok' if not reasons else 'unavailable: ' + '; '.join(reasons)}")
    for pkg, why in (("triton", "fused kernels on CUDA"), ("spandrel", "neural upscalers"),
                     ("opentimelineio", "editor export"), ("peft", "LoRA characters"), ("ray", "render farm")):
        lines.append(f"  {pkg:14s} {'installed' if importlib.util.find_spec(pkg) else 'not installed'} ({why})")
    for label, path in (("output (cwd)", Path.cwd()), ("cache", _cache())):
        probe = path if path.exists() else path.parent
        if probe.exists():
            free = shutil.disk_usage(probe).free / 2**30
            warn = " — LOW: renders and caches may fail" if free < 2 else ""
            ok &= free >= 2
            lines.append(f"  disk {label}: {free:.1f} GB free at {probe}{warn}")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    lines.append(f"  HF_HUB_OFFLINE={'1' if offline else 'unset'}: reel never downloads weights; models load from "
                 "local folders only")
    lines.append("  status: " + ("ready" if ok else "see the warnings above"))
    return "\n".join(lines)


def _cache() -> Path:
    from reel.engine.settings import cache_dir

    return cache_dir()
