"""Checkers for the exercises of chapter 9 (a Glow-style EBFlow on images).

Every checker compares the learner's function with an independent computation: the
Jacobian of the library's :class:`ebflow_lite.layers.Conv1x1` by autograd, the dense matrix
of a circular convolution (built by convolving the basis images) and its ``slogdet`` in
float64, and the library's coupling masks pushed through the inverse of the squeeze.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ebflow_lite.autodiff import batch_jacobian
from ebflow_lite.exercises import CheckResult, checker, failed, passed
from ebflow_lite.layers import Conv1x1, coupling_mask

# ----------------------------------------------------------------------------- exercise 1


def _conv1x1_cases() -> list[tuple[torch.Tensor, int, int]]:
    gen = torch.Generator().manual_seed(9)
    cases = []
    for c, h, w in ((2, 3, 3), (3, 2, 4), (4, 1, 3), (1, 3, 2)):
        weight = torch.randn(c, c, generator=gen, dtype=torch.float64)
        cases.append((weight, h, w))
    # a matrix with a negative determinant: log|det| needs the absolute value
    flip = torch.eye(3, dtype=torch.float64)[[1, 0, 2]] * torch.tensor([1.5, 0.5, 2.0],
                                                                       dtype=torch.float64)
    cases.append((flip, 2, 2))
    return cases


def conv1x1_reference(weight: torch.Tensor, height: int, width: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The Jacobian of the library's 1x1 convolution by autograd, and its slogdet."""
    c = weight.shape[0]
    layer = Conv1x1(c).double()
    with torch.no_grad():
        layer.matrix().copy_(weight)

    def flat(v: torch.Tensor) -> torch.Tensor:
        return layer.linear_map(v.view(-1, c, height, width)).flatten(1)

    x = torch.zeros(1, c * height * width, dtype=torch.float64)
    jacobian = batch_jacobian(flat, x)[0].detach()
    return jacobian, torch.linalg.slogdet(jacobian)[1]


@checker
def conv1x1_jacobian(learner: Callable[[torch.Tensor, int, int], tuple]) -> CheckResult:
    """Check ``learner(weight, height, width) -> (matrix, logabsdet)``."""
    for weight, h, w in _conv1x1_cases():
        c, d = weight.shape[0], weight.shape[0] * h * w
        expected, expected_ld = conv1x1_reference(weight, h, w)
        out = learner(weight.clone(), h, w)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            return failed("return a pair (matrix, logabsdet)")
        matrix, logdet = (torch.as_tensor(v, dtype=torch.float64) for v in out)
        if tuple(matrix.shape) != (d, d):
            return failed(f"for C = {c} and a {h}x{w} image the Jacobian is D x D with "
                          f"D = C H W = {d}; you returned shape {tuple(matrix.shape)}")
        if not torch.allclose(matrix, expected, rtol=1e-9, atol=1e-12):
            eye = torch.eye(h * w, dtype=torch.float64)
            if torch.allclose(matrix, torch.kron(eye, weight), rtol=1e-9, atol=1e-12):
                return failed("that is the Jacobian for pixel-major order (I kron W); a "
                              "flattened (C, H, W) image lists all pixels of channel 0 "
                              "first, so the channel index is the slow one")
            transposed = torch.kron(weight.T.contiguous(), eye)
            if torch.allclose(matrix, transposed, rtol=1e-9, atol=1e-12):
                return failed("W is transposed: output channel o is sum_c W[o, c] x_c, so "
                              "row block o holds the o-th row of W")
            return failed(f"the Jacobian is wrong for C = {c}, H = {h}, W = {w}; column j "
                          "is the output for the j-th unit input image")
        if logdet.numel() != 1:
            return failed("logabsdet is one number per layer (it does not depend on x)")
        logdet = float(logdet)
        single = float(torch.linalg.slogdet(weight)[1])
        if math.isclose(logdet, float(expected_ld), rel_tol=1e-9, abs_tol=1e-9):
            continue
        if not math.isfinite(logdet):
            return failed("the log-det is not finite: take log |det W|, the determinant "
                          "can be negative")
        if math.isclose(logdet, single, rel_tol=1e-9, abs_tol=1e-12) and h * w > 1:
            return failed("that is log|det W| once; the same C x C matrix acts at each of "
                          "the H W pixels")
        if math.isclose(logdet, c * h * w * single, rel_tol=1e-9, abs_tol=1e-12) and c > 1:
            return failed("one factor det W per pixel, not per entry: H W log|det W|")
        return failed(f"log|det| should be {float(expected_ld):.6f} here, got {logdet:.6f}")
    return passed("your Jacobian is W kron I_(HW) and its log-det H W log|det W|, as autograd "
                  "says.")


# ----------------------------------------------------------------------------- exercise 2


def circular_conv_matrix(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The ``D x D`` matrix of the stride-1 circular convolution with ``weight`` (float64)."""
    c, k = weight.shape[0], weight.shape[-1]
    d, p = c * height * width, k // 2
    basis = torch.eye(d, dtype=torch.float64).view(d, c, height, width)
    padded = nn.functional.pad(basis, (p, p, p, p), mode="circular")
    return nn.functional.conv2d(padded, weight.double()).reshape(d, d).T


def zero_padded_conv_matrix(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The ``D x D`` matrix of the same convolution with zero padding (float64)."""
    c, k = weight.shape[0], weight.shape[-1]
    d = c * height * width
    basis = torch.eye(d, dtype=torch.float64).view(d, c, height, width)
    return nn.functional.conv2d(basis, weight.double(), padding=k // 2).reshape(d, d).T


def _circular_cases() -> list[tuple[torch.Tensor, int, int]]:
    gen = torch.Generator().manual_seed(19)
    cases = []
    for c, k, h, w in ((1, 3, 5, 5), (2, 3, 4, 6), (3, 5, 6, 5), (2, 5, 5, 7)):
        weight = 0.3 * torch.randn(c, c, k, k, generator=gen, dtype=torch.float64)
        weight[:, :, k // 2, k // 2] += torch.eye(c, dtype=torch.float64)
        cases.append((weight, h, w))
    return cases


@checker
def circular_conv_logdet(learner: Callable[[torch.Tensor, int, int], object]) -> CheckResult:
    """Check ``learner(weight, height, width)`` against ``slogdet`` of the dense matrix."""
    for weight, h, w in _circular_cases():
        c, k = weight.shape[0], weight.shape[-1]
        expected = float(torch.linalg.slogdet(circular_conv_matrix(weight, h, w))[1])
        out = learner(weight.clone(), h, w)
        value = torch.as_tensor(out)
        if value.numel() != 1:
            return failed(f"return one number, log|det| of the whole convolution; got shape "
                          f"{tuple(value.shape)}")
        if value.is_complex():
            return failed("return a real number: log |det|, the modulus of the complex "
                          "determinant")
        got = float(value)
        if math.isclose(got, expected, rel_tol=1e-7, abs_tol=1e-7):
            continue
        zero = float(torch.linalg.slogdet(zero_padded_conv_matrix(weight, h, w))[1])
        if math.isclose(got, zero, rel_tol=1e-7, abs_tol=1e-7):
            return failed("that is the log-det of the zero-padded convolution; the FFT "
                          "diagonalises only the circular one (wrap the padding around)")
        spectrum = torch.fft.fft2(weight, s=(h, w))  # (C, C, H, W), the kernel at offset 0
        diagonal = torch.diagonal(spectrum, dim1=0, dim2=1).abs().log().sum()
        if c > 1 and math.isclose(got, float(diagonal), rel_tol=1e-7, abs_tol=1e-7):
            return failed("you treated the channels separately (only the diagonal kernels "
                          "w[c, c]); at each frequency the channels mix through a C x C "
                          "matrix: take the log |det| of that matrix")
        small = torch.fft.fft2(weight).permute(2, 3, 0, 1)
        if math.isclose(got, float(torch.linalg.slogdet(small)[1].sum()), rel_tol=1e-7,
                        abs_tol=1e-7):
            return failed(f"that uses the {k}x{k} DFT of the kernel: zero-pad the kernel to "
                          f"the image size {h}x{w} first (one C x C block per pixel "
                          "frequency)")
        blocks = spectrum.permute(2, 3, 0, 1)
        if math.isclose(got, float(torch.linalg.det(blocks).real.abs().log().sum()),
                        rel_tol=1e-7, abs_tol=1e-7) or math.isclose(
                got, float(torch.linalg.det(blocks.real).abs().log().sum()), rel_tol=1e-7,
                abs_tol=1e-7):
            return failed("the blocks and their determinants are complex: take the modulus "
                          "|det|, not the real part")
        return failed(f"for C = {c}, K = {k} on {h}x{w} images log|det| = {expected:.6f}, "
                      f"you returned {got:.6f}")
    return passed("your FFT log-det matches the dense circular-convolution matrix.")


# ----------------------------------------------------------------------------- exercise 3

MASK_KINDS = ("channel", "checkerboard")


def pixel_space_mask_reference(kind: str, parity: int, event_shape: tuple[int, int, int]
                               ) -> torch.Tensor:
    """The entries of a ``(C, H, W)`` image that a coupling after a squeeze keeps."""
    c, h, w = event_shape
    squeezed = coupling_mask((4 * c, h // 2, w // 2), kind, parity)
    return nn.functional.pixel_shuffle(squeezed[None].float(), 2)[0].bool()


_MASK_SHAPES = ((1, 4, 4), (1, 6, 8), (2, 4, 6), (3, 2, 4))


@checker
def pixel_space_mask(learner: Callable[[str, int, tuple[int, int, int]], object]) -> CheckResult:
    """Check ``learner(kind, parity, (C, H, W))`` against the library's masks un-squeezed."""
    for shape in _MASK_SHAPES:
        for kind in MASK_KINDS:
            for parity in (0, 1):
                expected = pixel_space_mask_reference(kind, parity, shape)
                got = torch.as_tensor(learner(kind, parity, shape))
                if tuple(got.shape) != shape:
                    squeezed = (4 * shape[0], shape[1] // 2, shape[2] // 2)
                    if tuple(got.shape) == squeezed:
                        return failed("that is the mask of the squeezed image; undo the "
                                      "squeeze (pixel_shuffle) to see it on the original "
                                      "pixels")
                    return failed(f"return a mask of the image's shape {shape}, got "
                                  f"{tuple(got.shape)}")
                got = got.bool()
                if torch.equal(got, expected):
                    continue
                if torch.equal(got, ~expected):
                    return failed(f"{kind}, parity {parity}: you marked the entries that "
                                  "change; the mask is True where the coupling keeps x")
                other = pixel_space_mask_reference(kind, 1 - parity, shape)
                if torch.equal(got, other):
                    return failed(f"{kind}: the parities are swapped")
                return failed(f"{kind}, parity {parity}, image shape {shape}: wrong mask; "
                              "squeeze a (C, H, W) image of entry indices with "
                              "pixel_unshuffle to see where each entry goes")
    return passed("your masks match the library's couplings seen through the squeeze.")


__all__ = [
    "MASK_KINDS",
    "circular_conv_logdet",
    "circular_conv_matrix",
    "conv1x1_jacobian",
    "conv1x1_reference",
    "pixel_space_mask",
    "pixel_space_mask_reference",
    "zero_padded_conv_matrix",
]
