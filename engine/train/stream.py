"""The training sample stream: which item, and which random numbers, each micro-step of a training run uses.

Both are pure functions of (seed, step, micro), so a resumed run draws exactly what an uninterrupted one would.

    g = step_generator(cfg.seed, step, micro)          # the micro-step's CPU generator
    item = sample_index(cfg.seed, k, n)                 # the k-th sample of n items
"""

from __future__ import annotations

import torch


def step_generator(seed: int, step: int, micro: int) -> torch.Generator:
    """The RNG of one micro-step: a pure function of (seed, step, micro) — resumable by construction."""
    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + step * 1009 + micro) % (2**63))


def sample_index(seed: int, k: int, n: int) -> int:
    """The k-th sample of the stream: epoch-wise permutations of the n (repeated) items."""
    epoch, pos = divmod(k, n)
    perm = torch.randperm(n, generator=torch.Generator("cpu").manual_seed(seed * 7919 + epoch))
    return int(perm[pos])
