"""Wan's adaLN modulation, fused: LayerNorm (no affine) then `* (1 + scale) + shift`, and the gated
residual `x + y * gate`. Torch references (exactly the diffusers WanTransformerBlock math) and Triton
kernels (one program per token row).

    h = ln_modulate_reference(x, shift, scale, eps)     # x (B, S, D); shift, scale (B, 1, D) or (B, S, D)
    x = gated_residual_reference(x, y, gate)            # gate broadcast like shift
"""

from __future__ import annotations

import functools

import torch


def ln_modulate_reference(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()  # (B, S, D)
    normed = torch.nn.functional.layer_norm(xf, (x.shape[-1],), eps=eps)
    return (normed * (1 + scale.float()) + shift.float()).to(x.dtype)


def gated_residual_reference(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return (x.float() + y.float() * gate.float()).to(x.dtype)


@functools.cache
def _kernels():
    """Built once per process: a new @triton.jit function per call would recompile on every op."""
    import triton
    import triton.language as tl

    @triton.jit
    def ln_modulate_kernel(x_ptr, shift_ptr, scale_ptr, y_ptr, s, d, mod_rows, per_token, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0)  # row = b * s + token
        b = row // s
        token = row % s
        cols = tl.arange(0, BLOCK)
        mask = cols < d
        x = tl.load(x_ptr + row * d + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / d
        xc = tl.where(mask, x - mean, 0.0)
        inv = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / d + eps)
        mod_off = (b * mod_rows + token * per_token) * d
        sh = tl.load(shift_ptr + mod_off + cols, mask=mask, other=0.0).to(tl.float32)
        sc = tl.load(scale_ptr + mod_off + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * d + cols, (xc * inv * (1.0 + sc) + sh).to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def gated_kernel(x_ptr, y_ptr, gate_ptr, o_ptr, s, d, mod_rows, per_token, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        b = row // s
        token = row % s
        cols = tl.arange(0, BLOCK)
        mask = cols < d
        x = tl.load(x_ptr + row * d + cols, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + row * d + cols, mask=mask, other=0.0).to(tl.float32)
        mod_off = (b * mod_rows + token * per_token) * d
        g = tl.load(gate_ptr + mod_off + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(o_ptr + row * d + cols, (x + y * g).to(o_ptr.dtype.element_ty), mask=mask)

    return triton, ln_modulate_kernel, gated_kernel


def _mod(t: torch.Tensor, b: int, s: int, d: int) -> tuple[torch.Tensor, int]:
    """A modulation tensor as (B, 1 or S, D) contiguous, and 1 if it varies per token else 0."""
    t = t.expand(b, t.shape[1], d).contiguous()
    if t.shape[1] not in (1, s):
        raise ValueError(f"modulation has {t.shape[1]} rows; expected 1 or {s}")
    return t, int(t.shape[1] == s and s != 1)


def ln_modulate_triton(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    triton, kernel, _ = _kernels()
    b, s, d = x.shape
    shift, per_token = _mod(shift, b, s, d)
    scale, _ = _mod(scale, b, s, d)
    xc = x.contiguous()
    y = torch.empty_like(xc)
    kernel[(b * s,)](xc, shift, scale, y, s, d, shift.shape[1], per_token, eps, BLOCK=triton.next_power_of_2(d))
    return y


def gated_residual_triton(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    triton, _, kernel = _kernels()
    b, s, d = x.shape
    gate, per_token = _mod(gate, b, s, d)
    xc, yc = x.contiguous(), y.contiguous()
    out = torch.empty_like(xc)
    kernel[(b * s,)](xc, yc, gate, out, s, d, gate.shape[1], per_token, BLOCK=triton.next_power_of_2(d))
    return out
