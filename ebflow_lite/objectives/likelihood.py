"""Maximum likelihood: the objective that needs every log-determinant."""

from __future__ import annotations

import torch
from torch import nn


def ml(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood ``-(1/B) sum_i log p(x_i)`` of a batch of data.

    For an :class:`ebflow_lite.EBFlow` this is ``mean(E(z)) + log Z`` up to the constant
    preprocessing log-det, so each call computes every linear layer's log-determinant:
    O(D^3) per dense layer.

    References:
        Chao et al., NeurIPS 2023, eq. for L_ML (the baseline).
    """
    return -model.log_prob(x).mean()
