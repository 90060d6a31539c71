"""Seeding, so that every chapter is deterministic on the CPU."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch


def seed_everything(seed: int = 0, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and every CUDA device).

    Args:
        seed: the seed.
        deterministic: also ask PyTorch for deterministic kernels where it has them
            (``warn_only``, so an operation without a deterministic version still runs).

    Returns:
        A ``torch.Generator`` seeded with ``seed``, for code that wants its own stream.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        _use_deterministic_algorithms()
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def _use_deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)``, without its import cost.

    The public function imports ``torch._inductor.config`` (and with it TorchDynamo: several
    seconds per kernel start) only to set the compiler's ``deterministic`` flag. When the
    compiler has not been imported, setting the core flag directly is equivalent for eager
    code, which is all this library runs.
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)
