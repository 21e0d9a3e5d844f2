"""Reading IDX files, the format MNIST is distributed in (LeCun et al.).

Layout: two zero bytes, a type code, the number of dimensions d, then d
big-endian uint32 sizes, then the values in C order (big-endian). Every part
is checked, so a damaged file raises ``IDXError`` instead of yielding a short
or misshapen array.
"""

from __future__ import annotations

import gzip
import math
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


#: A gzipped file may inflate to at most this many times its size (MNIST's come to 2–5×;
#: a gzip bomb to ~1000×), so that a hostile header cannot make the reader allocate gigabytes.
MAX_INFLATION = 100


class IDXError(ValueError):
    """A file is not a well-formed IDX file."""


def parse_header(data: bytes, name: str = "<bytes>") -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape, dtype and header length an IDX file's first bytes declare.

    Args:
        data: the file's first ``4 + 4·d`` bytes (or more).
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
    return shape, IDX_TYPES[code], header


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an IDX file into an array of its native shape.

    Args:
        data: the whole (uncompressed) file.
        name: the file's name, for error messages.
    """
    shape, dtype, header = parse_header(data, name)
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise IDXError(
            f"{name}: payload size mismatch: header says shape {shape} ({expected} bytes in all), "
            f"file has {len(data)} bytes"
        )
    values = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzipped (``.gz``) or raw, reading no more than its header declares.

    A gzipped file may declare at most ``MAX_INFLATION`` times its own size.
    Reading stops one byte past the declared size (enough to tell the file holds
    more than declared), so a gzip bomb costs nothing.
    """
    path = os.fspath(path)
    gzipped = path.endswith(".gz")
    try:
        size = os.stat(path).st_size
        with (gzip.open if gzipped else open)(path, "rb") as f:
            data = f.read(4)
            if len(data) == 4:
                data += f.read(4 * data[3])
            shape, dtype, header = parse_header(data, path)
            expected = header + math.prod(shape) * dtype.itemsize
            if gzipped and expected > MAX_INFLATION * max(size, 1 << 16):
                raise IDXError(f"{path}: header declares shape {shape} ({expected:,} bytes), "
                               f"more than {MAX_INFLATION}× the {size:,} bytes of the gzipped "
                               f"file: a gzip bomb or a damaged header")
            # A raw file's size bounds the read too; a short file is reported just below.
            cap = expected if gzipped else min(expected, size)
            data += f.read(cap - len(data) + 1)
    except (OSError, EOFError, zlib.error) as e:
        # gzip raises these for truncated or corrupt archives.
        raise IDXError(f"{path}: cannot decompress: {e}") from e
    return parse_idx(data, path)
