"""torch.compile as removable hooks: each repeated block ("regional"), the whole transformer ("full"), or the whole
transformer with CUDA graphs ("cuda-graphs"), so a compiled model comes back to eager exactly.

    reasons = compile_reasons("regional", transformer, device)   # every reason it cannot run (empty: it can)
    n = apply_compile(transformer, "regional")   # hooks on every block named in `_repeated_blocks`; returns how many
    ...                                          # the first call compiles (slow), later calls run the compiled graph
    compile_seconds(transformer)                 # seconds spent in calls that compiled a new graph (the warm-up)
    compile_fallbacks(transformer)               # None, or why some regions ran eager (dynamo's recompile limit)
    remove_compile(transformer)                  # the eager forward again, exactly

Regional: diffusers' models list their repeated block classes in `_repeated_blocks` (WanTransformer3DModel:
WanTransformerBlock). Each block gets a `CompiledForwardHook` in its HookRegistry (kernels/hooks.py) whose
new_forward runs the block's own forward through a torch.compile'd trampoline (one per architecture). Dynamo
caches compiled code by code object and guards on the inputs, not on which block instance runs, so every block
of a model reuses one graph (tests/kernels/test_regional_compile.py checks `unique_graphs == 1`): the compile
cost is one block's, not the model's. "full" puts the same hook on the transformer itself; "cuda-graphs" does that with
mode="reduce-overhead" (CUDA graphs: for small, launch-bound models on CUDA). What the forward calls below our
hook (fused kernels, fp8 matmul modules) is traced through.

Graphs are shared per architecture, not per process: each (mode, transformer class, config) gets its own
trampoline, a copy of `_call` with its own code object, so dynamo's per-code-object cache and its
`torch._dynamo.config.recompile_limit` (default 8) count one architecture's graphs (shot sizes, batch sizes),
and a process that compiles several models does not run the later ones eager. Every block of a model, and
every expert of the same architecture (Wan 2.2 A14B), still shares one graph. What would make each block need
its own graph is a per-instance `forward` inside the block: hooks on its submodules. reel's fp8 matmuls are
module swaps for that reason (kernels/fp8_linear.py); diffusers' layerwise casting (`weights = "fp8"`) hooks
every Linear, so engine/accel.py never combines it with regional compile. If a trampoline still hits the limit,
dynamo runs the regions whose inputs match no compiled graph eager from then on: the hook sees dynamo's
counter rise, logs a warning and `compile_fallbacks(transformer)` says so (the engine records it in the
manifest's speed section).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
import types
import weakref

import torch
from diffusers.hooks import ModelHook

from reel.kernels.hooks import add_hook, remove_hook

COMPILE_HOOK = "reel_compile"
MODES = ("regional", "full", "cuda-graphs")
_TORCH_MODE = {"regional": None, "full": None, "cuda-graphs": "reduce-overhead"}
_TRAMPOLINES: dict[tuple, Trampoline] = {}  # (mode, class, config) -> its compiled trampoline (built on first use)
_HOOKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # transformer -> [(module, hook)]
log = logging.getLogger(__name__)


def _call(forward, *args, **kwargs):
    """What torch.compile traces: the hooked module's own forward, called with its arguments."""
    return forward(*args, **kwargs)


class Trampoline:
    """One architecture's compiled `_call` copy (its own code object, so its own dynamo cache and recompile
    limit) and whether dynamo gave up recompiling it (`limit_hit`: the limit then, None while it has not; once
    hit, later calls whose inputs match none of its graphs run eager)."""

    def __init__(self, mode: str, n: int):
        code = _call.__code__.replace(co_name=f"_call_{n}")
        self.compiled = torch.compile(types.FunctionType(code, _call.__globals__, code.co_name),
                                      mode=_TORCH_MODE[mode])
        self.limit_hit: int | None = None


def _trampoline(mode: str, transformer: torch.nn.Module) -> Trampoline:
    """The trampoline of `transformer`'s architecture: its class and config (diffusers' ModelMixin.config)."""
    config = getattr(transformer, "config", None)
    settings = sorted((k, v) for k, v in dict(config or {}).items() if not k.startswith("_"))  # not its path
    key = (mode, type(transformer).__qualname__, repr(settings))
    if key not in _TRAMPOLINES:
        _TRAMPOLINES[key] = Trampoline(mode, len(_TRAMPOLINES))
    return _TRAMPOLINES[key]


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _limit_hits() -> int:
    """How often dynamo gave up on a frame for its recompile limit (counters["unimplemented"]: "Dynamo recompile
    limit exceeded ... recompile_limit" in torch 2.13, "cache_size_limit reached" in older releases)."""
    from torch._dynamo.utils import counters

    return sum(n for what, n in counters["unimplemented"].items()
               if any(w in what.lower() for w in ("recompile limit", "recompile_limit", "cache_size_limit")))


def _recompile_limit() -> int:
    config = torch._dynamo.config
    return int(getattr(config, "recompile_limit", None) or config.cache_size_limit)  # the older name


class CompiledForwardHook(ModelHook):
    """Runs the module's forward through its architecture's trampoline. `seconds` sums the calls that compiled a
    new graph (dynamo's unique-graph count rose during the call): the warm-up a benchmark reports apart from the
    steady state."""

    def __init__(self, mode: str, trampoline: Trampoline):
        super().__init__()
        self.mode, self.trampoline = mode, trampoline
        self.seconds = 0.0
        self.compiles = 0

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        before, hits, t0 = _unique_graphs(), _limit_hits(), time.perf_counter()
        out = self.trampoline.compiled(self.fn_ref.original_forward, *args, **kwargs)
        if _unique_graphs() > before:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - t0
            self.compiles += 1
        if _limit_hits() > hits and self.trampoline.limit_hit is None:
            self.trampoline.limit_hit = _recompile_limit()
            log.warning("compile = %s: torch._dynamo hit its recompile limit (%s) for %s; regions whose inputs "
                        "match no compiled graph now run eager (TORCH_LOGS=recompiles says why)", self.mode,
                        self.trampoline.limit_hit, type(module).__name__)
        return out


def _block_classes(transformer: torch.nn.Module) -> tuple[str, ...]:
    return tuple(getattr(transformer, "_repeated_blocks", None) or ())


def _regions(transformer: torch.nn.Module, mode: str) -> list[torch.nn.Module]:
    if mode != "regional":
        return [transformer]
    names = _block_classes(transformer)
    return [m for m in transformer.modules() if type(m).__name__ in names]


def compile_reasons(mode: str, transformer: torch.nn.Module, device: torch.device) -> list[str]:
    """Every reason `[speed] compile = mode` cannot run for `transformer` on `device`; empty if it can."""
    if mode not in MODES:
        return [f"unknown compile mode {mode!r}: use one of {', '.join(MODES)}"]
    reasons = []
    if mode == "regional" and not _regions(transformer, mode):
        reasons.append(f"{type(transformer).__name__} names no repeated blocks (diffusers' `_repeated_blocks`): "
                       'use compile = "full"')
    if mode == "cuda-graphs" and device.type != "cuda":
        reasons.append(f"cuda-graphs needs a CUDA device (running on {device.type})")
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        reasons.append("torch.compile on CUDA needs triton (pip install triton)")
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        reasons.append("torch.compile on the CPU needs a C++ compiler (install g++ or clang)")
    return reasons


def apply_compile(transformer: torch.nn.Module, mode: str) -> int:
    """Hook `mode`'s regions of `transformer` (its repeated blocks, or itself) to run compiled; returns how many
    regions were hooked (0 if compiled already). Nothing compiles until the first forward call."""
    if mode not in MODES:
        raise ValueError(f"compile mode {mode!r}: use one of {', '.join(MODES)}")
    hooked = _HOOKED.setdefault(transformer, [])
    n = 0
    trampoline = _trampoline(mode, transformer)
    for module in _regions(transformer, mode):
        hook = CompiledForwardHook(mode, trampoline)
        if add_hook(module, hook, COMPILE_HOOK):
            hooked.append((module, hook))
            n += 1
    return n


def compile_seconds(transformer: torch.nn.Module) -> float:
    """Seconds the compiled regions of `transformer` spent in calls that compiled a graph (first calls and
    recompiles for new shapes), summed; 0.0 when nothing compiled (or nothing is hooked)."""
    return sum(hook.seconds for _, hook in _HOOKED.get(transformer, []))


def compile_fallbacks(transformer: torch.nn.Module) -> str | None:
    """None, or what went eager: dynamo hit its recompile limit for the trampoline `transformer`'s compiled
    regions run through, so from then on a region whose inputs match none of its graphs runs eager."""
    hit = {(hook.mode, hook.trampoline.limit_hit) for _, hook in _HOOKED.get(transformer, [])
           if hook.trampoline.limit_hit is not None}
    if not hit:
        return None
    (mode, limit), *_ = sorted(hit)
    return (f"compile = {mode}: torch._dynamo hit its recompile limit ({limit}); regions whose inputs match no "
            f"compiled graph run eager "
            f"(TORCH_LOGS=recompiles says why; raise torch._dynamo.config.recompile_limit if the shapes are many)")


def remove_compile(transformer: torch.nn.Module) -> int:
    """Take every compile hook off `transformer` and its blocks: the eager forward, exactly. Returns how many."""
    return sum(remove_hook(module, COMPILE_HOOK) for module, _ in _HOOKED.pop(transformer, []))
