"""The latent prior of a flow, for one latent or for the several of a multi-scale model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ebflow_lite.draws import draw
from ebflow_lite.validation import Shape


def standard_normal_log_prob(u: torch.Tensor) -> torch.Tensor:
    """``log N(u; 0, I)`` per sample, summed over every non-batch axis. Shape ``(B,)``."""
    flat = u.flatten(1)
    return -0.5 * (flat**2).sum(1) - 0.5 * flat.shape[1] * math.log(2.0 * math.pi)


class StandardNormal(nn.Module):
    """The prior ``p_u = N(0, I)`` on every latent of a flow.

    A single-scale flow has one latent; a multi-scale flow (with
    :class:`ebflow_lite.layers.Split`) has one per factored-out part plus the final one, and
    ``log p_u`` is the sum of their log-densities: ``-0.5 |u|^2 - (D / 2) log(2 pi)`` with
    ``D`` the total size, O(D), never a ``D x D`` covariance.

    A custom prior subclasses this and overrides :meth:`log_prob` and :meth:`sample`.
    """

    def log_prob(self, latents: Sequence[torch.Tensor]) -> torch.Tensor:
        """``log p_u(u_1, ..., u_K)``, shape ``(B,)``."""
        total = standard_normal_log_prob(latents[0])
        for u in latents[1:]:
            total = total + standard_normal_log_prob(u)
        return total

    def sample(
        self, n: int, shapes: Sequence[Shape], temperature: float = 1.0, *,
        dtype: torch.dtype, device: torch.device, generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """One batch of ``n`` latents per shape, ``u ~ N(0, T^2 I)``."""
        return [
            temperature * draw("normal", (n, *shape), dtype=dtype, device=device,
                               generator=generator)
            for shape in shapes
        ]


__all__ = ["StandardNormal", "standard_normal_log_prob"]
