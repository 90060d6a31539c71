"""Ready-made EBFlow architectures: the paper's FC, CNN and Glow models, and a 2-D toy flow."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ebflow_lite.flow import EBFlow
from ebflow_lite.layers import (
    ActNorm,
    AffineCoupling,
    Conv1x1,
    ConvKxK,
    Dense,
    LUDense,
    SmoothLeakyReLU,
    Split,
    Squeeze,
)
from ebflow_lite.layers.base import FlowLayer
from ebflow_lite.validation import as_event_shape, check_positive_int

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

    return _seeded(build, seed)


def cnn_flow(
    event_shape: Sequence[int] = (1, 28, 28),
    kernel_size: int = 7,
    alpha: float = 0.3,
    padding_mode: str = "zeros",
    n_blocks: int = 3,
    convs_per_block: int = 2,
    preprocessing: Sequence[FlowLayer] = (),
    match_after_preprocessing: bool = True,
    init: str = "neg_identity",
    seed: int | None = None,
) -> EBFlow:
    """The paper's CNN model: full KxK convolutions, smooth leaky ReLUs, and squeezes.

    ``n_blocks`` blocks of ``convs_per_block`` convolutions
    (:class:`ebflow_lite.layers.ConvKxK`, C -> C, "same" padding, a bias), each but the last
    followed by a residual :class:`ebflow_lite.layers.SmoothLeakyReLU`, with a
    :class:`ebflow_lite.layers.Squeeze` between blocks: for MNIST
    ``(1, 28, 28) -> (4, 14, 14) -> (16, 7, 7)``. The convolutions are the linear layers
    (log Z: the log-det of a ``D x D`` matrix each, or its FFT with
    ``padding_mode="circular"``); the activations are the non-linear ones, so the energy
    costs a few convolutions per sample. As in the official code the kernels start at a
    negated Dirac (``init="neg_identity"``) and the biases at tiny Gaussian values (the
    standard deviation of a Xavier-normal initialisation with gain 0.01). Parameters:
    ``sum over blocks of convs_per_block (C^2 K^2 + C)`` (26,796 for MNIST).

    Args:
        event_shape: ``(C, H, W)``; H and W divisible by ``2 ** (n_blocks - 1)``.
        kernel_size: K (odd).
        alpha: the activations' leaky slope.
        padding_mode: ``"zeros"`` (the paper's) or ``"circular"`` (FFT log-dets).
        n_blocks: the number of blocks (3 in the paper).
        convs_per_block: convolutions per block (2 in the paper).
        preprocessing: parameter-free layers applied first (e.g.
            :func:`ebflow_lite.preprocessing.image_preprocessing` with ``alpha=0.75``).
        match_after_preprocessing: MaP on (default) or off.
        init: the kernels' start, ``"neg_identity"``, ``"identity"`` or ``"random"``.
        seed: build the weights from this seed without touching the global random state.

    References:
        Chao et al., NeurIPS 2023 (CNN-based model).
    """
    shape = as_event_shape(event_shape)
    if shape is None or len(shape) != 3:
        raise ValueError(f"cnn_flow: event_shape must be (C, H, W), got {event_shape!r}")
    check_positive_int(n_blocks, "n_blocks", "cnn_flow")
    check_positive_int(convs_per_block, "convs_per_block", "cnn_flow")
    if shape[1] % 2 ** (n_blocks - 1) or shape[2] % 2 ** (n_blocks - 1):
        raise ValueError(
            f"cnn_flow: H and W must be divisible by 2 ** (n_blocks - 1) = {2**(n_blocks - 1)} "
            f"(a squeeze between blocks), got event_shape={shape} with n_blocks={n_blocks}"
        )

    def build() -> EBFlow:
        layers: list[FlowLayer] = []
        c = shape[0]
        for block in range(n_blocks):
            if block > 0:
                layers.append(Squeeze())
                c *= 4
            for i in range(convs_per_block):
                conv = ConvKxK(c, kernel_size, padding_mode, init=init)
                with torch.no_grad():
                    fan = c * kernel_size**2
                    conv.bias.normal_(0.0, 0.01 * (2.0 / (2 * fan)) ** 0.5)  # type: ignore
                layers.append(conv)
                if not (block == n_blocks - 1 and i == convs_per_block - 1):
                    layers.append(SmoothLeakyReLU(alpha, residual=True))
        return EBFlow(layers, preprocessing=preprocessing,
                      match_after_preprocessing=match_after_preprocessing, event_shape=shape)

    return _seeded(build, seed)


def glow_flow(
    event_shape: Sequence[int] = (1, 28, 28),
    n_levels: int = 2,
    depth: int = 16,
    hidden: int = 512,
    preprocessing: Sequence[FlowLayer] = (),
    match_after_preprocessing: bool = True,
    seed: int | None = None,
) -> EBFlow:
    """A Glow-style multi-scale EBFlow, the paper's MNIST Glow at a chosen size.

    Each level squeezes, then runs ``depth`` steps of ``[ActNorm, Conv1x1, AffineCoupling]``
    (channel masks alternating, a CNN conditioner of width ``hidden``); between levels a
    coupling on all channels and a :class:`ebflow_lite.layers.Split` factor half the
    channels out to the prior. For MNIST with two levels:
    ``(1, 28, 28) -> (4, 14, 14) -> split (2, 14, 14) -> (8, 7, 7)``. The 1x1 convolutions
    are the linear layers whose log-dets form log Z; ActNorm is kept in the energy, as in
    the paper's code (``keep_in_energy=(ActNorm,)``); the couplings and the factored-out
    latents' prior make up the rest of E. The paper uses ``depth=16`` and ``hidden=512``.

    Args:
        event_shape: ``(C, H, W)`` with H, W divisible by ``2 ** n_levels``.
        n_levels: the number of squeezes (levels).
        depth: flow steps per level.
        hidden: the couplings' conditioner width.
        preprocessing: parameter-free layers applied first (the paper: logit alpha 1.0).
        match_after_preprocessing: MaP on (default) or off.
        seed: build the weights from this seed without touching the global random state.

    References:
        Kingma and Dhariwal, "Glow", NeurIPS 2018; Chao et al., NeurIPS 2023 (Glow-based
        model, Figure 4).
    """
    shape = as_event_shape(event_shape)
    if shape is None or len(shape) != 3:
        raise ValueError(f"glow_flow: event_shape must be (C, H, W), got {event_shape!r}")
    check_positive_int(n_levels, "n_levels", "glow_flow")
    check_positive_int(depth, "depth", "glow_flow")
    check_positive_int(hidden, "hidden", "glow_flow")
    if shape[1] % 2**n_levels or shape[2] % 2**n_levels:
        raise ValueError(
            f"glow_flow: H and W must be divisible by 2 ** n_levels = {2**n_levels} (one "
            f"squeeze per level), got event_shape={shape} with n_levels={n_levels}"
        )

    def build() -> EBFlow:
        layers: list[FlowLayer | Split] = []
        c, h, w = shape
        for level in range(n_levels):
            layers.append(Squeeze())
            c, h, w = 4 * c, h // 2, w // 2
            for step in range(depth):
                layers += [ActNorm(c), Conv1x1(c),
                           AffineCoupling((c, h, w), hidden=hidden, parity=step % 2)]
            if level < n_levels - 1:
                layers.append(AffineCoupling((c, h, w), hidden=hidden, mask="checkerboard"))
                layers.append(Split(c // 2))
                c = c // 2
        return EBFlow(layers, preprocessing=preprocessing,
                      match_after_preprocessing=match_after_preprocessing, event_shape=shape,
                      keep_in_energy=(ActNorm,))

    return _seeded(build, seed)


def _seeded(build, seed: int | None) -> EBFlow:
    """Run ``build()`` under ``seed`` without touching the global random state."""
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


__all__ = ["cnn_flow", "fc_flow", "glow_flow", "lu_fc_flow", "toy_flow"]
