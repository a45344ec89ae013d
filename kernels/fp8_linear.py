"""fp8 matmuls for the linear layers of a transformer's repeated blocks, as removable hooks (lossy, opt-in).

    reasons = fp8_reasons(device, dtype)       # every reason it cannot run here (empty: it can)
    counts = apply_fp8_linear(transformer)     # {"layers": hooked, "skipped": shapes _scaled_mm cannot take}
    remove_fp8_linear(transformer)             # the model's own linear layers again, exactly

Each nn.Linear inside a block named in diffusers' `_repeated_blocks` (attention projections, feed-forward; not
the embedders or the output head) gets an `Fp8LinearHook`: its weight is quantised once, at apply time, to
float8_e4m3fn with one scale per output row, kept in the hook (the module's own weight is untouched, so removal
is exact; the copy costs one byte per weight). Each call quantises the activations per token (row-wise amax)
and runs `torch._scaled_mm(x_fp8, w_fp8.t(), scale_a=(M, 1), scale_b=(1, N))` with the bias, in the
activations' dtype. Layers whose in/out features are not multiples of 16 (what _scaled_mm takes) keep their
own matmul and are counted as skipped.

On CUDA this needs fp8 tensor cores (compute capability >= 8.9: Ada, Hopper) and bf16 activations. On the
CPU torch runs _scaled_mm too, slowly (no fp8 units): that is for tests of the numbers, not for speed.
tests/kernels/test_fp8_linear.py measures the error of a tiny Wan transformer forward with it on and off.
"""

from __future__ import annotations

import torch
from diffusers.hooks import ModelHook

from reel.kernels.hooks import add_hook, remove_hook

FP8_HOOK = "reel_fp8_linear"
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> (x_fp8 (M, K), scale (M, 1) fp32) with x ~= x_fp8 * scale, one scale per row (amax / 448)."""
    scale = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / FP8_MAX  # (M, 1)
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)  # (M, K)
    return q, scale


class Fp8LinearHook(ModelHook):
    """nn.Linear.forward as a row-wise scaled fp8 matmul; the weight quantised once, here."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        w_fp8, w_scale = quantize_rows(weight.detach())  # (N, K), (N, 1)
        self.w_fp8, self.w_scale = w_fp8, w_scale.t().contiguous()  # (N, K), (1, N)

    def new_forward(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.w_fp8.device != x.device:  # the model moved since apply time (offload, .to())
            self.w_fp8, self.w_scale = self.w_fp8.to(x.device), self.w_scale.to(x.device)
        lead = x.shape[:-1]
        x_fp8, x_scale = quantize_rows(x.reshape(-1, x.shape[-1]))  # (M, K), (M, 1)
        bias = module.bias.to(x.dtype) if module.bias is not None else None
        y = torch._scaled_mm(x_fp8, self.w_fp8.t(), scale_a=x_scale, scale_b=self.w_scale, bias=bias,
                             out_dtype=x.dtype)  # (M, N)
        return y.reshape(*lead, y.shape[-1])  # (..., N)


def fp8_reasons(device: torch.device, dtype: torch.dtype, transformer: torch.nn.Module | None = None) -> list[str]:
    """Every reason fp8 matmuls cannot run on `device` for a model in `dtype` (and, given, in `transformer`'s
    repeated blocks); empty if they can."""
    reasons = []
    if transformer is not None and not getattr(transformer, "_repeated_blocks", None):
        reasons.append(f"{type(transformer).__name__} names no repeated blocks to put fp8 matmuls in")
    if not hasattr(torch, "_scaled_mm"):
        reasons.append(f"this torch ({torch.__version__}) has no torch._scaled_mm: install torch >= 2.5")
    if device.type == "cuda":
        if dtype != torch.bfloat16:
            reasons.append(f"needs bf16 activations on CUDA (row-wise scaled fp8 matmuls output bf16; model runs in "
                           f"{str(dtype).replace('torch.', '')})")
        if torch.cuda.is_available():
            cap = torch.cuda.get_device_capability(device)
            if cap < (8, 9):
                reasons.append(f"needs fp8 tensor cores, compute capability >= 8.9 (Ada, Hopper; GPU has "
                               f"{cap[0]}.{cap[1]})")
    elif device.type != "cpu":
        reasons.append(f"runs on CUDA (compute capability >= 8.9) or, slowly, the CPU, not {device.type}")
    return reasons


def _block_linears(transformer: torch.nn.Module) -> list[torch.nn.Linear]:
    names = tuple(getattr(transformer, "_repeated_blocks", None) or ())
    blocks = [m for m in transformer.modules() if type(m).__name__ in names]
    return [m for block in blocks for m in block.modules() if isinstance(m, torch.nn.Linear)]


def _fits(linear: torch.nn.Linear) -> bool:
    return linear.in_features % 16 == 0 and linear.out_features % 16 == 0


def apply_fp8_linear(transformer: torch.nn.Module) -> dict[str, int]:
    """Hook every linear layer of `transformer`'s repeated blocks whose shape _scaled_mm takes; returns
    {"layers": how many were hooked now, "skipped": how many keep their own matmul (features not multiples of 16)}.
    A transformer without `_repeated_blocks` has no layers to hook (both 0)."""
    linears = _block_linears(transformer)
    hooked = sum(add_hook(m, Fp8LinearHook(m.weight), FP8_HOOK) for m in linears if _fits(m))
    return {"layers": hooked, "skipped": sum(not _fits(m) for m in linears)}


def remove_fp8_linear(transformer: torch.nn.Module) -> int:
    """Take the fp8 hooks off again; returns how many layers had one."""
    return sum(remove_hook(m, FP8_HOOK) for m in _block_linears(transformer) if _fits(m))
