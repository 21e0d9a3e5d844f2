"""The one set of Numba options every compiled kernel of tinynn is built with.

Everything in ``tinynn/compiled`` compiles through ``njit`` (a kernel of its own,
kept on disk; ``calling_python`` for one that calls back into Python), ``inline`` (a
short step copied into its caller) or ``chosen_by_type`` (a compile-time choice between
implementations).
"""

from __future__ import annotations

import numba
from numba.extending import overload

from tinynn.compiled import cache

cache.install()  # before any @njit: see cache.py for why

#: LLVM fast-math flags: fused multiply-adds ("contract") and reordered sums
#: ("reassoc", so that reductions vectorise), and signed zeros ignored. Left out:
#: "nnan"/"ninf" (NaN checks would fold away), "afn" (may approximate exp and
#: log) and "arcp" (x / y as x · (1/y), which together with "contract" turns
#: softmax − onehot = 0 into a rounding residue that Adam then scales up).
#: Even so, "reassoc" lets LLVM fold np.isfinite to True: use ``_finite``.
FASTMATH = {"nsz", "contract", "reassoc"}
#: One set of options for every kernel.
JIT = {"error_model": "numpy", "fastmath": FASTMATH, "nogil": True}


def njit(function):
    """``numba.njit(**JIT)``, its compiled code kept on disk (``cache=True``, read as
    ``cache.py`` says)."""
    return cache.on_disk(numba.njit(**JIT)(function))


def calling_python(function):
    """``njit`` for a kernel with an ``objmode`` block (it calls back into Python: see
    ``users.py``): the same options, except that it does not release the GIL, which the
    block holds anyway (Numba warns of ``nogil`` with such a block). Its callers, compiled
    with ``nogil``, still run without the GIL until they call it."""
    kernel = cache.on_disk(numba.njit(**{**JIT, "nogil": False})(function))
    kernel.calls_python = True  # (run as Python by ``meanwhile.python_twin``)
    return kernel


def inline(function):
    """``numba.njit(**JIT)`` whose body numba copies into each caller before compiling it
    (``inline="always"``): for the short steps of a fused kernel. Each compiled function
    that calls another links the callee's code and optimizes all of it again, so deep
    call chains compile the same code many times; inlined steps compile once, with their
    caller."""
    return numba.njit(inline="always", **JIT)(function)


def chosen_by_type(function):
    """Make ``function(*args)`` (a Python function that returns an implementation) a
    compile-time choice: numba calls it with the arguments' types, and compiles only the
    implementation it returns into the caller (``inline="always"``). A model's fused step
    thus compiles the optimizer, loss and products it uses, not every one there is."""

    def stub(*args):
        if not numba.config.DISABLE_JIT:
            raise TypeError(f"{function.__name__} runs inside compiled code only")
        # NUMBA_DISABLE_JIT=1 (the compiled room run as Python): choose by the values'
        # classes, as numba would by their types.
        return function(*(_Typed(type(a)) for a in args))(*args)

    stub.__name__ = stub.__qualname__ = function.__name__
    stub.choose = function  # (made at run time by ``meanwhile.python_twin``)
    overload(stub, inline="always", jit_options=JIT)(function)
    return stub


class _Typed:
    """What a compile-time choice reads of an argument's type, for a plain Python value."""

    def __init__(self, cls: type):
        self.instance_class = cls
