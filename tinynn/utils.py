"""Random seeding, as ``keras.utils.set_random_seed``.

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
