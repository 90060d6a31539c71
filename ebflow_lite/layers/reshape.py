"""Layers that move entries around: the 2x2 squeeze, and the multi-scale split."""

from __future__ import annotations

import torch
from torch import nn

from ebflow_lite.layers.base import LinearFlowLayer
from ebflow_lite.validation import Shape, check_positive_int, check_shape


class Squeeze(LinearFlowLayer):
    """Space-to-depth: ``(C, H, W) -> (4C, H/2, W/2)``, each 2x2 block becomes 4 channels.

    A permutation of the entries, so the Jacobian is a constant permutation matrix and
    ``log|det| = 0``: a linear layer that costs nothing. Between convolutions it enlarges
    their receptive field (the paper's CNN model puts one after every two convolutions).
    Uses ``pixel_unshuffle``: output channel ``4 c + 2 i + j`` holds input channel ``c`` at
    offset ``(i, j)`` of each block.

    References:
        Dinh et al., "Density estimation using Real NVP", ICLR 2017.
    """

    def output_shape(self, event_shape: Shape) -> Shape:
        if len(event_shape) != 3 or event_shape[1] % 2 or event_shape[2] % 2:
            raise ValueError(
                f"Squeeze needs an image shape (C, H, W) with even H and W, got {event_shape}"
            )
        c, h, w = event_shape
        return (4 * c, h // 2, w // 2)

    def check(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, None, where="Squeeze")
        if x.dim() != 4 or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(
                f"Squeeze: expected a batch (B, C, H, W) with even H and W, got shape "
                f"{tuple(x.shape)}"
            )
        return x

    def check_output(self, y: torch.Tensor) -> torch.Tensor:
        check_shape(y, None, where="Squeeze.inverse")
        if y.dim() != 4 or y.shape[1] % 4:
            raise ValueError(
                f"Squeeze.inverse: expected a batch (B, 4C, H, W), got shape {tuple(y.shape)}"
            )
        return y

    def linear_map(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return nn.functional.pixel_unshuffle(x, 2)

    def logabsdet(self, event_shape: Shape | None = None) -> torch.Tensor:
        """Zero: a permutation has ``|det| = 1``."""
        return torch.zeros((), dtype=torch.float64)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check_output(y)
        return nn.functional.pixel_shuffle(y, 2)


class Split(nn.Module):
    """Multi-scale factor-out: keep the first ``keep`` channels, hand the rest to the prior.

    Inside an :class:`ebflow_lite.EBFlow`, ``x -> (x[:, :keep], x[:, keep:])``: the second
    part leaves the flow as a latent of its own, scored by the model's prior, and only the
    first part is transformed further (Real NVP's multi-scale architecture). The map
    ``x -> (kept, factored)`` is a permutation, so it adds nothing to any log-det; the
    factored-out latents' prior term ``-log p_u`` is part of the energy
    ``E(x) = -log p_u(all latents) - sum of non-linear log-dets``. For vectors the split is
    along the features.

    Args:
        keep: the number of channels (features) that stay in the flow.

    References:
        Dinh et al., "Density estimation using Real NVP", ICLR 2017; Kingma and Dhariwal,
        "Glow", NeurIPS 2018.
    """

    factors_out = True
    event_shape: Shape | None = None

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = check_positive_int(keep, "keep", "Split")

    def _check_shape(self, event_shape: Shape) -> None:
        if event_shape[0] <= self.keep:
            raise ValueError(
                f"Split(keep={self.keep}) needs more than {self.keep} channels, got event "
                f"shape {event_shape}"
            )

    def output_shape(self, event_shape: Shape) -> Shape:
        """The shape of the part that stays in the flow."""
        self._check_shape(event_shape)
        return (self.keep, *event_shape[1:])

    def factored_shape(self, event_shape: Shape) -> Shape:
        """The shape of the factored-out latent."""
        self._check_shape(event_shape)
        return (event_shape[0] - self.keep, *event_shape[1:])

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kept, factored)``."""
        check_shape(x, None, where="Split")
        self._check_shape(tuple(x.shape[1:]))
        return x[:, : self.keep], x[:, self.keep :]

    def merge(self, kept: torch.Tensor, factored: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`split`."""
        if kept.shape[0] != factored.shape[0] or kept.shape[2:] != factored.shape[2:]:
            raise ValueError(
                f"Split.merge: shapes {tuple(kept.shape)} and {tuple(factored.shape)} do not fit"
            )
        return torch.cat([kept, factored], dim=1)

    def extra_repr(self) -> str:
        return f"keep={self.keep}"


__all__ = ["Split", "Squeeze"]
