"""Reference solutions for the exercises of chapter 11 (density estimation on real images)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch


def bits_per_dim_from_unit_scale(nll_unit: float, dim: int, num_levels: int) -> float:
    """Bits/dim on the ``[0, K)`` scale from an NLL (nats) of the density on ``[0, 1)^D``."""
    nll_levels = nll_unit + dim * math.log(num_levels)  # x = K t: p_x = p_t / K^D
    return nll_levels / (dim * math.log(2.0))


def gaussian_bits_per_dim(x_train: torch.Tensor, x_test: torch.Tensor, num_levels: int,
                          alpha: float, eps: float) -> float:
    """Test bits/dim (on the [0, K) scale) of the ML Gaussian fitted in logit space."""
    def preprocess(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.reshape(x.shape[0], -1).double()
        p = eps + (1 - 2 * eps) * x / num_levels
        z = (torch.log(p) - torch.log1p(-p)) / alpha
        logdet = (math.log(1 - 2 * eps) - math.log(num_levels) - math.log(alpha)
                  - torch.log(p) - torch.log1p(-p)).sum(1)
        return z, logdet

    z_train, _ = preprocess(x_train)
    z_test, logdet = preprocess(x_test)
    dim = z_train.shape[1]
    mean = z_train.mean(0)
    cov = (z_train - mean).T @ (z_train - mean) / z_train.shape[0]
    gaussian = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    log_p = gaussian.log_prob(z_test) + logdet            # change of variables back to x
    return float(-log_p.mean()) / (dim * math.log(2.0))


def best_within_budget(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
                       batches_per_second: Mapping[str, float],
                       seconds: float) -> dict[str, float]:
    """The best validation value of each method among its evaluations within the budget."""
    best = {}
    for name, (steps, values) in curves.items():
        steps_done = batches_per_second[name] * seconds
        within = [value for step, value in zip(steps, values, strict=True)
                  if step <= steps_done]
        best[name] = min(within, default=math.inf)
    return best
