"""Random seeding as ``keras.utils.set_random_seed``, ``to_categorical``, and class registries.

Every random draw in tinynn (initial weights, shuffling, validation splits)
comes from one NumPy ``Generator``; seeding it makes a run repeatable bit for bit.

>>> import tinynn
>>> tinynn.utils.set_random_seed(0)
>>> a = tinynn.utils.generator().random()
>>> tinynn.utils.set_random_seed(0)
>>> a == tinynn.utils.generator().random()
True
"""

from __future__ import annotations

import random

import numpy as np

_generator = np.random.default_rng()


def set_random_seed(seed: int) -> None:
    """Seed tinynn's generator, and Python's and NumPy's global ones as Keras does.

    Args:
        seed: a non-negative integer.
    """
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)


def generator() -> np.random.Generator:
    """The generator tinynn draws from."""
    return _generator


def to_categorical(y, num_classes: int | None = None) -> np.ndarray:
    """One-hot rows for integer class labels, as ``keras.utils.to_categorical``.

    Args:
        y: integer labels, shape (n,) (or (n, 1)).
        num_classes: c; default 1 + the largest label.

    Returns:
        float32 array of shape (n, c).

    >>> to_categorical([0, 2], 3)
    array([[1., 0., 0.],
           [0., 0., 1.]], dtype=float32)
    """
    from tinynn import validation

    y = np.asarray(y)
    if num_classes is None:
        if y.dtype.kind not in "iu" or y.size == 0:
            raise ValueError("to_categorical: give num_classes, or y as non-empty integer labels")
        num_classes = int(y.max()) + 1
    num_classes = validation.positive_int(num_classes, "num_classes")
    labels = validation.labels(y, "y", len(y), num_classes)
    out = np.zeros((len(labels), num_classes), np.float32)
    out[np.arange(len(labels)), labels] = 1
    return out


def registry(base: type, module: str) -> dict[str, type]:
    """The public subclasses of ``base`` (not ``base``, nor a ``_Private`` base class)
    defined in ``module`` (or its submodules), by class name."""
    found, todo = {}, list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        if (cls.__module__ == module or cls.__module__.startswith(module + ".")) \
                and not cls.__name__.startswith("_"):
            found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found
