"""Which room does the math: the textbook (``tinynn.reference``, NumPy) or the compiled
room (``tinynn.compiled``, Numba).

This module is the only door between the rooms: the textbook never imports
``tinynn.compiled``; it asks here for the selected backend's kernels (``kernels``)
and, for whole compiled steps, its engine (``engine``).

The ``TINYNN_BACKEND`` environment variable chooses the first backend; a value
that names none is an error when tinynn is imported, naming the variable.
Choosing costs nothing: the Numba kernels are imported (and compiled, or read
from numba's on-disk cache) only when they are first used.

>>> import tinynn
>>> with tinynn.backend.using("numpy"):  # or tinynn.set_backend("numpy") from now on
...     tinynn.get_backend()
'numpy'
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

BACKENDS = {"numpy": "tinynn.reference", "numba": "tinynn.compiled.kernels"}
#: The backends that run whole steps in one call: the module that lowers a model to them.
ENGINES = {"numba": "tinynn.compiled.engine"}
ENV_VAR = "TINYNN_BACKEND"
DEFAULT = "numba"


def _from_environment() -> str:
    """The backend ``$TINYNN_BACKEND`` names (unset or empty: the default)."""
    name = os.environ.get(ENV_VAR) or DEFAULT
    if name not in BACKENDS:
        raise ValueError(f"${ENV_VAR}={name!r} names no backend: set it to one of "
                         f"{sorted(BACKENDS)}, or unset it for {DEFAULT!r}")
    return name


_current: str = _from_environment()


def set_backend(name: str) -> None:
    """Select the kernels every layer, loss and optimizer calls from now on.

    Args:
        name: ``"numpy"`` (plain NumPy, the readable reference) or ``"numba"``
            (compiled kernels).
    """
    global _current
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {name!r}")
    _current = name


def get_backend() -> str:
    """The selected backend's name; at first the ``TINYNN_BACKEND`` variable or the default."""
    return _current


@contextmanager
def using(name: str) -> Iterator[None]:
    """``with tinynn.backend.using("numpy"): ...`` selects a backend for a block only."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def kernels() -> ModuleType:
    """The kernel module of the selected backend (imported on first use)."""
    return import_kernels(BACKENDS[get_backend()])


def engine() -> ModuleType | None:
    """The selected backend's engine (``tinynn.compiled.engine``), or None for a backend
    that runs step by step only."""
    name = ENGINES.get(get_backend())
    return None if name is None else import_kernels(name)


def import_kernels(module: str) -> ModuleType:
    """Import a module of either room (where numba caches compiled code: ``tinynn.compiled.cache``).

    Called for every kernel a layer runs: once imported, the module is looked up directly
    (unless another thread is still executing it: ``import_module`` waits for that).
    """
    found = sys.modules.get(module)
    if found is None or getattr(getattr(found, "__spec__", None), "_initializing", False):
        return importlib.import_module(module)
    return found
