"""Checks at the door: every public entry point validates its arguments here, before any work.

Each check names the argument, says what was expected and what came, and
raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, bad
value). Nothing is coerced into something the caller did not mean: a string
is not a boolean, 2.5 is not a batch size, a NaN pixel is not a pixel.

>>> positive_int(32, "batch_size")
32
>>> positive_int(0, "batch_size")
Traceback (most recent call last):
...
ValueError: batch_size must be a positive integer, got 0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def positive_int(value: object, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_float(value: object, name: str) -> float:
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def nonnegative_float(value: object, name: str) -> float:
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number ≥ 0, got {value!r}")
    return float(value)


def fraction(value: object, name: str) -> float:
    """A number in [0, 1)."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def boolean(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def choice(value: object, name: str, options: Sequence) -> object:
    if isinstance(value, (bool, np.bool_)) or value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def inputs(x: object, name: str, sample_shape: tuple[int, ...] | None,
           check_finite: bool = True) -> np.ndarray:
    """A batch of inputs as float32: numeric, at least one sample, all finite, the right shape.

    ``check_finite=False`` leaves the NaN/inf check to a caller that makes it
    on the way (the compiled predict does, in its single pass over x).
    """
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise ValueError(f"{name} must be an array of numbers: {e}") from None
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{name} must have shape (samples, features…) with at least one "
                         f"sample, got shape {x.shape}")
    if sample_shape is not None and x.shape[1:] != tuple(sample_shape):
        hint = ("; add the channel axis: np.expand_dims(x, -1)"
                if tuple(sample_shape) == (*x.shape[1:], 1) else "")
        raise ValueError(f"{name} has samples of shape {x.shape[1:]}, but the model expects "
                         f"{tuple(sample_shape)}{hint}")
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused just below
        x = x.astype(np.float32, copy=False)
    if check_finite and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        where = ", ".join(map(str, bad))
        raise ValueError(f"{name} must be finite (as float32), but {name}[{where}] is "
                         f"{x[tuple(bad)]}")
    return x


def labels(y: object, name: str, samples: int, classes: int) -> np.ndarray:
    """Integer class labels in [0, classes), one per sample, as intp."""
    try:
        y = np.asarray(y)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name} must be an array of class labels: {e}") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1 or len(y) != samples:
        raise ValueError(f"{name} must be class labels of shape ({samples},), one per sample, "
                         f"got shape {y.shape}")
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (np.mod(y, 1) == 0)
        if not whole.all():
            i = int(np.argmin(whole))
            raise ValueError(f"{name} must be whole-number class labels, but {name}[{i}] "
                             f"is {y[i]}")
    low, high = y.min(), y.max()
    if low < 0 or high >= classes:
        raise ValueError(f"{name} must be class labels in [0, {classes}) for a model with "
                         f"{classes} outputs, got values from {low} to {high}")
    return y.astype(np.intp)


def targets(y: object, name: str, samples: int, classes: int) -> np.ndarray:
    """Target rows (one-hot labels or class probabilities), one per sample, as float32."""
    try:
        y = np.asarray(y)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name} must be an array of one-hot rows: {e}") from None
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers (one-hot rows), got dtype {y.dtype}")
    if y.shape != (samples, classes):
        hint = (" (integer labels? use sparse_categorical_crossentropy, or "
                "tinynn.utils.to_categorical)" if y.ndim == 1 else "")
        raise ValueError(f"{name} must have shape ({samples}, {classes}), one row of {classes} "
                         f"class weights per sample, got shape {y.shape}{hint}")
    y = y.astype(np.float32)
    if not np.isfinite(y).all() or (y < 0).any():
        raise ValueError(f"{name} must hold finite, non-negative class weights")
    return y


def callbacks(value: object, base: type) -> list:
    """A list of callback objects (None for none)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"callbacks must be a list of Callback objects, got "
                        f"{type(value).__name__} (wrap it in a list: callbacks=[...])")
    for hook in value:
        if not isinstance(hook, base):
            raise TypeError(f"callbacks must be tinynn.callbacks.Callback objects, "
                            f"got {type(hook).__name__}")
    return list(value)
