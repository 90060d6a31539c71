"""Reference solutions for the exercises of chapter 2 (flows and maximum likelihood)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch


def composed_log_prob(layers: Sequence[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``log p(x) = log N(g(x); 0, I) + sum_i log|det J_i(x_{i-1})|``, ``g = g_L o ... o g_1``."""
    h = x
    total_log_det = torch.zeros(x.shape[0], dtype=x.dtype)
    for layer in layers:
        h, log_det = layer(h)  # each layer returns (x_i, log|det J_i(x_{i-1})|)
        total_log_det = total_log_det + log_det
    dim = x.shape[1]
    log_prior = -0.5 * (h**2).sum(1) - 0.5 * dim * math.log(2 * math.pi)
    return log_prior + total_log_det


def coupling_forward(
    x: torch.Tensor,
    scale_and_shift: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    parity: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine coupling: ``y_a = x_a``, ``y_b = x_b exp(s(x_a)) + t(x_a)``, log-det ``sum(s)``."""
    index = torch.arange(x.shape[1])
    keep, change = index[index % 2 == parity], index[index % 2 != parity]
    s, t = scale_and_shift(x[:, keep])
    y = x.clone()
    y[:, change] = x[:, change] * torch.exp(s) + t
    return y, s.sum(1)


def time_slogdet(dims: Sequence[int], repeats: int) -> tuple[list[int], list[float]]:
    """The fastest of ``repeats`` timings of ``torch.linalg.slogdet`` on a D x D matrix."""
    seconds = []
    for dim in dims:
        matrix = torch.randn(dim, dim, dtype=torch.float64)
        torch.linalg.slogdet(matrix)  # warm-up: the first call may allocate workspace
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            torch.linalg.slogdet(matrix)
            best = min(best, time.perf_counter() - start)
        seconds.append(best)
    return list(dims), seconds


def loglog_slope(dims: Sequence[float], seconds: Sequence[float]) -> float:
    """The least-squares slope k of ``log t = k log D + c``."""
    log_d, log_t = np.log(np.asarray(dims, float)), np.log(np.asarray(seconds, float))
    log_d_centred = log_d - log_d.mean()
    return float((log_d_centred * (log_t - log_t.mean())).sum() / (log_d_centred**2).sum())


def additive_coupling(x: torch.Tensor, shift: torch.nn.Module, parity: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """NICE's additive coupling: ``y_b = x_b + t(x_a)``, log-det zero for every sample."""
    index = torch.arange(x.shape[1])
    keep, change = index[index % 2 == parity], index[index % 2 != parity]
    y = x.clone()
    y[:, change] = x[:, change] + shift(x[:, keep])
    return y, torch.zeros(x.shape[0], dtype=x.dtype)
