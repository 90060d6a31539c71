"""Affine coupling: half the features are rescaled and shifted by a network of the other half."""

from __future__ import annotations

import torch
from torch import nn

from ebflow_lite.layers.base import FlowLayer


def _mlp(n_in: int, n_out: int, hidden: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.SiLU()]
        width = hidden
    last = nn.Linear(width, n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


class AffineCoupling(FlowLayer):
    """RealNVP coupling: ``y_a = x_a``, ``y_b = x_b * exp(s(x_a)) + t(x_a)``.

    The Jacobian is triangular with diagonal ``exp(s(x_a))``, so the log-det is
    ``sum(s(x_a))``, which depends on x: a non-linear layer whose log-det stays in E(x).
    ``s`` is bounded by ``scale_bound * tanh(.)`` for stability. The last layer of the
    conditioner starts at zero, so a new coupling is the identity.

    Args:
        dim: the feature size D (at least 2).
        hidden: the conditioner's width.
        depth: the conditioner's number of hidden layers.
        parity: which half is kept (0: the even-indexed features, 1: the odd-indexed ones).
        scale_bound: the bound on ``|s|``.

    References:
        Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017.
    """

    def __init__(
        self, dim: int, hidden: int = 64, depth: int = 2, parity: int = 0,
        scale_bound: float = 2.0,
    ) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"AffineCoupling needs dim >= 2, got {dim}")
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {parity}")
        if hidden < 1 or depth < 0:
            raise ValueError(f"need hidden >= 1 and depth >= 0, got hidden={hidden}, depth={depth}")
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        self.dim = dim
        idx = torch.arange(dim)
        keep = idx[idx % 2 == parity]
        change = idx[idx % 2 != parity]
        self.register_buffer("keep", keep)
        self.register_buffer("change", change)
        self.scale_bound = float(scale_bound)
        self.net = _mlp(len(keep), 2 * len(change), hidden, depth)

    def _scale_shift(self, x_keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x_keep)
        raw_s, t = h.chunk(2, dim=1)
        return self.scale_bound * torch.tanh(raw_s / self.scale_bound), t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(x)
        x_keep, x_change = x[:, self.keep], x[:, self.change]
        s, t = self._scale_shift(x_keep)
        y = torch.empty_like(x)
        y[:, self.keep] = x_keep
        y[:, self.change] = x_change * s.exp() + t
        return y, s.sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check(y)
        y_keep, y_change = y[:, self.keep], y[:, self.change]
        s, t = self._scale_shift(y_keep)
        x = torch.empty_like(y)
        x[:, self.keep] = y_keep
        x[:, self.change] = (y_change - t) * (-s).exp()
        return x
