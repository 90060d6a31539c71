"""Data sets that need no network: 2-D toy densities made in code, scikit-learn's digits, and
image data sets read from local files (Fashion-MNIST from Debian's package, MNIST, KMNIST,
CIFAR-10)."""

from ebflow_lite.data.cifar import read_cifar10, read_cifar10_batch
from ebflow_lite.data.digits import DigitsSplit, digits, digits_images
from ebflow_lite.data.idx import read_idx
from ebflow_lite.data.images import (
    ImageSplit,
    cifar10,
    dequantize,
    fashion_mnist,
    kmnist,
    load_idx_dataset,
    mnist,
    pool_levels,
    split_images,
)
from ebflow_lite.data.toy import TOY_DENSITIES, ToyDensity, toy

__all__ = [
    "TOY_DENSITIES",
    "DigitsSplit",
    "ImageSplit",
    "ToyDensity",
    "cifar10",
    "dequantize",
    "digits",
    "digits_images",
    "fashion_mnist",
    "kmnist",
    "load_idx_dataset",
    "mnist",
    "pool_levels",
    "read_cifar10",
    "read_cifar10_batch",
    "read_idx",
    "split_images",
    "toy",
]
