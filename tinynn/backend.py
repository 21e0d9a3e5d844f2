"""Which kernel module does the math: the NumPy reference or the Numba twin.

>>> import tinynn
>>> tinynn.set_backend("numpy")
>>> tinynn.get_backend()
'numpy'
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

BACKENDS = {"numpy": "tinynn.kernels.reference", "numba": "tinynn.kernels.compiled"}
ENV_VAR = "TINYNN_BACKEND"
DEFAULT = "numba"

_current: str = ""


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
    if not _current:
        set_backend(os.environ.get(ENV_VAR, DEFAULT))
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
    return importlib.import_module(BACKENDS[get_backend()])
