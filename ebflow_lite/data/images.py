"""Image data sets as integer levels, split three ways: MNIST-style IDX sets and CIFAR-10.

Every loader returns an :class:`ImageSplit`: float32 tensors of shape ``(N, C, H, W)`` that
hold the *integer* levels ``0 .. num_levels - 1`` (0..255 for 8-bit images). They are not
dequantized: a training loop redraws the noise for every batch with :func:`dequantize`
(``x + u``, ``u ~ U[0, 1)``), so the model sees a fresh continuous sample each epoch.

The validation set is the last ``n_val`` images of a seeded permutation of the official
training set, the training set the others (or the first ``n_train`` of them); the test set
is the official test set (or its first ``n_test`` images), whatever the seed.

Negative log-likelihoods of dequantized data are densities on the ``[0, num_levels)``
scale; ``ebflow_lite.metrics.bits_per_dim(nll, split.dim)`` then gives bits per dimension.
For 256 levels this is the usual figure: a density on ``[0, 1)`` after rescaling by
``1/256`` differs exactly by the ``D log 256`` offset that the usual definition adds.

No network: Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package (or
``EBFLOW_FASHION_MNIST_DIR``); for MNIST, KMNIST and CIFAR-10 pass the folder with the files.

References:
    Chao et al., NeurIPS 2023 (dequantized images); LeCun et al., Proc. IEEE 1998 (MNIST);
    Xiao, Rasul and Vollgraf, "Fashion-MNIST", arXiv:1708.07747, 2017; Clanuwat et al.,
    "Deep Learning for Classical Japanese Literature", arXiv:1812.01718, 2018 (KMNIST);
    Krizhevsky, 2009 (CIFAR-10).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ebflow_lite.data.cifar import read_cifar10
from ebflow_lite.data.idx import read_idx
from ebflow_lite.data.split import DataSplit
from ebflow_lite.draws import draw
from ebflow_lite.validation import check_generator

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "EBFLOW_FASHION_MNIST_DIR"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
DEFAULT_N_VAL = 5000


@dataclass
class ImageSplit(DataSplit):
    """An image data set split three ways, as integer levels (not dequantized).

    Images are float32 of shape ``(N, *event_shape)`` with integer values in
    ``0 .. num_levels - 1``; labels are int64 of shape ``(N,)``.
    """

    num_levels: int
    event_shape: tuple[int, int, int]

    @property
    def dim(self) -> int:
        """The number of dimensions ``D = C * H * W`` of one image (for bits per dim)."""
        return math.prod(self.event_shape)


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add uniform noise to integer levels: ``x + u`` with ``u ~ U[0, 1)`` per entry.

    Turns the discrete levels ``k`` into a continuous sample in ``[k, k + 1)``, the data a
    continuous density is fit to; call it on every batch so the noise is redrawn. A sum
    that float32 rounding would lift to ``k + 1`` is kept just below it, so
    ``dequantize(x).floor() == x`` always holds.

    Args:
        x: a floating tensor of integer levels (e.g. a batch of ``ImageSplit.train``).
        generator: the random generator for the noise (on ``x``'s device); None uses the
            global one.

    Returns:
        A new tensor with ``x``'s shape, type and device.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.

    References:
        Uria, Murray and Larochelle, "RNADE", NeurIPS 2013; Theis, van den Oord and Bethge,
        "A note on the evaluation of generative models", ICLR 2016.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"dequantize: x must be a floating-point tensor of levels, got {got}")
    check_generator(generator, "dequantize")
    noisy = x + draw("uniform", x.shape, like=x, generator=generator)
    return torch.minimum(noisy, torch.nextafter(x + 1, x))


def pool_levels(images: np.ndarray, factor: int) -> np.ndarray:
    """Downscale integer images by ``factor x factor`` average pooling, rounded half up.

    The mean of a block of levels ``0 .. L - 1``, rounded to the nearest integer (a mean
    ending in .5 goes up), is again a level in ``0 .. L - 1``, so ``num_levels`` stays.

    Args:
        images: an integer array of shape ``(..., H, W)``.
        factor: the pooling size; a positive int that divides ``H`` and ``W``.

    Returns:
        An array of the same type and shape ``(..., H / factor, W / factor)``.

    Raises:
        TypeError: ``images`` is not an integer array or ``factor`` not an int.
        ValueError: ``factor`` is not positive or does not divide the height and width.
    """
    if not isinstance(images, np.ndarray) or not np.issubdtype(images.dtype, np.integer):
        raise TypeError(f"pool_levels: images must be an integer numpy array, got "
                        f"{getattr(images, 'dtype', type(images).__name__)}")
    if images.ndim < 2:
        raise ValueError(f"pool_levels: images must have shape (..., H, W), got {images.shape}")
    h, w = images.shape[-2:]
    factor = _check_downscale(factor, h, w)
    if factor == 1:
        return images
    blocks = images.reshape(*images.shape[:-2], h // factor, factor, w // factor, factor)
    area = factor * factor
    sums = blocks.sum(axis=(-3, -1), dtype=np.int64)
    return ((sums + area // 2) // area).astype(images.dtype)


def _check_downscale(factor: object, h: int, w: int) -> int:
    """``factor`` as a positive int that divides the height ``h`` and the width ``w``."""
    factor = _check_int("downscale", factor, low=1)
    if h % factor or w % factor:
        raise ValueError(f"downscale must divide the image height and width {h}x{w}, got "
                         f"{factor}")
    return factor


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``low .. high``; a TypeError or ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int in {bound}, got {value}")
    return int(value)


def _as_nchw(images: np.ndarray, labels: np.ndarray, num_levels: int, what: str) -> np.ndarray:
    """Check one part's images and labels; images of shape (N, H, W) get a channel axis."""
    if not isinstance(images, np.ndarray) or not np.issubdtype(images.dtype, np.integer):
        raise TypeError(f"{what}_images must be an integer numpy array, got "
                        f"{getattr(images, 'dtype', type(images).__name__)}")
    if images.ndim not in (3, 4):
        raise ValueError(f"{what}_images must have shape (N, H, W) or (N, C, H, W), got "
                         f"{images.shape}")
    labels = np.asarray(labels)
    if labels.shape != images.shape[:1]:
        raise ValueError(f"{what}_labels must have shape ({images.shape[0]},) (one label per "
                         f"image), got {labels.shape}")
    if images.size and (images.min() < 0 or images.max() >= num_levels):
        raise ValueError(f"{what}_images must hold levels 0..{num_levels - 1} "
                         f"(num_levels={num_levels}), got {images.min()}..{images.max()}")
    return images[:, None] if images.ndim == 3 else images


def _to_tensors(
    images: np.ndarray, labels: np.ndarray, index: np.ndarray | slice, factor: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selected images, pooled, as float32, and their labels as int64."""
    x = torch.from_numpy(pool_levels(images[index], factor).astype(np.float32))
    return x, torch.from_numpy(np.asarray(labels[index], dtype=np.int64))


def split_images(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_levels: int,
    seed: int = 0,
    n_val: int = DEFAULT_N_VAL,
    n_train: int | None = None,
    n_test: int | None = None,
    downscale: int = 1,
) -> ImageSplit:
    """Split an official train/test pair into an :class:`ImageSplit`.

    Args:
        train_images, test_images: integer arrays of shape ``(N, H, W)`` or
            ``(N, C, H, W)`` with levels ``0 .. num_levels - 1``.
        train_labels, test_labels: one label per image.
        num_levels: the number of levels (256 for 8-bit images).
        seed: seeds the permutation of the training set (non-negative).
        n_val: validation size, the last ``n_val`` images of the permutation; at least one
            training image must remain.
        n_train: keep only the first ``n_train`` remaining images (None: all of them).
        n_test: keep only the first ``n_test`` official test images (None: all).
        downscale: the pooling factor of :func:`pool_levels` (1: full resolution).

    Returns:
        The split; ``event_shape`` is ``(C, H / downscale, W / downscale)``.

    Raises:
        TypeError: a size, the seed or ``downscale`` is not an int, or images not integer.
        ValueError: a size out of range, labels that do not match the images, levels outside
            ``0 .. num_levels - 1``, or a ``downscale`` that does not divide the image size.
    """
    num_levels = _check_int("num_levels", num_levels, low=2)
    train_images = _as_nchw(train_images, train_labels, num_levels, "train")
    test_images = _as_nchw(test_images, test_labels, num_levels, "test")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(f"train and test images must have the same shape per image, got "
                         f"{train_images.shape[1:]} and {test_images.shape[1:]}")
    seed = _check_int("seed", seed, low=0)
    n = train_images.shape[0]
    n_val = _check_int("n_val", n_val, low=0, high=n - 1)
    n_rest = n - n_val
    n_train = n_rest if n_train is None else _check_int("n_train", n_train, low=1, high=n_rest)
    n_test = test_images.shape[0] if n_test is None else _check_int(
        "n_test", n_test, low=0, high=test_images.shape[0])
    _check_downscale(downscale, *train_images.shape[-2:])
    order = np.random.default_rng(seed).permutation(n)
    train, y_train = _to_tensors(train_images, train_labels, order[:n_train], downscale)
    val, y_val = _to_tensors(train_images, train_labels, order[n_rest:], downscale)
    test, y_test = _to_tensors(test_images, test_labels, slice(0, n_test), downscale)
    return ImageSplit(
        train=train, val=val, test=test, train_labels=y_train, val_labels=y_val,
        test_labels=y_test, num_levels=num_levels, event_shape=tuple(train.shape[1:]),
    )


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (plain first); else None."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_dataset(
    root: str | os.PathLike[str], *, name: str = "IDX data set", missing_hint: str = "",
    **options: Any,
) -> ImageSplit:
    """Load an MNIST-layout data set (the four IDX files, plain or gzipped) and split it.

    The folder must hold ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally ``.gz``:
    the layout of MNIST, Fashion-MNIST and KMNIST. The images are 8-bit (256 levels).

    Args:
        root: the folder with the files.
        name: the data set's name, for error messages.
        missing_hint: a sentence added to the error when files are missing (where to get
            them).
        **options: ``seed``, ``n_val``, ``n_train``, ``n_test``, ``downscale``; see
            :func:`split_images`.

    Returns:
        An :class:`ImageSplit` with ``num_levels=256`` and ``event_shape=(1, H, W)``.

    Raises:
        FileNotFoundError: a file is missing; the message names the folder and the files.
        ValueError: a malformed file (see :func:`ebflow_lite.data.idx.read_idx`), images
            that are not ``(N, H, W)`` bytes, or a bad option (see :func:`split_images`).

    References:
        LeCun et al., Proc. IEEE 1998 (the MNIST layout).
    """
    folder = Path(root)
    paths = {key: _idx_file(folder, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[key] + "[.gz]" for key, path in paths.items() if path is None]
    if missing:
        hint = f"; {missing_hint}" if missing_hint else ""
        raise FileNotFoundError(f"{name}: {', '.join(missing)} not found in {folder}{hint}")
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for key in ("train_images", "test_images"):
        if arrays[key].dtype != np.uint8 or arrays[key].ndim != 3:
            raise ValueError(f"{paths[key]}: expected uint8 images of shape (N, H, W), got "
                             f"{arrays[key].dtype} of shape {arrays[key].shape}")
    return split_images(arrays["train_images"], arrays["train_labels"],
                        arrays["test_images"], arrays["test_labels"], num_levels=256,
                        **options)


def fashion_mnist(root: str | os.PathLike[str] | None = None, **options: Any) -> ImageSplit:
    """Fashion-MNIST: 70000 28x28 grey images of clothes in 10 classes (60000 train).

    Args:
        root: the folder with the IDX files; None reads ``$EBFLOW_FASHION_MNIST_DIR``, or
            else ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
        **options: ``seed``, ``n_val``, ``n_train``, ``n_test``, ``downscale``; see
            :func:`split_images`.

    Raises:
        FileNotFoundError: files missing; the message names the folder and the package.

    References:
        Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
        Machine Learning Algorithms", arXiv:1708.07747, 2017.
    """
    if root is None:
        root = os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR
    hint = (f"install Debian's package with `apt-get install {FASHION_MNIST_PACKAGE}` (it "
            f"puts them in {FASHION_MNIST_DIR}), or set {FASHION_MNIST_ENV} to a folder "
            "that has them")
    return load_idx_dataset(root, name="Fashion-MNIST", missing_hint=hint, **options)


def mnist(root: str | os.PathLike[str], **options: Any) -> ImageSplit:
    """MNIST: 70000 28x28 grey handwritten digits (60000 train), from the folder ``root``.

    ``options`` are those of :func:`split_images`.

    References:
        LeCun et al., "Gradient-based learning applied to document recognition", Proc. IEEE
        1998.
    """
    return load_idx_dataset(root, name="MNIST", **options)


def kmnist(root: str | os.PathLike[str], **options: Any) -> ImageSplit:
    """Kuzushiji-MNIST: 70000 28x28 grey cursive Japanese characters in 10 classes.

    ``options`` are those of :func:`split_images`.

    References:
        Clanuwat et al., "Deep Learning for Classical Japanese Literature",
        arXiv:1812.01718, 2018.
    """
    return load_idx_dataset(root, name="KMNIST", **options)


def cifar10(root: str | os.PathLike[str], **options: Any) -> ImageSplit:
    """CIFAR-10: 60000 32x32 colour images in 10 classes (50000 train), 256 levels.

    Args:
        root: the extracted ``cifar-10-batches-py`` folder, or the folder that holds it.
        **options: ``seed``, ``n_val``, ``n_train``, ``n_test``, ``downscale``; see
            :func:`split_images`.

    Returns:
        An :class:`ImageSplit` with ``event_shape=(3, 32, 32)`` (before downscaling).

    References:
        Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
    """
    return split_images(*read_cifar10(root), num_levels=256, **options)


__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_ENV",
    "ImageSplit",
    "cifar10",
    "dequantize",
    "fashion_mnist",
    "kmnist",
    "load_idx_dataset",
    "mnist",
    "pool_levels",
    "split_images",
]
