"""Reference solutions for the exercises of chapter 8 (MaP and EMA)."""

from __future__ import annotations

import math

import torch

# The two densities of exercise 3: products of Beta densities on the unit square.
P_PARAMS = ((5.0, 9.0), (9.0, 5.0))
Q_PARAMS = ((7.0, 9.0), (9.0, 7.0))


def logit_logdet(x: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """``log|det J|`` of ``y = logit(eps + (1 - 2 eps) x) / alpha``, one value per sample."""
    p = eps + (1 - 2 * eps) * x
    per_feature = math.log(1 - 2 * eps) - math.log(alpha) - torch.log(p) - torch.log1p(-p)
    return per_feature.sum(1)


def ema_update(
    shadow: list[torch.Tensor], params: list[torch.Tensor], step: int, decay: float = 0.999,
) -> list[torch.Tensor]:
    """One EMA update with warm-up; ``step`` counts the updates done before this one."""
    m = min(decay, (2 + step) / (11 + step))
    return [m * s + (1 - m) * p for s, p in zip(shadow, params, strict=True)]


def _beta_log_prob(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    return log_norm + (a - 1) * torch.log(x) + (b - 1) * torch.log1p(-x)


def _log_prob_x(x: torch.Tensor, params) -> torch.Tensor:
    return sum(_beta_log_prob(x[:, j], a, b) for j, (a, b) in enumerate(params))


def _log_prob_y(y: torch.Tensor, params) -> torch.Tensor:
    # change of variables: x = sigmoid(y), dx/dy = sigmoid(y) (1 - sigmoid(y))
    x = torch.sigmoid(y)
    log_jacobian = (torch.nn.functional.logsigmoid(y) + torch.nn.functional.logsigmoid(-y))
    return _log_prob_x(x, params) + log_jacobian.sum(1)


def _score(log_prob, z: torch.Tensor, params) -> torch.Tensor:
    z = z.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_prob(z, params).sum(), z)
    return grad


def divergences_two_ways(n: int, generator: torch.Generator) -> dict[str, float]:
    """Monte-Carlo KL and Fisher divergences from p to q, in x and in y = logit(x)."""
    # torch's Beta sampler takes no generator: seed a private stream from the one given.
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = torch.stack(
            [torch.distributions.Beta(torch.tensor(a, dtype=torch.float64),
                                      torch.tensor(b, dtype=torch.float64)).sample((n,))
             for a, b in P_PARAMS], 1)
    x = x.clamp(1e-12, 1 - 1e-12)
    y = torch.logit(x)
    kl_x = (_log_prob_x(x, P_PARAMS) - _log_prob_x(x, Q_PARAMS)).mean()
    kl_y = (_log_prob_y(y, P_PARAMS) - _log_prob_y(y, Q_PARAMS)).mean()
    diff_x = _score(_log_prob_x, x, P_PARAMS) - _score(_log_prob_x, x, Q_PARAMS)
    diff_y = _score(_log_prob_y, y, P_PARAMS) - _score(_log_prob_y, y, Q_PARAMS)
    return {
        "kl_x": float(kl_x),
        "kl_y": float(kl_y),
        "fisher_x": float(0.5 * (diff_x**2).sum(1).mean()),
        "fisher_y": float(0.5 * (diff_y**2).sum(1).mean()),
    }
