"""Image data: the IDX and CIFAR-10 readers on files written here, splits, pooling, noise."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from ebflow_lite.data.cifar import read_cifar10, read_cifar10_batch
from ebflow_lite.data.idx import read_idx

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
