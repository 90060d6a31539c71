"""Activation normalisation: a per-feature affine map with data-dependent initialisation."""

from __future__ import annotations

import torch
from torch import nn

from ebflow_lite.layers.base import LinearFlowLayer


class ActNorm(LinearFlowLayer):
    """``y = (x - loc) * exp(log_scale)`` per feature, initialised on the first batch.

    The first training batch sets ``loc`` and ``log_scale`` so that ``y`` has zero mean and
    unit variance per feature. The Jacobian is constant, so ActNorm is linear in the EBFlow
    sense; its log-det ``sum(log_scale)`` costs O(D), so it may sit on either side of the
    split: pass ``in_energy=True`` to keep its log-det inside the energy, as the paper's
    image models do.

    Args:
        dim: the feature size D.
        in_energy: count the log-det in E(x) instead of in log Z.

    References:
        Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        NeurIPS 2018.
    """

    def __init__(self, dim: int, in_energy: bool = False) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.is_linear = not in_energy
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set the parameters from a batch so the output is standardised."""
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(-x.std(0).clamp_min(1e-6).log())
        self.initialized.fill_(True)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        if self.training and not bool(self.initialized) and x.shape[0] > 1:
            self.initialize(x.detach())
        return (x - self.loc) * self.log_scale.exp()

    def logabsdet(self) -> torch.Tensor:
        return self.log_scale.sum()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.apply(x)
        return y, self.logabsdet().expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check(y)
        return y * (-self.log_scale).exp() + self.loc
