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


def hutchinson_trace(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    n_probes: int,
    kind: str = "rademacher",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Single-probe estimates ``v_k^T A v_k``, shape ``(n_probes,)``; their mean estimates tr A."""
    v = torch.randn(n_probes, dim, generator=generator, dtype=torch.float64)
    if kind == "rademacher":
        v = torch.sign(v)
    elif kind != "gaussian":
        raise ValueError(f"kind must be 'rademacher' or 'gaussian', got {kind!r}")
    return (v * matvec(v)).sum(1)


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
