"""Plain energy-based models: a neural energy, and a Gaussian with everything in closed form."""

from __future__ import annotations

import math

import torch
from torch import nn

from ebflow_lite.autodiff import energy_and_grad
from ebflow_lite.validation import check_batch


class MLPEnergy(nn.Module):
    """A neural energy ``E(x) = f_theta(x) + 0.5 * confinement * |x|^2``, shape ``(B,)``.

    ``f_theta`` is a multilayer perceptron with SiLU activations (smooth, so the score and
    its derivatives exist everywhere). Its normalizing constant is unknown: train it with a
    score-matching objective or with :func:`ebflow_lite.objectives.sml` and MCMC negatives.
    A positive ``confinement`` makes ``exp(-E)`` integrable whatever the network does, which
    keeps Langevin chains from drifting away.

    Args:
        dim: the feature size D.
        hidden: the width of the hidden layers.
        depth: the number of hidden layers (>= 1).
        confinement: the weight of the quadratic term (>= 0).

    References:
        LeCun et al., "A Tutorial on Energy-Based Learning", 2006.
    """

    def __init__(
        self, dim: int, hidden: int = 64, depth: int = 2, confinement: float = 0.0,
    ) -> None:
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(
                f"dim, hidden and depth must be positive, got {dim}, {hidden}, {depth}"
            )
        if not math.isfinite(confinement) or confinement < 0:
            raise ValueError(f"confinement must be finite and >= 0, got {confinement}")
        self.dim = dim
        self.confinement = float(confinement)
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``E(x)``, shape ``(B,)``."""
        check_batch(x, self.dim, where="MLPEnergy")
        value = self.net(x).squeeze(-1)
        if self.confinement > 0:
            value = value + 0.5 * self.confinement * (x**2).sum(-1)
        return value

    def score(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """``-grad_x E(x)`` by autograd, shape like ``x``."""
        return -energy_and_grad(self, x, create_graph=create_graph)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`energy`."""
        return self.energy(x)


class GaussianEnergy(nn.Module):
    """The Gaussian ``N(mean, cov)`` as an energy model, with closed-form everything.

    Parameterised by the mean and a matrix ``M`` with precision ``A = M^T M`` (M starts as
    the transposed Cholesky factor of the precision), so
    ``E(x) = 0.5 |M (x - mean)|^2``, ``score(x) = -A (x - mean)``,
    ``log Z = -log|det M| + (D/2) log(2 pi)``. Both are trainable ``nn.Parameter``s unless
    ``trainable=False``: it serves as the exact reference in tests and as the simplest model
    to fit by score matching.

    Args:
        mean: shape ``(D,)``.
        cov: a symmetric positive-definite ``(D, D)`` matrix.
        trainable: register mean and M as parameters (else buffers).
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, trainable: bool = True) -> None:
        super().__init__()
        mean = torch.as_tensor(mean)
        cov = torch.as_tensor(cov, dtype=mean.dtype)
        if not mean.is_floating_point() or mean.dim() != 1:
            raise ValueError(f"mean must be a floating 1-D tensor, got shape {tuple(mean.shape)}")
        dim = mean.shape[0]
        if cov.shape != (dim, dim):
            raise ValueError(f"cov must have shape ({dim}, {dim}), got {tuple(cov.shape)}")
        if not bool(torch.allclose(cov, cov.T)):
            raise ValueError("cov must be symmetric")
        chol, info = torch.linalg.cholesky_ex(torch.linalg.inv(cov))
        if int(info) != 0:
            raise ValueError("cov must be positive definite")
        self.dim = dim
        factor = chol.T.contiguous()
        if trainable:
            self.mean = nn.Parameter(mean.clone())
            self.factor = nn.Parameter(factor)
        else:
            self.register_buffer("mean", mean.clone())
            self.register_buffer("factor", factor)

    @property
    def precision(self) -> torch.Tensor:
        """``A = M^T M``."""
        return self.factor.T @ self.factor

    @property
    def cov(self) -> torch.Tensor:
        """``A^{-1}``."""
        return torch.linalg.inv(self.precision)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``0.5 |M (x - mean)|^2``, shape ``(B,)``."""
        check_batch(x, self.dim, where="GaussianEnergy")
        return 0.5 * ((x - self.mean) @ self.factor.T).pow(2).sum(-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``-A (x - mean)`` in closed form."""
        check_batch(x, self.dim, where="GaussianEnergy")
        return -(x - self.mean) @ self.precision

    def log_z(self) -> torch.Tensor:
        """``log Z = (D/2) log(2 pi) - log|det M|``."""
        return 0.5 * self.dim * math.log(2 * math.pi) - torch.linalg.slogdet(self.factor)[1]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised log-density, shape ``(B,)``."""
        return -self.energy(x) - self.log_z()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`log_prob`."""
        return self.log_prob(x)
