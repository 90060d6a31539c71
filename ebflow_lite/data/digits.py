"""scikit-learn's bundled 8x8 digits, dequantized, split, and the matching flow preprocessing.

:func:`digits` gives flat vectors with the noise drawn once; :func:`digits_images` gives
the same split as ``(1, 8, 8)`` images of integer levels, for noise redrawn per batch.

The images have 64 pixels with integer values 0..16 (17 levels). A continuous density
needs continuous data, so each pixel gets uniform noise, ``x = k + u`` with
``u ~ U[0, 1)``: the dequantized values lie in ``[0, 17)``. Negative log-likelihoods in this
library are reported in nats per image on that ``[0, 17)`` scale, and bits per dimension
are ``NLL / (D ln 2)`` with no offset (the paper's images live on a 0..255 scale with
``1/256`` rescaling, so its bits/dim are not comparable number for number).

The flow's preprocessing, :func:`digits_preprocessing`, rescales by ``1/17`` onto
``[0, 1)`` and applies a squeezed logit. Both are parameter-free bijections, so a model
built with them (``EBFlow(layers, preprocessing=digits_preprocessing())``) still reports
densities in the ``[0, 17)`` data space.

References:
    Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching Objectives",
    NeurIPS 2023 (dequantization and logit preprocessing of images); Dinh et al., "Density
    estimation using Real NVP", ICLR 2017 (the logit transform).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from ebflow_lite.data.images import ImageSplit
from ebflow_lite.data.split import DataSplit
from ebflow_lite.layers.base import FlowLayer
from ebflow_lite.preprocessing import image_preprocessing

NUM_LEVELS = 17
DIM = 64
IMAGE_SHAPE = (1, 8, 8)


@dataclass
class DigitsSplit(DataSplit):
    """The digits data set split three ways; every data tensor is float32 of shape ``(N, 64)``."""

    num_levels: int = NUM_LEVELS
    dim: int = DIM


def _shuffled_digits(
    seed: int, split: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray, np.random.Generator, list[slice]]:
    """Check the arguments, load the digits and shuffle them with a generator seeded by ``seed``.

    Returns the shuffled images (float64, ``(1797, 64)``) and labels, the generator (it has
    drawn only the permutation, so the caller can draw noise from it next) and the slices
    of the train, validation and test parts.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if (not isinstance(split, (tuple, list)) or len(split) != 3
            or any(isinstance(f, bool) or not isinstance(f, numbers.Real)
                   or not math.isfinite(f) or f <= 0 for f in split)
            or abs(sum(split) - 1.0) > 1e-6):
        raise ValueError(f"split must be three positive fractions summing to 1, got {split!r}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(images.shape[0])
    n = images.shape[0]
    n_train = int(round(split[0] * n))
    n_val = int(round(split[1] * n))
    bounds = [0, n_train, n_train + n_val, n]
    parts = [slice(bounds[i], bounds[i + 1]) for i in range(3)]
    return images[order], labels[order], rng, parts


def _parts(x: torch.Tensor, y: torch.Tensor, parts: list[slice]) -> dict[str, torch.Tensor]:
    """The train, validation and test slices of data ``x`` and labels ``y``, by field name."""
    return {
        "train": x[parts[0]].contiguous(), "val": x[parts[1]].contiguous(),
        "test": x[parts[2]].contiguous(), "train_labels": y[parts[0]],
        "val_labels": y[parts[1]], "test_labels": y[parts[2]],
    }


def digits(
    seed: int = 0,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    dequantize: bool = True,
) -> DigitsSplit:
    """Load the 1797 bundled 8x8 digit images (no network), shuffle, split and dequantize.

    Args:
        seed: seeds both the shuffle and the dequantization noise (a fixed draw, so the
            same seed gives the same tensors every time).
        split: fractions for train, validation and test; positive, summing to 1.
        dequantize: add ``U[0, 1)`` noise to every pixel (values in ``[0, 17)``); else keep
            the integers 0..16 as floats.

    Returns:
        A :class:`DigitsSplit` with ``num_levels=17`` and ``dim=64``.

    Raises:
        ValueError: a bad ``split`` or a negative ``seed``.
    """
    images, labels, rng, parts = _shuffled_digits(seed, split)
    if dequantize:
        images = images + rng.random(images.shape)
    x = torch.from_numpy(images).float()
    # float32 rounding can lift 16 + u (u just below 1) to exactly 17.0; keep [0, 17).
    x = x.clamp(max=float(np.nextafter(np.float32(NUM_LEVELS), np.float32(0))))
    y = torch.from_numpy(labels)
    return DigitsSplit(**_parts(x, y, parts))


def digits_images(
    seed: int = 0, split: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> ImageSplit:
    """The bundled digits as 8x8 images of integer levels 0..16, not dequantized.

    The same shuffle and split as :func:`digits`: for equal arguments,
    ``digits_images(seed).train.reshape(-1, 64)`` equals
    ``digits(seed, dequantize=False).train``. Redraw the noise per batch with
    :func:`ebflow_lite.data.dequantize`.

    Args:
        seed: seeds the shuffle.
        split: fractions for train, validation and test; positive, summing to 1.

    Returns:
        An :class:`~ebflow_lite.data.ImageSplit` with ``num_levels=17`` and
        ``event_shape=(1, 8, 8)``.

    Raises:
        ValueError: a bad ``split`` or a negative ``seed``.
    """
    images, labels, _, parts = _shuffled_digits(seed, split)
    x = torch.from_numpy(images).float().reshape(-1, *IMAGE_SHAPE)
    y = torch.from_numpy(labels)
    return ImageSplit(**_parts(x, y, parts), num_levels=NUM_LEVELS, event_shape=IMAGE_SHAPE)


def digits_preprocessing(alpha: float = 0.5, eps: float = 0.05) -> list[FlowLayer]:
    """The preprocessing for a flow on dequantized digits: ``[Affine(1/17), Logit(alpha, eps)]``.

    ``Affine`` maps ``[0, 17)`` onto ``[0, 1)``; ``Logit`` computes
    ``logit(eps + (1 - 2 eps) t) / alpha``. ``alpha = 0.5`` is the paper's logit smoothness
    for its FC models. The squeeze differs from the paper's ``1e-6``: with only 17 levels a
    pixel's noise cell is 1/17 of the interval wide, and the many background pixels (level
    0) would otherwise be stretched over ``logit`` values down to about -14 / alpha. With
    ``eps = 0.05`` every preprocessed value lies within ``+-logit(0.95) / alpha``, about
    ``+-5.9``, and the logit's derivative is still about five times larger at the ends of the
    interval than in its middle, the numerical sensitivity that Match after Preprocessing
    (MaP) is about. Both layers are parameter-free, so they count as preprocessing for
    :class:`ebflow_lite.EBFlow` and ``log_prob`` stays in the ``[0, 17)`` data space.

    Args:
        alpha: the logit's divisor (positive).
        eps: the squeeze towards the interval's centre, in ``[0, 0.5)``.

    References:
        Dinh et al., "Density estimation using Real NVP", ICLR 2017.
    """
    return image_preprocessing(NUM_LEVELS, alpha=alpha, eps=eps, event_shape=(DIM,))


__all__ = [
    "DIM", "IMAGE_SHAPE", "NUM_LEVELS", "DigitsSplit", "digits", "digits_images",
    "digits_preprocessing",
]
