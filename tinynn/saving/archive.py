"""Reading ``.npz`` archives (zips of ``.npy`` members) no further than they really hold.

Only the members asked for are read; each one's ``.npy`` header is read first,
and its shape × itemsize must equal the member's size in the zip directory
before a byte of data is inflated. The arrays read may total at most
``MAX_BYTES``, and at most ``MAX_INFLATION`` times the file's size; a JSON
``config`` member at most ``MAX_CONFIG_BYTES``. Used for model files
(``tinynn.saving``) and Keras's ``mnist.npz`` (``tinynn.datasets``).
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

#: At most this many bytes of arrays (weights and optimizer state, as inflated) in a file.
MAX_BYTES = 2**32
#: At most this many times the file's own size in arrays: tinynn writes them uncompressed
#: (1×), and compressed trained weights come to about 1.1×; a deflated bomb is ~1000×.
MAX_INFLATION = 100
#: At most this many bytes for the JSON description (about 300 bytes per layer).
MAX_CONFIG_BYTES = 2**26
#: The dtypes weights and optimizer state may have.
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ArchiveError(ValueError):
    """An archive's content is not what its headers and directory promise."""


def npy_header(archive: zipfile.ZipFile, member: str) -> tuple[tuple, np.dtype, bool, int]:
    """Shape, dtype, Fortran order and data offset of an ``.npy`` member, from its header alone.

    Reads a few hundred bytes, whatever the member's size, and checks that the
    size the header implies is the size the zip directory gives for the member,
    so that reading it afterwards allocates nothing a damaged or hostile header
    made up. Also used for Keras's ``mnist.npz`` (``tinynn.datasets.base``).

    Raises:
        ValueError: damaged header, Python objects (pickles) inside, or sizes that disagree.
    """
    info = archive.getinfo(member)
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{member}: unsupported .npy version {version}")
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{member} holds Python objects (a pickle), which tinynn never loads")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if info.file_size != offset + nbytes:
        raise ValueError(f"{member}: its header declares shape {shape} of {dtype} "
                         f"({nbytes:,} bytes), but the member holds "
                         f"{info.file_size - offset:,} bytes")
    return shape, dtype, fortran, offset


class Header:
    """One member's ``.npy`` header: what reading it will cost, known before reading it."""

    def __init__(self, member: str, info: zipfile.ZipInfo, shape, dtype, fortran, offset):
        self.member, self.info, self.shape, self.dtype = member, info, shape, dtype
        self.fortran, self.offset = fortran, offset
        self.nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize


class Archive:
    """A zip of ``.npy`` members, read only as far as the format names them."""

    def __init__(self, file):
        self.size = os.fstat(file.fileno()).st_size
        self.zip = zipfile.ZipFile(file)
        self.names = {n.removesuffix(".npy") for n in self.zip.namelist() if n.endswith(".npy")}
        self.declared = 0  # bytes of arrays declared by the headers read so far

    def header(self, member: str) -> Header:
        """Read ``member``'s header only; its data size must be what the zip directory says."""
        try:
            shape, dtype, fortran, offset = npy_header(self.zip, member + ".npy")
        except ValueError as e:
            raise ArchiveError(f"not a readable tinynn file: {e}") from None
        header = Header(member, self.zip.getinfo(member + ".npy"), shape, dtype, fortran, offset)
        self.declared += header.nbytes
        return header

    def check_budget(self) -> None:
        """Refuse to read arrays totalling more than MAX_BYTES, or MAX_INFLATION × the file."""
        if self.declared > MAX_BYTES:
            raise ArchiveError(f"declares {self.declared:,} bytes of arrays, more than "
                                 f"tinynn.saving.archive.MAX_BYTES = {MAX_BYTES:,}")
        if self.declared > MAX_INFLATION * max(self.size, 1 << 16):
            raise ArchiveError(f"declares {self.declared:,} bytes of arrays in a file of "
                                 f"{self.size:,} bytes: more than MAX_INFLATION = "
                                 f"{MAX_INFLATION}× its size (a compression bomb?)")

    def config(self) -> dict:
        if "config" not in self.names:
            raise ArchiveError("not a tinynn file (no config inside)")
        header = self.header("config")
        if header.dtype.kind != "U" or header.shape != ():
            raise ArchiveError(f"config must be one string, got {header.dtype} {header.shape}")
        if header.nbytes > MAX_CONFIG_BYTES:
            raise ArchiveError(f"config of {header.nbytes:,} bytes is larger than "
                                 f"MAX_CONFIG_BYTES = {MAX_CONFIG_BYTES:,}")
        self.declared -= header.nbytes  # counted against its own limit
        try:
            return json.loads(str(self.load([header])[0]))
        except RecursionError:
            raise ArchiveError("config nests too deeply") from None

    def stored_weights(self) -> list[Header]:
        """Headers of ``weights/0``, ``weights/1``, …: float32 or float64, none missing."""
        count = 0
        while f"weights/{count}" in self.names:
            count += 1
        others = sorted(n for n in self.names if n.startswith("weights/")
                        and n not in {f"weights/{i}" for i in range(count)})
        if others:
            raise ArchiveError(f"expected weight arrays weights/0 … weights/{count - 1}, "
                                 f"found also {others[:3]}")
        headers = [self.header(f"weights/{i}") for i in range(count)]
        for h in headers:
            if h.dtype not in DTYPES:
                raise ArchiveError(f"{h.member} has dtype {h.dtype}; model files hold "
                                     f"{[str(d) for d in DTYPES]}")
        return headers

    def load(self, headers: list[Header]) -> list[np.ndarray]:
        """The members' data, each read into an array of its checked size."""
        return [self._load(h) for h in headers]

    def _load(self, h: Header) -> np.ndarray:
        array = np.empty(h.shape[::-1] if h.fortran else h.shape, h.dtype)
        view = memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(b"")
        with self.zip.open(h.info) as f:
            f.read(h.offset)
            done = 0
            while done < h.nbytes:
                chunk = f.read(min(1 << 20, h.nbytes - done))
                if not chunk:
                    raise ArchiveError(f"{h.member} ends early")
                view[done:done + len(chunk)] = chunk
                done += len(chunk)
            if f.read(1):  # (reading to the end also makes zipfile check the CRC)
                raise ArchiveError(f"{h.member} holds more than its header says")
        return array.T if h.fortran else array
