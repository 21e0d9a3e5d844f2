"""Weight initializers, by Keras's names.

Each takes a shape and returns a fresh float32 array drawn from
``tinynn.utils.generator()``.

>>> from tinynn import initializers
>>> initializers.get("zeros")((2,))
array([0., 0.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinynn.utils import generator


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out), as Keras counts them: a (k, u) kernel has k inputs and u outputs
    per unit; a convolution's (kh, kw, c, f) kernel has kh · kw · c and kh · kw · f (its
    receptive field times the channels)."""
    if len(shape) < 2:
        return (shape[0], shape[0]) if shape else (1, 1)
    field = int(np.prod(shape[:-2]))
    return shape[-2] * field, shape[-1] * field


def glorot_uniform(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform on [−l, l] with l = √(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    fan_in, fan_out = fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return generator().uniform(-limit, limit, size=shape).astype(np.float32)


def he_uniform(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform on [−l, l] with l = √(6 / fan_in) (He et al., 2015), suited to relu."""
    limit = np.sqrt(6.0 / fans(shape)[0])
    return generator().uniform(-limit, limit, size=shape).astype(np.float32)


def zeros(shape: tuple[int, ...]) -> np.ndarray:
    """All zeros."""
    return np.zeros(shape, dtype=np.float32)


def ones(shape: tuple[int, ...]) -> np.ndarray:
    """All ones."""
    return np.ones(shape, dtype=np.float32)


INITIALIZERS = {f.__name__: f for f in (glorot_uniform, he_uniform, zeros, ones)}


def get(identifier: str | Callable) -> Callable:
    """The initializer for a name, or a callable ``shape -> array`` passed through."""
    if callable(identifier):
        return identifier
    if identifier not in INITIALIZERS:
        raise ValueError(
            f"initializer must be one of {sorted(INITIALIZERS)} or a callable, got {identifier!r}"
        )
    return INITIALIZERS[identifier]


def checked(initializer: Callable, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``initializer(shape)`` as float32, refused unless it has that shape and is finite.

    A user's initializer that returns, say, a transposed kernel would otherwise
    train on garbage.
    """
    w = np.asarray(initializer(shape))
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must return real numbers, got dtype {w.dtype}")
    if w.shape != tuple(shape):
        raise ValueError(f"{name} must return an array of shape {tuple(shape)}, got {w.shape}")
    if w.dtype != np.float64:  # float64 stays (a loaded float64 model), the rest is float32
        w = w.astype(np.float32)
    if not np.isfinite(w).all():
        raise ValueError(f"{name} returned non-finite values")
    return w
