"""Element-wise layers: a smooth leaky ReLU, a fixed affine rescaling and the logit."""

from __future__ import annotations

import math

import torch
from torch import nn

from ebflow_lite.layers.base import FlowLayer, LinearFlowLayer


def _check_dim(dim: int | None) -> int | None:
    if dim is not None and (not isinstance(dim, int) or dim < 1):
        raise ValueError(f"dim must be a positive int or None, got {dim!r}")
    return dim


class SmoothLeakyReLU(FlowLayer):
    """``f(x) = alpha x + (1 - alpha) softplus(x)``, applied to every feature.

    ``f'(x) = alpha + (1 - alpha) sigmoid(x)`` lies in ``(alpha, 1)``, so f is a smooth,
    strictly increasing bijection of R. Its inverse has no closed form and is found by
    Newton's method, which converges monotonically because f is convex.

    Args:
        alpha: the slope for x -> -inf, in (0, 1).
        dim: the feature size (None accepts any).

    References:
        Gresele et al., "Relative Gradient Optimization of the Jacobian Term in
        Unsupervised Deep Learning", NeurIPS 2020.
    """

    def __init__(self, alpha: float = 0.3, dim: int | None = None) -> None:
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        self.alpha = float(alpha)
        self.dim = _check_dim(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(x)
        a = self.alpha
        y = a * x + (1.0 - a) * nn.functional.softplus(x)
        slope = a + (1.0 - a) * torch.sigmoid(x)
        return y, slope.log().flatten(1).sum(1)

    def inverse(self, y: torch.Tensor, iterations: int = 100, tol: float = 1e-10) -> torch.Tensor:
        self.check(y)
        a = self.alpha
        # f(x) >= max(x, a x), so this start lies right of the root; Newton then descends
        # monotonically onto it because f is convex and increasing.
        x = torch.where(y >= 0, y, y / a)
        if x.numel() == 0:
            return x
        # Stop at a relative step of ``tol``, or of a few ulps where the dtype cannot do better
        # (float32 Newton steps dither at about one ulp and would otherwise run every iteration).
        limit = max(tol, 4.0 * torch.finfo(y.dtype).eps)
        for _ in range(iterations):
            fx = a * x + (1.0 - a) * nn.functional.softplus(x) - y
            step = fx / (a + (1.0 - a) * torch.sigmoid(x))
            x = x - step
            if bool((step.abs() / (1.0 + x.abs())).max() <= limit):
                break
        return x


class Affine(LinearFlowLayer):
    """A fixed (parameter-free) element-wise map ``y = scale * x + shift`` on D features.

    Used for preprocessing, e.g. ``x / K`` to bring data onto the unit interval. Its
    log-determinant is the constant ``D log|scale|``.

    Args:
        scale: the non-zero factor.
        shift: the offset added after scaling.
        dim: the feature size D.
    """

    def __init__(self, scale: float, shift: float = 0.0, *, dim: int) -> None:
        super().__init__()
        if scale == 0 or not math.isfinite(scale):
            raise ValueError(f"scale must be finite and non-zero, got {scale}")
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.scale = float(scale)
        self.shift = float(shift)
        self.dim = dim

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return x * self.scale + self.shift

    def logabsdet(self) -> torch.Tensor:
        # float64, so that no precision is lost before it meets the data's dtype
        return torch.tensor(self.dim * math.log(abs(self.scale)), dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.apply(x)
        return y, self.logabsdet().to(x).expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check(y)
        return (y - self.shift) / self.scale


class Logit(FlowLayer):
    """The logit preprocessing ``y = logit(eps + (1 - 2 eps) x) / alpha`` on ``x in [0, 1]``.

    The squeeze by ``eps`` keeps the logit finite at 0 and 1. Its derivative
    ``(1 - 2 eps) / (alpha p (1 - p))`` with ``p = eps + (1 - 2 eps) x`` explodes near the
    ends of the interval, which is why EBFlow matches scores *after* this layer (MaP).

    Args:
        alpha: the smoothness (the paper uses 0.5 for FC models, 1.0 for Glow).
        eps: the squeeze towards the centre of the interval.
        dim: the feature size (None accepts any).

    Raises:
        ValueError: (in forward) data outside ``[0, 1]``.

    References:
        Dinh et al., "Density estimation using Real NVP", ICLR 2017; Chao et al., NeurIPS
        2023 (Match after Preprocessing).
    """

    def __init__(self, alpha: float = 1.0, eps: float = 1e-6, dim: int | None = None) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if not 0.0 <= eps < 0.5:
            raise ValueError(f"eps must lie in [0, 0.5), got {eps}")
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.dim = _check_dim(dim)

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
