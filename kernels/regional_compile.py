"""torch.compile as removable hooks: each repeated block ("regional"), the whole transformer ("full"), or the whole
transformer with CUDA graphs ("cuda-graphs"), so a compiled model comes back to eager exactly.

    reasons = compile_reasons("regional", transformer, device)   # every reason it cannot run (empty: it can)
    n = apply_compile(transformer, "regional")   # hooks on every block named in `_repeated_blocks`; returns how many
    ...                                          # the first call compiles (slow), later calls run the compiled graph
    compile_seconds(transformer)                 # seconds spent in calls that compiled a new graph (the warm-up)
    remove_compile(transformer)                  # the eager forward again, exactly

Regional: diffusers' models list their repeated block classes in `_repeated_blocks` (WanTransformer3DModel:
WanTransformerBlock). Each block gets a `CompiledForwardHook` in its HookRegistry (kernels/hooks.py) whose
new_forward runs the block's own forward through one torch.compile'd trampoline. Dynamo caches compiled code by
code object and guards on the inputs, not on which block instance runs, so every block of a model reuses one
graph (tests/kernels/test_regional_compile.py checks `unique_graphs == 1`): the compile cost is one block's, not
the model's. "full" puts the same hook on the transformer itself; "cuda-graphs" does that with
mode="reduce-overhead" (CUDA graphs: for small, launch-bound models on CUDA). Hooks below ours (fp8 matmuls,
fused kernels) are traced through, as they are what the forward calls.

Every compiled region shares the trampoline's code object, and dynamo keeps at most
torch._dynamo.config.recompile_limit graphs per code object: a process that compiles many different models
falls back to eager for the later ones (dynamo logs it).
"""

from __future__ import annotations

import importlib.util
import shutil
import time
import weakref

import torch
from diffusers.hooks import ModelHook

from reel.kernels.hooks import add_hook, remove_hook

COMPILE_HOOK = "reel_compile"
MODES = ("regional", "full", "cuda-graphs")
_TORCH_MODE = {"regional": None, "full": None, "cuda-graphs": "reduce-overhead"}
_COMPILED: dict[str, object] = {}  # torch.compile mode -> the compiled trampoline (built on first use)
_HOOKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # transformer -> [(module, hook)]


def _call(forward, *args, **kwargs):
    """What torch.compile traces: the hooked module's own forward, called with its arguments."""
    return forward(*args, **kwargs)


def _compiled(mode: str):
    key = _TORCH_MODE[mode] or "default"
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(_call, mode=_TORCH_MODE[mode])
    return _COMPILED[key]


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class CompiledForwardHook(ModelHook):
    """Runs the module's forward compiled. `seconds` sums the calls that compiled a new graph (dynamo's
    unique-graph count rose during the call): the warm-up a benchmark reports apart from the steady state."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        self.seconds = 0.0
        self.compiles = 0

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        before, t0 = _unique_graphs(), time.perf_counter()
        out = _compiled(self.mode)(self.fn_ref.original_forward, *args, **kwargs)
        if _unique_graphs() > before:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - t0
            self.compiles += 1
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
    for module in _regions(transformer, mode):
        hook = CompiledForwardHook(mode)
        if add_hook(module, hook, COMPILE_HOOK):
            hooked.append((module, hook))
            n += 1
    return n


def compile_seconds(transformer: torch.nn.Module) -> float:
    """Seconds the compiled regions of `transformer` spent in calls that compiled a graph (first calls and
    recompiles for new shapes), summed; 0.0 when nothing compiled (or nothing is hooked)."""
    return sum(hook.seconds for _, hook in _HOOKED.get(transformer, []))


def remove_compile(transformer: torch.nn.Module) -> int:
    """Take every compile hook off `transformer` and its blocks: the eager forward, exactly. Returns how many."""
    return sum(remove_hook(module, COMPILE_HOOK) for module, _ in _HOOKED.pop(transformer, []))
