"""Reading IDX files, the format MNIST is distributed in (LeCun et al.).

Layout: two zero bytes, a type code, the number of dimensions d, then d
big-endian uint32 sizes, then the values in C order (big-endian). Every part
is checked, so a damaged file raises ``IDXError`` instead of yielding a short
or misshapen array.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

#: IDX type codes and the big-endian dtypes they name.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXError(ValueError):
    """A file is not a well-formed IDX file."""


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an IDX file into an array of its native shape.

    Args:
        data: the whole (uncompressed) file.
        name: the file's name, for error messages.
    """
    if len(data) < 4:
        raise IDXError(f"{name}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(f"{name}: bad magic number {data[:4].hex()} (expected 0000TTDD)")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise IDXError(f"{name}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise IDXError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{name}: truncated header ({len(data)} bytes, needs {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise IDXError(
            f"{name}: payload size mismatch: header says shape {shape} ({expected} bytes in all), "
            f"file has {len(data)} bytes"
        )
    values = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzipped (``.gz``) or raw."""
    path = os.fspath(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        # gzip raises these for truncated or corrupt archives.
        raise IDXError(f"{path}: cannot decompress: {e}") from e
    return parse_idx(data, path)
