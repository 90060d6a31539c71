"""Reference solutions for the exercises of chapter 10 (sampling an EBFlow)."""

from __future__ import annotations

import statistics
import time

import torch

from ebflow_lite.experiments.sampling_study import benchmark_model
from ebflow_lite.sampling import langevin


def precision_conditional(
    a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_M | x_O`` for the linear flow ``u = A x + b``, from the precision ``P = A^T A``.

    ``E = |A x + b|^2 / 2`` is quadratic in ``x_M`` with Hessian ``P_MM``, so the
    conditional covariance is ``P_MM^{-1}``; its minimiser is the mean
    ``mu_M - P_MM^{-1} P_MO (x_O - mu_O)`` with ``mu = -A^{-1} b``. Only ``|M| x |M|``
    systems are solved besides ``mu``.
    """
    m, o = mask, ~mask
    precision = a.T @ a
    p_mm, p_mo = precision[m][:, m], precision[m][:, o]
    mu = -torch.linalg.solve(a, b)
    cov = torch.linalg.inv(p_mm)
    mean = mu[m] - (x[:, o] - mu[o]) @ (cov @ p_mo).T
    return mean, cov


def masked_mala(model, z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                h: float) -> torch.Tensor:
    """MALA's log acceptance ratio for a proposal ``y`` that moved the missing entries only."""
    free = mask.to(z.dtype)

    def energy_grad(v):
        v = v.detach().requires_grad_(True)
        e = model.energy(v)
        (g,) = torch.autograd.grad(e.sum(), v)
        return e.detach(), g

    e_z, g_z = energy_grad(z)
    e_y, g_y = energy_grad(y)

    def log_q(to, frm, grad):   # N(to; frm - h grad, 2 h I) over the missing entries
        return -((free * (to - frm + h * grad)) ** 2).sum(1) / (4 * h)

    return e_z - e_y + log_q(z, y, g_y) - log_q(y, z, g_z)


def _median_seconds(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def crossover_vs_batch(dim: int, batch_sizes) -> dict[int, float]:
    """Measured ``T*(B)``: seconds of one ``model.sample(B)`` over seconds of one Langevin step."""
    model = benchmark_model(dim)
    out = {}
    for batch in batch_sizes:
        x0 = torch.randn(batch, dim)
        step = _median_seconds(lambda x0=x0: langevin(model, x0, 1e-3, n_steps=4)) / 4
        sample = _median_seconds(lambda batch=batch: model.sample(batch))
        out[batch] = sample / step
    return out
