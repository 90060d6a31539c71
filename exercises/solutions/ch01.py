"""Reference solutions for the exercises of chapter 1 (change of variables)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def affine_log_density(y: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``log p(y)`` for ``y = A x + c``, ``x ~ N(0, I)``: ``log N(A^{-1}(y - c)) - log|det A|``."""
    x = torch.linalg.solve(a, (y - c).T).T  # the data -> latent map
    dim = y.shape[1]
    log_prior = -0.5 * (x**2).sum(1) - 0.5 * dim * math.log(2 * math.pi)
    return log_prior - torch.linalg.slogdet(a)[1]


def generative_planar_density(
    x: torch.Tensor, u_hat: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
    iterations: int = 60,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent ``u = f^{-1}(x)`` of ``f(u) = u + u_hat tanh(w^T u + b)`` and ``log p(x)``.

    ``x`` moves away from ``u`` along ``u_hat`` only, so the scalar ``a = w^T u + b`` solves
    ``a + c tanh(a) = w^T x + b`` with ``c = w^T u_hat > -1``. Newton's method finds it,
    safeguarded by a bracket that every residual shrinks: a step that leaves the bracket, or
    is longer than half of it, becomes a bisection. ``O(1)`` per step and sample.
    """
    c = w @ u_hat
    target = x @ w + b  # (B,)
    lo, hi = target - c.abs(), target + c.abs()  # |c tanh(a)| <= |c| brackets the root
    a = target.clone()
    for _ in range(iterations):
        tanh_a = torch.tanh(a)
        residual = a + c * tanh_a - target  # increasing in a
        lo = torch.where(residual < 0, a, lo)
        hi = torch.where(residual > 0, a, hi)
        newton = a - residual / (1 + c * (1 - tanh_a**2))
        safe = (newton >= lo) & (newton <= hi) & ((newton - a).abs() <= 0.5 * (hi - lo))
        a = torch.where(safe, newton, 0.5 * (lo + hi))
    u = x - u_hat * torch.tanh(a).unsqueeze(1)
    log_det = torch.log(torch.abs(1 + c * (1 - torch.tanh(a) ** 2)))  # log|det J_f(u)|
    log_prior = -0.5 * (u**2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    return u, log_prior - log_det


def image_area(
    g: Callable[[torch.Tensor], torch.Tensor], center: tuple[float, float], h: float,
    n_per_edge: int = 400,
) -> float:
    """Area of ``g`` applied to the square of side ``h`` at ``center`` (shoelace formula)."""
    t = torch.linspace(0.0, 1.0, n_per_edge + 1, dtype=torch.float64)[:-1]
    ones, zeros = torch.ones_like(t), torch.zeros_like(t)
    # the unit square's boundary, counter-clockwise, as (x, y) offsets in [0, 1]
    unit = torch.cat([
        torch.stack([t, zeros], 1),
        torch.stack([ones, t], 1),
        torch.stack([1 - t, ones], 1),
        torch.stack([zeros, 1 - t], 1),
    ])
    corner = torch.tensor(center, dtype=torch.float64) - h / 2
    boundary = g(corner + h * unit)
    x, y = boundary[:, 0], boundary[:, 1]
    signed = 0.5 * (x * torch.roll(y, -1) - torch.roll(x, -1) * y).sum()
    return abs(float(signed))
