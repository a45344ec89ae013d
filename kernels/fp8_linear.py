"""fp8 matmuls for the linear layers of a transformer's repeated blocks, as removable module swaps (lossy, opt-in).

    reasons = fp8_reasons(device, dtype)       # every reason it cannot run here (empty: it can)
    counts = apply_fp8_linear(transformer)     # {"layers": swapped, "skipped": shapes _scaled_mm cannot take}
    remove_fp8_linear(transformer)             # the model's own nn.Linear objects back in their places, exactly

Each nn.Linear inside a block named in diffusers' `_repeated_blocks` (attention projections, feed-forward; not
the embedders or the output head) is replaced in its parent by an `Fp8Linear` (as peft swaps in its LoRA
layers): an nn.Linear subclass that shares the original's weight and bias Parameters (state_dict keys, LoRA
loading, offloading and .to() see the model's own weights), holds a reference to the original module (not a
child) to put back on removal, and keeps the weight quantised once, at apply time, to float8_e4m3fn with one
scale per output row, as non-persistent buffers (one byte per weight more). Each call quantises the activations
per token (row-wise amax) and runs `torch._scaled_mm(x_fp8, w_fp8.t(), scale_a=(M, 1), scale_b=(1, N))` with the
bias. Layers whose in/out features are not multiples of 16 (what _scaled_mm takes) keep their own matmul and are
counted as skipped.

Why a module and not a hook: a hook puts a per-instance `forward` on every Linear, and torch.compile guards on
each one's identity, so regional compile (kernels/regional_compile.py) would build one graph per block instead
of one for all. Fp8Linear's forward is its class's, its tensors are module state: every block shares one graph
(tests/kernels/test_fp8_regional_compile.py). The quantised weight and its scales are stored as integer views
(uint8, int32) so that a dtype cast of the model (`.to(torch.bfloat16)`, diffusers' layerwise casting, which
casts every floating-point buffer) cannot touch them; the forward views them back.

On CUDA this needs fp8 tensor cores (compute capability >= 8.9: Ada, Hopper) and a torch whose row-wise scaled
_scaled_mm covers the GPU. Row-wise scaling there has a bf16 output only, so a CUDA call whose input is not bf16
(an fp32 activation inside a bf16 model) runs in bf16 and is cast back to the input's dtype. On the CPU torch
runs _scaled_mm too, slowly (no fp8 units): that is for tests of the numbers, not for speed.
tests/kernels/test_fp8_linear.py measures the error of a tiny Wan transformer forward with it on and off.
"""

from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8_e4m3fn
# Row-wise scaled _scaled_mm on CUDA: Hopper (SM 9.0) since torch 2.4 (pytorch/pytorch#125204, May 2024); Ada
# (SM 8.9) since torch 2.7 (pytorch/pytorch#144348 and #145676, landed January 2025, after the 2.6 branch cut;
# inferred from the pull requests' dates, not confirmed in release notes). Other GPUs: not checked here.
SM89_ROWWISE_TORCH = (2, 7)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> (x_fp8 (M, K), scale (M, 1) fp32) with x ~= x_fp8 * scale, one scale per row (amax / 448)."""
    scale = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / FP8_MAX  # (M, 1)
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)  # (M, K)
    return q, scale


class Fp8Linear(torch.nn.Linear):
    """An nn.Linear whose matmul is a row-wise scaled fp8 `_scaled_mm`; the weight quantised once, here.

    `original`: the nn.Linear it replaces (a plain attribute, not a child module: state_dict and .modules() see
    only this layer, whose `weight` and `bias` are the original's own Parameters)."""

    def __init__(self, linear: torch.nn.Linear):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_parameter("weight", linear.weight)  # (N, K), the same Parameter object
        self.register_parameter("bias", linear.bias)  # (N,) or None, the same Parameter object
        object.__setattr__(self, "original", linear)
        w_fp8, w_scale = quantize_rows(linear.weight.detach())  # (N, K), (N, 1)
        self.register_buffer("w_bits", w_fp8.view(torch.uint8), persistent=False)  # (N, K) fp8 bits
        self.register_buffer("scale_bits", w_scale.t().contiguous().view(torch.int32), persistent=False)  # (1, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, dtype = x.shape[:-1], x.dtype
        out_dtype = torch.bfloat16 if x.is_cuda else dtype  # CUDA row-wise scaling outputs bf16 only
        x_fp8, x_scale = quantize_rows(x.reshape(-1, x.shape[-1]))  # (M, K), (M, 1)
        bias = self.bias.to(out_dtype) if self.bias is not None else None
        y = torch._scaled_mm(x_fp8, self.w_bits.view(FP8).t(), scale_a=x_scale,
                             scale_b=self.scale_bits.view(torch.float32), bias=bias, out_dtype=out_dtype)  # (M, N)
        return y.to(dtype).reshape(*lead, y.shape[-1])  # (..., N)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", fp8 row-wise scaled"


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
            reasons += _gpu_reasons(torch.cuda.get_device_capability(device))
    elif device.type != "cpu":
        reasons.append(f"runs on CUDA (compute capability >= 8.9) or, slowly, the CPU, not {device.type}")
    return reasons


def _gpu_reasons(cap: tuple[int, int], version=None) -> list[str]:
    """What the GPU (compute capability `cap`) and torch (`version`, default this one) lack for row-wise fp8."""
    version = torch.torch_version.TorchVersion(version or torch.__version__)
    if cap < (8, 9):
        return [f"needs fp8 tensor cores, compute capability >= 8.9 (Ada, Hopper; GPU has {cap[0]}.{cap[1]})"]
    if cap == (8, 9) and version < SM89_ROWWISE_TORCH:
        return [f"row-wise scaled fp8 matmuls on compute capability 8.9 (Ada) need torch >= 2.7 (this torch: "
                f"{version}; pytorch/pytorch#144348 added them)"]
    return []


def _block_linears(transformer: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Linear]]:
    """(parent, attribute name, nn.Linear) for every linear layer inside a repeated block, peft's LoRA
    matrices (lora_A, lora_B, ...) left out."""
    names = tuple(getattr(transformer, "_repeated_blocks", None) or ())
    found = []
    for block in (m for m in transformer.modules() if type(m).__name__ in names):
        for path, parent in block.named_modules():
            if any(part.startswith("lora_") for part in path.split(".")):
                continue
            found += [(parent, name, child) for name, child in parent.named_children()
                      if isinstance(child, torch.nn.Linear) and not name.startswith("lora_")]
    return found


def _fits(linear: torch.nn.Linear) -> bool:
    return linear.in_features % 16 == 0 and linear.out_features % 16 == 0


def apply_fp8_linear(transformer: torch.nn.Module) -> dict[str, int]:
    """Swap every linear layer of `transformer`'s repeated blocks whose shape _scaled_mm takes for an Fp8Linear;
    returns {"layers": how many were swapped now, "skipped": how many keep their own matmul (features not
    multiples of 16)}. Layers swapped already stay as they are. A transformer without `_repeated_blocks` has no
    layers to swap (both 0)."""
    layers = skipped = 0
    for parent, name, linear in _block_linears(transformer):
        if isinstance(linear, Fp8Linear):
            continue
        if not _fits(linear):
            skipped += 1
            continue
        setattr(parent, name, Fp8Linear(linear))
        layers += 1
    return {"layers": layers, "skipped": skipped}


def remove_fp8_linear(transformer: torch.nn.Module) -> int:
    """Put every original nn.Linear back where an Fp8Linear replaced it (also under a peft LoRA layer that wrapped
    it since); returns how many. The originals get the swapped layers' current weight and bias Parameters (the
    same objects unless something replaced them meanwhile)."""
    swapped = [(parent, name, child) for parent in transformer.modules()
               for name, child in parent.named_children() if isinstance(child, Fp8Linear)]
    for parent, name, child in swapped:
        original = child.original
        if original.weight is not child.weight:
            original.weight = child.weight
        if original.bias is not child.bias:
            original.bias = child.bias
        setattr(parent, name, original)
    return len(swapped)
