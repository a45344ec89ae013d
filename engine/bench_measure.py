"""What `reel bench` measures besides wall time: device syncs around timed regions, peak memory, the device's
own matmul peak, the FLOPs of one denoising step and the PSNR between two clips.

    with PeakMemory(device) as mem: ...          # mem.bytes: peak allocated (CUDA) or peak RSS growth (CPU)
    peak = matmul_peak_tflops(device, dtype)     # this device's measured dense matmul rate, TFLOP/s
    flops = step_flops(model_info, job)          # one denoising step (CFG rows included), from the meta device
    db = psnr(frames_a, frames_b)                # uint8 (F, H, W, 3) against (F, H, W, 3); 99 when identical

Everything here may synchronise the device: it measures, it never runs inside a render.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a timestamp after it means the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of a block, as if what ran in it were alone on the device: on CUDA `resident` (that side's own
    weights, module_bytes) plus the allocator's peak above what was allocated on entry (other sides' weights stay
    out); on the CPU the peak growth of this process's resident set, sampled every 5 ms. `kind` says which."""

    def __init__(self, device: torch.device, resident: int = 0):
        self.device = device
        self.kind = "VRAM" if device.type == "cuda" else "RSS growth"
        self.resident = resident
        self.bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._entry = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        self._proc = psutil.Process()
        self._base = self._peak = self._proc.memory_info().rss
        self._running = True
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while self._running:
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.bytes = self.resident + torch.cuda.max_memory_allocated(self.device) - self._entry
            return
        self._running = False
        self._thread.join()
        self.bytes = max(0, self._peak - self._base)


def module_bytes(modules) -> int:
    """Bytes of the parameters and buffers of `modules` (each counted once, shared tensors too)."""
    seen, total = set(), 0
    for module in modules:
        for t in (*module.parameters(), *module.buffers()):
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return total


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 10) -> float:
    """This device's measured dense matmul rate in TFLOP/s: the best of `repeats` (n x n) @ (n x n) products in
    `dtype` after a warm-up (n = 8192 on CUDA, 1024 on the CPU). The share of it a step reaches is its MFU."""
    n = n or (8192 if device.type == "cuda" else 1024)
    gen = torch.Generator("cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)  # (n, n)
    b = torch.randn(n, n, generator=gen).to(device, dtype)  # (n, n)
    for _ in range(3):
        torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def step_flops(model, width: int, height: int, frames: int, guidance: float, max_sequence_length: int) -> float:
    """FLOPs of one denoising step of one shot at this size (the transformer forward, cond and uncond rows where the
    family runs classifier-free guidance), counted on the meta device from the folder's own configs
    (engine/estimate.py); experts of a two-expert model are the same size, so one forward stands for either."""
    from reel.engine.estimate import estimate_step

    path = model.path
    transformer = json.loads((path / "transformer" / "config.json").read_text())
    vae = json.loads((path / "vae" / "config.json").read_text())
    index = json.loads((path / "model_index.json").read_text())
    cfg = guidance > 1.0 and model.family.guidance == "cfg"
    step = estimate_step(transformer, model.family.name, width, height, frames, 1, cfg,
                         vae_config={"_class_name": vae["_class_name"], "config": vae},
                         text_len=max_sequence_length, expand_timesteps=bool(index.get("expand_timesteps")))
    return float(step.flops)


def psnr(ours: np.ndarray, theirs: np.ndarray) -> float:
    """PSNR in dB of two uint8-range clips of one shape; 99.0 when they are identical."""
    if ours.shape != theirs.shape:
        raise ValueError(f"clips differ in shape: {ours.shape} vs {theirs.shape}")
    mse = float(np.mean((ours.astype(np.float64) - theirs.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))
