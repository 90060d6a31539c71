"""The planar flow: a single tanh ridge added to the identity."""

from __future__ import annotations

import torch
from torch import nn

from ebflow_lite.layers.base import FlowLayer
from ebflow_lite.validation import check_positive_int


class Planar(FlowLayer):
    """``y = x + u_hat tanh(w^T x + b)`` with ``u_hat`` constrained so that the map is invertible.

    By the matrix determinant lemma, ``det(I + tanh'(a) u_hat w^T) = 1 + tanh'(a) u_hat^T w``
    with ``a = w^T x + b``, an O(D) log-det. ``u_hat = u + (m(w^T u) - w^T u) w / |w|^2`` with
    ``m(zeta) = -1 + softplus(zeta)`` keeps ``u_hat^T w > -1``, which makes the map strictly
    monotone along w. The inverse solves the scalar equation for ``a = w^T x + b`` by
    bisection, then subtracts the ridge.

    Args:
        dim: the feature size D.

    References:
        Rezende and Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        dim = check_positive_int(dim, "dim", "Planar")
        self.event_shape = (dim,)
        self.u = nn.Parameter(torch.randn(dim) * 0.5)
        self.w = nn.Parameter(torch.randn(dim) * 0.5)
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> torch.Tensor:
        """The constrained direction with ``u_hat^T w > -1``."""
        wu = self.w @ self.u
        m = -1.0 + nn.functional.softplus(wu)
        return self.u + (m - wu) * self.w / (self.w @ self.w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(x)
        u = self.u_hat()
        a = x @ self.w + self.b
        y = x + u * torch.tanh(a).unsqueeze(1)
        h_prime = 1.0 - torch.tanh(a) ** 2
        return y, torch.log(torch.abs(1.0 + h_prime * (u @ self.w)))

    def inverse(self, y: torch.Tensor, iterations: int = 200) -> torch.Tensor:
        self.check(y)
        u = self.u_hat()
        uw = u @ self.w
        target = y @ self.w + self.b  # = a + uw * tanh(a), increasing in a
        lo = target - uw.abs() - 1.0
        hi = target + uw.abs() + 1.0
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            too_high = mid + uw * torch.tanh(mid) > target
            hi = torch.where(too_high, mid, hi)
            lo = torch.where(too_high, lo, mid)
        a = 0.5 * (lo + hi)
        return y - u * torch.tanh(a).unsqueeze(1)
