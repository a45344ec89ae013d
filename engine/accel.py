"""Opt-in speed-ups, each an `apply_x(module, config)`-style wrapper with a parity or quality test.

    speed = SpeedConfig(step_cache=0.05, cfg_skip_last=0.25, attention="auto", threads=2)
    apply_load_time(components, speed)         # attention backend, threads, compile, offload, VAE tiling
    with step_cache_session(transformer, speed) as step:   # First-Block-Cache per trajectory
        ...

From the spec's `[speed]` table or the CLI (flags win):
    step_cache      First-Block-Cache threshold (diffusers' hook): reuse the blocks' residual when the first
                    block's output barely changed since the last computed step (0.05-0.1 typical; off by default)
    cfg_skip_last   fraction of the final steps that skip the unconditional pass (guidance off there)
    attention       auto | sdpa | flash-attn | xformers | sageattention (kernels/attention.py)
    compile         torch.compile the transformer (slow first call; for long renders)
    threads         CPU threads for torch (default: torch's own choice)
    offload         auto | none | model | group: keep weights on the CPU and move them in per model or per block
    vae_tiling      auto | true | false: decode in spatial tiles (bounded VRAM, whole clip at once)
    weights         auto | bf16 | fp16 | fp8: transformer weight storage on CUDA (fp8: layerwise casting,
                    computed in bf16). On the CPU, "bf16" runs the transformer and text encoder in bf16 and
                    the VAE decode under bf16 autocast (fast on CPUs with AVX512-BF16/AMX; changes pixels
                    slightly: ~50 dB against fp32 on the built-in model); the scheduler math stays fp32. "auto" (CUDA only) asks the estimator (engine/estimate.py) for the
                    film's peak VRAM and turns on the first of tiling, fp8, model offload, group offload that
                    fits in the free memory; on the CPU nothing changes.
    fused_kernels   auto | on | off: Triton RMSNorm, rotary and adaLN kernels (CUDA with triton). auto leaves them
                    off until a GPU measurement shows them faster than diffusers' ops (none does yet: see
                    FUSED_AUTO_OFF); on uses them, or fails with every reason they cannot run
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SpeedSection(BaseModel):
    """The `[speed]` table of a film spec (validated, strict)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    step_cache: float | None = Field(None, gt=0.0, le=1.0)
    cfg_skip_last: float = Field(0.0, ge=0.0, le=1.0)
    attention: str = "auto"
    compile: bool = False
    threads: int | None = Field(None, ge=1, le=512)
    offload: Literal["auto", "none", "model", "group"] = "auto"
    vae_tiling: bool | Literal["auto"] = "auto"
    weights: Literal["auto", "bf16", "fp16", "fp8"] = "auto"
    fused_kernels: Literal["auto", "on", "off"] = "auto"


# What `fused_kernels = "auto"` does on CUDA, and why. On one H200 (2026-12-04, Wan 2.1 1.3B size, 832x480x81)
# the fused kernels made a step 1.41x slower than diffusers' own ops (benchmarks/RESULTS.md). Each call then
# built a new Triton function; that is fixed (one build per process), but no GPU has measured the fix, so auto
# stays off until a recorded measurement shows them faster.
FUSED_AUTO_OFF = "off (auto: no GPU measurement shows them faster than diffusers' ops; fused_kernels = \"on\" to try)"


@dataclass(frozen=True)
class SpeedConfig:
    step_cache: float | None = None
    cfg_skip_last: float = 0.0
    attention: str = "auto"
    compile: bool = False
    threads: int | None = None
    offload: str = "auto"
    vae_tiling: bool | str = "auto"
    weights: str = "auto"
    fused_kernels: str = "auto"  # Triton RMSNorm/rotary/adaLN (kernels/): auto = off until measured faster

    def cfg_steps(self, steps: int) -> int:
        """How many leading steps run the unconditional pass."""
        return steps - int(round(steps * self.cfg_skip_last))


def apply_threads(speed: SpeedConfig) -> None:
    import torch

    if speed.threads:
        torch.set_num_threads(speed.threads)


def choose_memory(mem: dict, free_bytes: float, weights_fp8_saving: float) -> dict:
    """The first plan whose estimated peak fits in `free_bytes`: nothing, VAE tiling, fp8 weights (with
    tiling), model offload, group offload (each with tiling when that is what fits)."""
    plans = [("none", False, "bf16", mem["peak"]), ("none", True, "bf16", mem["peak, tiled VAE"]),
             ("none", True, "fp8", mem["peak, tiled VAE"] - weights_fp8_saving),
             ("model", False, "bf16", mem["peak, offload model"]), ("model", True, "bf16", mem["peak, offload model, tiled VAE"]),
             ("group", False, "bf16", mem["peak, offload group"]), ("group", True, "bf16", mem["peak, offload group, tiled VAE"])]
    for offload, tiled, weights, peak in plans:
        if peak <= free_bytes:
            return {"offload": offload, "vae_tiling": tiled, "weights": weights,
                    "why": f"estimated peak {peak / 2**30:.1f} GB fits in {free_bytes / 2**30:.1f} GB free"}
    offload, tiled, weights, peak = plans[-1]
    return {"offload": offload, "vae_tiling": tiled, "weights": weights,
            "why": f"even group offload with tiling needs {peak / 2**30:.1f} GB of {free_bytes / 2**30:.1f} GB free: "
                   "expect out-of-memory; use fewer frames or a lower resolution"}


def plan_memory(components, speed: SpeedConfig, film) -> dict:
    """Resolve the "auto" memory settings on CUDA from the estimator and the free VRAM; explicit ones win."""
    import torch

    chosen = {"offload": speed.offload, "vae_tiling": speed.vae_tiling, "weights": speed.weights}
    if "auto" not in chosen.values() or film is None:
        return {k: (v if v != "auto" else {"offload": "none", "vae_tiling": False, "weights": "bf16"}[k])
                for k, v in chosen.items()}
    from reel.engine.estimate import GPU, estimate_shot, folder_model_config
    from reel.engine.plan import build_plan

    free, total = torch.cuda.mem_get_info(components.device)
    gpu = GPU("local", torch.cuda.get_device_name(components.device), 100.0, 50.0, total / 2**30, 1000.0)
    model = folder_model_config(film.model.path, film.model.family.name, film.max_sequence_length)
    biggest = max(build_plan(film).jobs, key=lambda j: j.frames * j.width * j.height)
    shot = estimate_shot(model, gpu, biggest.width, biggest.height, biggest.frames, biggest.steps, biggest.guidance)
    auto = choose_memory(shot.memory, free * 0.95, shot.memory["transformer weights"] / 2)
    return {k: (auto[k] if v == "auto" else v) for k, v in chosen.items()} | {"why": auto["why"]}


def apply_load_time(components, speed: SpeedConfig, film=None, *, family=None) -> dict:
    """Speed-ups applied once after loading; returns what was applied (for manifests and logs).

    `family`: the model's registry Family (its capability flags say which speed-ups cover it)."""
    from reel.kernels.attention import apply_backend, select_backend

    tr = components.transformer
    applied = {}
    head_dim = int(tr.config.attention_head_dim)
    name, passed = select_backend(speed.attention, components.device, components.dtype, head_dim)
    apply_backend(tr, name)
    applied["attention"] = name
    if passed:
        applied["attention_passed_over"] = passed
    memory = plan_memory(components, speed, film) if components.device.type == "cuda" else \
        {"offload": "none" if speed.offload == "auto" else speed.offload, "vae_tiling": speed.vae_tiling is True,
         "weights": "bf16" if speed.weights == "auto" else speed.weights}
    if memory.get("why"):
        applied["memory_plan"] = memory["why"]
    if components.device.type != "cuda" and speed.weights not in ("auto", "bf16"):
        applied["weights"] = f"fp32 ({speed.weights} storage applies on CUDA only)"
    if components.device.type == "cpu" and speed.weights == "bf16":
        applied["weights"] = "bf16 (CPU: transformer and text encoder in bf16, VAE decode under bf16 autocast)"
    if memory["weights"] == "fp8" and components.device.type == "cuda":
        import torch

        tr.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        applied["weights"] = "fp8 (layerwise casting)"
    if memory["offload"] != "none":
        applied["offload"] = apply_offload(components, memory["offload"])
    if memory["vae_tiling"]:
        components.vae.enable_tiling()
        applied["vae_tiling"] = True
    if speed.fused_kernels == "on":
        from reel.kernels.attention import BackendError
        from reel.kernels.wan_fused import apply_fused_kernels, fused_reasons

        reasons = fused_reasons(components.device)
        if family is None or not family.fused_kernels:
            reasons.append(f"the fused kernels cover Wan transformers, not {family.name if family else 'this'} ones")
        if reasons:
            raise BackendError("fused_kernels = on cannot run here: " + "; ".join(reasons))
        applied["fused_kernels"] = apply_fused_kernels(tr)
    elif speed.fused_kernels == "auto" and components.device.type == "cuda":
        applied["fused_kernels"] = FUSED_AUTO_OFF
    if speed.compile:
        tr.compile()  # nn.Module.compile: in place, torch.compile under the hood
        applied["compile"] = True
    return applied


def apply_offload(components, kind: str) -> str:
    """CUDA memory savers: weights stay in CPU memory and move to the GPU when used."""
    import torch

    if components.device.type != "cuda":
        return "skipped (CPU run: weights are already in CPU memory)"
    if kind == "group":
        from diffusers.hooks import apply_group_offloading

        for module in (components.transformer, components.text_encoder):
            apply_group_offloading(module, onload_device=components.device, offload_device=torch.device("cpu"),
                                   offload_type="block_level", num_blocks_per_group=1)
        return "group (block level)"
    from accelerate import cpu_offload_with_hook

    hook = None
    for module in (components.text_encoder, components.transformer, components.vae):
        module.to("cpu")
        _, hook = cpu_offload_with_hook(module, components.device, prev_module_hook=hook)
    return "model"


@contextlib.contextmanager
def step_cache_session(transformer, speed: SpeedConfig):
    """Enable First-Block-Cache for one trajectory (state reset at start); yields `context(step, total, cfg)`
    returning the cache context to run each model call in (a no-op context when the cache is off)."""
    if speed.step_cache is None:
        if getattr(transformer, "is_cache_enabled", False):  # an earlier cached render on this engine
            transformer.disable_cache()
        yield lambda step, total, batched_cfg: contextlib.nullcontext()
        return
    from diffusers.hooks import FirstBlockCacheConfig

    current = getattr(transformer, "_cache_config", None)
    if current is not None and getattr(current, "threshold", None) != speed.step_cache:
        transformer.disable_cache()
    if not transformer.is_cache_enabled:
        transformer.enable_cache(FirstBlockCacheConfig(threshold=speed.step_cache))
    transformer._reset_stateful_cache()
    try:
        yield lambda step, total, batched_cfg: transformer.cache_context(
            "cfg" if batched_cfg else "cond", step_index=step, num_inference_steps=total)
    finally:
        transformer._reset_stateful_cache()


def auto_batch_size(film, device: str = "auto", preview: bool = False, cap: int = 8) -> int:
    """Shots per forward batch: on CUDA the largest (up to `cap`) whose estimated peak fits in 90 % of the
    free VRAM, from the estimator (engine/estimate.py); 4 on the CPU, where batching small models still pays
    (benchmarks/RESULTS.md, batching)."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return 4
    from reel.engine.estimate import GPU, estimate_shot, folder_model_config
    from reel.engine.plan import build_plan

    free, total = torch.cuda.mem_get_info()
    gpu = GPU("local", torch.cuda.get_device_name(), 100.0, 50.0, total / 2**30, 1000.0)
    model = folder_model_config(film.model.path, film.model.family.name, film.max_sequence_length)
    job = max(build_plan(film, preview=preview).jobs, key=lambda j: j.frames * j.width * j.height)
    one = estimate_shot(model, gpu, job.width, job.height, job.frames, job.steps, job.guidance).memory
    weights = one["peak"] - max(one["transformer activations"], one["VAE decode"])
    per_shot = max(one["transformer activations"], one["VAE decode"])
    return max(1, min(cap, int((free * 0.9 - weights) // max(per_shot, 1))))
