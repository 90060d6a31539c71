"""Reference solutions for the exercises of chapter 3 (energy-based models and MCMC)."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import torch

from ebflow_lite.sampling import mala


def log_z_importance(
    energy: Callable[[torch.Tensor], torch.Tensor],
    samples: torch.Tensor,
    proposal_log_prob: Callable[[torch.Tensor], torch.Tensor],
) -> float:
    """``log Z`` by importance sampling: ``log (1/N) sum_n exp(-E(y_n)) / q(y_n)``, ``y_n ~ q``.

    Computed in log space (log-sum-exp), so that energies of any size are safe.
    """
    log_weights = -energy(samples) - proposal_log_prob(samples)
    return float(torch.logsumexp(log_weights, 0) - math.log(len(samples)))


def mode_jump_mh(
    energy: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    n_steps: int,
    jump: torch.Tensor,
    local_std: float = 0.5,
    jump_prob: float = 0.2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Metropolis-Hastings with a symmetric mixture proposal: a local random-walk move or,
    with probability ``jump_prob``, a jump ``x + jump`` or ``x - jump`` (equally likely)."""
    x = x0.detach().clone()
    e_x = energy(x)
    n, dim = x.shape
    for _ in range(n_steps):
        local = x + local_std * torch.randn(n, dim, generator=generator, dtype=x.dtype)
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, -1.0).to(x.dtype)
        jumped = x + sign[:, None] * jump.to(x.dtype)
        is_jump = torch.rand(n, generator=generator) < jump_prob
        y = torch.where(is_jump[:, None], jumped, local)
        e_y = energy(y)
        # symmetric proposal, q(y | x) = q(x | y): only the energies enter the ratio
        accept = torch.log(torch.rand(n, generator=generator, dtype=x.dtype)) < e_x - e_y
        x = torch.where(accept[:, None], y, x)
        e_x = torch.where(accept, e_y, e_x)
    return x


def tune_mala_step(
    dim: int,
    target: float = 0.574,
    generator: torch.Generator | None = None,
    n_chains: int = 500,
    n_steps: int = 40,
    n_bisections: int = 12,
) -> float:
    """The MALA step ``h`` at which chains on ``N(0, I_dim)`` accept a ``target`` fraction.

    Bisection on ``log h``: the acceptance falls as the step grows. Every trial uses the
    same seed (common random numbers), so the measured acceptance is smooth in ``h``.
    """
    standard_gaussian = SimpleNamespace(energy=lambda x: 0.5 * (x**2).sum(1), dim=dim)
    seed = int(torch.randint(2**31, (1,), generator=generator))
    log_low, log_high = math.log(1e-3), math.log(10.0)
    for _ in range(n_bisections):
        log_mid = 0.5 * (log_low + log_high)
        trial = torch.Generator().manual_seed(seed)
        start = torch.randn(n_chains, dim, generator=trial, dtype=torch.float64)  # stationary
        rate = mala(standard_gaussian, start, step_size=math.exp(log_mid), n_steps=n_steps,
                    generator=trial).acceptance_rate
        if rate > target:
            log_low = log_mid   # accepts too often: a larger step is possible
        else:
            log_high = log_mid
    return math.exp(0.5 * (log_low + log_high))
