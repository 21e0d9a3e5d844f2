"""Which kernel module does the math: the NumPy reference or the Numba twin.

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

BACKENDS = {"numpy": "tinynn.kernels.reference", "numba": "tinynn.kernels.compiled"}
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


def import_kernels(module: str) -> ModuleType:
    """Import a kernel module (where numba caches compiled code: ``tinynn.kernels.cache``).

    Called for every kernel a layer runs: once imported, the module is looked up directly
    (unless another thread is still executing it: ``import_module`` waits for that).
    """
    found = sys.modules.get(module)
    if found is None or getattr(getattr(found, "__spec__", None), "_initializing", False):
        return importlib.import_module(module)
    return found
