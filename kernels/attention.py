"""Attention backends: a registry of names, each with a `validate()` that returns every reason it
cannot run here (vLLM's selector pattern). The kernels themselves are diffusers' attention dispatcher
backends; reel picks one and says why the others were passed over.

    name, passed_over = select_backend("auto", device, dtype, head_dim)   # sdpa, and why the others were not
    name, _ = select_backend("auto", device, dtype, head_dim, prefer="cudnn")  # a measured winner, if it runs
    select_backend("flash-attn", ..., transformer=t)   # forced: BackendError listing every reason it can't run
    apply_backend(transformer, name)    # route every attention layer through it
    remove_backend(transformer)         # diffusers' default (sdpa) again

"auto" is sdpa unless the caller passes `prefer`: the backend a recorded GPU measurement showed faster
(engine/measured.py reads engine/measured_speedups.json; kernels never guess an order). `lossy` backends
(sageattention: 8-bit QK) are never preferred by auto, only used when asked for by name. No probing happens
at import time.

Attention masks: diffusers' flash-attn (2 and 3) and SageAttention backends raise on an attention mask, and some
transformers always pass one (MASKED_ATTENTION, by class name, kept here beside the backends it concerns).
Given the transformer, validate() says so before a render starts rather than in its first step.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch

HALF = (torch.float16, torch.bfloat16)


class BackendError(ValueError):
    """A forced backend that cannot run; the message lists every reason."""


@dataclass(frozen=True)
class Backend:
    name: str  # reel's name (CLI / spec)
    diffusers_name: str  # diffusers.models.attention_dispatch.AttentionBackendName value
    package: str | None  # import name that must be installed
    install: str  # what to install
    checks: tuple[Callable[[torch.device, torch.dtype, int], str | None], ...] = ()
    lossy: bool = False  # changes the numbers beyond rounding: never chosen by "auto"
    masks: bool = True  # diffusers' function for it takes an attention mask (flash-attn, flash3, sage: no)

    def validate(self, device: torch.device, dtype: torch.dtype, head_dim: int,
                 transformer: torch.nn.Module | None = None) -> list[str]:
        """Every reason this backend cannot run for (device, dtype, head_dim) and, given, `transformer`; empty if
        it can."""
        reasons = []
        if self.package and importlib.util.find_spec(self.package) is None:
            reasons.append(f"{self.package} is not installed ({self.install})")
        reasons += [r for check in self.checks if (r := check(device, dtype, head_dim))]
        masked = MASKED_ATTENTION.get(type(transformer).__name__) if transformer is not None else None
        if masked and not self.masks:
            reasons.append(f"diffusers' {self.name} backend takes no attention mask, and {type(transformer).__name__}"
                           f" passes one ({masked}): use sdpa, cudnn or xformers")
        return reasons


def _needs_cuda(device, dtype, head_dim):
    return None if device.type == "cuda" else f"needs a CUDA device (running on {device.type})"


def _needs_half(device, dtype, head_dim):
    return None if dtype in HALF else f"needs fp16 or bf16 (model runs in {str(dtype).replace('torch.', '')})"


def _head_dim_at_most(limit: int):
    def check(device, dtype, head_dim):
        return None if head_dim <= limit and head_dim % 8 == 0 else \
            f"head size {head_dim} unsupported (multiple of 8, at most {limit})"
    return check


def _sm_at_least(major: int):
    def check(device, dtype, head_dim):
        if device.type != "cuda" or not torch.cuda.is_available():
            return None  # the CUDA check already said so
        cap = torch.cuda.get_device_capability(device)
        return None if cap[0] >= major else f"needs compute capability >= {major}.0 (GPU has {cap[0]}.{cap[1]})"
    return check


def _sm_is(major: int, minor: int, what: str):
    def check(device, dtype, head_dim):
        if device.type != "cuda" or not torch.cuda.is_available():
            return None  # the CUDA check already said so
        cap = torch.cuda.get_device_capability(device)
        return None if cap == (major, minor) else \
            f"needs {what}, compute capability {major}.{minor} (GPU has {cap[0]}.{cap[1]})"
    return check


def _needs_cudnn(device, dtype, head_dim):
    if device.type != "cuda" or not torch.cuda.is_available():
        return None  # the CUDA check already said so
    return None if torch.backends.cudnn.is_available() else "needs cuDNN (this torch build has none)"


def _diffusers_flash3(device, dtype, head_dim):
    """diffusers' own test for its _flash_3 backend, so that validate() and diffusers agree: the `flash_attn_3`
    package with its distribution metadata (diffusers.utils.is_flash_attn_3_available), then attention_dispatch's
    import of `flash_attn_interface` (the Backend's `package`, checked before this)."""
    from diffusers.utils import is_flash_attn_3_available

    if not is_flash_attn_3_available():
        return "diffusers finds no flash_attn_3 package (it enables its _flash_3 backend only with one)"
    if importlib.util.find_spec("flash_attn_interface") is None:
        return None  # said already
    from diffusers.models import attention_dispatch

    if not getattr(attention_dispatch, "_CAN_USE_FLASH_ATTN_3", True):
        return "flash_attn_3 is installed but diffusers could not import flash_attn_interface (see its warning)"
    return None


def _sage_head_dim(device, dtype, head_dim):
    return None if head_dim in (64, 96, 128) else f"head size {head_dim} unsupported (64, 96 or 128)"


FLASH3_INSTALL = ("build FlashAttention-3 from github.com/Dao-AILab/flash-attention, folder hopper/: `cd hopper && "
                  "python setup.py install` installs the flash_attn_3 package diffusers checks for and "
                  "flash_attn_interface")
# transformer classes whose attention always gets a mask (text padding), and which mask it is
MASKED_ATTENTION = {
    "LTXVideoTransformer3DModel": "the prompt's padding mask in cross-attention",
    "HunyuanVideoTransformer3DModel": "the prompt's padding mask in joint attention",
}

BACKENDS: dict[str, Backend] = {
    "flash-attn": Backend("flash-attn", "flash", "flash_attn", "pip install flash-attn",
                          (_needs_cuda, _needs_half, _head_dim_at_most(256), _sm_at_least(8)), masks=False),
    "xformers": Backend("xformers", "xformers", "xformers", "pip install 'reel[cuda]'",
                        (_needs_cuda, _needs_half, _head_dim_at_most(256))),
    "sageattention": Backend("sageattention", "sage", "sageattention", "pip install sageattention",
                             (_needs_cuda, _needs_half, _sage_head_dim, _sm_at_least(8)), lossy=True, masks=False),
    # torch's SDPA with its cuDNN kernel (no extra package); head sizes above 128 are left to sdpa
    "cudnn": Backend("cudnn", "_native_cudnn", None, "built into torch (CUDA builds)",
                     (_needs_cuda, _needs_half, _head_dim_at_most(128), _sm_at_least(8), _needs_cudnn)),
    # FlashAttention-3, Hopper only (no wheel on PyPI): its flash_attn_interface module, and diffusers' own check
    "flash3": Backend("flash3", "_flash_3", "flash_attn_interface", FLASH3_INSTALL,
                      (_diffusers_flash3, _needs_cuda, _needs_half, _head_dim_at_most(256),
                       _sm_is(9, 0, "a Hopper GPU (H100/H200)")), masks=False),
    "sdpa": Backend("sdpa", "native", None, "built into torch"),
}


def select_backend(requested: str, device: torch.device, dtype: torch.dtype, head_dim: int,
                   prefer: str | None = None, transformer: torch.nn.Module | None = None
                   ) -> tuple[str, dict[str, list[str]]]:
    """(chosen backend name, {backend passed over: its reasons}).

    `requested`: "auto" or a name in BACKENDS. A named backend runs or raises BackendError with every reason it
    cannot. "auto" is `prefer` when that backend can run and is not lossy, else sdpa; `prefer` is for a caller
    that has a measurement showing that backend faster on this GPU (engine/accel.py). `transformer`: the model
    it is for (backends without mask support are refused for one that passes masks)."""
    if requested != "auto" and requested not in BACKENDS:
        raise BackendError(f"--attention {requested}: unknown backend — use auto or one of {', '.join(BACKENDS)}")
    if requested != "auto":
        reasons = BACKENDS[requested].validate(device, dtype, head_dim, transformer)
        if reasons:
            raise BackendError(f"--attention {requested} cannot run here: " + "; ".join(reasons))
        return requested, {}
    if prefer is not None and prefer not in BACKENDS:
        raise BackendError(f"prefer={prefer!r}: unknown backend — one of {', '.join(BACKENDS)}")
    reasons = {name: backend.validate(device, dtype, head_dim, transformer) for name, backend in BACKENDS.items()}
    chosen = prefer if prefer and not reasons[prefer] and not BACKENDS[prefer].lossy else "sdpa"
    passed = {}
    for name, why in reasons.items():
        if name != chosen:
            passed[name] = why or (["lossy: used only when asked for by name"] if BACKENDS[name].lossy else
                                   ["no recorded measurement shows it faster here (auto uses sdpa unless one does)"])
    return chosen, passed


def apply_backend(transformer: torch.nn.Module, name: str) -> None:
    """Route the transformer's attention through the chosen backend (sdpa is diffusers' default); removable
    with remove_backend. Only this model's attention processors change: diffusers' set_attention_backend also
    makes the backend the process-wide default, which is put back at once, so other models stay on theirs."""
    if name == "sdpa":
        return
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    default = _AttentionBackendRegistry.get_active_backend()[0]
    try:
        transformer.set_attention_backend(BACKENDS[name].diffusers_name)
    finally:
        _AttentionBackendRegistry.set_active_backend(default)


def remove_backend(transformer: torch.nn.Module) -> None:
    """Undo apply_backend: every attention processor of `transformer` back on diffusers' default backend
    (diffusers' ModelMixin.reset_attention_backend)."""
    transformer.reset_attention_backend()
