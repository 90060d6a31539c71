"""Ready-made EBFlow architectures: the paper's FC model, its LU variant, and a 2-D toy flow."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ebflow_lite.flow import EBFlow
from ebflow_lite.layers import ActNorm, AffineCoupling, Dense, LUDense, SmoothLeakyReLU
from ebflow_lite.layers.base import FlowLayer

_FC_INITS = ("identity", "neg_identity", "orthogonal")


def fc_flow(
    dim: int,
    alpha: float = 0.3,
    init: str = "neg_identity",
    preprocessing: Sequence[FlowLayer] = (),
    match_after_preprocessing: bool = True,
    bias_init: float = 1.0,
) -> EBFlow:
    """The paper's FC model: ``Dense -> SmoothLeakyReLU -> Dense`` on D features.

    Both dense layers are linear (their log-dets form log Z, O(D^3) each); the smooth leaky
    ReLU is the only non-linear layer, so ``E(x) = -log N(g(x)) - sum log f'(W_1 x + b_1)``
    costs O(D^2) per sample. As in the official code, the weights start at ``-I`` and the
    biases at one (``bias_init``). Parameters: ``2 (D^2 + D)``.

    Args:
        dim: the feature size D.
        alpha: the leaky slope of :class:`ebflow_lite.layers.SmoothLeakyReLU`.
        init: the dense layers' initial weight (``"neg_identity"``, ``"identity"`` or
            ``"orthogonal"``).
        preprocessing: parameter-free layers applied first (e.g.
            :func:`ebflow_lite.data.digits.digits_preprocessing`).
        match_after_preprocessing: MaP on (default) or off; see :class:`ebflow_lite.EBFlow`.
        bias_init: the constant the biases start at.

    References:
        Chao et al., NeurIPS 2023 (FC-based model); Gresele et al., "Relative Gradient
        Optimization of the Jacobian Term in Unsupervised Deep Learning", NeurIPS 2020.
    """
    if init not in _FC_INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {_FC_INITS}")
    first, second = Dense(dim, init=init), Dense(dim, init=init)
    with torch.no_grad():
        for layer in (first, second):
            layer.bias.fill_(bias_init)  # type: ignore[union-attr]
    layers = [first, SmoothLeakyReLU(alpha, dim=dim), second]
    return EBFlow(layers, preprocessing=preprocessing,
                  match_after_preprocessing=match_after_preprocessing)


def lu_fc_flow(
    dim: int,
    alpha: float = 0.3,
    init: str = "neg_identity",
    preprocessing: Sequence[FlowLayer] = (),
    match_after_preprocessing: bool = True,
    permute: bool = False,
    bias_init: float = 1.0,
) -> EBFlow:
    """The FC model with LU-parameterised dense layers (:class:`ebflow_lite.layers.LUDense`).

    The "specially designed layer" alternative: ``log|det W| = sum log|s|`` costs O(D), so
    maximum likelihood is cheap, but every matrix must be a permuted product of triangular
    factors and the forward pass multiplies by two triangular matrices instead of one full
    one. With ``permute=False`` and ``init="neg_identity"`` it starts at the same function
    as :func:`fc_flow`.

    Args:
        dim: the feature size D.
        alpha: the leaky slope of the smooth leaky ReLU.
        init: ``"neg_identity"`` (diagonal signs -1) or ``"identity"``.
        preprocessing: parameter-free layers applied first.
        match_after_preprocessing: MaP on or off.
        permute: draw a random fixed permutation P for each layer (else the identity).
        bias_init: the constant the biases start at.

    References:
        Kingma and Dhariwal, "Glow", NeurIPS 2018 (the LU parameterisation); Chao et al.,
        NeurIPS 2023 (specially designed linear layers, Section 2).
    """
    if init not in ("identity", "neg_identity"):
        raise ValueError(f"unknown init {init!r}; expected 'identity' or 'neg_identity'")
    dense = [LUDense(dim, seed_permutation=permute) for _ in range(2)]
    with torch.no_grad():
        for layer in dense:
            if init == "neg_identity":
                layer.sign.fill_(-1.0)
            layer.bias.fill_(bias_init)  # type: ignore[union-attr]
    layers = [dense[0], SmoothLeakyReLU(alpha, dim=dim), dense[1]]
    return EBFlow(layers, preprocessing=preprocessing,
                  match_after_preprocessing=match_after_preprocessing)


def toy_flow(
    dim: int = 2,
    n_blocks: int = 4,
    hidden: int = 64,
    actnorm: bool = True,
    seed: int | None = None,
) -> EBFlow:
    """A small coupling flow for 2-D densities, the paper's toy architecture in a smaller size.

    ``n_blocks`` blocks of ``[Dense(orthogonal), AffineCoupling(parity alternating),
    ActNorm]`` and a final ``Dense``. Dense and ActNorm layers are linear (log Z); the
    couplings are the non-linear layers whose log-dets stay in E(x). The paper uses 10
    blocks.

    Args:
        dim: the feature size (at least 2).
        n_blocks: number of blocks.
        hidden: the couplings' conditioner width.
        actnorm: include the ActNorm layers (initialised on the first training batch).
        seed: build the weights from this seed without touching the global random state
            (None: use the global state).

    References:
        Chao et al., NeurIPS 2023 (2-D experiments); Dinh et al., "Density estimation using
        Real NVP", ICLR 2017.
    """
    if dim < 2:
        raise ValueError(f"toy_flow needs dim >= 2, got {dim}")
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be positive, got {n_blocks}")

    def build() -> EBFlow:
        layers: list[FlowLayer] = []
        for i in range(n_blocks):
            layers.append(Dense(dim, init="orthogonal"))
            layers.append(AffineCoupling(dim, hidden=hidden, parity=i % 2))
            if actnorm:
                layers.append(ActNorm(dim))
        layers.append(Dense(dim, init="orthogonal"))
        return EBFlow(layers)

    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


__all__ = ["fc_flow", "lu_fc_flow", "toy_flow"]
