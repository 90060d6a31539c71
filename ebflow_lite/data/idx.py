"""A reader for the IDX file format of MNIST, Fashion-MNIST and KMNIST, gzipped or plain.

An IDX file is a header and a block of numbers, all big-endian: two zero bytes, a type code
(``0x08`` unsigned byte, ``0x09`` signed byte, ``0x0B`` 16-bit int, ``0x0C`` 32-bit int,
``0x0D`` 32-bit float, ``0x0E`` 64-bit float), the number of dimensions ``d``, then ``d``
32-bit unsigned sizes, then the values in C (row-major) order.

References:
    LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document
    recognition", Proc. IEEE 1998 (MNIST; the IDX format is described on its web page).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str | os.PathLike[str]) -> tuple[bytes, bool]:
    """The file's bytes (decompressed when they start with the gzip magic) and if gzipped."""
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(GZIP_MAGIC):
        return raw, False
    try:
        return gzip.decompress(raw), True
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{os.fspath(path)}: not a valid gzip file ({err})") from err


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (plain, or gzipped: told apart by its first bytes) into an array.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        A native-endian, writable array with the header's shape and type (``uint8``,
        ``int8``, ``int16``, ``int32``, ``float32`` or ``float64``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a foreign file (a header that does not start with two zero bytes or an
            unknown type code), a truncated file or one with bytes after the data, or a
            broken gzip stream; the message names the path and what is wrong.

    References:
        LeCun et al., Proc. IEEE 1998 (the MNIST files).
    """
    name = os.fspath(path)
    data, gzipped = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{name}: not an IDX file: {len(data)} bytes, shorter than the "
                         "4-byte magic number")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name}: not an IDX file: magic number starts with bytes "
                         f"{data[0]:#04x} {data[1]:#04x}, expected 0x00 0x00")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"{c:#04x}" for c in IDX_DTYPES)
        raise ValueError(f"{name}: unknown IDX type code {code:#04x}, expected one of {known}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{name}: truncated IDX header: {ndim} dimensions need "
                         f"{header_size} header bytes, the file has {len(data)}")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header_size + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has extra bytes after the data"
        raise ValueError(f"{name}: IDX file {what}: header says shape {shape} of "
                         f"{dtype.newbyteorder('=').name} ({expected} bytes in all), "
                         f"the {'decompressed ' if gzipped else ''}file has "
                         f"{len(data)} bytes")
    values = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


__all__ = ["IDX_DTYPES", "read_idx"]
