"""The few ``keras.ops`` a classic MLP script calls, on NumPy arrays.

>>> import numpy as np
>>> from tinynn import ops
>>> ops.convert_to_numpy([1, 2])
array([1, 2])
>>> ops.softmax(np.array([0.0, 0.0]))
array([0.5, 0.5])
"""

from __future__ import annotations

import numpy as np

from tinynn.activations import relu, sigmoid, softmax, tanh

__all__ = ["argmax", "convert_to_numpy", "relu", "sigmoid", "softmax", "tanh"]


def convert_to_numpy(x) -> np.ndarray:
    """``x`` as a NumPy array (tinynn's arrays already are)."""
    return np.asarray(x)


def argmax(x, axis: int = -1) -> np.ndarray:
    """Index of the largest entry along ``axis``."""
    return np.argmax(np.asarray(x), axis=axis)
