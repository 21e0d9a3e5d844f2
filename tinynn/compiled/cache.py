"""Numba's disk cache for tinynn's kernels, stamped with *all* the compiled room's sources.

Numba checks a cached function against its own source file only. The fused
steps in ``fused.py`` inline the loops of ``kernels.py``, so an edit to
``kernels.py`` alone would leave stale fused steps on disk. The locators here
are numba's own, except that their stamp is the hash of every file in this
package (``tinynn/compiled``): any edit there recompiles everything, an edit in
the textbook room (``reference.py``, the layers) recompiles nothing, and nothing
has to be kept by hand.

When neither the package folder nor the user's cache folder can be written
(a read-only install with a read-only home), the kernels are cached in a
temporary folder instead, with one warning, rather than failing.

Reading is numba's too, less one step (``KernelCache``): before it reads a
compiled function, numba loads every typing and lowering module it has (and
SciPy's linalg, to find BLAS), ~0.45 s of a fresh process's first fit or
predict here. That is needed to compile, and numba's compiler does it first
whenever something must compile; code compiled already runs without it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import warnings
from pathlib import Path

from numba.core import caching
from numba.core.runtime import rtsys

KERNELS = Path(__file__).resolve().parent


@functools.cache
def sources_stamp() -> str:
    """SHA-256 of the kernel sources (every .py file of this folder, by name) and of the
    constants compiled code takes from the textbook (``table.constants``)."""
    from tinynn.compiled import table

    digest = hashlib.sha256(table.constants().encode())
    for path in sorted(KERNELS.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class _AllSources:
    """Mixin: only tinynn's kernel files, stamped by all of them together."""

    def get_source_stamp(self):
        return sources_stamp()

    @classmethod
    def from_function(cls, py_func, py_file):
        if not _in_kernels(py_file):
            return None
        return super().from_function(py_func, py_file)


@functools.cache
def _in_kernels(py_file: str) -> bool:
    """Whether a source file is one of this folder's (asked per kernel and locator)."""
    return Path(py_file).resolve().parent == KERNELS


class _UserProvided(_AllSources, caching.UserProvidedCacheLocator):
    """$NUMBA_CACHE_DIR, when set."""


class _InTree(_AllSources, caching.InTreeCacheLocator):
    """The package's __pycache__ folder."""


class _UserWide(_AllSources, caching.UserWideCacheLocator):
    """The user's cache folder (~/.cache/numba)."""


class _Temporary(_AllSources, caching.InTreeCacheLocator):
    """Last resort: a folder in the system's temporary directory."""

    def __init__(self, py_func, py_file):
        super().__init__(py_func, py_file)
        self._cache_path = os.path.join(tempfile.gettempdir(), f"tinynn-numba-{os.getuid()}")

    @classmethod
    def from_function(cls, py_func, py_file):
        found = super().from_function(py_func, py_file)
        if found is not None:
            _warn_once(found.get_cache_path())
        return found


@functools.cache
def _warn_once(path: str) -> None:
    warnings.warn(f"tinynn: neither the package folder nor the user's cache folder is "
                  f"writable; compiled kernels are cached in {path}", RuntimeWarning,
                  stacklevel=2)


class KernelCache(caching.FunctionCache):
    """numba's cache of one kernel's compiled code, read without loading numba's
    compiler modules first (see the module docstring)."""

    def load_overload(self, sig, target_context):
        rtsys.initialize(target_context)  # the allocator that compiled code calls
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


def on_disk(kernel):
    """``kernel`` (a numba dispatcher) with its compiled code cached on disk, as
    ``cache=True`` does, read through ``KernelCache`` (through numba's own cache if
    numba's internals are not the ones this was written for). With
    ``NUMBA_DISABLE_JIT=1`` the kernel is the plain Python function: returned as it is."""
    if not hasattr(kernel, "enable_caching"):
        return kernel
    if all(hasattr(caching.FunctionCache, name)
           for name in ("_load_overload", "_guard_against_spurious_io_errors")) \
            and hasattr(rtsys, "initialize"):
        kernel._cache = KernelCache(kernel.py_func)
    else:
        kernel.enable_caching()
    return kernel


def install() -> None:
    """Put these locators first in numba's list (once); other code keeps numba's own."""
    classes = caching.CacheImpl._locator_classes
    if _InTree not in classes:
        classes[0:0] = [_UserProvided, _InTree, _UserWide, _Temporary]
