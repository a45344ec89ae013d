"""Wan's rotary embedding apply (interleaved pairs), fused: the torch reference (diffusers'
WanAttnProcessor math) and a Triton kernel (one program per (token, head) row).

    q = rotary_reference(q, cos, sin)   # q (B, S, H, Dh); cos, sin (1, S, 1, Dh) as WanRotaryPosEmbed returns
    q = rotary_complex(q, cos, sin)     # the same as one complex multiply: vectorises on the CPU
"""

from __future__ import annotations

import functools

import torch


def rotary_reference(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (B, S, H, Dh/2) each
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def rotary_complex(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """rotary_reference as a complex multiply (pairs (x1, x2) as x1 + i x2 times cos + i sin), in fp32.

    The reference's strided half-writes do not vectorise on the CPU; this does (render timings:
    benchmarks/RESULTS.md) and rounds the same way: fp32 math, one cast back to x's dtype."""
    z = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())  # (B, S, H, Dh/2) complex64
    f = torch.complex(freqs_cos[..., 0::2].float(), freqs_sin[..., 1::2].float())  # (1, S, 1, Dh/2)
    return torch.view_as_real(z * f).flatten(-2).to(x.dtype)  # (B, S, H, Dh)


@functools.cache
def _kernel():
    """Built once per process: a new @triton.jit function per call would recompile on every op."""
    import triton
    import triton.language as tl

    @triton.jit
    def rotary_kernel(x_ptr, cos_ptr, sin_ptr, o_ptr, s, h, half, BLOCK: tl.constexpr):
        row = tl.program_id(0)  # row = (b * s + token) * h + head
        token = (row // h) % s
        i = tl.arange(0, BLOCK)
        mask = i < half
        base = row * 2 * half
        x1 = tl.load(x_ptr + base + 2 * i, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x_ptr + base + 2 * i + 1, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(cos_ptr + token * 2 * half + 2 * i, mask=mask, other=0.0).to(tl.float32)
        sn = tl.load(sin_ptr + token * 2 * half + 2 * i + 1, mask=mask, other=0.0).to(tl.float32)
        tl.store(o_ptr + base + 2 * i, (x1 * c - x2 * sn).to(o_ptr.dtype.element_ty), mask=mask)
        tl.store(o_ptr + base + 2 * i + 1, (x1 * sn + x2 * c).to(o_ptr.dtype.element_ty), mask=mask)

    return triton, rotary_kernel


def rotary_triton(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    triton, kernel = _kernel()
    b, s, h, dh = x.shape
    xc = x.contiguous()
    cos = freqs_cos.reshape(s, dh).to(x.device).contiguous()  # (S, Dh): one row per token
    sin = freqs_sin.reshape(s, dh).to(x.device).contiguous()
    out = torch.empty_like(xc)
    kernel[(b * s * h,)](xc, cos, sin, out, s, h, dh // 2, BLOCK=triton.next_power_of_2(dh // 2))
    return out
