"""Activation normalisation: a per-feature (or per-channel) affine map, initialised on data."""

from __future__ import annotations

import math

import torch
from torch import nn

from ebflow_lite.layers.base import LinearFlowLayer
from ebflow_lite.validation import Shape, check_positive_int, check_shape


class ActNorm(LinearFlowLayer):
    """``y = (x - loc) * exp(log_scale)`` per feature of a vector, or per channel of an image.

    The first batch seen in training mode sets ``loc`` and ``log_scale`` so that ``y`` has
    zero mean and unit variance per feature (per channel, pooled over the pixels). That this
    happened is recorded in the saved buffer ``initialized``, so a model loaded from a
    checkpoint never re-initialises. A feature that is constant on the first batch keeps
    ``log_scale = 0`` (no division by a zero spread).

    The Jacobian is constant, so ActNorm is linear in the EBFlow sense, with
    ``log|det| = H W sum(log_scale)`` for an image of ``H x W`` pixels (``sum(log_scale)``
    for a vector): O(C). It may therefore sit on either side of the split; the model decides
    (``EBFlow(..., keep_in_energy=(ActNorm,))`` keeps it in E, as the paper's image models
    do, while its toy models put it in log Z).

    Args:
        num_features: the number of features D of a vector, or of channels C of an image.

    References:
        Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        NeurIPS 2018.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        num_features = check_positive_int(num_features, "num_features", "ActNorm")
        self.num_features = num_features
        self.loc = nn.Parameter(torch.zeros(num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("initialized", torch.tensor(False))

    def check(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, None, where="ActNorm")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"ActNorm: expected {self.num_features} features (axis 1), got shape "
                f"{tuple(x.shape)}"
            )
        return x

    check_output = check

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set the parameters from a batch so the output is standardised per feature."""
        axes = [0, *range(2, x.dim())]
        mean = x.mean(dim=axes)
        std = x.std(dim=axes)
        spread = torch.where(std > 1e-6, std, torch.ones_like(std))
        self.loc.copy_(mean)
        self.log_scale.copy_(-spread.log())
        self.initialized.fill_(True)

    def linear_map(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        if self.training and not bool(self.initialized) and x[:, 0].numel() > 1:
            self.initialize(x.detach())
        return (x - self._view(self.loc, x)) * self._view(self.log_scale, x).exp()

    def logabsdet(self, event_shape: Shape | None = None) -> torch.Tensor:
        """``prod(event_shape[1:]) * sum(log_scale)``; default event shape ``(C,)``."""
        shape = tuple(event_shape) if event_shape is not None else (self.num_features,)
        if len(shape) == 0 or shape[0] != self.num_features:
            raise ValueError(
                f"ActNorm.logabsdet: event_shape must start with {self.num_features} features, "
                f"got {shape}"
            )
        return self.log_scale.sum() * math.prod(shape[1:])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check(y)
        return y * self._view(-self.log_scale, y).exp() + self._view(self.loc, y)
