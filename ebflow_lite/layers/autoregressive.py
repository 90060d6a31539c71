"""Autoregressive flows: a masked network (MADE) and the MAF and IAF layers built on it.

An autoregressive layer rescales and shifts feature ``i`` by amounts that depend only on the
features that come *before* ``i`` in a fixed order. Its Jacobian is triangular in that order,
so the log-det is a sum over the diagonal, and one pass of a masked network computes every
scale and shift at once when the inputs of that network are known.

The two layers differ in *which* side of the map the network reads, and so in which
direction is cheap (the layer direction is data -> latent, as everywhere in the library):

* :class:`MAF` (masked autoregressive flow) reads the data ``x``:
  ``y_i = x_i exp(a_i(x_<i)) + m_i(x_<i)``. The density (``forward``) takes one network
  pass; sampling (``inverse``) solves for ``x`` one feature at a time: ``D`` passes.
* :class:`IAF` (inverse autoregressive flow) reads the latent ``y``:
  ``x_i = y_i exp(a_i(y_<i)) + m_i(y_<i)``. Sampling (``inverse``) takes one pass; the
  density (``forward``) needs ``D`` passes.

References:
    Germain, Gregor, Murray and Larochelle, "MADE: Masked Autoencoder for Distribution
    Estimation", ICML 2015; Kingma et al., "Improved Variational Inference with Inverse
    Autoregressive Flow", NeurIPS 2016; Papamakarios, Pavlakou and Murray, "Masked
    Autoregressive Flow for Density Estimation", NeurIPS 2017.
"""

from __future__ import annotations

import torch
from torch import nn

from ebflow_lite.layers.base import FlowLayer
from ebflow_lite.validation import check_positive_int


def made_degrees(dim: int, hidden: int, depth: int, reverse: bool = False
                 ) -> list[torch.Tensor]:
    """The degrees of MADE's units: inputs ``1..D`` (reversed order if ``reverse``), hidden
    units cycling through ``1..D-1``, and the ``2 D`` outputs with their feature's degree.

    A unit of degree ``k`` may depend on the inputs of degree ``<= k`` (hidden) or ``< k``
    (outputs), which makes output ``i`` a function of the inputs before ``i`` only.
    """
    inputs = torch.arange(1, dim + 1)
    if reverse:
        inputs = inputs.flip(0)
    degrees = [inputs]
    for _ in range(depth):
        degrees.append(torch.arange(hidden) % max(dim - 1, 1) + 1)
    degrees.append(torch.cat([inputs, inputs]))
    return degrees


def made_masks(degrees: list[torch.Tensor]) -> list[torch.Tensor]:
    """The ``(out, in)`` connectivity masks between consecutive layers of degrees."""
    masks = []
    for i, (d_in, d_out) in enumerate(zip(degrees[:-1], degrees[1:], strict=True)):
        last = i == len(degrees) - 2
        allowed = d_out[:, None] > d_in[None, :] if last else d_out[:, None] >= d_in[None, :]
        masks.append(allowed.to(torch.get_default_dtype()))
    return masks


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask."""

    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor) -> None:
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask.to(self.weight.dtype), self.bias)


class MADE(nn.Module):
    """A masked MLP ``(B, D) -> (log-scale raw (B, D), shift (B, D))`` with autoregressive
    structure: output ``i`` depends only on the inputs before ``i`` in the order.

    The last layer starts at zero, so a new MAF or IAF layer is the identity.
    """

    def __init__(self, dim: int, hidden: int = 64, depth: int = 2, reverse: bool = False
                 ) -> None:
        super().__init__()
        check_positive_int(dim, "dim", "MADE")
        check_positive_int(hidden, "hidden", "MADE")
        check_positive_int(depth, "depth", "MADE")
        self.dim = dim
        degrees = made_degrees(dim, hidden, depth, reverse)
        masks = made_masks(degrees)
        widths = [dim] + [hidden] * depth + [2 * dim]
        layers: list[nn.Module] = []
        for i, mask in enumerate(masks):
            layers.append(MaskedLinear(widths[i], widths[i + 1], mask))
            if i < len(masks) - 1:
                layers.append(nn.SiLU())
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)
        self.register_buffer("order", degrees[0] - 1)  # order[j] = position of feature j

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_scale, shift = self.net(x).chunk(2, dim=1)
        return raw_scale, shift


class _Autoregressive(FlowLayer):
    def __init__(self, dim: int, hidden: int = 64, depth: int = 2, reverse: bool = False,
                 scale_bound: float = 2.0) -> None:
        super().__init__()
        check_positive_int(dim, "dim", type(self).__name__)
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        self.event_shape = (dim,)
        self.scale_bound = float(scale_bound)
        self.made = MADE(dim, hidden, depth, reverse)

    def _scale_shift(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, shift = self.made(v)
        return self.scale_bound * torch.tanh(raw / self.scale_bound), shift

    def _one_pass(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``v exp(a(v)) + m(v)`` and ``sum a(v)``: the cheap direction."""
        a, m = self._scale_shift(v)
        return v * a.exp() + m, a.sum(1)

    def _sequential(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve ``w = v exp(a(v)) + m(v)`` for ``v``: ``D`` passes, one feature each.

        After pass ``k`` the first ``k`` features in the order are exact, since feature
        ``i`` only needs the features before it.
        """
        v = torch.zeros_like(w)
        for _ in range(self.dim):
            a, m = self._scale_shift(v)
            v = (w - m) * (-a).exp()
        a, _ = self._scale_shift(v)
        return v, a.sum(1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class MAF(_Autoregressive):
    """Masked autoregressive flow layer: ``y_i = x_i exp(a_i(x_<i)) + m_i(x_<i)``.

    ``forward`` (density) is one MADE pass with log-det ``sum_i a_i(x_<i)``; ``inverse``
    (sampling) takes ``D`` sequential passes. ``reverse=True`` reverses the order of the
    features (stack layers with alternating orders). ``a`` is bounded by
    ``scale_bound * tanh(. / scale_bound)``.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(x)
        return self._one_pass(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check_output(y)
        return self._sequential(y)[0]


class IAF(_Autoregressive):
    """Inverse autoregressive flow layer: ``x_i = y_i exp(a_i(y_<i)) + m_i(y_<i)``.

    The network reads the latent side, so ``inverse`` (sampling) is one MADE pass and
    ``forward`` (density) takes ``D`` sequential passes; its log-det (data -> latent) is
    ``-sum_i a_i(y_<i)``.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(x)
        y, generative_logdet = self._sequential(x)
        return y, -generative_logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check_output(y)
        return self._one_pass(y)[0]


__all__ = ["IAF", "MADE", "MAF", "MaskedLinear", "made_degrees", "made_masks"]
