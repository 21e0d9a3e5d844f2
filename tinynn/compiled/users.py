"""A user's layer inside the fused training step: compiled code calls its own ``forward``
and ``backward`` (Python) on the whole batch, and runs the built-in layers around it.

Why: step by step, a model with one part of its own pays Python's price at every layer,
loss and update (~200 µs a step on the hidden model, most of its epoch). Here the step
stays one compiled loop; at a ``USER`` op (``table.lower_user``) thread 0 leaves it for
Python (Numba's ``objmode``, a few µs), the layer keeps its contract exactly as
``Sequential.train_step`` calls it, and the optimizer's compiled update then applies
the layer's ``grads`` to its ``params``.

A fit registers its user layers (``register``) under a number, the ``handle`` the fused
step carries; compiled code can pass numbers and arrays to Python, not objects.
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import objmode

from tinynn.compiled.jit import calling_python
from tinynn.layers.base import call_forward, takes

#: The user layers of each running fit, their parameters as the fit found them, and
#: their gradient buffers, by handle.
_RUNS: dict[int, tuple[list, list, list]] = {}
_HANDLES = itertools.count()


def register(user_layers: list, params: list, grads: list) -> int:
    """A handle for this fit's user layers; ``params[u]`` are layer u's parameter arrays
    (the fused update writes these), ``grads[u]`` its flat gradient buffers, one per
    parameter, in ``params`` order (the fused update reads them)."""
    handle = next(_HANDLES)
    _RUNS[handle] = (user_layers, params, grads)
    return handle


def release(handle: int) -> None:
    _RUNS.pop(handle, None)


def _forward(handle: int, u: int, x: np.ndarray, out: np.ndarray) -> None:
    """out = user layer u's forward of x (n, width), in training mode."""
    layer = _RUNS[handle][0][u]
    # (A copy, as step by step, where each layer's output is a new array: the buffer is
    # the next step's too, and a layer may keep what it is given.)
    y = np.asarray(call_forward(layer, x.reshape(len(x), *layer.input_shape).copy(), True))
    expected = (len(x), *layer.compute_output_shape(layer.input_shape))
    if y.shape != expected:
        raise ValueError(f"layer {layer.name!r}: forward returned shape {y.shape}, but "
                         f"compute_output_shape says {expected}")
    np.copyto(out, y.reshape(out.shape), casting="same_kind")


def _backward(handle: int, u: int, dy: np.ndarray, dx: np.ndarray) -> None:
    """dx = user layer u's backward of dy (nothing kept when dx is empty: the first layer);
    its ``grads`` copied to the flat buffers the update reads."""
    layers, params, buffers = _RUNS[handle]
    layer = layers[u]
    options = {"need_dx": False} if not dx.size and takes(type(layer).backward, "need_dx") else {}
    out_shape = layer.compute_output_shape(layer.input_shape)
    d = layer.backward(dy.reshape(len(dy), *out_shape).copy(), **options)
    if len(layer.params) != len(params[u]) or any(
            p is not q for p, q in zip(layer.params.values(), params[u])):
        raise ValueError(f"layer {layer.name!r}: its params are not the arrays fit started "
                         f"with; the optimizer updates those: change a parameter in place "
                         f"(w[...] = …), never replace or add one while training")
    if dx.size:
        d = np.asarray(d)
        if d.shape != (len(dx), *layer.input_shape):
            raise ValueError(f"layer {layer.name!r}: backward returned shape {d.shape}, "
                             f"expected {(len(dx), *layer.input_shape)}")
        np.copyto(dx, d.reshape(dx.shape), casting="same_kind")
    for key, p, buffer in zip(layer.params, layer.params.values(), buffers[u]):
        g = np.asarray(layer.grads.get(key))
        if g.shape != p.shape:
            raise ValueError(f"layer {layer.name!r}: grads[{key!r}] has shape {g.shape}, "
                             f"expected {p.shape} (that of params[{key!r}])")
        np.copyto(buffer, g.reshape(-1), casting="same_kind")


@calling_python
def user_forward(handle, u, x, out):
    """``_forward`` from compiled code (thread 0, between two meetings)."""
    with objmode():
        _forward(handle, u, x, out)


@calling_python
def user_backward(handle, u, dy, dx):
    """``_backward`` from compiled code (thread 0, between two meetings)."""
    with objmode():
        _backward(handle, u, dy, dx)
