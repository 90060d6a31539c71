"""Maximum likelihood: the objective that needs every log-determinant."""

from __future__ import annotations

import torch
from torch import nn

from ebflow_lite.validation import check_method, check_nonempty, check_shape, model_event_shape


def ml(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood ``-(1/B) sum_i log p(x_i)`` of a batch of data.

    For an :class:`ebflow_lite.EBFlow` this is ``mean(E(z)) + log Z`` up to the constant
    preprocessing log-det, so each call computes every linear layer's log-determinant:
    O(D^3) per dense layer.

    Raises:
        ValueError: a model without ``log_prob``, or not a non-empty floating batch of the
            model's event shape (the model's own ``log_prob`` checks finiteness).

    References:
        Chao et al., NeurIPS 2023, eq. for L_ML (the baseline).
    """
    check_method(model, "log_prob", "ml", signature="log_prob(x) -> (B,)")
    check_nonempty(check_shape(x, model_event_shape(model), where="ml"), "ml")
    return -model.log_prob(x).mean()
