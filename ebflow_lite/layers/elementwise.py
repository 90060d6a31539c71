"""Element-wise layers: a smooth leaky ReLU, a fixed affine rescaling and the logit."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ebflow_lite.layers.base import FlowLayer, LinearFlowLayer
from ebflow_lite.validation import Shape, as_event_shape, numel


def _event_shape(dim: int | None, event_shape: Shape | None, where: str) -> Shape | None:
    """The event shape of an element-wise layer: ``dim`` (vectors) or ``event_shape``."""
    if dim is not None and event_shape is not None:
        raise ValueError(f"{where}: pass dim or event_shape, not both")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, numbers.Integral)
                            or dim < 1):
        raise ValueError(f"{where}: dim must be a positive int or None, got {dim!r}")
    return as_event_shape(int(dim) if dim is not None else event_shape)


def _check_real(value: float, name: str, where: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value)):
        raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")
    return float(value)


class SmoothLeakyReLU(FlowLayer):
    """``f(x) = alpha x + (1 - alpha) softplus(x)`` (``+ x`` if residual), on every entry.

    ``f'(x) = alpha + (1 - alpha) sigmoid(x)`` lies in ``(alpha, 1)`` (in ``(1 + alpha, 2)``
    with the residual), so f is a smooth, strictly increasing bijection of R. Its inverse
    has no closed form and is found by Newton's method, which converges monotonically
    because f is convex. Works on any event shape (vectors or images).

    Args:
        alpha: the slope for x -> -inf, in (0, 1).
        dim: the feature size of a vector (None accepts any shape).
        residual: add the identity, ``f(x) + x``, as the paper's CNN models do.
        event_shape: the shape of one sample instead of ``dim`` (None accepts any).

    References:
        Gresele et al., "Relative Gradient Optimization of the Jacobian Term in
        Unsupervised Deep Learning", NeurIPS 2020.
    """

    def __init__(
        self, alpha: float = 0.3, dim: int | None = None, residual: bool = False, *,
        event_shape: Shape | None = None,
    ) -> None:
        super().__init__()
        alpha = _check_real(alpha, "alpha", "SmoothLeakyReLU")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        self.alpha = alpha
        self.residual = bool(residual)
        self.event_shape = _event_shape(dim, event_shape, "SmoothLeakyReLU")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(x)
        a, r = self.alpha, float(self.residual)
        y = (a + r) * x + (1.0 - a) * nn.functional.softplus(x)
        slope = a + r + (1.0 - a) * torch.sigmoid(x)
        return y, slope.log().flatten(1).sum(1)

    def inverse(self, y: torch.Tensor, iterations: int = 100, tol: float = 1e-10) -> torch.Tensor:
        self.check(y)
        a, r = self.alpha + float(self.residual), float(self.residual)
        # f(x) = a x + (1 - alpha) softplus(x) >= max((1 + r) x, a x), so this start lies
        # right of the root; Newton then descends monotonically onto it (f convex, increasing).
        x = torch.where(y >= 0, y / (1.0 + r), y / a)
        if x.numel() == 0:
            return x
        # Stop at a relative step of ``tol``, or of a few ulps where the dtype cannot do better
        # (float32 Newton steps dither at about one ulp and would otherwise run every iteration).
        limit = max(tol, 4.0 * torch.finfo(y.dtype).eps)
        b = 1.0 - self.alpha
        for _ in range(iterations):
            fx = a * x + b * nn.functional.softplus(x) - y
            step = fx / (a + b * torch.sigmoid(x))
            x = x - step
            if bool((step.abs() / (1.0 + x.abs())).max() <= limit):
                break
        return x


class Affine(LinearFlowLayer):
    """A fixed (parameter-free) element-wise map ``y = scale * x + shift``.

    Used for preprocessing, e.g. ``x / K`` to bring data onto the unit interval. Its
    log-determinant is the constant ``D log|scale|`` with ``D`` the number of entries of one
    sample (``C H W`` for an image).

    Args:
        scale: the non-zero factor.
        shift: the offset added after scaling.
        dim: the feature size D of a vector.
        event_shape: the shape of one sample instead of ``dim``; with neither, the layer
            accepts any shape and :meth:`logabsdet` needs the shape as an argument.
    """

    def __init__(
        self, scale: float, shift: float = 0.0, *, dim: int | None = None,
        event_shape: Shape | None = None,
    ) -> None:
        super().__init__()
        scale = _check_real(scale, "scale", "Affine")
        if scale == 0:
            raise ValueError(f"scale must be finite and non-zero, got {scale}")
        self.scale = scale
        self.shift = _check_real(shift, "shift", "Affine")
        self.event_shape = _event_shape(dim, event_shape, "Affine")

    def linear_map(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return x * self.scale + self.shift

    def logabsdet(self, event_shape: Shape | None = None) -> torch.Tensor:
        """``numel(event_shape) * log|scale|``, in float64 (no precision lost early)."""
        shape = self._resolve_shape(event_shape, "logabsdet")
        return torch.tensor(numel(shape) * math.log(abs(self.scale)), dtype=torch.float64)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check(y)
        return (y - self.shift) / self.scale


class Logit(FlowLayer):
    """The logit preprocessing ``y = logit(eps + (1 - 2 eps) x) / alpha`` on ``x in [0, 1]``.

    The squeeze by ``eps`` keeps the logit finite at 0 and 1. Its derivative
    ``(1 - 2 eps) / (alpha x_bar (1 - x_bar))`` with ``x_bar = eps + (1 - 2 eps) x`` explodes
    near the ends of the interval, which is why EBFlow matches scores *after* this layer (MaP).

    Args:
        alpha: the smoothness (the paper uses 0.5 for FC models, 1.0 for Glow).
        eps: the squeeze towards the centre of the interval.
        dim: the feature size of a vector (None accepts any shape).
        event_shape: the shape of one sample instead of ``dim``.

    Raises:
        ValueError: (in forward) data outside ``[0, 1]``.

    References:
        Dinh et al., "Density estimation using Real NVP", ICLR 2017; Chao et al., NeurIPS
        2023 (Match after Preprocessing).
    """

    def __init__(
        self, alpha: float = 1.0, eps: float = 1e-6, dim: int | None = None, *,
        event_shape: Shape | None = None,
    ) -> None:
        super().__init__()
        alpha = _check_real(alpha, "alpha", "Logit")
        eps = _check_real(eps, "eps", "Logit")
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if not 0.0 <= eps < 0.5:
            raise ValueError(f"eps must lie in [0, 0.5), got {eps}")
        self.alpha = alpha
        self.eps = eps
        self.event_shape = _event_shape(dim, event_shape, "Logit")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(x)
        if bool((x < 0).any() | (x > 1).any()):
            lo, hi = float(x.min()), float(x.max())
            raise ValueError(
                f"Logit: data must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                "rescale first (e.g. ebflow_lite.layers.Affine(1 / num_levels))"
            )
        p = self.eps + (1.0 - 2.0 * self.eps) * x
        y = (p.log() - torch.log1p(-p)) / self.alpha
        ld = math.log(1.0 - 2.0 * self.eps) - math.log(self.alpha) - p.log() - torch.log1p(-p)
        return y, ld.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check(y)
        p = torch.sigmoid(self.alpha * y)
        # Latents beyond logit(1 - eps) / alpha lie outside the image of [0, 1]; clamping
        # keeps samples inside the data domain, so log_prob accepts them.
        return ((p - self.eps) / (1.0 - 2.0 * self.eps)).clamp(0.0, 1.0)
