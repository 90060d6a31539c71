"""Dense linear layers: a full matrix, and an LU-parameterised one."""

from __future__ import annotations

import torch
from torch import nn

from ebflow_lite.layers.base import LinearFlowLayer
from ebflow_lite.validation import Shape, check_positive_int

_INITS = ("identity", "neg_identity", "orthogonal")


def _initial_matrix(dim: int, init: str) -> torch.Tensor:
    if init == "identity":
        return torch.eye(dim)
    if init == "neg_identity":
        return -torch.eye(dim)
    if init == "orthogonal":
        q, r = torch.linalg.qr(torch.randn(dim, dim))
        return q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    raise ValueError(f"unknown init {init!r}; expected one of {_INITS}")


class Dense(LinearFlowLayer):
    """A full, unconstrained linear map ``y = W x + b``.

    The log-determinant ``log|det W|`` costs O(D^3) (an LU factorisation) and so does the
    inverse; the map itself costs O(D^2) per sample.

    Args:
        dim: the feature size D.
        bias: learn a bias ``b``.
        init: ``"identity"``, ``"neg_identity"`` (the paper's FC models start at ``-I``) or
            ``"orthogonal"``.

    References:
        Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
        Objectives", NeurIPS 2023 (the FC model, after Gresele et al., NeurIPS 2020).
    """

    def __init__(self, dim: int, bias: bool = True, init: str = "identity") -> None:
        super().__init__()
        dim = check_positive_int(dim, "dim", "Dense")
        self.event_shape = (dim,)
        self.weight = nn.Parameter(_initial_matrix(dim, init))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def linear_map(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return nn.functional.linear(x, self.weight, self.bias)

    def logabsdet(self, event_shape: Shape | None = None) -> torch.Tensor:
        """``log|det W|`` by an LU factorisation (O(D^3))."""
        self._resolve_shape(event_shape, "logabsdet")
        return torch.linalg.slogdet(self.weight)[1]

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check(y)
        if self.bias is not None:
            y = y - self.bias
        # Solve W x = y for every row: x^T = y^T W^{-T}.
        return torch.linalg.solve(self.weight, y.T).T


class LUDense(LinearFlowLayer):
    """A linear map ``W = P L (U + diag(sign * exp(log_scale)))``, P a fixed permutation.

    L is unit lower triangular and U strictly upper triangular, so
    ``log|det W| = sum(log_scale)`` costs O(D): the "specially designed layer" alternative to
    EBFlow's determinant-free training.

    Args:
        dim: the feature size D.
        bias: learn a bias.
        seed_permutation: draw a random permutation P (else the identity).

    References:
        Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        NeurIPS 2018.
    """

    def __init__(self, dim: int, bias: bool = True, seed_permutation: bool = True) -> None:
        super().__init__()
        dim = check_positive_int(dim, "dim", "LUDense")
        self.event_shape = (dim,)
        perm = torch.randperm(dim) if seed_permutation else torch.arange(dim)
        self.register_buffer("permutation", perm)
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("sign", torch.ones(dim))
        self.register_buffer("lower_mask", torch.tril(torch.ones(dim, dim), -1))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the triangular factors ``(L, U)`` with the scale on U's diagonal."""
        eye = torch.eye(self.event_shape[0], device=self.lower.device, dtype=self.lower.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * self.log_scale.exp())
        return lower, upper

    def weight(self) -> torch.Tensor:
        """Assemble the dense matrix W (O(D^3); for inspection and tests)."""
        lower, upper = self.factors()
        return (lower @ upper)[self.permutation]

    def linear_map(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        lower, upper = self.factors()
        h = x @ upper.T
        h = h @ lower.T
        h = h[:, self.permutation]
        return h if self.bias is None else h + self.bias

    def logabsdet(self, event_shape: Shape | None = None) -> torch.Tensor:
        """``sum(log_scale)``: O(D), no factorisation."""
        self._resolve_shape(event_shape, "logabsdet")
        return self.log_scale.sum()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check(y)
        if self.bias is not None:
            y = y - self.bias
        h = torch.empty_like(y)
        h[:, self.permutation] = y
        lower, upper = self.factors()
        h = torch.linalg.solve_triangular(lower, h.T, upper=False, unitriangular=True)
        h = torch.linalg.solve_triangular(upper, h, upper=True)
        return h.T

