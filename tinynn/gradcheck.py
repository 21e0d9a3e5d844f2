"""Gradient checking: does backprop agree with finite differences?

For every parameter w, the central difference

    D(h) = (L(w + h) − L(w − h)) / 2h  ≈  ∂L/∂w + c·h²

is refined by Richardson extrapolation, (4·D(h/2) − D(h)) / 3, which cancels
the h² term (near a clipped probability the loss curves so sharply that plain
central differences would be the inaccurate side). The result is compared
with the gradient backprop left in the layer's ``grads``. Both are computed
in float64 on a copy of the model, so the model itself is untouched.
"""

from __future__ import annotations

import copy

import numpy as np


class GradientCheckError(AssertionError):
    """Raised by ``gradcheck`` when some parameter's error exceeds the tolerance."""


def gradcheck(
    model,
    x: np.ndarray,
    y: np.ndarray,
    loss=None,
    h: float = 1e-5,
    floor: float = 1e-5,
    tolerance: float | None = None,
) -> dict[str, float]:
    """The largest relative error between backprop and finite differences, per parameter.

    error = max over entries |g_backprop − g_numeric| / max(|g_backprop|, |g_numeric|, floor)

    Args:
        model: a built ``Sequential``.
        x: a small batch of inputs, shape (n, …).
        y: its integer labels, shape (n,).
        loss: the loss to check; default the model's compiled loss.
        h: finite-difference step.
        floor: gradients smaller than this are compared absolutely, since their
            relative error is all rounding noise.
        tolerance: if given, raise ``GradientCheckError`` when an error exceeds it.

    Returns:
        ``{"dense/kernel": error, "dense/bias": error, …}``.

    >>> import numpy as np, tinynn
    >>> model = tinynn.Sequential([tinynn.layers.Dense(3, "tanh", input_dim=4),
    ...                            tinynn.layers.Dense(2, "softmax")])
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> errors = gradcheck(model, np.random.rand(5, 4), np.array([0, 1, 1, 0, 1]))
    >>> max(errors.values()) < 1e-6
    True
    """
    from tinynn import losses

    loss = losses.get(loss) if loss is not None else model.loss
    if loss is None:
        raise ValueError("gradcheck needs a loss: compile the model or pass loss=")
    if not model.built:
        model.build((None, *np.shape(x)[1:]))
    clone = copy.deepcopy(model)
    clone.loss = copy.deepcopy(loss)
    for layer in clone.layers:
        for key, p in layer.params.items():
            layer.params[key] = p.astype(np.float64)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y).astype(np.intp)

    clone.compute_gradients(x, y)
    errors = {}
    for layer in clone.layers:
        for key, w in layer.params.items():
            analytic = layer.grads[key]
            numeric = np.zeros_like(w)
            for i in np.ndindex(w.shape):
                d_h, d_half = (_central_difference(clone, x, y, w, i, step) for step in (h, h / 2))
                numeric[i] = (4 * d_half - d_h) / 3
            scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
            errors[f"{layer.name}/{key}"] = float(np.max(np.abs(analytic - numeric) / scale))
    if tolerance is not None:
        bad = {k: e for k, e in errors.items() if e > tolerance}
        if bad:
            raise GradientCheckError(f"gradients disagree beyond {tolerance}: {bad}")
    return errors


def _central_difference(model, x, y, w: np.ndarray, i: tuple, h: float) -> float:
    """(L(w + h) − L(w − h)) / 2h for the single entry ``w[i]``, which is restored."""
    saved = w[i]
    w[i] = saved + h
    up = model.compute_loss(x, y)
    w[i] = saved - h
    down = model.compute_loss(x, y)
    w[i] = saved
    return (up - down) / (2 * h)
