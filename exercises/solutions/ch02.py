"""Reference solutions for the exercises of chapter 2 (flows and maximum likelihood)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch


def sample_with_log_prob(
    layers: Sequence[torch.nn.Module], u: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x = g^{-1}(u)`` for ``g = g_L o ... o g_1`` and ``log p(x)``, in one backward sweep.

    ``g^{-1} = g_1^{-1} o ... o g_L^{-1}`` inverts the last layer first; layer ``i``'s
    log-det (data -> latent) belongs at its input ``x_{i-1}``, known right after its inverse.
    """
    h = u
    total_log_det = torch.zeros(u.shape[0], dtype=u.dtype)
    for layer in reversed(layers):
        h = layer.inverse(h)  # x_{i-1} = g_i^{-1}(x_i)
        total_log_det = total_log_det + layer(h)[1]  # log|det J_{g_i}(x_{i-1})|
    log_prior = -0.5 * (u**2).sum(1) - 0.5 * u.shape[1] * math.log(2 * math.pi)
    return h, log_prior + total_log_det


def iaf_sample(
    conditioner: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], u: torch.Tensor,
) -> torch.Tensor:
    """An IAF sample ``x = u exp(s(u)) + t(u)``: the network reads the latent, one pass."""
    log_scale, shift = conditioner(u)
    return u * torch.exp(log_scale) + shift


def iaf_log_prob(
    conditioner: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
) -> torch.Tensor:
    """``log p(x) = log N(u) - sum(s(u))`` with ``u`` recovered from ``x`` in ``D`` passes.

    Feature ``i`` of ``u`` needs ``u_<i``: after pass ``k`` the first ``k`` are exact, and
    the last pass also gives every log-scale at the exact ``u``.
    """
    u = torch.zeros_like(x)
    for _ in range(x.shape[1]):
        log_scale, shift = conditioner(u)
        u = (x - shift) * torch.exp(-log_scale)
    log_prior = -0.5 * (u**2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    return log_prior - log_scale.sum(1)


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
