"""Convolutions as linear flow layers: the invertible 1x1 convolution and a full KxK one.

Cost notes (``D = C H W`` entries per image):

* :class:`Conv1x1`: the map costs ``O(C^2 H W)`` per image; ``log|det| = H W log|det W|``
  needs one ``C x C`` determinant, ``O(C^3)``. :class:`LUConv1x1` makes it ``O(C)``.
* :class:`ConvKxK`: the map costs ``O(C^2 K^2 H W)`` per image. Its Jacobian is a
  ``D x D`` matrix (banded for zero padding, block-circulant for circular padding). With zero
  padding the log-det and the inverse use that matrix, built on the layer's device by
  scattering the weights: ``O(D C K^2)`` work and ``O(D^2)`` memory to build, ``O(D^3)`` to
  factorise. With circular padding the FFT block-diagonalises it: one ``C x C`` determinant
  per frequency, ``O(H W C^3 + C^2 H W log(H W))``. Score-matching training needs neither.

Determinants and inverses are computed in float64 and cast back: a float32 ``slogdet`` or
``inverse`` of a large matrix loses digits.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ebflow_lite.layers.base import LinearFlowLayer
from ebflow_lite.layers.dense import Dense, LUDense
from ebflow_lite.validation import Shape, check_positive_int, check_shape

PADDING_MODES = ("zeros", "circular")


def _check_image(layer: nn.Module, x: torch.Tensor, channels: int, where: str) -> torch.Tensor:
    check_shape(x, None, where=where)
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{where}: expected a batch of images (B, {channels}, H, W), got shape "
            f"{tuple(x.shape)}"
        )
    return x


def _image_shape(event_shape: Shape | None, channels: int, where: str) -> Shape:
    if event_shape is None:
        raise ValueError(
            f"{where}: the log-det depends on the image size; pass event_shape=(C, H, W)"
        )
    shape = tuple(event_shape)
    if len(shape) != 3 or shape[0] != channels:
        raise ValueError(f"{where}: expected event_shape ({channels}, H, W), got {shape}")
    return shape


class Conv1x1(LinearFlowLayer):
    """The invertible 1x1 convolution ``y[:, :, i, j] = W x[:, :, i, j]`` (no bias).

    One unconstrained ``C x C`` matrix mixes the channels of every pixel, so
    ``log|det J| = H W log|det W|``: O(C^3), independent of x, so it belongs to log Z.

    Args:
        channels: C.
        init: the initial matrix, ``"orthogonal"`` (Glow's choice), ``"identity"`` or
            ``"neg_identity"``.

    References:
        Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        NeurIPS 2018.
    """

    def __init__(self, channels: int, init: str = "orthogonal") -> None:
        super().__init__()
        self.channels = check_positive_int(channels, "channels", type(self).__name__)
        self.mixing: nn.Module = Dense(channels, bias=False, init=init)

    def matrix(self) -> torch.Tensor:
        """The ``C x C`` channel-mixing matrix W."""
        return self.mixing.weight

    def check(self, x: torch.Tensor) -> torch.Tensor:
        return _check_image(self, x, self.channels, type(self).__name__)

    check_output = check

    def linear_map(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        w = self.matrix()
        return nn.functional.conv2d(x, w.view(*w.shape, 1, 1))

    def logabsdet(self, event_shape: Shape | None = None) -> torch.Tensor:
        """``H W log|det W|``."""
        _, h, w = _image_shape(event_shape, self.channels, f"{type(self).__name__}.logabsdet")
        return h * w * self.mixing.logabsdet()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check(y)
        w = self.matrix()
        w_inv = torch.linalg.inv(w.double()).to(w.dtype)
        return nn.functional.conv2d(y, w_inv.view(*w.shape, 1, 1))


class LUConv1x1(Conv1x1):
    """The 1x1 convolution ``W = P L (U + diag(sign * exp(log_scale)))``, so that
    ``log|det J| = H W sum(log_scale)``.

    O(C) instead of O(C^3) (the LU parameterisation of :class:`ebflow_lite.layers.LUDense`).

    Args:
        channels: C.
        seed_permutation: draw a random fixed permutation P (else the identity).

    References:
        Kingma and Dhariwal, "Glow", NeurIPS 2018.
    """

    def __init__(self, channels: int, seed_permutation: bool = True) -> None:
        LinearFlowLayer.__init__(self)
        self.channels = check_positive_int(channels, "channels", "LUConv1x1")
        self.mixing = LUDense(channels, bias=False, seed_permutation=seed_permutation)

    def matrix(self) -> torch.Tensor:
        return self.mixing.weight()


def circular_conv_logabsdet(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``log|det|`` of the circular ("same", stride 1) convolution with ``weight`` by the FFT.

    A circular convolution is diagonalised by the 2-D discrete Fourier transform: at each of
    the ``H W`` frequencies it multiplies the channel vector by the ``C x C`` matrix
    ``w_hat(f) = sum_{a,b} weight[:, :, a, b] exp(2 pi i (f_1 (a - p) / H + f_2 (b - p) / W))``
    (``p = k // 2``), so ``log|det| = sum_f log|det w_hat(f)|``. The formula is exact only for
    circular padding: a zero-padded convolution's matrix is not block-circulant.

    Args:
        weight: ``(C, C, k, k)`` with k odd.
        height: H.
        width: W.

    Returns:
        A real scalar in ``weight``'s dtype (computed in complex128).
    """
    return torch.linalg.slogdet(_kernel_spectrum(weight, height, width))[1].sum().to(weight.dtype)


def _kernel_spectrum(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``w_hat(f)`` for every frequency, shape ``(H, W, C, C)``, complex128."""
    c_out, c_in, k, _ = weight.shape
    p = k // 2
    offsets = torch.arange(k, device=weight.device) - p
    rows = offsets.remainder(height).view(-1, 1)
    cols = offsets.remainder(width).view(1, -1)
    index = (rows * width + cols).flatten()
    full = torch.zeros(c_out, c_in, height * width, dtype=torch.float64, device=weight.device)
    full = full.index_add(2, index, weight.double().flatten(2))
    spectrum = torch.fft.ifft2(full.view(c_out, c_in, height, width)) * (height * width)
    return spectrum.permute(2, 3, 0, 1)


class ConvKxK(LinearFlowLayer):
    """A full stride-1 "same" convolution ``C -> C`` with a ``K x K`` kernel, as a linear layer.

    As in the paper's CNN model, the whole convolution is one linear map of the ``D = C H W``
    entries. Training by score matching only runs the convolution forward and backward;
    maximum likelihood, exact evaluation and inverse sampling need its log-det and inverse
    (see the module's cost notes): with ``padding_mode="zeros"`` from the ``D x D`` matrix
    (:meth:`matrix`), with ``"circular"`` through the FFT
    (:func:`circular_conv_logabsdet`). Stride > 1 or unpadded convolutions change the size,
    so they are not square and not flow layers.

    Args:
        channels: C (input and output).
        kernel_size: K, odd.
        padding_mode: ``"zeros"`` or ``"circular"``.
        bias: learn a per-channel bias.
        init: ``"identity"`` (a Dirac kernel), ``"neg_identity"`` (its negative, the paper's
            ``neg_init``) or ``"random"`` (PyTorch's default convolution initialisation).

    References:
        Chao et al., NeurIPS 2023 (CNN-based model); Karami et al., "Invertible
        Convolutional Flow", NeurIPS 2019 (FFT determinants of circular convolutions).
    """

    def __init__(
        self, channels: int, kernel_size: int = 3, padding_mode: str = "zeros",
        bias: bool = True, init: str = "identity",
    ) -> None:
        super().__init__()
        self.channels = check_positive_int(channels, "channels", "ConvKxK")
        kernel_size = check_positive_int(kernel_size, "kernel_size", "ConvKxK")
        if kernel_size % 2 == 0:
            raise ValueError(
                f"ConvKxK: kernel_size must be odd for a 'same' convolution, got {kernel_size}"
            )
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                f"ConvKxK: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}"
            )
        if init not in ("identity", "neg_identity", "random"):
            raise ValueError(
                f"ConvKxK: init must be 'identity', 'neg_identity' or 'random', got {init!r}"
            )
        self.kernel_size = kernel_size
        self.padding_mode = padding_mode
        weight = torch.empty(channels, channels, kernel_size, kernel_size)
        if init == "random":
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        else:
            nn.init.dirac_(weight)
            if init == "neg_identity":
                weight.neg_()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def check(self, x: torch.Tensor) -> torch.Tensor:
        return _check_image(self, x, self.channels, "ConvKxK")

    check_output = check

    def _check_circular(self, height: int, width: int) -> None:
        p = self.kernel_size // 2
        if p > height or p > width:
            raise ValueError(
                f"ConvKxK: circular padding {p} exceeds the image size {(height, width)}"
            )

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        p = self.kernel_size // 2
        if self.padding_mode == "circular":
            self._check_circular(x.shape[2], x.shape[3])
            x = nn.functional.pad(x, (p, p, p, p), mode="circular")
            return nn.functional.conv2d(x, self.weight)
        return nn.functional.conv2d(x, self.weight, padding=p)

    def linear_map(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        y = self._convolve(x)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def matrix(self, event_shape: Shape) -> torch.Tensor:
        """The ``D x D`` matrix ``A`` with ``vec(y - b) = A vec(x)``, on the layer's device.

        Entry ``((o, i, j), (c, i', j'))`` is ``weight[o, c, i' - i + p, j' - j + p]``
        (``p = K // 2``; indices taken modulo H and W for circular padding, and entries that
        fall outside the image dropped for zero padding). It is built by scattering the
        weights into a zero matrix at those positions (summing where a wrap-around sends two
        kernel taps to one entry), ``O(D C K^2)`` work, instead of convolving the ``D``
        basis images (``O(D^2 C K^2)``); differentiable in the weight. ``O(D^2)`` memory.
        """
        c, h, w = _image_shape(event_shape, self.channels, "ConvKxK.matrix")
        if self.padding_mode == "circular":
            self._check_circular(h, w)
        d, k, p = c * h * w, self.kernel_size, self.kernel_size // 2
        device = self.weight.device
        # Spatial part: every (output pixel, kernel tap) pair and the input pixel it reads.
        i, j, a, b = torch.meshgrid(
            torch.arange(h, device=device), torch.arange(w, device=device),
            torch.arange(k, device=device), torch.arange(k, device=device), indexing="ij")
        rows, cols = i + a - p, j + b - p
        if self.padding_mode == "circular":
            rows, cols = rows.remainder(h), cols.remainder(w)
            keep = torch.ones_like(rows, dtype=torch.bool)
        else:
            keep = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        out_pixel = (i * w + j)[keep]
        in_pixel = (rows * w + cols)[keep]
        tap = (a * k + b)[keep]
        # Channel part: entry (o * HW + out_pixel, ci * HW + in_pixel) gets weight[o, ci, tap].
        channel = torch.arange(c, device=device) * (h * w)
        row_index = channel.view(c, 1, 1) + out_pixel.view(1, 1, -1)
        col_index = channel.view(1, c, 1) + in_pixel.view(1, 1, -1)
        flat = (row_index * d + col_index).flatten()
        values = self.weight.flatten(2)[:, :, tap].flatten()
        matrix = torch.zeros(d * d, dtype=self.weight.dtype, device=device)
        return matrix.index_add_(0, flat, values).view(d, d)

    def logabsdet(self, event_shape: Shape | None = None) -> torch.Tensor:
        """``log|det A|``: by ``slogdet`` of :meth:`matrix` (zeros) or the FFT (circular)."""
        c, h, w = _image_shape(event_shape, self.channels, "ConvKxK.logabsdet")
        if self.padding_mode == "circular":
            return circular_conv_logabsdet(self.weight, h, w)
        return torch.linalg.slogdet(self.matrix((c, h, w)).double())[1].to(self.weight.dtype)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self.check(y)
        if self.bias is not None:
            y = y - self.bias.view(1, -1, 1, 1)
        b, c, h, w = y.shape
        if self.padding_mode == "circular":
            spectrum = _kernel_spectrum(self.weight, h, w)  # (H, W, C, C)
            y_hat = torch.fft.fft2(y.double()).permute(2, 3, 1, 0)  # (H, W, C, B)
            x_hat = torch.linalg.solve(spectrum, y_hat).permute(3, 2, 0, 1)
            return torch.fft.ifft2(x_hat).real.to(y.dtype)
        a = self.matrix((c, h, w)).double()
        x = torch.linalg.solve(a, y.reshape(b, -1).double().T).T
        return x.reshape(b, c, h, w).to(y.dtype)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, "
                f"padding_mode={self.padding_mode!r}")


__all__ = ["PADDING_MODES", "Conv1x1", "ConvKxK", "LUConv1x1", "circular_conv_logabsdet"]
