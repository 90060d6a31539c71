"""Reference solutions for the exercises of chapter 9 (a Glow-style EBFlow on images)."""

from __future__ import annotations

import torch
from torch import nn


def conv1x1_jacobian(weight: torch.Tensor, height: int, width: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``D x D`` Jacobian ``W kron I_(HW)`` of a 1x1 convolution and its log|det|.

    A flattened ``(C, H, W)`` image lists channel 0's pixels first, so the entry for
    (output channel o, pixel p) and (input channel c, pixel q) is ``W[o, c]`` when p = q.
    """
    eye = torch.eye(height * width, dtype=weight.dtype)
    matrix = torch.kron(weight, eye)
    # det(W kron I_n) = det(W)^n: one factor per pixel
    return matrix, height * width * torch.linalg.slogdet(weight)[1]


def circular_conv_logdet(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """log|det| of a stride-1 circular convolution by the 2-D FFT.

    Zero-pad the ``(C, C, K, K)`` kernel to the image size; its 2-D DFT gives one
    ``C x C`` matrix per frequency, and the convolution's determinant is the product of
    their determinants. Where the kernel sits (its centre at offset 0 or at ``K // 2``)
    multiplies each block by a phase, which does not change ``|det|``.
    """
    blocks = torch.fft.fft2(weight.double(), s=(height, width)).permute(2, 3, 0, 1)
    return torch.linalg.slogdet(blocks)[1].sum()


def pixel_space_mask(kind: str, parity: int, event_shape: tuple[int, int, int]) -> torch.Tensor:
    """The entries of a ``(C, H, W)`` image kept by a coupling that acts after a squeeze.

    Build the mask on the squeezed image ``(4C, H/2, W/2)`` (channel: the first half of
    the channels; checkerboard: the squeezed pixels with ``(i + j) % 2 == parity``), then
    undo the squeeze, which is ``pixel_shuffle``.
    """
    c, h, w = event_shape
    squeezed = torch.zeros(4 * c, h // 2, w // 2, dtype=torch.bool)
    if kind == "channel":
        half = slice(0, 2 * c) if parity == 0 else slice(2 * c, 4 * c)
        squeezed[half] = True
    elif kind == "checkerboard":
        rows = torch.arange(h // 2).view(-1, 1)
        cols = torch.arange(w // 2).view(1, -1)
        squeezed[:] = (rows + cols) % 2 == parity
    else:
        raise ValueError(f"unknown mask kind {kind!r}")
    return nn.functional.pixel_shuffle(squeezed[None].float(), 2)[0].bool()
