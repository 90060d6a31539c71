"""Reference solutions for the exercises of chapter 3 (energy-based models and MCMC)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def grad_log_z(
    energy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    theta: torch.Tensor,
    samples: torch.Tensor,
) -> torch.Tensor:
    """Monte-Carlo estimate of ``grad_theta log Z = -E_p[grad_theta E(x; theta)]``."""
    theta = theta.detach().requires_grad_(True)
    mean_energy = energy(samples, theta).mean()
    (grad,) = torch.autograd.grad(mean_energy, theta)
    return -grad


def mala_log_accept(
    energy: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    step: float,
) -> torch.Tensor:
    """``log min(1, p(y) q(x|y) / (p(x) q(y|x)))`` with ``q(y|x) = N(x - h grad E(x), 2h I)``."""

    def energy_and_grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z.detach().requires_grad_(True)
        e = energy(z)
        (g,) = torch.autograd.grad(e.sum(), z)
        return e.detach(), g

    e_x, g_x = energy_and_grad(x)
    e_y, g_y = energy_and_grad(y)
    # log q(b|a) up to a constant that cancels: -||b - a + h grad E(a)||^2 / (4h)
    log_q_y_given_x = -((y - x + step * g_x) ** 2).sum(1) / (4 * step)
    log_q_x_given_y = -((x - y + step * g_y) ** 2).sum(1) / (4 * step)
    log_ratio = -e_y + e_x + log_q_x_given_y - log_q_y_given_x
    return torch.clamp(log_ratio, max=0.0)


def ula_variance(
    step: float,
    sigma: float,
    n_chains: int = 4000,
    n_steps: int = 300,
    generator: torch.Generator | None = None,
) -> float:
    """Run ULA on ``E(x) = x^2 / (2 sigma^2)`` and return the variance of the final states."""
    x = torch.zeros(n_chains, dtype=torch.float64)
    noise_scale = math.sqrt(2 * step)
    for _ in range(n_steps):
        grad_energy = x / sigma**2
        x = x - step * grad_energy + noise_scale * torch.randn(
            n_chains, generator=generator, dtype=torch.float64
        )
    return float(x.var())
