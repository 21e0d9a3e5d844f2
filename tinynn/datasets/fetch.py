"""Downloading dataset files safely: mirrors in turn, a SHA-256 check, an atomic rename.

Written on the standard library (urllib, hashlib) rather than on ``pooch``,
which does the same job well: tinynn fetches four files per dataset with a
known digest each, and 100 lines keep the library's dependencies at NumPy and
Numba and let a reader see every step:

1. try each mirror in turn (a dead or wrong mirror just means the next one);
2. stream the file into a temporary file in the cache directory, showing progress;
3. check the SHA-256 of its content (of the *decompressed* content for ``.gz``
   files, since mirrors may compress differently);
4. only then rename it into place, so the cache never holds a partial or a
   corrupt file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path


class DownloadError(OSError):
    """No mirror delivered a file with the expected content."""


def content_sha256(path: str | os.PathLike, gzipped: bool | None = None) -> str:
    """SHA-256 of a file's content, decompressed first if gzipped (default: if named .gz)."""
    digest = hashlib.sha256()
    if gzipped is None:
        gzipped = str(path).endswith(".gz")
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, sha256: str, mirrors: Sequence[str], directory: str | os.PathLike,
          timeout: float = 30.0, progress: bool = True) -> Path:
    """Download ``name`` into ``directory`` from the first mirror that serves the right content.

    Args:
        name: the file name, appended to each mirror's base URL.
        sha256: the expected digest of its (decompressed) content.
        mirrors: base URLs ending in "/", tried in order.
        directory: where the file goes; created if missing.
        timeout: seconds to wait on a silent connection.
        progress: report progress on stderr.

    Returns:
        The path of the verified file.
    """
    directory = Path(directory)
    created = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    failures = []
    for mirror in mirrors:
        url = mirror + name
        fd, part = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                _download(url, out, timeout, progress)
            actual = content_sha256(part, gzipped=name.endswith(".gz"))
            if actual != sha256:
                raise DownloadError(f"checksum mismatch: expected {sha256}, got {actual}")
            os.replace(part, target)
            return target
        except (OSError, http.client.HTTPException, EOFError, zlib.error) as e:
            # network, HTTP (a transfer broken mid-way is an IncompleteRead), gzip or checksum
            failures.append(f"  {url}: {type(e).__name__}: {e}")
        finally:
            if os.path.exists(part):
                os.remove(part)
    for d in created:  # leave no empty cache folders behind
        with contextlib.suppress(OSError):  # (not empty: another file is in it)
            d.rmdir()
    raise DownloadError(f"could not download {name}; every mirror failed:\n" + "\n".join(failures))


def _download(url: str, out, timeout: float, progress: bool) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        done, shown = 0, 0.0
        for block in iter(lambda: response.read(1 << 16), b""):
            out.write(block)
            done += len(block)
            now = time.monotonic()
            if progress and (now - shown > 0.2 or done == total):
                shown = now
                share = f"{100 * done / total:3.0f}% of {total / 1e6:.1f} MB" if total else \
                    f"{done / 1e6:.1f} MB"
                sys.stderr.write(f"\rdownloading {url}: {share}")
                sys.stderr.flush()
        if progress:
            sys.stderr.write("\n")
        if total and done != total:
            raise DownloadError(f"connection closed after {done} of {total} bytes")
