"""Image data: the IDX and CIFAR-10 readers on files written here, splits, pooling, noise."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

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
