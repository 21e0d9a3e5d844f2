"""How the compiled convolution and pooling twins share a batch between threads, and
keep the same bits whatever the thread count.

The work is split by samples between tinynn's threads (``engine.threads()``, one per
core): the loops are compiled and release the GIL, and so does BLAS. Sums over samples
(the weight gradients) are ``PARTS`` partial sums over fixed slices of the batch, added
in order (``_summed_in_parts``). Each BLAS product runs on one of BLAS's threads
(OpenBLAS's ``openblas_set_num_threads_local``), since OpenBLAS rounds differently with
more. So the weights do not depend on any thread count.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from pathlib import Path

import numpy as np

from tinynn.compiled import engine

#: Partial sums of a weight gradient over the batch (fixed: see the module docstring).
PARTS = 4


@functools.cache
def _blas_threads_setter():
    """NumPy's OpenBLAS ``openblas_set_num_threads_local`` (OpenBLAS ≥ 0.3.27), or None."""
    for path in sorted((Path(np.__file__).parent.parent / "numpy.libs").glob("*openblas*")):
        try:
            setter = ctypes.CDLL(str(path)).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        return setter
    return None


#: Who is inside ``_one_blas_thread`` now, and BLAS's thread count before the first came.
_blas = {"lock": threading.Lock(), "inside": 0, "before": None}


@contextlib.contextmanager
def _one_blas_thread():
    """Within the block, BLAS products run on one thread each; after it, on as many as
    before. Despite its name, NumPy's (pthreads) OpenBLAS keeps that count process-wide,
    so the calling thread sets it around all its threads' work, and with several callers
    at once (two models in two threads) the first sets it and the last restores it."""
    setter = _blas_threads_setter()
    if setter is None:
        yield
        return
    with _blas["lock"]:
        if _blas["inside"] == 0:
            _blas["before"] = setter(1)
        _blas["inside"] += 1
    try:
        yield
    finally:
        with _blas["lock"]:
            _blas["inside"] -= 1
            if _blas["inside"] == 0:
                setter(_blas["before"])


def _shared(run, count: int) -> None:
    """``run(t)`` for t in [0, count), on tinynn's threads (the calling one alone if count
    is 1), each BLAS product on one thread."""
    with _one_blas_thread():
        if count == 1:
            run(0)
        else:
            list(engine._pool().map(run, range(count)))


def _summed_in_parts(kernel, n: int, shape, dtype, *args) -> np.ndarray:
    """Σ over ``PARTS`` fixed slices of the samples of ``kernel(*args, part, s0, s1)``
    (each part a zeroed array of ``shape``), added in order; the threads share the parts."""
    engine._announce_compiling(kernel)
    parts = np.zeros((PARTS, *shape), dtype)
    bounds = [n * p // PARTS for p in range(PARTS + 1)]
    count = min(engine.threads(), PARTS)

    def run(t: int) -> None:
        for p in range(PARTS * t // count, PARTS * (t + 1) // count):
            kernel(*args, parts[p], bounds[p], bounds[p + 1])

    _shared(run, count)
    total = parts[0]
    for p in range(1, PARTS):
        total += parts[p]
    return total


def _in_threads(kernel, n: int, *args, unit: int = 1) -> None:
    """``kernel(*args, s0, s1)`` over samples [0, n), split between the threads at
    multiples of ``unit`` samples."""
    engine._announce_compiling(kernel)
    units = -(-n // unit)
    count = min(engine.threads(), units)
    cuts = [min(n, unit * (units * t // count)) for t in range(count + 1)]
    _shared(lambda t: kernel(*args, cuts[t], cuts[t + 1]), count)
