"""Image data: the IDX and CIFAR-10 readers on files written here, splits, pooling, noise."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ebflow_lite.data import (
    ImageSplit,
    cifar10,
    dequantize,
    digits,
    digits_images,
    fashion_mnist,
    kmnist,
    load_idx_dataset,
    mnist,
    pool_levels,
    read_cifar10,
    read_cifar10_batch,
    read_idx,
    split_images,
)

# IDX type code -> the big-endian numpy type the format stores (written out here by hand).
IDX_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(values: np.ndarray, code: int) -> bytes:
    """An IDX file's bytes: two zero bytes, type code, ndim, big-endian sizes, the data."""
    header = bytes([0, 0, code, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    return header + values.astype(IDX_CODES[code]).tobytes()


def write_idx(path: Path, values: np.ndarray, code: int = 0x08, gz: bool = False) -> Path:
    data = idx_bytes(values, code)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("code", sorted(IDX_CODES))
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), (1, 2, 1, 3)])
def test_read_idx_every_type_and_shape(tmp_path: Path, gz: bool, code: int, shape) -> None:
    rng = np.random.default_rng(code)
    kind = np.dtype(IDX_CODES[code]).kind
    if kind == "f":
        values = rng.normal(size=shape) * 1e3
    else:
        info = np.iinfo(np.dtype(IDX_CODES[code]))
        values = rng.integers(info.min, info.max, size=shape, endpoint=True)
    values = values.astype(np.dtype(IDX_CODES[code]).newbyteorder("="))
    # The file name says nothing: gzip is told by the magic bytes.
    out = read_idx(write_idx(tmp_path / "file", values, code, gz))
    assert out.dtype == values.dtype and out.dtype.isnative
    assert out.shape == shape
    np.testing.assert_array_equal(out, values)
    out.flat[0] = 0  # a writable copy, not a view of the file's bytes


def test_read_idx_known_bytes(tmp_path: Path) -> None:
    # 2x2 int16 values 1, -2, 256, 3, spelled out big-endian.
    raw = bytes([0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes.fromhex("0001fffe01000003")
    (tmp_path / "a.idx").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), [[1, -2], [256, 3]])


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_idx_truncated_or_too_long(tmp_path: Path, gz: bool) -> None:
    data = idx_bytes(np.arange(24, dtype=np.int32).reshape(2, 3, 4), 0x0C)
    path = tmp_path / "cut.idx"
    path.write_bytes(gzip.compress(data[:-5]) if gz else data[:-5])
    with pytest.raises(ValueError, match=r"cut\.idx.*truncated.*\(2, 3, 4\)"):
        read_idx(path)
    path.write_bytes(gzip.compress(data + b"\0") if gz else data + b"\0")
    with pytest.raises(ValueError, match=r"cut\.idx.*extra bytes"):
        read_idx(path)


def test_read_idx_foreign_files(tmp_path: Path) -> None:
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    with pytest.raises(ValueError, match=r"image\.png.*not an IDX file.*0x89"):
        read_idx(png)
    odd = write_idx(tmp_path / "odd", np.zeros(3, dtype=np.uint8))
    odd.write_bytes(b"\0\0\x07\x01" + odd.read_bytes()[4:])
    with pytest.raises(ValueError, match=r"odd.*unknown IDX type code 0x07"):
        read_idx(odd)
    short = tmp_path / "short"
    short.write_bytes(b"\0\0")
    with pytest.raises(ValueError, match="short.*not an IDX file"):
        read_idx(short)
    header = tmp_path / "header"
    header.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 2]))
    with pytest.raises(ValueError, match="header.*truncated IDX header.*3 dimensions"):
        read_idx(header)


def test_read_idx_broken_gzip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8) % 7, 0x08))[:-12])
    with pytest.raises(ValueError, match=r"broken\.gz.*gzip"):
        read_idx(path)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")


def cifar_batch(n: int, seed: int) -> dict:
    """A dict laid out like a CIFAR-10 batch: uint8 rows of 3072 values and a label list."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"a batch written by the test",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


def write_cifar(folder: Path, n: int = 4, protocol: int = 2) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {name: cifar_batch(n, seed) for seed, name in enumerate(names)}
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_read_cifar10_batch_layout(tmp_path: Path, protocol: int) -> None:
    batch = cifar_batch(3, seed=0)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    images, labels = read_cifar10_batch(path)
    assert images.dtype == np.uint8 and images.shape == (3, 3, 32, 32)
    assert labels.dtype == np.int64 and labels.tolist() == batch[b"labels"]
    # Per row: 1024 red values, then green, then blue, each a row-major 32x32 image.
    row = batch[b"data"][1]
    np.testing.assert_array_equal(images[1, 0, 0], row[:32])
    np.testing.assert_array_equal(images[1, 1, 2], row[1024 + 64 : 1024 + 96])
    np.testing.assert_array_equal(images[1, 2, 31], row[3072 - 32 :])


def test_read_cifar10_whole_set_and_parent_folder(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path / "cifar-10-batches-py", n=4)
    for root in (tmp_path / "cifar-10-batches-py", tmp_path):
        x_train, y_train, x_test, y_test = read_cifar10(root)
        assert x_train.shape == (20, 3, 32, 32) and y_train.shape == (20,)
        assert x_test.shape == (4, 3, 32, 32)
        assert y_test.tolist() == batches["test_batch"][b"labels"]
        np.testing.assert_array_equal(x_train[12].reshape(-1), batches["data_batch_4"][b"data"][0])


def test_read_cifar10_missing_batches(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=f"data_batch_3 not found in {tmp_path}"):
        read_cifar10(tmp_path)


class _RunsCode:
    """Unpickling this would call ``os.getcwd``: the reader must refuse it."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({b"data": np.zeros((2, 3072), np.uint8)}, r"lacks the keys \[b'labels'\]"),
        ({b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}, r"shape \(N, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "float32"),
        ({b"data": [[0] * 3072], b"labels": [0]}, "got a list"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "must hold 2 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"0\.\.9, got 0\.\.10"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}, "list of ints"),
        ([1, 2], "expected a pickled dict, got list"),
        ({b"data": _RunsCode()}, "refusing to load global"),
    ],
)
def test_read_cifar10_batch_rejects_malformed(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(ValueError, match=rf"test_batch: .*{message}"):
        read_cifar10_batch(path)


def test_read_cifar10_batch_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="data_batch_1: not a readable CIFAR-10 batch pickle"):
        read_cifar10_batch(path)
    path.write_bytes(pickle.dumps(cifar_batch(2, 0))[:-40])
    with pytest.raises(ValueError, match="data_batch_1: not a readable"):
        read_cifar10_batch(path)


def synthetic_pair(n_train: int = 50, n_test: int = 20, shape=(4, 6), seed: int = 0):
    """Random 8-bit images; each label is the image's index, so a split can be traced."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8), np.arange(n_train),
            rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8), np.arange(n_test))


def test_split_images_sizes_and_partition() -> None:
    x_train, y_train, x_test, y_test = synthetic_pair()
    data = split_images(x_train, y_train, x_test, y_test, num_levels=256, n_val=10, seed=1)
    assert isinstance(data, ImageSplit) and data.num_levels == 256
    assert data.event_shape == (1, 4, 6) and data.dim == 24
    assert data.train.shape == (40, 1, 4, 6) and data.val.shape == (10, 1, 4, 6)
    assert data.test.shape == (20, 1, 4, 6)
    for part in (data.train, data.val, data.test):
        assert part.dtype == torch.float32 and torch.equal(part, part.round())
    for labels in (data.train_labels, data.val_labels, data.test_labels):
        assert labels.dtype == torch.int64
    # Train and validation partition the official training set; test is the official one.
    seen = torch.cat([data.train_labels, data.val_labels]).sort().values
    assert seen.tolist() == list(range(50))
    assert data.test_labels.tolist() == list(range(20))
    index = data.val_labels[3]
    assert torch.equal(data.val[3, 0], torch.from_numpy(x_train[index]).float())

    small = split_images(x_train, y_train, x_test, y_test, num_levels=256, n_val=10, seed=1,
                         n_train=7, n_test=5)
    assert small.train.shape[0] == 7 and small.test.shape[0] == 5
    assert torch.equal(small.val, data.val) and torch.equal(small.train, data.train[:7])
    assert torch.equal(small.test, data.test[:5])


def test_split_images_seed_fixes_the_split() -> None:
    pair = synthetic_pair()
    a, b, c = (split_images(*pair, num_levels=256, n_val=10, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.train, b.train) and torch.equal(a.val_labels, b.val_labels)
    assert not torch.equal(a.val_labels, c.val_labels)
    assert torch.equal(a.test, c.test)  # the test set does not depend on the seed


def test_split_images_keeps_channels() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, size=(6, 3, 4, 4)).astype(np.int64)
    data = split_images(x, np.zeros(6), x[:2], np.zeros(2), num_levels=17, n_val=2,
                        downscale=2)
    assert data.event_shape == (3, 2, 2) and data.train.shape == (4, 3, 2, 2)
    assert float(data.train.max()) <= 16


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"n_val": 50}, ValueError, "n_val must be an int in 0..49, got 50"),
        ({"n_val": -1}, ValueError, "n_val"),
        ({"n_train": 0}, ValueError, "n_train must be an int in 1..45"),
        ({"n_train": 46}, ValueError, "n_train"),
        ({"n_test": 21}, ValueError, "n_test must be an int in 0..20"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, r"seed must be an int, got 1\.5"),
        ({"n_val": True}, TypeError, "n_val must be an int"),
        ({"downscale": 4}, ValueError, "downscale must divide the image height and width 4x6"),
        ({"downscale": 0}, ValueError, "downscale"),
        ({"num_levels": 100}, ValueError, r"levels 0\.\.99 \(num_levels=100\)"),
        ({"shuffle": True}, TypeError, "shuffle"),
    ],
)
def test_split_images_bad_arguments(options: dict, error: type, message: str) -> None:
    kwargs = {"num_levels": 256, "n_val": 5, **options}
    with pytest.raises(error, match=message):
        split_images(*synthetic_pair(), **kwargs)


def test_split_images_bad_arrays() -> None:
    x_train, y_train, x_test, y_test = synthetic_pair()
    with pytest.raises(ValueError, match=r"train_labels must have shape \(50,\)"):
        split_images(x_train, y_train[:-1], x_test, y_test, num_levels=256)
    with pytest.raises(TypeError, match="test_images must be an integer numpy array"):
        split_images(x_train, y_train, x_test.astype(np.float32), y_test, num_levels=256)
    with pytest.raises(ValueError, match="same shape per image"):
        split_images(x_train, y_train, x_test[:, :2], y_test, num_levels=256)
    with pytest.raises(ValueError, match=r"train_images must have shape \(N, H, W\)"):
        split_images(x_train[0], y_train[:4], x_test, y_test, num_levels=256)


def test_pool_levels_rounds_the_block_mean_half_up() -> None:
    images = np.array([[[1, 2, 0, 0], [3, 4, 0, 1], [255, 255, 9, 9], [255, 254, 9, 9]]],
                      dtype=np.uint8)
    # Block means 2.5, 0.25, 254.75, 9: rounded half up to 3, 0, 255, 9.
    np.testing.assert_array_equal(pool_levels(images, 2), [[[3, 0], [255, 9]]])
    assert pool_levels(images, 2).dtype == np.uint8
    assert pool_levels(images, 1) is images
    np.testing.assert_array_equal(pool_levels(images, 4), [[[67]]])  # 1066 / 16 = 66.6
    with pytest.raises(TypeError, match="integer numpy array"):
        pool_levels(images.astype(np.float64), 2)
    with pytest.raises(TypeError, match="downscale must be an int"):
        pool_levels(images, 2.0)


def test_dequantize_stays_in_the_level_cell() -> None:
    levels = torch.tensor([0.0, 1.0, 16.0, 255.0]).repeat(50_000)
    noisy = dequantize(levels, generator=torch.Generator().manual_seed(0))
    assert noisy.dtype == torch.float32 and noisy.shape == levels.shape
    assert torch.equal(noisy.floor(), levels)  # in [k, k + 1), even where float32 rounds
    frac = (noisy - levels).double()
    # U[0, 1) noise: mean 1/2 and variance 1/12 (200k draws; 4 standard errors).
    assert float(frac.mean()) == pytest.approx(0.5, abs=4 * (1 / 12 / 2e5) ** 0.5)
    assert float(frac.var()) == pytest.approx(1 / 12, abs=4 * (1 / 180 / 2e5) ** 0.5)
    again = dequantize(levels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    assert not torch.equal(noisy, dequantize(levels, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(TypeError, match="floating-point tensor.*torch.int64"):
        dequantize(torch.arange(3))
    with pytest.raises(TypeError, match="ndarray"):
        dequantize(np.zeros(3))


def write_idx_set(folder: Path, gz: bool, n_train: int = 30, n_test: int = 10) -> tuple:
    """The four MNIST-layout files of a small random 8-bit set, gzipped or plain."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = synthetic_pair(n_train, n_test, shape=(8, 8))
    suffix = ".gz" if gz else ""
    for stem, values in [("train-images-idx3-ubyte", x_train), ("t10k-images-idx3-ubyte", x_test),
                         ("train-labels-idx1-ubyte", y_train % 10),
                         ("t10k-labels-idx1-ubyte", y_test % 10)]:
        write_idx(folder / (stem + suffix), values, 0x08, gz)
    return x_train, y_train % 10, x_test, y_test % 10


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("loader", [mnist, kmnist, fashion_mnist, load_idx_dataset])
def test_idx_loaders_read_the_mnist_layout(tmp_path: Path, gz: bool, loader) -> None:
    x_train, y_train, x_test, y_test = write_idx_set(tmp_path, gz)
    data = loader(tmp_path, n_val=6, seed=2, downscale=2)
    assert data.num_levels == 256 and data.event_shape == (1, 4, 4)
    assert data.train.shape == (24, 1, 4, 4) and data.val.shape == (6, 1, 4, 4)
    expected = split_images(x_train, y_train, x_test, y_test, num_levels=256, n_val=6, seed=2,
                            downscale=2)
    for name in ("train", "val", "test", "train_labels", "val_labels", "test_labels"):
        assert torch.equal(getattr(data, name), getattr(expected, name)), name


def test_idx_loader_rejects_non_image_files(tmp_path: Path) -> None:
    write_idx_set(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 8, 8)), 0x0D)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: expected uint8 images"):
        mnist(tmp_path)


def test_missing_files_name_the_folder_and_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "train-images-idx3-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "EBFLOW_FASHION_MNIST_DIR" in message
    # The environment variable replaces the default folder.
    monkeypatch.setenv("EBFLOW_FASHION_MNIST_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        fashion_mnist()
    write_idx_set(tmp_path / "elsewhere", gz=True)
    assert fashion_mnist(n_val=5).train.shape == (25, 1, 8, 8)
    (tmp_path / "partial").mkdir()
    write_idx(tmp_path / "partial" / "train-images-idx3-ubyte", np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="MNIST: train-labels-idx1-ubyte") as info:
        mnist(tmp_path / "partial")
    assert "train-images" not in str(info.value)


def test_cifar10_split(tmp_path: Path) -> None:
    write_cifar(tmp_path, n=4)
    data = cifar10(tmp_path, n_val=5, n_test=3)
    assert data.event_shape == (3, 32, 32) and data.num_levels == 256
    assert data.train.shape == (15, 3, 32, 32) and data.test.shape == (3, 3, 32, 32)
    assert cifar10(tmp_path, n_val=5, downscale=2).event_shape == (3, 16, 16)


def test_digits_images_match_the_vector_digits() -> None:
    images = digits_images(seed=4)
    vectors = digits(seed=4, dequantize=False)
    assert isinstance(images, ImageSplit)
    assert images.event_shape == (1, 8, 8) and images.num_levels == 17 and images.dim == 64
    for name in ("train", "val", "test"):
        part = getattr(images, name)
        assert part.dtype == torch.float32 and part.shape[1:] == (1, 8, 8)
        assert torch.equal(part.reshape(-1, 64), getattr(vectors, name))
        assert torch.equal(getattr(images, f"{name}_labels"), getattr(vectors, f"{name}_labels"))
    assert float(images.train.min()) == 0 and float(images.train.max()) == 16
    with pytest.raises(ValueError, match="split"):
        digits_images(split=(0.5, 0.5, 0.5))


FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = [FASHION / f"{stem}.gz" for stem in
                 ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]


@pytest.mark.skipif(not all(p.is_file() for p in FASHION_FILES),
                    reason=f"Debian's dataset-fashion-mnist is not installed (no {FASHION}); "
                           "`apt-get install dataset-fashion-mnist`")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EBFLOW_FASHION_MNIST_DIR", raising=False)
    data = fashion_mnist(n_val=5000)
    assert data.train.shape == (55000, 1, 28, 28) and data.val.shape == (5000, 1, 28, 28)
    assert data.test.shape == (10000, 1, 28, 28) and data.event_shape == (1, 28, 28)
    for part in (data.train, data.val, data.test):
        assert float(part.min()) == 0 and float(part.max()) == 255
        assert torch.equal(part, part.round())
    # Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
    counts = torch.bincount(torch.cat([data.train_labels, data.val_labels]), minlength=10)
    assert counts.tolist() == [6000] * 10
    assert torch.bincount(data.test_labels, minlength=10).tolist() == [1000] * 10
