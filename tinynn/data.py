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
    """Checked float32 inputs; a model built by them is built only once all checks pass.

    The model's own parts are checked here too (``Layer.check``): every call that
    runs kernels passes through this function first.
    """
    for layer in model.leaf_layers:
        layer.check()
    sample = None if model.input_shape is None else model.input_shape[1:]
    x = validation.inputs(x, name, sample, check_finite)
    if sample is None:
        model.compute_output_shape(x.shape[1:])  # raises if the layers cannot take x
    return x


def inputs_and_targets(model, x, y, x_name: str, y_name: str,
                       build: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Checked inputs and targets (the loss says what targets it takes); then, unless
    ``build=False``, builds the model for them."""
    x = inputs(model, x, x_name)
    classes = model.compute_output_shape(x.shape[1:])[-1]
    y = model.loss.check_targets(y, y_name, len(x), classes)
    if build and not model.built:
        model.build((None, *x.shape[1:]))
    return x, y


def training_data(model, x, y, split, validation_data) -> tuple:
    """(x, y, (x_val, y_val) or None), checked; Keras's split takes the *last* samples."""
    validation.fraction(split, "validation_split")
    x, y = inputs_and_targets(model, x, y, "x", "y", build=False)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (x_val, y_val)")
        val = inputs_and_targets(model, *validation_data, "validation_data[0]",
                                 "validation_data[1]", build=False)
        if val[0].shape[1:] != x.shape[1:]:
            raise ValueError(f"validation_data[0] has samples of shape {val[0].shape[1:]}, "
                             f"but x has {x.shape[1:]}")
    elif split > 0:
        cut = math.ceil(len(x) * (1 - split))
        if cut == 0 or cut == len(x):
            raise ValueError(f"validation_split={split} leaves no samples for "
                             f"{'training' if cut == 0 else 'validation'} out of {len(x)}")
        x, y, val = x[:cut], y[:cut], (x[cut:], y[cut:])
    if not model.built:  # only now: a refused call leaves the model as it was
        model.build((None, *x.shape[1:]))
    return x, y, val
