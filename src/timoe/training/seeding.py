"""Seeding: the same config and seed give the same numbers on CPU."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic:
        use_deterministic_algorithms()


def use_deterministic_algorithms() -> None:
    """torch.use_deterministic_algorithms(True, warn_only=True), without its import of inductor.

    warn_only: a few CUDA kernels have no deterministic variant; CPU runs stay exact. torch's own
    function imports torch._inductor.config to set its `deterministic` flag, which cost every
    train job 1.2 s (measured on this 2-core machine; ~150 jobs a study) for a flag only
    torch.compile reads, and timoe does not compile. The public debug-mode setter flips the same
    global switch; the inductor flag is set too when something has already loaded inductor.
    """
    torch.set_deterministic_debug_mode("warn")
    inductor_config = sys.modules.get("torch._inductor.config")
    if inductor_config is not None:
        inductor_config.deterministic = True


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator for one epoch's shuffling, derived from (seed, epoch) alone.

    Deriving it instead of carrying one generator across epochs lets a resumed run shuffle
    exactly as an uninterrupted one would.
    """
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + epoch)
    return g
