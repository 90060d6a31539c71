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


def folded_log_density(
    x: torch.Tensor,
    log_p_u: Callable[[torch.Tensor], torch.Tensor],
    branches: list[Callable[[torch.Tensor], torch.Tensor]],
) -> torch.Tensor:
    """``log p_x(x) = log sum_k p_u(g_k(x)) |det J_{g_k}(x)|`` over the local inverses ``g_k``."""
    x = x.detach().requires_grad_(True)
    terms = []
    for branch in branches:
        u = branch(x)
        # row b of u depends on row b of x only, so the gradient of the batch sum of u[:, i]
        # holds row i of every sample's Jacobian: D backward passes for the whole batch
        rows = [torch.autograd.grad(u[:, i].sum(), x, retain_graph=True)[0]
                for i in range(u.shape[1])]
        log_abs_det = torch.linalg.slogdet(torch.stack(rows, 1))[1]  # data -> latent: added
        terms.append(log_p_u(u.detach()) + log_abs_det)
    return torch.logsumexp(torch.stack(terms), 0)  # the densities of the preimages add
