"""Opt-in speed-ups, each an `apply_x(module, config)`-style hook or processor that comes off again, with a
parity or quality test (diffusers' HookRegistry pattern: reel never assigns a module's forward; the registry
wraps it and unwraps it again).

    speed = SpeedConfig(step_cache=0.05, cfg_skip_last=0.25, attention="auto", threads=2)
    apply_load_time(components, speed, family=f)   # attention backend, CPU fast paths, fused kernels, fp8 matmuls,
                                                   # memory, compile; "auto" on CUDA from engine/measured.py
    compile_fallbacks(components, family=f)        # None, or why compiled regions fell back to eager
    remove_load_time(components, family=f)         # compile hooks, fp8 matmuls, attention backend off again
                                                   # (every one of them on every expert of the family)
    with step_cache_session(transformer, speed) as step:   # First-Block-Cache per trajectory
        ...

The settings themselves, and what each one does, are engine/speed.py's.
"""

from __future__ import annotations

import contextlib
import weakref

from reel.engine.speed import SpeedConfig, SpeedSection

__all__ = ["SpeedConfig", "SpeedSection", "apply_attention", "apply_cpu_fast_paths", "apply_load_time",
           "apply_offload", "auto_batch_size", "choose_memory", "compile_fallbacks", "plan_memory",
           "remove_cpu_fast_paths", "remove_load_time", "step_cache_session", "reset_step_cache"]


def choose_memory(mem: dict, free_bytes: float, weights_fp8_saving: float) -> dict:
    """The first plan whose estimated peak fits in `free_bytes`: nothing, VAE tiling, fp8 weights (with
    tiling), model offload, group offload (each with tiling when that is what fits)."""
    plans = [("none", False, "bf16", mem["peak"]), ("none", True, "bf16", mem["peak, tiled VAE"]),
             ("none", True, "fp8", mem["peak, tiled VAE"] - weights_fp8_saving),
             ("model", False, "bf16", mem["peak, offload model"]),
             ("model", True, "bf16", mem["peak, offload model, tiled VAE"]),
             ("group", False, "bf16", mem["peak, offload group"]),
             ("group", True, "bf16", mem["peak, offload group, tiled VAE"])]
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


def apply_load_time(components, speed: SpeedConfig, film=None, *, family=None, gpu_name: str | None = None,
                    table=None) -> dict:
    """Speed-ups applied once after loading; returns what was applied and why (for manifests and logs).

    `family`: the model's registry Family (its capability flags say which speed-ups cover it). On CUDA, "auto"
    attention, fused_kernels and compile come from recorded measurements only (engine/measured.py): `gpu_name`
    (default torch.cuda.get_device_name) picks the rows, `table` the file (default engine/measured_speedups.json).
    On the CPU auto means sdpa, no fused kernels, no compile. remove_load_time takes the hooks off again."""
    applied = {}
    gpu = (gpu_name or _gpu_name(components.device)) if components.device.type == "cuda" else None
    # 1. what cannot run fails before anything changes
    name, passed, why = _choose_attention(components, speed, gpu, table)
    fused = _fused_on(components, speed, family, gpu, table, applied)
    mode = _compile_mode(components, speed, fused, gpu, table, applied)
    fp8 = speed.fp8_matmul and _check_fp8(components)
    cpu_paths = _cpu_fast_paths_on(components, speed, family)
    _refuse_regional_with_fp8_weights(components, speed)
    apply_attention(components, name, family)
    applied["attention"] = name
    if why:
        applied["attention_auto"] = why
    if passed:
        applied["attention_passed_over"] = passed
    # 2. hooks and processors, before offloading and layerwise casting (their hooks must wrap these)
    if cpu_paths:
        applied["cpu_fast_paths"] = apply_cpu_fast_paths(components, family)
    if fused:
        from reel.kernels.wan_fused import apply_fused_kernels

        applied["fused_kernels"] = apply_fused_kernels(components.transformer)
    if fp8:
        applied["fp8_matmul"] = _apply_fp8(components, family)
    # 3. memory: weight storage, offloading, VAE tiling
    memory = _apply_memory(components, speed, film, applied, family)
    # 4. compile last: its hooks wrap everything above
    mode = _without_layerwise_casting(components, speed, memory, mode, applied)
    if mode != "off":
        from reel.kernels.regional_compile import apply_compile

        n = sum(apply_compile(t, mode) for t in _experts(components, family))
        auto = applied.pop("compile_auto", None)
        applied["compile"] = f"{mode} ({n} compiled region(s); the first call compiles)" + \
            (f" (auto: {auto})" if auto else "")
    return applied


def apply_attention(components, name: str, family=None) -> int:
    """Route every expert's attention (Wan 2.2 A14B has two transformers) through backend `name`
    (kernels/attention.py); returns how many transformers. remove_load_time puts diffusers' default back."""
    from reel.kernels.attention import apply_backend

    experts = _experts(components, family)
    for transformer in experts:
        apply_backend(transformer, name)
    return len(experts)


def compile_fallbacks(components, family=None) -> str | None:
    """None, or why some compiled regions of these components run eager (dynamo's recompile limit was hit:
    kernels/regional_compile.py); the engine adds it to the model's applied speed-ups after a batch."""
    from reel.kernels.regional_compile import compile_fallbacks as fallbacks

    found = {note for t in _experts(components, family) if (note := fallbacks(t))}
    return "; ".join(sorted(found)) or None


def remove_load_time(components, family=None) -> dict:
    """Take off the removable speed-ups apply_load_time put on every expert: compile hooks, fp8 matmul layers (the
    original nn.Linear modules back) and the attention backend (diffusers' default again); returns how many compile
    hooks and fp8 layers came off. (The CPU fast paths have remove_cpu_fast_paths, the fused kernels
    kernels/wan_fused.py; memory settings stay.)"""
    from reel.kernels.attention import remove_backend
    from reel.kernels.fp8_linear import remove_fp8_linear
    from reel.kernels.regional_compile import remove_compile

    experts = _experts(components, family)
    removed = {"compile": sum(remove_compile(t) for t in experts),
               "fp8_matmul": sum(remove_fp8_linear(t) for t in experts)}
    for t in experts:
        remove_backend(t)
    return removed


def _gpu_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if torch.cuda.is_available() else "unknown GPU (CUDA unavailable)"


def _experts(components, family) -> list:
    """The transformers a speed-up covers: every expert of the family (Wan 2.2 A14B has two), else the one."""
    if family is None:
        return [components.transformer]
    from reel.models.family import family_module

    return list(family_module(family).experts(components).values())


def _choose_attention(components, speed: SpeedConfig, gpu: str | None, table):
    """(backend, passed over, why or None). On CUDA "auto" is sdpa unless a measurement shows another faster."""
    from reel.kernels.attention import BACKENDS, select_backend

    device, dtype = components.device, components.dtype
    head_dim = int(components.transformer.config.attention_head_dim)
    prefer, why = None, None
    if speed.attention == "auto" and gpu is not None:
        from reel.engine.measured import measured_choice

        candidates = [n for n, b in BACKENDS.items() if n != "sdpa" and not b.lossy and
                      not b.validate(device, dtype, head_dim, components.transformer)]
        prefer, why = measured_choice("attention", candidates, gpu, table)
        why = why if prefer else f"sdpa ({why})"
    name, passed = select_backend(speed.attention, device, dtype, head_dim, prefer=prefer,
                                  transformer=components.transformer)
    return name, passed, why


def _fused_on(components, speed: SpeedConfig, family, gpu: str | None, table, applied: dict) -> bool:
    """Whether the fused kernels go on: "on" (or BackendError with every reason not), "auto" on CUDA when a
    measurement on this GPU shows them faster (else the reason lands in `applied`), never on the CPU by auto."""
    if speed.fused_kernels == "on":
        return _check_fused(components, family)
    if speed.fused_kernels != "auto" or gpu is None:
        return False
    from reel.engine.measured import measured_choice
    from reel.kernels.wan_fused import fused_reasons

    reasons = fused_reasons(components.device)
    if family is None or not family.fused_kernels:
        reasons.append(f"they cover Wan transformers, not {family.name if family else 'this'} ones")
    value, why = measured_choice("fused_kernels", [] if reasons else ["on"], gpu, table,
                                 context={"compile": speed.compile})
    if value != "on":
        applied["fused_kernels"] = f"off (auto: {'; '.join(reasons) or why}; fused_kernels = \"on\" to try)"
    return value == "on"


def _compile_mode(components, speed: SpeedConfig, fused: bool, gpu: str | None, table, applied: dict) -> str:
    """The compile mode to apply: a named one (or BackendError with every reason it cannot run), "off", or for
    "auto" on CUDA the mode a measurement on this GPU shows faster with these settings (off on the CPU)."""
    from reel.kernels.attention import BackendError
    from reel.kernels.regional_compile import MODES, compile_reasons

    tr, device = components.transformer, components.device
    if speed.compile in MODES:
        reasons = compile_reasons(speed.compile, tr, device)
        if reasons:
            raise BackendError(f"compile = {speed.compile} cannot run here: " + "; ".join(reasons))
        return speed.compile
    if speed.compile == "off" or gpu is None:
        return "off"
    from reel.engine.measured import measured_choice

    candidates = [m for m in MODES if not compile_reasons(m, tr, device)]
    value, why = measured_choice("compile", candidates, gpu, table,
                                 context={"fused_kernels": "on" if fused else "off"})
    if value:
        applied["compile_auto"] = why
    else:
        applied["compile"] = f"off (auto: {why})"
    return value or "off"


def _check_fp8(components) -> bool:
    """True, or BackendError with every reason `fp8_matmul = true` cannot run for these components."""
    from reel.kernels.attention import BackendError
    from reel.kernels.fp8_linear import fp8_reasons

    reasons = fp8_reasons(components.device, components.dtype, components.transformer)
    if reasons:
        raise BackendError("fp8_matmul = true cannot run here: " + "; ".join(reasons))
    return True


def _apply_fp8(components, family) -> str:
    """fp8 matmuls in every expert's blocks; the manifest line says how many layers and what it costs."""
    from reel.kernels.fp8_linear import apply_fp8_linear

    counts = [apply_fp8_linear(t) for t in _experts(components, family)]
    layers, skipped = sum(c["layers"] for c in counts), sum(c["skipped"] for c in counts)
    text = f"{layers} linear layers as fp8 matmuls (lossy), {skipped} skipped (features not multiples of 16)"
    if components.device.type == "cpu":
        text += "; CPU: slow (no fp8 units), for checking the numbers, not for speed"
    return text


LAYERWISE_WHY = ("diffusers' layerwise casting (fp8 weight storage) hooks every linear layer with a forward of its "
                 "own, and torch.compile guards on each, so regional compile would need a graph per block: past "
                 "dynamo's recompile limit (8) the other blocks run eager")


def _refuse_regional_with_fp8_weights(components, speed: SpeedConfig) -> None:
    """BackendError when `compile = "regional"` and `weights = "fp8"` are both asked for by name on CUDA (where fp8
    weights are diffusers' layerwise casting): they do not combine, and the message says what to choose."""
    if speed.compile == "regional" and speed.weights == "fp8" and components.device.type == "cuda":
        from reel.kernels.attention import BackendError

        raise BackendError(f'compile = "regional" with weights = "fp8" cannot run as asked: {LAYERWISE_WHY}. Use '
                           'weights = "bf16" (offload = "model" or "group" if memory is short) to compile, or '
                           'compile = "off" to keep fp8 storage')


def _without_layerwise_casting(components, speed: SpeedConfig, memory: dict, mode: str, applied: dict) -> str:
    """The compile mode to apply after the memory plan: "off" instead of "regional" when fp8 weight storage (CUDA:
    layerwise casting) went on because one of the two was "auto"; `applied` says why."""
    if mode != "regional" or memory["weights"] != "fp8" or components.device.type != "cuda":
        return mode
    chose = "the memory plan chose fp8 weights" if speed.weights == "auto" else 'weights = "fp8"'
    applied.pop("compile_auto", None)
    applied["compile"] = f"off ({chose}, and regional compile does not combine with them: {LAYERWISE_WHY})"
    return "off"


def _apply_memory(components, speed: SpeedConfig, film, applied: dict, family=None) -> dict:
    """Weight storage, offloading and VAE tiling: explicit settings, or on CUDA the estimator's plan for "auto".
    Returns the plan applied ({"offload", "vae_tiling", "weights"})."""
    cuda = components.device.type == "cuda"
    memory = plan_memory(components, speed, film) if cuda else \
        {"offload": "none" if speed.offload == "auto" else speed.offload, "vae_tiling": speed.vae_tiling is True,
         "weights": "bf16" if speed.weights == "auto" else speed.weights}
    if memory.get("why"):
        applied["memory_plan"] = memory["why"]
    if not cuda and speed.weights not in ("auto", "bf16"):
        applied["weights"] = f"fp32 ({speed.weights} storage applies on CUDA only)"
    if components.device.type == "cpu" and speed.weights == "bf16":
        applied["weights"] = "bf16 (CPU: transformer and text encoder in bf16, VAE decode under bf16 autocast)"
    if memory["weights"] == "fp8" and cuda:
        import torch

        for tr in _experts(components, family):  # every expert (Wan 2.2 A14B has two)
            tr.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        applied["weights"] = "fp8 (layerwise casting)"
    if memory["offload"] != "none":
        applied["offload"] = apply_offload(components, memory["offload"])
    if memory["vae_tiling"]:
        components.vae.enable_tiling()
        applied["vae_tiling"] = True
    return memory


def _check_fused(components, family) -> bool:
    """True, or BackendError with every reason `fused_kernels = "on"` cannot run for these components."""
    from reel.kernels.attention import BackendError
    from reel.kernels.wan_fused import fused_reasons

    reasons = fused_reasons(components.device)
    if family is None or not family.fused_kernels:
        reasons.append(f"the fused kernels cover Wan transformers, not {family.name if family else 'this'} ones")
    if reasons:
        raise BackendError("fused_kernels = on cannot run here: " + "; ".join(reasons))
    return True


def _cpu_fast_paths_on(components, speed: SpeedConfig, family) -> bool:
    """Whether `cpu_fast_paths` asks for them here: auto on a CPU render of a family they cover, on anywhere."""
    covered = family is not None and family.cpu_fast_paths
    if speed.cpu_fast_paths == "on" and not covered:
        from reel.kernels.attention import BackendError

        raise BackendError(f"cpu_fast_paths = on cannot run here: they cover Wan models, not "
                           f"{family.name if family else 'this'} ones")
    return covered and (speed.cpu_fast_paths == "on" or
                        (speed.cpu_fast_paths == "auto" and components.device.type == "cpu"))


def apply_cpu_fast_paths(components, family) -> dict:
    """The CPU fast paths on a loaded model of a family with `cpu_fast_paths`: hooks on the VAE's channel norms
    (kernels/channel_norm.py) and a processor on every expert's self-attention (kernels/wan_cpu.py). Same values
    as diffusers' modules within a few fp32 ulps. Returns how many modules each changed (for the manifest)."""
    from reel.kernels.channel_norm import apply_fast_vae_norms
    from reel.kernels.wan_cpu import apply_cpu_attention
    from reel.models.family import family_module

    experts = family_module(family).experts(components).values()
    return {"vae_norms": apply_fast_vae_norms(components.vae),
            "self_attention": sum(apply_cpu_attention(tr) for tr in experts)}


def remove_cpu_fast_paths(components, family) -> dict:
    """Take the CPU fast paths off again: diffusers' own modules, exactly; returns how many modules each restored."""
    from reel.kernels.channel_norm import remove_fast_vae_norms
    from reel.kernels.wan_cpu import remove_cpu_attention
    from reel.models.family import family_module

    experts = family_module(family).experts(components).values()
    return {"vae_norms": remove_fast_vae_norms(components.vae),
            "self_attention": sum(remove_cpu_attention(tr) for tr in experts)}


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


# transformer -> the First-Block-Cache threshold reel enabled on it (diffusers has no public getter for the config)
_STEP_CACHE_THRESHOLD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def step_cache_session(transformer, speed: SpeedConfig):
    """Enable First-Block-Cache for one trajectory (state reset at start); yields `context(step, total, cfg)`
    returning the cache context to run each model call in (a no-op context when the cache is off).

    diffusers' public CacheMixin API only: enable_cache, disable_cache, is_cache_enabled, cache_context. The cache
    stays enabled between trajectories with the same threshold (its hooks stay in place); its state is reset at
    the start and end of each (`reset_step_cache`)."""
    from diffusers.models.cache_utils import CacheMixin

    enabled = isinstance(transformer, CacheMixin) and transformer.is_cache_enabled
    if speed.step_cache is None:
        if enabled:  # an earlier cached render on this engine
            transformer.disable_cache()
            _STEP_CACHE_THRESHOLD.pop(transformer, None)
        yield lambda step, total, batched_cfg: contextlib.nullcontext()
        return
    from diffusers.hooks import FirstBlockCacheConfig

    if enabled and _STEP_CACHE_THRESHOLD.get(transformer) != speed.step_cache:  # another threshold, or not ours
        transformer.disable_cache()
    if not transformer.is_cache_enabled:
        transformer.enable_cache(FirstBlockCacheConfig(threshold=speed.step_cache))
        _STEP_CACHE_THRESHOLD[transformer] = speed.step_cache
    reset_step_cache(transformer)
    try:
        yield lambda step, total, batched_cfg: transformer.cache_context(
            "cfg" if batched_cfg else "cond", step_index=step, num_inference_steps=total)
    finally:
        reset_step_cache(transformer)


def reset_step_cache(transformer) -> None:
    """Forget the residuals First-Block-Cache kept from the last trajectory, so each trajectory is deterministic.

    diffusers offers this only as the private `CacheMixin._reset_stateful_cache()`; this is its body, through the
    public HookRegistry API. tests/engine/test_speed.py (two cached trajectories in a row) covers it."""
    from diffusers.hooks import HookRegistry

    HookRegistry.check_if_exists_or_initialize(transformer).reset_stateful_hooks(recurse=True)


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
    one = estimate_shot(model, gpu, job.width, job.height, job.frames, job.steps, job.guidance, window=job.window,
                        overlap=job.overlap).memory  # a long shot holds one window
    weights = one["peak"] - max(one["transformer activations"], one["VAE decode"])
    per_shot = max(one["transformer activations"], one["VAE decode"])
    return max(1, min(cap, int((free * 0.9 - weights) // max(per_shot, 1))))
