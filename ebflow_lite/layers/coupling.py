"""Affine coupling: part of the entries is rescaled and shifted by a network of the rest."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ebflow_lite.layers.base import FlowLayer
from ebflow_lite.validation import Shape, as_event_shape, check_positive, check_positive_int

MASKS = ("alternate", "channel", "checkerboard")


def mlp_conditioner(n_in: int, n_out: int, hidden: int = 64, depth: int = 2) -> nn.Sequential:
    """An MLP ``n_in -> hidden (x depth, SiLU) -> n_out`` whose last layer starts at zero."""
    n_in = check_positive_int(n_in, "n_in", "mlp_conditioner")
    n_out = check_positive_int(n_out, "n_out", "mlp_conditioner")
    hidden = check_positive_int(hidden, "hidden", "mlp_conditioner")
    depth = check_positive_int(depth, "depth", "mlp_conditioner", minimum=0)
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


def cnn_conditioner(channels: int, hidden: int = 64, out_channels: int | None = None
                    ) -> nn.Sequential:
    """Glow's coupling network: ``conv3x3 -> LeakyReLU -> conv1x1 -> LeakyReLU -> conv3x3``.

    Maps ``channels`` to ``out_channels`` (default ``2 * channels``: a log-scale and a shift
    per entry). The last convolution starts at zero, so a new coupling is the identity.

    References:
        Kingma and Dhariwal, "Glow", NeurIPS 2018.
    """
    channels = check_positive_int(channels, "channels", "cnn_conditioner")
    hidden = check_positive_int(hidden, "hidden", "cnn_conditioner")
    out_channels = 2 * channels if out_channels is None else check_positive_int(
        out_channels, "out_channels", "cnn_conditioner")
    last = nn.Conv2d(hidden, out_channels, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1), nn.LeakyReLU(0.1),
        nn.Conv2d(hidden, hidden, 1), nn.LeakyReLU(0.1), last,
    )


def coupling_mask(event_shape: Shape, mask: str, parity: int) -> torch.Tensor:
    """The boolean mask of the entries a coupling keeps (True) and conditions on.

    ``"alternate"`` keeps the even-indexed features of a vector (odd with ``parity=1``);
    ``"channel"`` keeps the first half of an image's channels (the second with
    ``parity=1``); ``"checkerboard"`` keeps the pixels with ``(i + j) % 2 == parity``.
    """
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; expected one of {MASKS}")
    if isinstance(parity, bool) or parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    if mask == "alternate":
        if len(event_shape) != 1:
            raise ValueError(f"the 'alternate' mask is for vectors, got event_shape {event_shape}")
        return torch.arange(event_shape[0]) % 2 == parity
    if len(event_shape) != 3:
        raise ValueError(f"the {mask!r} mask is for images (C, H, W), got {event_shape}")
    c, h, w = event_shape
    if mask == "channel":
        if c < 2:
            raise ValueError(f"a channel mask needs at least 2 channels, got {c}")
        first = torch.arange(c) < c // 2
        keep = first if parity == 0 else ~first
        return keep.view(c, 1, 1).expand(c, h, w).clone()
    board = (torch.arange(h).view(-1, 1) + torch.arange(w).view(1, -1)) % 2 == parity
    return board.expand(c, h, w).clone()  # the checkerboard


class AffineCoupling(FlowLayer):
    """RealNVP coupling: ``y_a = x_a``, ``y_b = x_b * exp(lambda(x_a)) + t(x_a)``.

    The Jacobian is triangular with diagonal ``exp(lambda(x_a))``, so the log-det is
    ``sum(lambda(x_a))``, which depends on x: a non-linear layer whose log-det stays in E(x).
    The log-scale ``lambda`` is bounded by ``scale_bound * tanh(. / scale_bound)`` for
    stability (an unbounded ``exp`` overflows early in training). The conditioner's last layer
    starts at zero, so a new coupling is the identity.

    For vectors (``event_shape = (D,)``) the kept features are gathered and the conditioner
    maps them, shape ``(B, n_keep)``, to ``(B, 2 n_change)``: the default is an MLP. For
    images (``(C, H, W)``) the conditioner sees the masked image ``x * m`` and returns
    ``(B, 2C, H, W)``, of which only the entries outside the mask are used: the default is
    :func:`cnn_conditioner`. Any ``nn.Module`` of that signature can be injected.

    Args:
        event_shape: ``D`` (an int) for vectors, or ``(C, H, W)`` for images.
        hidden: the default conditioner's width.
        depth: the default MLP's number of hidden layers (vectors only).
        parity: which part is kept (see :func:`coupling_mask`).
        scale_bound: the bound on ``|lambda|``.
        mask: ``"alternate"`` (vectors), ``"channel"`` or ``"checkerboard"`` (images); None
            picks ``"alternate"`` for vectors and ``"channel"`` for images.
        conditioner: a network to use instead of the default one.

    References:
        Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017;
        Kingma and Dhariwal, "Glow", NeurIPS 2018.
    """

    def __init__(
        self, event_shape: int | Sequence[int], hidden: int = 64, depth: int = 2,
        parity: int = 0, scale_bound: float = 2.0, mask: str | None = None,
        conditioner: nn.Module | None = None,
    ) -> None:
        super().__init__()
        shape = as_event_shape(event_shape)
        if shape is None:
            raise ValueError("AffineCoupling: event_shape must be D or (C, H, W), got None")
        if isinstance(parity, bool) or parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {parity!r}")
        hidden = check_positive_int(hidden, "hidden", "AffineCoupling")
        depth = check_positive_int(depth, "depth", "AffineCoupling", minimum=0)
        scale_bound = check_positive(scale_bound, "scale_bound", "AffineCoupling")
        if conditioner is not None and not isinstance(conditioner, nn.Module):
            raise ValueError(
                f"conditioner must be an nn.Module, got {type(conditioner).__name__}"
            )
        mask = mask if mask is not None else ("alternate" if len(shape) == 1 else "channel")
        if len(shape) == 1 and shape[0] < 2:
            raise ValueError(f"AffineCoupling needs dim >= 2, got {shape[0]}")
        self.event_shape = shape
        self.mask_kind = mask
        self.scale_bound = float(scale_bound)
        keep = coupling_mask(shape, mask, parity)
        self.vector = len(shape) == 1
        if self.vector:
            idx = torch.arange(shape[0])
            self.register_buffer("keep", idx[keep])
            self.register_buffer("change", idx[~keep])
            self.net = conditioner or mlp_conditioner(
                len(self.keep), 2 * len(self.change), hidden, depth)
        else:
            self.register_buffer("mask", keep.to(torch.get_default_dtype()))
            self.net = conditioner or cnn_conditioner(shape[0], hidden)

    def _scale_shift(self, x_keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, t)`` for the kept features of a vector batch."""
        return self._bounded(self.net(x_keep))

    def _bounded(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_s, t = h.chunk(2, dim=1)
        return self.scale_bound * torch.tanh(raw_s / self.scale_bound), t

    def _image_scale_shift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.mask.to(x.dtype)
        h = self.net(x * mask)
        expected = (x.shape[0], 2 * x.shape[1], *x.shape[2:])
        if tuple(h.shape) != expected:
            raise ValueError(
                f"AffineCoupling: the conditioner must return shape {expected}, got "
                f"{tuple(h.shape)}"
            )
        s, t = self._bounded(h)
        free = 1.0 - mask
        return s * free, t * free

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(x)
        if not self.vector:
            s, t = self._image_scale_shift(x)
            return x * s.exp() + t, s.flatten(1).sum(1)
        x_keep, x_change = x[:, self.keep], x[:, self.change]
        s, t = self._scale_shift(x_keep)
        y = torch.empty_like(x)
        y[:, self.keep] = x_keep
        y[:, self.change] = x_change * s.exp() + t
        return y, s.sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check(y)
        if not self.vector:
            # the kept entries pass unchanged, so the conditioner sees the same input
            s, t = self._image_scale_shift(y)
            return (y - t) * (-s).exp()
        y_keep, y_change = y[:, self.keep], y[:, self.change]
        s, t = self._scale_shift(y_keep)
        x = torch.empty_like(y)
        x[:, self.keep] = y_keep
        x[:, self.change] = (y_change - t) * (-s).exp()
        return x

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, mask={self.mask_kind!r}"


__all__ = ["MASKS", "AffineCoupling", "cnn_conditioner", "coupling_mask", "mlp_conditioner"]
