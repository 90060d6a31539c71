"""Reference solutions for the exercises of chapter 4 (score matching)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def implicit_sm_1d(
    score: Callable[[torch.Tensor], torch.Tensor],
    score_derivative: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
) -> torch.Tensor:
    """Hyvarinen's implicit objective in 1-D, ``J = mean(0.5 s(x)^2 + s'(x))``."""
    return (0.5 * score(x) ** 2 + score_derivative(x)).mean()


def fdssm_bias(
    energy: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps_values: list[float],
    generator: torch.Generator | None = None,
) -> list[float]:
    """``|FDSSM(eps) - SSM|`` for each eps, both with the same unit directions ``u``.

    FDSSM: ``mean[(E(x+v) - E(x-v))^2 / 8 + 2E(x) - E(x+v) - E(x-v)] / eps^2``, ``v = eps u``.
    SSM: ``mean[0.5 (u^T grad E)^2 - u^T H u]``. Both are per-dimension because
    ``E[u u^T] = I / D`` for ``u`` uniform on the unit sphere.
    """
    u = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    u = u / u.norm(dim=1, keepdim=True)

    xg = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(xg).sum(), xg, create_graph=True)
    directional = (grad * u).sum(1)
    (hvp,) = torch.autograd.grad(directional.sum(), xg)
    exact = (0.5 * directional.detach() ** 2 - (u * hvp).sum(1)).mean()

    biases = []
    with torch.no_grad():
        e0 = energy(x)
        for eps in eps_values:
            e_plus, e_minus = energy(x + eps * u), energy(x - eps * u)
            fd = ((e_plus - e_minus) ** 2 / 8 + 2 * e0 - e_plus - e_minus).mean() / eps**2
            biases.append(float((fd - exact).abs()))
    return biases


def mixture_score(x: torch.Tensor, weight: float, mean: float, std: float) -> torch.Tensor:
    """Score of ``w N(m, s^2) + (1 - w) N(-m, s^2)``: responsibilities times component scores."""
    log_right = -0.5 * ((x - mean) / std) ** 2 + math.log(weight)
    log_left = -0.5 * ((x + mean) / std) ** 2 + math.log(1 - weight)
    responsibility = torch.sigmoid(log_right - log_left)          # r(x) = P(right | x)
    return responsibility * (-(x - mean) / std**2) + (1 - responsibility) * (-(x + mean) / std**2)


def gamma_score(x: torch.Tensor, shape: float) -> torch.Tensor:
    """Score of Gamma(k, 1), ``p(x) ~ x^(k-1) exp(-x)`` on ``x > 0``: ``(k - 1) / x - 1``."""
    return (shape - 1) / x - 1


def nce_log_z(
    log_unnormalised: Callable[[torch.Tensor], torch.Tensor],
    data: torch.Tensor,
    noise_samples: torch.Tensor,
    noise_log_prob: Callable[[torch.Tensor], torch.Tensor],
    nu: float,
) -> float:
    """NCE's estimate of ``log Z``: the ``c`` minimising the NCE loss of the model
    ``log p_c(x) = log_unnormalised(x) - c``, found by bisection on the loss's derivative.

    With the logit ``G_c = log_unnormalised - c - log q - log nu`` the derivative of
    ``-mean log sigmoid(G_c(x)) - nu mean log sigmoid(-G_c(y))`` in ``c`` is
    ``mean sigmoid(-G_c(x)) - nu mean sigmoid(G_c(y))``, which increases with ``c``.
    """
    logit_data = log_unnormalised(data) - noise_log_prob(data) - math.log(nu)
    logit_noise = log_unnormalised(noise_samples) - noise_log_prob(noise_samples) - math.log(nu)
    low, high = -1e3, 1e3
    for _ in range(100):
        c = 0.5 * (low + high)
        slope = torch.sigmoid(c - logit_data).mean() - nu * torch.sigmoid(logit_noise - c).mean()
        if slope > 0:
            high = c
        else:
            low = c
    return 0.5 * (low + high)
