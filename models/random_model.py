"""Random model folders at REAL size from reel's shipped configs (models/configs/NAME.json), for `reel bench`.

The transformer(s) and the VAE are the config's diffusers classes with the config's exact architecture (the
transformer's parameter count equals the config's "params"), built directly on the device with PyTorch's
default init (well scaled, no CPU round trip) and seeded; the text (and image) encoders are small stand-ins with the
real hidden size (models/standin_encoders.py). The folder is a real diffusers folder: reel's family loaders and
`<Pipeline>.from_pretrained(folder)` both load it. It makes noise, not pictures, and says so in `random.json`.

    python -m reel.models.random_model wan2.1-t2v-1.3b /tmp/wan-1.3b --device cuda --dtype bf16
    python -m reel.models.random_model ltx-video /tmp/ltx-small --shrink      # a CPU-sized copy, for tests

    from reel.models.random_model import build_random_folder
    folder = build_random_folder("wan2.1-t2v-1.3b", "/tmp/wan-1.3b", device="cuda")   # -> Path

shrink=True keeps every structural flag (patch sizes, qk_norm, VAE kind and its scale factors, in/out channels,
image_dim, ...) but few layers, small widths and heads, and reel.json defaults of a few tiny frames, so a
forward takes well under a second on a CPU. At real size a transformer is built in fp32 and then cast: 4 bytes
per parameter of device memory while it is built (66 GB for Wan 2.1 I2V 14B), and 2 bytes per parameter of disk
in bf16 (57 GB for Wan 2.2 A14B's two experts). Measured so far on a 2-core CPU only: the 1.3B Wan in about
45 s, mostly allocation and the 2.7 GB write; no GPU time has been measured.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from reel.models.common import quiet_loading
from reel.models.registry import FAMILIES
from reel.models.resources import package_folder
from reel.models.standin_encoders import describe, reel_json_extras, standin_parts

CONFIG_PACKAGE = "reel.models.configs"
NOT_MODELS = ("gpus",)  # configs in the folder that describe no model
MODEL_PARTS = ("transformer", "transformer_2", "vae")  # built from the config's own class and architecture
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# shrink=True: architecture keys replaced (only where the config sets them: a None stays None)
TRANSFORMER_SHRINK = {
    "WanTransformer3DModel": {"num_attention_heads": 2, "attention_head_dim": 16, "ffn_dim": 64, "num_layers": 2,
                              "text_dim": 32, "freq_dim": 32, "added_kv_proj_dim": 32},
    "LTXVideoTransformer3DModel": {"num_attention_heads": 2, "attention_head_dim": 16, "cross_attention_dim": 32,
                                   "caption_channels": 32, "num_layers": 2},
    "CogVideoXTransformer3DModel": {"num_attention_heads": 2, "attention_head_dim": 16, "time_embed_dim": 16,
                                    "ofs_embed_dim": 16, "text_embed_dim": 32, "num_layers": 2},
    "HunyuanVideoTransformer3DModel": {"num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 1,
                                       "num_single_layers": 1, "num_refiner_layers": 1, "text_embed_dim": 32,
                                       "pooled_projection_dim": 32, "rope_axes_dim": [4, 6, 6]},
    "HunyuanVideo15Transformer3DModel": {"num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 1,
                                         "num_refiner_layers": 1, "text_embed_dim": 32, "text_embed_2_dim": 32,
                                         "image_embed_dim": 32, "rope_axes_dim": [4, 6, 6]},
    "SkyReelsV2Transformer3DModel": {"num_attention_heads": 2, "attention_head_dim": 16, "ffn_dim": 64,
                                     "num_layers": 2, "text_dim": 32, "freq_dim": 32, "added_kv_proj_dim": 32},
    "LTX2VideoTransformer3DModel": {"num_attention_heads": 2, "attention_head_dim": 8, "cross_attention_dim": 16,
                                    "audio_num_attention_heads": 2, "audio_attention_head_dim": 4,
                                    "audio_cross_attention_dim": 8, "num_layers": 1, "caption_channels": 32},
}
VAE_SHRINK: dict[str, Callable[[dict], dict]] = {
    "AutoencoderKLWan": lambda c: {"base_dim": 8, "decoder_base_dim": 16, "num_res_blocks": 1},
    "AutoencoderKLLTXVideo": lambda c: {
        "block_out_channels": [8] * len(c["block_out_channels"]),
        "decoder_block_out_channels": [8] * len(c["decoder_block_out_channels"]),
        "layers_per_block": [1] * len(c["layers_per_block"]),
        "decoder_layers_per_block": [1] * len(c["decoder_layers_per_block"])},
    "AutoencoderKLCogVideoX": lambda c: {"block_out_channels": [8] * len(c["block_out_channels"]),
                                         "layers_per_block": 1, "norm_num_groups": 2},
    "AutoencoderKLHunyuanVideo": lambda c: {"block_out_channels": [8] * len(c["block_out_channels"]),
                                            "layers_per_block": 1, "norm_num_groups": 4},
    "AutoencoderKLLTX2Video": lambda c: {"block_out_channels": [8, 16, 32, 64],
                                         "decoder_block_out_channels": [8, 16, 32],
                                         "layers_per_block": [1] * len(c["layers_per_block"]),
                                         "decoder_layers_per_block": [1] * len(c["decoder_layers_per_block"])},
    # the encoder averages groups of block_out_channels[-1] // (2 x latent_channels) channels: keep it >= 1
    "AutoencoderKLHunyuanVideo15": lambda c: {"block_out_channels": [2 * c.get("latent_channels", 32)] *
                                              len(c["block_out_channels"]), "layers_per_block": 1},
}
# the family's default scheduler, as diffusers' conversion scripts write the hub folders
COG_DDIM = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                set_alpha_to_one=True, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                timestep_spacing="trailing", snr_shift_scale=1.0, steps_offset=0)
LTX_FLOW = dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                max_image_seq_len=4096, shift_terminal=0.1)


def shipped_configs() -> list[str]:
    """Names of the model configs shipped in models/configs/ (gpus.json is not a model)."""
    folder = package_folder(CONFIG_PACKAGE)
    return sorted(p.stem for p in folder.glob("*.json") if p.stem not in NOT_MODELS)


def read_config(config: dict | str) -> dict:
    """A shipped config by name (models/configs/NAME.json) or a config dict, checked: a deep copy."""
    if isinstance(config, dict):
        cfg = copy.deepcopy(config)
    elif isinstance(config, str):
        name, names = config.removesuffix(".json"), shipped_configs()
        if name not in names:
            raise ValueError(f"config {config!r} is not a shipped model config; choose one of: {', '.join(names)}")
        cfg = json.loads((package_folder(CONFIG_PACKAGE) / f"{name}.json").read_text())
    else:
        raise TypeError(f"config must be a shipped config name or a dict, not {type(config).__name__}")
    where = f"config {cfg.get('name', '<dict>')!r}"
    if cfg.get("family") not in FAMILIES:
        raise ValueError(f"{where}: family {cfg.get('family')!r} is not one reel knows ({', '.join(FAMILIES)})")
    for part in ("pipeline", "transformer", "vae", "text_encoder"):
        if not isinstance(cfg.get(part), dict) or "_class_name" not in cfg[part]:
            raise ValueError(f"{where}: needs a {part!r} section with a _class_name (see models/configs/*.json)")
    for part in MODEL_PARTS:
        if part in cfg:
            if not isinstance(cfg[part].get("config"), dict):
                raise ValueError(f"{where}: {part}.config (the diffusers class's arguments) is missing")
            diffusers_class(cfg[part]["_class_name"], f"{where}: {part}._class_name")
    diffusers_class(cfg["pipeline"]["_class_name"], f"{where}: pipeline._class_name")
    return cfg


def diffusers_class(name: str, where: str = "class"):
    """diffusers' class `name`, or a ValueError saying this diffusers lacks it."""
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ValueError(f"{where}: diffusers {diffusers.__version__} has no class {name!r}; upgrade diffusers "
                         "(pip install -U diffusers) or fix the config's _class_name")
    return cls


def shrink_config(config: dict) -> dict:
    """The same config with its transformer(s) and VAE scaled down (structural flags and VAE factors kept)."""
    cfg = copy.deepcopy(config)
    for part in MODEL_PARTS:
        if part not in cfg:
            continue
        cls, arch = cfg[part]["_class_name"], cfg[part]["config"]
        table = TRANSFORMER_SHRINK if part != "vae" else VAE_SHRINK
        if cls not in table:
            raise ValueError(f"{part} class {cls!r}: shrink knows only {', '.join(table)}; build it at real size")
        small = table[cls] if part != "vae" else table[cls](arch)
        arch.update({k: v for k, v in small.items() if arch.get(k) is not None})
        cfg[part].pop("params", None)  # the real count no longer holds
    return cfg


def build_module(part: dict, device: str | torch.device = "meta") -> torch.nn.Module:
    """A config part ({"_class_name", "config"}) as its diffusers model on `device`, PyTorch default init, fp32.
    On "meta" it allocates nothing (count parameters with it)."""
    cls = diffusers_class(part["_class_name"], "_class_name")
    with torch.device(device):
        return cls(**part["config"])


def _say(progress: Callable[[str], None] | None, t0: float, message: str) -> None:
    if progress is not None:
        progress(f"[{time.perf_counter() - t0:6.1f} s] {message}")


def build_random_folder(config: dict | str, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.bfloat16, shrink: bool = False, seed: int = 0,
                        progress: Callable[[str], None] | None = None) -> Path:
    """Write a random diffusers folder for `config` (a shipped config name or its dict) to `path`; return it.

    Transformer(s) in `dtype`, VAE in fp32, each built on `device`, seeded (seed, seed + 1, ...), saved as
    safetensors and freed before the next. Stand-in encoders, the family's scheduler, model_index.json (the
    pipeline's own), reel.json (defaults from the config's "pipeline" section; tiny ones with shrink) and
    random.json (what is random). Written to `<path>.partial` first and renamed: `path` must not exist or be
    empty. `progress` gets one line per part."""
    t0 = time.perf_counter()
    cfg = read_config(config)
    if shrink:
        cfg = shrink_config(cfg)
    device = _check_device(device)
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; choose a new folder or delete it")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    quiet_loading()
    try:
        _write_parts(cfg, tmp, device, dtype, shrink, seed, lambda message: _say(progress, t0, message))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    _say(progress, t0, f"wrote {out}")
    return out


def _write_parts(cfg: dict, tmp: Path, device: torch.device, dtype: torch.dtype, shrink: bool, seed: int,
                 say: Callable[[str], None]) -> None:
    # 1. transformer(s) and VAE, one at a time: built on the device, saved, freed
    params = {}
    for i, part in enumerate(p for p in MODEL_PARTS if p in cfg):
        part_dtype = torch.float32 if part == "vae" else dtype
        say(f"building {part} ({cfg[part]['_class_name']}) on {device} ...")
        params[part] = _save_model(cfg[part], tmp / part, device, part_dtype, seed + i)
        say(f"{part}: {cfg[part]['_class_name']}, {params[part]:,} params, {_name(part_dtype)} on {device}")
    # 2. stand-in encoders and tokenizers, the scheduler
    small = standin_parts(cfg, shrink=shrink, device=device, dtype=dtype, seed=seed + 10)
    for name, obj in small.items():
        obj.save_pretrained(tmp / name)
    scheduler = _scheduler(cfg)
    scheduler.save_pretrained(tmp / "scheduler")
    say(f"stand-in encoders: {', '.join(n for n in small if 'encoder' in n)}; scheduler: {type(scheduler).__name__}")
    # 3. model_index.json, written by the pipeline itself (its big parts on the meta device)
    _pipeline_with_meta_parts(cfg, small, scheduler).save_config(tmp)
    # 4. reel.json and random.json
    _write_json(tmp / "reel.json", {**reel_defaults(cfg, shrink, scheduler), **reel_json_extras(cfg, small)})
    _write_json(tmp / "random.json", {
        "random": True, "config": cfg.get("name", "<dict>"), "family": cfg["family"],
        "text_encoder": describe(small), "shrink": shrink, "seed": seed, "dtype": _name(dtype),
        "params": params, "note": "random weights: timings are real, frames are noise"})


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r}: {err}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this torch sees no CUDA device; use --device cpu")
    return dev


def _save_model(part: dict, folder: Path, device: torch.device, dtype: torch.dtype, seed: int) -> int:
    torch.manual_seed(seed)
    model = build_module(part, device)
    _cast(model, dtype)
    count = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder, safe_serialization=True)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return count


def _cast(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast floating weights to `dtype` in place as from_pretrained(dtype=...) loads them: the class's
    _keep_in_fp32_modules stay fp32 (ModelMixin.to would cast them too, with a warning)."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, module in model.named_modules():
        if keep & set(name.split(".")):
            continue
        for tensors in (module._parameters, module._buffers):
            for key, t in tensors.items():
                if t is not None and t.is_floating_point() and t.dtype != dtype:
                    t.data = t.data.to(dtype)


def _scheduler(cfg: dict):
    """The family's default scheduler, as the real hub folders ship it."""
    import diffusers

    family, pipe = cfg["family"], cfg["pipeline"]
    if family == "wan":  # diffusers' convert_wan_to_diffusers.py: shift 5 for TI2V, 3 otherwise
        shift = float(pipe.get("shift") or (5.0 if pipe.get("expand_timesteps") else 3.0))
        return diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                 num_train_timesteps=1000, flow_shift=shift)
    if family == "ltx":
        return diffusers.FlowMatchEulerDiscreteScheduler(**LTX_FLOW)
    if family == "cogvideox":
        return diffusers.CogVideoXDDIMScheduler(**COG_DDIM)
    if family == "hunyuan":
        return diffusers.FlowMatchEulerDiscreteScheduler(shift=float(pipe.get("shift", 7.0)))
    if family == "skyreels":  # SkyReelsV2DiffusionForcingPipeline's UniPC flow scheduler, flow_shift 8 for T2V
        return diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                 num_train_timesteps=1000, flow_shift=float(pipe.get("shift", 8.0)))
    if family == "hunyuan15":  # convert_hunyuan_video1_5_to_diffusers.py: FlowMatchEuler, shift 5 (480p) / 9 or 7
        return diffusers.FlowMatchEulerDiscreteScheduler(shift=float(pipe.get("shift", 5.0)))
    if family == "ltx2":  # LTX-2's dynamic shift (LTX2Pipeline's calculate_shift defaults)
        return diffusers.FlowMatchEulerDiscreteScheduler(**LTX_FLOW)
    raise ValueError(f"family {family!r}: no default scheduler known; add one to models/random_model.py")


def _pipeline_with_meta_parts(cfg: dict, small: dict, scheduler):
    """The config's pipeline holding meta-device copies of the big parts: its save_config writes model_index.json
    exactly as save_pretrained would (component classes, boundary_ratio, expand_timesteps)."""
    cls = diffusers_class(cfg["pipeline"]["_class_name"])
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in cfg["pipeline"].items() if k in accepted}  # boundary_ratio, expand_timesteps
    kwargs.update({part: build_module(cfg[part], "meta") for part in MODEL_PARTS if part in cfg})
    kwargs.update(small, scheduler=scheduler)
    unknown = set(kwargs) - set(accepted)
    if unknown:
        raise ValueError(f"{cls.__name__} takes no {', '.join(sorted(unknown))}: the config does not fit the pipeline")
    return cls(**kwargs)


def reel_defaults(cfg: dict, shrink: bool, scheduler=None) -> dict:
    """reel.json: the config's pipeline defaults (family defaults for what it lacks); with shrink, a tiny valid
    size (2 x the size multiple), one latent frame step (temporal factor + 1 frames) and 2 steps."""
    family, pipe = FAMILIES[cfg["family"]], cfg["pipeline"]
    shift = pipe.get("shift") or getattr(getattr(scheduler, "config", None), "flow_shift", None)
    out = {"width": pipe.get("width", family.default_width), "height": pipe.get("height", family.default_height),
           "frames": pipe.get("frames", family.default_frames), "fps": pipe.get("fps", family.default_fps),
           "steps": pipe.get("steps", family.default_steps), "guidance": pipe.get("guidance", family.default_guidance),
           "shift": float(shift or family.default_shift),
           "max_sequence_length": pipe.get("max_sequence_length", family.default_max_sequence_length),
           "negative_prompt": ""}
    if shrink:
        temporal, multiple = family.factors(cfg["vae"]["config"], cfg["transformer"]["config"])
        out.update(width=2 * multiple, height=2 * multiple, frames=temporal + 1, steps=2)
    return out


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """`python -m reel.models.random_model CONFIG OUT [--device cuda] [--dtype bf16] [--shrink] [--seed N]`."""
    parser = argparse.ArgumentParser(
        prog="python -m reel.models.random_model",
        description="Write a random diffusers folder from one of reel's shipped model configs (real size unless "
                    "--shrink), for `reel bench`. Random weights, stand-in text encoders: noise, not pictures.")
    parser.add_argument("config", help=f"a shipped config: {', '.join(shipped_configs())}")
    parser.add_argument("out", help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--device", default="cpu", help="where the weights are built: cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES),
                        help="transformer and text encoder dtype; the VAE is always fp32 (default bf16)")
    parser.add_argument("--shrink", action="store_true", help="a CPU-sized copy: same classes and flags, tiny widths")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = parser.parse_args(argv)
    try:
        path = build_random_folder(args.config, args.out, device=args.device, dtype=DTYPES[args.dtype],
                                   shrink=args.shrink, seed=args.seed, progress=lambda m: print(m, flush=True))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
