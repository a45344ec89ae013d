"""Which device a render or a training run uses, and in which dtype.

    device = pick_device("auto")      # CUDA when available, else the CPU; "cuda" without CUDA is a DeviceError
    dtype = compute_dtype(device)     # bf16 on CUDA, fp32 on the CPU (the VAE is always fp32)
"""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device that cannot be used here."""


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU. An explicit "cuda" without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: torch.cuda.is_available() is False here (CPU-only torch or no "
                          "NVIDIA driver) — use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise DeviceError(f"--device {name}: use auto, cpu, cuda or cuda:N")
    return torch.device(name)


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 for the transformer and text encoder on CUDA, fp32 on the CPU (the VAE is always fp32)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32
