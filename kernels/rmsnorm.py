"""RMSNorm over the last dimension: the torch reference and a fused Triton kernel (one program per row).

    y = rms_norm_reference(x, weight, eps)   # any device
    y = rms_norm_triton(x, weight, eps)      # CUDA (or the CPU under TRITON_INTERPRET=1, for tests)

Matches torch.nn.RMSNorm (used for Wan's q/k norms): y = x / sqrt(mean(x^2) + eps) * weight, computed in
fp32 and returned in x's dtype.
"""

from __future__ import annotations

import functools

import torch


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    xf = x.float()  # (..., D)
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    return y.to(x.dtype)


@functools.cache
def _kernel():
    """Built once per process: a new @triton.jit function per call would recompile on every op."""
    import triton
    import triton.language as tl

    @triton.jit
    def rms_norm_kernel(x_ptr, w_ptr, y_ptr, d, eps, HAS_W: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < d
        x = tl.load(x_ptr + row * d + cols, mask=mask, other=0.0).to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / d + eps)
        y = x * inv
        if HAS_W:
            y = y * tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * d + cols, y.to(y_ptr.dtype.element_ty), mask=mask)

    return triton, rms_norm_kernel


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    triton, kernel = _kernel()
    d = x.shape[-1]
    x2 = x.contiguous().view(-1, d)  # (rows, D)
    y = torch.empty_like(x2)
    w = weight.contiguous() if weight is not None else x2  # unused when HAS_W is False
    kernel[(x2.shape[0],)](x2, w, y, d, eps, HAS_W=weight is not None, BLOCK=triton.next_power_of_2(d))
    return y.view_as(x)
