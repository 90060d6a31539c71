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


def planar_forward(
    x: torch.Tensor, u_hat: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = x + u_hat tanh(w^T x + b)`` and ``log|1 + tanh'(w^T x + b) u_hat^T w|`` in O(D)."""
    a = x @ w + b  # (B,)
    y = x + u_hat * torch.tanh(a).unsqueeze(1)
    tanh_prime = 1 - torch.tanh(a) ** 2
    return y, torch.log(torch.abs(1 + tanh_prime * (u_hat @ w)))


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
