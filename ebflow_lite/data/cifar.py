"""A reader for CIFAR-10's "python version": the pickled batches of ``cifar-10-batches-py``.

Each of ``data_batch_1`` .. ``data_batch_5`` (the 50000 training images) and ``test_batch``
(the 10000 test images) is a pickled dict with ``b"data"``, a uint8 array of shape
``(N, 3072)`` (per row the 1024 red, then green, then blue values of a 32x32 image, each in
row-major order), and ``b"labels"``, a list of ``N`` class numbers 0..9.

The batches are the user's own downloaded files, but unpickling can run code, so they are
read with an unpickler that resolves only the few globals a pickled numpy array needs and
refuses everything else.

References:
    Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", tech. report,
    University of Toronto, 2009.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
FOLDER = "cifar-10-batches-py"
IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10

# What a pickled numpy array refers to (numpy 1 and 2 module names; ``_frombuffer`` at
# pickle protocol 5; ``_codecs.encode`` is how Python 3 pickles ``bytes`` at protocol 2).
_ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds only containers, numbers, strings and numpy arrays."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR-10 batch holds only "
                "a dict of numpy arrays, lists and strings"
            )
        return super().find_class(module, name)


def read_cifar10_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled CIFAR-10 batch (e.g. ``data_batch_1`` or ``test_batch``).

    Args:
        path: the batch file.

    Returns:
        ``(images, labels)``: uint8 of shape ``(N, 3, 32, 32)`` and int64 of shape ``(N,)``
        with values 0..9.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a readable pickle, a pickle that refers to anything but numpy
            arrays, or a dict without the expected keys, shapes or label values; the message
            names the path.

    References:
        Krizhevsky, 2009 (CIFAR-10).
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        try:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise ValueError(f"{name}: not a readable CIFAR-10 batch pickle ({err})") from err
    if not isinstance(batch, dict):
        raise ValueError(f"{name}: expected a pickled dict, got {type(batch).__name__}")
    missing = [key for key in (b"data", b"labels") if key not in batch]
    if missing:
        raise ValueError(f"{name}: the pickled dict lacks the keys {missing}; it has "
                         f"{sorted(map(repr, batch))}")
    data = batch[b"data"]
    size = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != size:
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise ValueError(f"{name}: b'data' must be a uint8 array of shape (N, {size}), "
                         f"got a {got}")
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: b'labels' must be a list of ints ({err})") from err
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{name}: b'labels' must hold {data.shape[0]} labels (one per "
                         f"image), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{name}: labels must lie in 0..{NUM_CLASSES - 1}, got "
                         f"{labels.min()}..{labels.max()}")
    return data.reshape((-1, *IMAGE_SHAPE)).copy(), labels


def cifar10_dir(root: str | os.PathLike[str]) -> Path:
    """The folder that holds the batches: ``root`` itself, or ``root/cifar-10-batches-py``.

    Raises:
        FileNotFoundError: some batch file is missing; the message names the folder and the
            files.
    """
    folder = Path(root)
    if (folder / FOLDER).is_dir():
        folder = folder / FOLDER
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10: {', '.join(missing)} not found in {folder}; extract the python "
            f"version of CIFAR-10 (cifar-10-python.tar.gz) and pass its {FOLDER} folder"
        )
    return folder


def read_cifar10(
    root: str | os.PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the whole CIFAR-10 data set from its extracted python batches.

    Args:
        root: the ``cifar-10-batches-py`` folder, or the folder that contains it.

    Returns:
        ``(train_images, train_labels, test_images, test_labels)``: uint8 images of shape
        ``(N, 3, 32, 32)`` and int64 labels, the five training batches in order.

    Raises:
        FileNotFoundError: a batch file is missing.
        ValueError: a batch is malformed (see :func:`read_cifar10_batch`).

    References:
        Krizhevsky, 2009 (CIFAR-10).
    """
    folder = cifar10_dir(root)
    train = [read_cifar10_batch(folder / n) for n in TRAIN_BATCHES]
    test_images, test_labels = read_cifar10_batch(folder / TEST_BATCH)
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
            test_images, test_labels)


__all__ = ["cifar10_dir", "read_cifar10", "read_cifar10_batch"]
