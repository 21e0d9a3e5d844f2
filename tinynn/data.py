"""What ``fit``, ``evaluate`` and ``predict`` are given, checked before any work.

Inputs become float32 and must fit the model; targets are what the model's
loss takes (``Loss.check_targets``); a model built by the data is built only
once every check has passed, so a refused call leaves it as it was.
"""

from __future__ import annotations

import math

import numpy as np

from tinynn import validation


def inputs(model, x, name: str, check_finite: bool = True) -> np.ndarray:
    """Checked float32 inputs; a model built by them is built only once all checks pass."""
    sample = None if model.input_shape is None else model.input_shape[1:]
    x = validation.inputs(x, name, sample, check_finite)
    if sample is None:
        model.compute_output_shape(x.shape[1:])  # raises if the layers cannot take x
    return x


def inputs_and_targets(model, x, y, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked inputs and targets (the loss says what targets it takes); builds the model."""
    x = inputs(model, x, x_name)
    classes = model.compute_output_shape(x.shape[1:])[-1]
    y = model.loss.check_targets(y, y_name, len(x), classes)
    if not model.built:
        model.build((None, *x.shape[1:]))
    return x, y


def training_data(model, x, y, split, validation_data) -> tuple:
    """(x, y, (x_val, y_val) or None), checked; Keras's split takes the *last* samples."""
    validation.fraction(split, "validation_split")
    x, y = inputs_and_targets(model, x, y, "x", "y")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (x_val, y_val)")
        return x, y, inputs_and_targets(model, *validation_data, "validation_data[0]",
                                        "validation_data[1]")
    if split == 0:
        return x, y, None
    cut = math.ceil(len(x) * (1 - split))
    if cut == 0 or cut == len(x):
        raise ValueError(f"validation_split={split} leaves no samples for "
                         f"{'training' if cut == 0 else 'validation'} out of {len(x)}")
    return x[:cut], y[:cut], (x[cut:], y[cut:])
