"""GPU cost estimator: time per shot and per film, and VRAM, of a film on a named GPU, without the GPU.

    reel estimate film.toml --gpu h100|h200|a100|l40s|4090 [--model-config wan2.1-i2v-14b]

    from reel.engine.estimate import estimate_film, format_estimate
    print(format_estimate(estimate_film(load_film("film.toml"), "h100")))

FLOPs and activation bytes are measured by running the film's diffusers transformer and VAE once on the
meta device at the film's sizes (engine.estimate_meta: shapes only, no weights, seconds of CPU). The
architecture comes from the model folder's transformer/ and vae/ config.json, or from a shipped config in
models/configs/ (so a model can be estimated before it is downloaded). GPU peaks: models/configs/gpus.json.

Time model, chosen a priori and NOT fitted to any measurement: seconds = FLOPs / (dense peak x MFU) per
component, MFU = 0.40 — the middle of the 35-50 % of bf16 peak that PyTorch DiT inference with fused
attention commonly reaches; a step is never faster than reading its weights once at peak bandwidth.
Transformer and text encoders run in bf16, the VAE in fp32 (as reel's runtime does) at the TF32 peak.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from reel.models.registry import FAMILIES
from reel.models.resources import package_folder
from reel.engine.estimate_meta import MetaCost, measure_transformer, measure_vae_decode, vae_factors

CONFIG_DIR = package_folder("reel.models.configs")  # one JSON per published model, plus gpus.json
MFU = 0.40  # model FLOPs utilisation assumed for every component (a priori, see the module docstring)
HEADROOM = 0.95  # a card "fits" a peak up to 95 % of its memory (CUDA context, allocator fragmentation)
BF16, FP32 = 2, 4  # bytes per element
GB = 1e9


@dataclass(frozen=True)
class GPU:
    key: str  # "h100"
    name: str
    bf16_tflops: float  # dense tensor-core peak, BF16 in / FP32 accumulate
    tf32_tflops: float  # dense tensor-core peak for fp32 work with TF32 allowed
    memory_gb: float
    bandwidth_gbs: float


@dataclass(frozen=True)
class StepEstimate:
    """One denoising step: the transformer forward at batch x (2 if CFG), measured on the meta device."""

    family: str
    latent: tuple[int, int, int]  # (F', H', W') latent frames, height, width
    tokens: int  # transformer sequence length per sample
    batch: int  # shots in the forward (CFG doubles the rows, not this)
    cfg: bool
    flops: float  # per step
    params: int  # transformer parameters
    activation_bytes: int  # peak live activations during the step's forward


@dataclass(frozen=True)
class ShotEstimate:
    shot_id: str
    width: int
    height: int
    frames: int
    steps: int
    cfg_steps: int  # steps that run the unconditional pass too
    step: StepEstimate  # a step with CFG (or without, if the shot has none)
    seconds_text: float  # prompt (and image) encoding
    seconds_denoise: float
    seconds_decode: float  # VAE decode of the whole clip
    decode_flops: float
    memory: dict  # bytes by component and peaks by offload mode (see memory_plan)

    @property
    def seconds(self) -> float:
        return self.seconds_text + self.seconds_denoise + self.seconds_decode


@dataclass(frozen=True)
class FilmEstimate:
    model: str  # shipped config name or model folder
    gpu: GPU
    shots: tuple[ShotEstimate, ...]
    memory: dict  # of the shot with the highest peak
    recommendations: list[str]  # what to turn on so that the peak fits; empty when it fits as is
    assumptions: list[str] = field(default_factory=list)
    mfu: float = MFU  # the efficiency factor the times assume

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.shots)


# ---- inputs: GPUs and model configs -------------------------------------------------------------------
@lru_cache(maxsize=1)
def load_gpus() -> dict[str, GPU]:
    data = json.loads((CONFIG_DIR / "gpus.json").read_text())
    return {k: GPU(k, v["name"], v["bf16_tflops"], v["tf32_tflops"], v["memory_gb"], v["bandwidth_gbs"])
            for k, v in data.items() if not k.startswith("_")}


def gpu_spec(name: str) -> GPU:
    gpus = load_gpus()
    key = "".join(name.lower().replace("nvidia", "").replace("geforce", "").replace("rtx", "").split())
    if key not in gpus:
        raise ValueError(f"unknown GPU {name!r}; known GPUs: {', '.join(gpus)} (add one to {CONFIG_DIR / 'gpus.json'})")
    return gpus[key]


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json") if p.stem != "gpus")


def load_model_config(name: str) -> dict:
    """A shipped model config by name (models/configs/NAME.json)."""
    if name not in shipped_configs():
        raise ValueError(f"unknown model config {name!r}; shipped configs: {', '.join(shipped_configs())}")
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def _encoder_entry(folder: Path, component: str, class_name: str, max_len: int) -> dict:
    """Parameter count of a transformers encoder from its config.json, built on the meta device."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder / component, local_files_only=True)
    with torch.device("meta"):
        model = getattr(transformers, class_name)(config)
    emb = model.get_input_embeddings()
    return {"_class_name": class_name, "params": sum(p.numel() for p in model.parameters()),
            "embedding_params": emb.weight.numel() if emb is not None else 0, "max_sequence_length": max_len,
            "tokens": 257 if component == "image_encoder" else max_len}


def folder_model_config(path: Path, family: str, max_sequence_length: int) -> dict:
    """The same shape of dict as a shipped config, read from a local diffusers folder's JSON files."""
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    out = {"name": str(path), "family": family, "pipeline": {"_class_name": index.get("_class_name"),
                                                              "max_sequence_length": max_sequence_length}}
    for part in ("transformer", "transformer_2", "vae"):
        if (path / part / "config.json").is_file():
            cfg = json.loads((path / part / "config.json").read_text())
            out[part] = {"_class_name": cfg.get("_class_name"), "config": cfg}
    for part in ("text_encoder", "text_encoder_2", "image_encoder"):
        spec = index.get(part)
        if isinstance(spec, list) and spec[0] == "transformers" and (path / part / "config.json").is_file():
            out[part] = _encoder_entry(path, part, spec[1], max_sequence_length)
    if "expand_timesteps" in index:
        out["pipeline"]["expand_timesteps"] = bool(index["expand_timesteps"])
    return out


# ---- per-step and per-decode costs --------------------------------------------------------------------
def _entry(config: dict, family: str) -> dict:
    """{"_class_name", "config"} from either that shape or a raw diffusers config.json dict."""
    if isinstance(config.get("config"), dict):
        return config
    return {"_class_name": config.get("_class_name") or FAMILIES[family].transformer_class, "config": config}


def latent_dims(vae: dict, width: int, height: int, frames: int) -> tuple[int, int, int]:
    """(F', H', W') of a clip's latents under the VAE's compression."""
    t, s, _ = vae_factors(vae["_class_name"], vae["config"])
    return (frames - 1) // t + 1, height // s, width // s


def _tokens(cfg: dict, latent: tuple[int, int, int]) -> int:
    f, h, w = latent
    p = cfg.get("patch_size", 1)
    ps, pt = (p[1], p[0]) if isinstance(p, (list, tuple)) else (p, cfg.get("patch_size_t") or 1)
    return ((f + pt - 1) // pt) * (h // ps) * (w // ps)


@lru_cache(maxsize=64)
def _step_cost(entry_json: str, family: str, latent: tuple, rows: int, text_len: int, expand: bool) -> MetaCost:
    return measure_transformer(json.loads(entry_json), family, latent, rows, text_len, expand)


@lru_cache(maxsize=64)
def _decode_cost(vae_json: str, latent: tuple, tiled: bool) -> MetaCost:
    return measure_vae_decode(json.loads(vae_json), latent, tiled=tiled)


def estimate_step(transformer_config: dict, family: str, width: int, height: int, frames: int, batch: int,
                  cfg: bool, *, vae_config: dict | None = None, text_len: int | None = None,
                  expand_timesteps: bool = False) -> StepEstimate:
    """FLOPs and peak activations of one denoising step (transformer forward, x2 rows with CFG) at a size.

    `transformer_config`: a diffusers transformer config.json dict (or {"_class_name", "config"});
    `vae_config`: {"_class_name", "config"} of the VAE for the latent size (default: the family's VAE)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    entry = _entry(transformer_config, family)
    if vae_config is None:
        vae_config = {"_class_name": FAMILIES[family].vae_class,
                      "config": FAMILIES[family].vae_defaults(entry["config"])}
    latent = latent_dims(vae_config, width, height, frames)
    rows = batch * (2 if cfg else 1)  # reel runs cond + uncond in one forward
    try:
        cost = _step_cost(json.dumps(entry, sort_keys=True), family, latent, rows,
                          text_len or FAMILIES[family].default_max_sequence_length, expand_timesteps)
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{entry['_class_name']} cannot run at {width}x{height}, {frames} frames (latent {latent}): "
                         f"{err} — check the size against the model (e.g. its rope_max_seq_len) or the config"
                         ) from err
    return StepEstimate(family, latent, _tokens(entry["config"], latent), batch, cfg, cost.flops,
                        cost.params, cost.peak_bytes)


def _seconds(flops: float, tflops: float, weight_bytes: float = 0.0, gpu: GPU | None = None) -> float:
    compute = flops / (tflops * 1e12 * MFU)
    return max(compute, weight_bytes / (gpu.bandwidth_gbs * 1e9)) if gpu else compute


def _encoder_flops(enc: dict, prompts: int) -> float:
    """2 x non-embedding params x tokens per prompt (attention over <= 512 tokens adds ~1 %)."""
    tokens = enc.get("tokens") or enc.get("max_sequence_length", 512)
    return 2.0 * (enc["params"] - enc.get("embedding_params", 0)) * tokens * prompts


# ---- memory ------------------------------------------------------------------------------------------
def memory_plan(model: dict, step: StepEstimate, decode: MetaCost, decode_tiled: MetaCost) -> dict:
    """Bytes by component and the peak for each offload mode, with and without VAE tiling.

    none: everything resident; model: one component at a time on the GPU (accelerate hooks);
    group: the transformer streamed block by block (two blocks resident)."""
    experts = [model[k] for k in ("transformer", "transformer_2") if k in model]
    w_tr = step.params * BF16
    w_text = sum(model[k]["params"] for k in ("text_encoder", "text_encoder_2", "image_encoder") if k in model) * BF16
    w_vae = decode.params * FP32
    cfg = experts[0]["config"]
    blocks = int(cfg.get("num_layers", 1)) + int(cfg.get("num_single_layers", 0))
    c = cfg.get("in_channels", 16)
    latents = step.batch * c * step.latent[0] * step.latent[1] * step.latent[2] * FP32 * 4  # noise, x, v, history
    act = step.activation_bytes + latents
    mem = {"transformer weights": w_tr * len(experts), "text/image encoder weights": w_text, "VAE weights": w_vae,
           "transformer activations": act, "VAE decode": decode.peak_bytes,
           "VAE decode, tiled": decode_tiled.peak_bytes}
    for tiled in (False, True):
        dec = decode_tiled.peak_bytes if tiled else decode.peak_bytes
        suffix = ", tiled VAE" if tiled else ""
        mem["peak" + suffix] = w_tr * len(experts) + w_text + w_vae + max(act, dec)
        mem["peak, offload model" + suffix] = max(w_text, w_tr + act, w_vae + dec)
        mem["peak, offload group" + suffix] = max(2 * w_tr / blocks + act, w_vae + dec)
    return mem


def recommendations(mem: dict, gpu: GPU) -> list[str]:
    """What to turn on so the peak fits: the first of none / tiling / model offload / group offload that does."""
    cap = gpu.memory_gb * GB * HEADROOM
    peak = mem["peak"]
    if peak <= cap:
        return []
    head = f"does not fit in {gpu.memory_gb:g} GB (peak {_gb(peak)}, {_gb(cap)} usable)"
    plans = [("", False), ("", True), ("model", False), ("model", True), ("group", False), ("group", True)]
    for offload, tiled in plans:
        key = "peak" + (f", offload {offload}" if offload else "") + (", tiled VAE" if tiled else "")
        if mem[key] <= cap:
            break
    else:
        return [f"{head} even with group offload and VAE tiling ({_gb(mem['peak, offload group, tiled VAE'])}): "
                "use fewer frames, a lower resolution, or a GPU with more memory"]
    parts = []
    if offload == "model":
        parts.append(f"use --offload model (peak {_gb(mem[key])})")
    elif offload == "group":
        model_peak = mem["peak, offload model" + (", tiled VAE" if tiled else "")]
        parts.append(f"--offload model is not enough ({_gb(model_peak)}); use --offload group (block-level, peak "
                     f"{_gb(mem[key])}; the weights cross PCIe every step)")
    if tiled:
        parts.append(f"enable VAE tiling for the decode (--vae-tiling: {_gb(mem['VAE decode, tiled'])} instead of "
                     f"{_gb(mem['VAE decode'])})")
    return [f"{head}: " + "; ".join(parts)]


def _gb(nbytes: float) -> str:
    return f"{nbytes / GB:.1f} GB" if nbytes >= 0.1 * GB else f"{nbytes / 1e6:.1f} MB"


# ---- the film --------------------------------------------------------------------------------------------
def estimate_shot(model: dict, gpu: str | GPU, width: int, height: int, frames: int, steps: int, guidance: float,
                  *, shot_id: str = "shot", cfg_skip_last: float = 0.0, window: int = 0,
                  overlap: int = 0) -> ShotEstimate:
    """Time and memory of one shot of `model` (a shipped or folder config dict) on `gpu`. A long shot (`window`
    > 0, models/long_shots.py) costs each of its chunks' steps, and the memory of one window."""
    if window and frames > window:
        from dataclasses import replace

        from reel.models.long_shots import latent_chunks

        t = vae_factors(model["vae"]["_class_name"], model["vae"]["config"])[0]
        parts = [estimate_shot(model, gpu, width, height, (n - 1) * t + 1, steps, guidance, shot_id=shot_id,
                               cfg_skip_last=cfg_skip_last) for _, n in latent_chunks(frames, window, overlap, t)]
        first = parts[0]  # a full window: the memory a long shot needs at any time
        return replace(first, frames=frames, seconds_denoise=sum(p.seconds_denoise for p in parts),
                       seconds_decode=sum(p.seconds_decode for p in parts),
                       decode_flops=sum(p.decode_flops for p in parts))
    spec = gpu if isinstance(gpu, GPU) else gpu_spec(gpu)
    family, pipe = model["family"], model["pipeline"]
    embedded = FAMILIES[family].guidance == "embedded"  # guidance-distilled: an input, one pass per step
    cfg = guidance > 1.0 and pipe.get("cfg") is not False and not embedded
    cfg_steps = (steps - int(round(steps * cfg_skip_last))) if cfg else 0
    # 1. one step (cond + uncond rows when CFG); a step without CFG costs half (FLOPs are linear in rows)
    step = estimate_step(model["transformer"], family, width, height, frames, 1, cfg, vae_config=model["vae"],
                         text_len=pipe.get("max_sequence_length") or FAMILIES[family].default_max_sequence_length,
                         expand_timesteps=bool(pipe.get("expand_timesteps")))
    w_tr = step.params * BF16
    plain_flops = step.flops / 2 if cfg else step.flops
    denoise = (cfg_steps * _seconds(step.flops, spec.bf16_tflops, w_tr, spec)
               + (steps - cfg_steps) * _seconds(plain_flops, spec.bf16_tflops, w_tr, spec))
    # 2. prompts (cond + negative) and, for image-to-video, the image encoder
    prompts = 2 if cfg else 1
    text_flops = sum(_encoder_flops(model[k], prompts) for k in ("text_encoder", "text_encoder_2") if k in model)
    if "image_encoder" in model:
        text_flops += _encoder_flops(model["image_encoder"], 1)
    # 3. the decode, as diffusers runs it and tiled
    vae_json = json.dumps(model["vae"], sort_keys=True)
    decode, tiled = _decode_cost(vae_json, step.latent, False), _decode_cost(vae_json, step.latent, True)
    return ShotEstimate(shot_id, width, height, frames, steps, cfg_steps, step, _seconds(text_flops, spec.bf16_tflops),
                        denoise, _seconds(decode.flops, spec.tf32_tflops), decode.flops,
                        memory_plan(model, step, decode, tiled))


ASSUMPTIONS = [
    f"MFU {MFU:.2f} of dense peak for every component, chosen a priori (bf16 DiT inference with fused attention "
    "commonly reaches 35-50 %); not fitted to measurements",
    "transformer and text encoders in bf16; VAE in fp32 with TF32 (reel's runtime); attention as fused SDPA "
    "kernels (O(N) memory)",
    "cond and uncond rows in one forward (reel's loop); diffusers runs them one after another: same FLOPs, half "
    "the transformer activations",
    f"fits = peak <= {HEADROOM:.0%} of the card; the VAE encode of an image-to-video condition is not counted",
]


def estimate_film(film, gpu: str, *, model_config: str | None = None) -> FilmEstimate:
    """Time per shot and per film, and peak VRAM with recommendations, for `film` (engine.spec.Film) on `gpu`.

    `model_config`: a shipped config name (see shipped_configs()) to use instead of the film's model folder."""
    from reel.engine.plan import build_plan

    spec = gpu_spec(gpu)
    if model_config:
        model = load_model_config(model_config)
    else:
        model = folder_model_config(film.model.path, film.model.family.name, film.max_sequence_length)
    shots = tuple(estimate_shot(model, spec, job.width, job.height, job.frames, job.steps, job.guidance,
                                shot_id=job.shot_id, cfg_skip_last=job.cfg_skip_last, window=job.window,
                                overlap=job.overlap) for job in build_plan(film).jobs)
    worst = max(shots, key=lambda s: s.memory["peak"]).memory
    assumptions = list(ASSUMPTIONS)
    if film.speed.step_cache:
        assumptions.append("the step cache skips a data-dependent share of steps: its saving is not modelled")
    return FilmEstimate(model.get("name", str(film.model.path)), spec, shots, worst, recommendations(worst, spec),
                        assumptions)


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s" if m else f"{seconds:.1f}s"


def format_estimate(est: FilmEstimate) -> str:
    """A readable table: per shot, the film total, VRAM by component, recommendations, assumptions."""
    g = est.gpu
    lines = [f"reel estimate: {est.model} on {g.name} ({g.bf16_tflops:g} bf16 TFLOPS dense, {g.memory_gb:g} GB, "
             f"{g.bandwidth_gbs:g} GB/s)", "",
             f"{'shot':<16}{'size':>11}{'frames':>7}{'steps':>6}{'cfg':>5}{'tokens':>8}{'TFLOP/step':>11}"
             f"{'s/step':>8}{'denoise':>10}{'decode':>8}{'total':>12}"]
    for s in est.shots:
        per_step = s.seconds_denoise / max(s.steps, 1)
        lines.append(f"{s.shot_id[:15]:<16}{f'{s.width}x{s.height}':>11}{s.frames:>7}{s.steps:>6}"
                     f"{'yes' if s.cfg_steps else 'no':>5}{s.step.tokens:>8}{_num(s.step.flops / 1e12):>11}"
                     f"{_num(per_step):>8}{s.seconds_denoise:>9.1f}s{s.seconds_decode:>7.1f}s"
                     f"{_duration(s.seconds):>12}")
    lines += [f"{'film':<16}{len(est.shots):>11} shot(s){'':>48}{_duration(est.seconds):>12}", "",
              "VRAM (the shot with the highest peak)"]
    lines += [f"  {k:<36}{_gb(v):>12}" for k, v in est.memory.items()]
    lines += ["", "recommendations:"] + ([f"  - {r}" for r in est.recommendations] or
                                         [f"  - fits in {g.memory_gb:g} GB as is"])
    lines += ["", "assumptions:"] + [f"  - {a}" for a in est.assumptions]
    return "\n".join(lines)
