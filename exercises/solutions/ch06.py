"""Reference solutions for the exercises of chapter 6 (training EBFlow on 2-D densities)."""

from __future__ import annotations

import torch

import ebflow_lite
from ebflow_lite import EBFlow, objectives
from ebflow_lite.ema import EMA
from ebflow_lite.exercises.ch06 import dsm_data
from ebflow_lite.layers import Dense


def kl_estimate(p, q, n: int, generator: torch.Generator) -> float:
    """Monte-Carlo ``KL(p || q) = E_{x~p}[log p(x) - log q(x)]``."""
    x = p.sample(n, generator=generator)
    with torch.no_grad():
        return float((p.log_prob(x) - q.log_prob(x)).mean())


def _score(density, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(density.log_prob(x).sum(), x)
    return grad


def fisher_estimate(p, q, n: int, generator: torch.Generator) -> float:
    """Monte-Carlo ``D_F(p || q) = 1/2 E_{x~p} ||grad log p(x) - grad log q(x)||^2``."""
    x = p.sample(n, generator=generator)
    difference = _score(p, x) - _score(q, x)
    return float(0.5 * (difference**2).sum(1).mean())


def dsm_bias(sigma: float, steps: int = 400, seed: int = 0) -> torch.Tensor:
    """Fit a Gaussian (a one-dense-layer EBFlow) by DSM at noise ``sigma``; return its cov.

    The model ``u = W x + b`` with a standard normal prior has covariance ``(W^T W)^{-1}``.
    An EMA of the weights smooths out the optimiser's noise.
    """
    data, _ = dsm_data()
    torch.manual_seed(seed)
    model = EBFlow([Dense(2)])
    ema = EMA(model, decay=0.98)
    ebflow_lite.fit(model, lambda m, x: objectives.dsm(m, x, sigma=sigma), data, steps=steps,
                    batch_size=1024, lr=3e-2, ema=ema, progress=False)
    ema.copy_to(model)
    weight = model.layers[0].weight.detach().double()
    return torch.linalg.inv(weight.T @ weight)
