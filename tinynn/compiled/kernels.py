"""Numba twins of ``tinynn.reference``: the same functions, compiled.

Every public function here has the name, arguments and results of its twin in
``reference.py`` (read that file for the math; the optimizer updates also return whether
what they wrote is finite, which the textbook leaves to ``Optimizer.checked_step``);
``tests/test_kernels.py`` checks each pair against each other. The twins are built from
the loop kernels of ``loops.py`` and ``updates.py``, which ``fused.py`` reuses to run
whole training steps without returning to Python.

Choices that matter for speed:

* Matrix products are hand-written loops, except with kernels of at least
  ``BLAS_MIN_WEIGHTS`` weights, which go through BLAS (SciPy's).
  Loops over an input skip the zero entries: MNIST images are ~80 % zeros, so
  x · W and xᵀ · dz do a fifth of the work. Adding 0 · w is exact, so the result
  is the one the dense product gives, with one difference: a non-finite weight
  meeting a zero input yields 0, not NaN (in a forward pass), and so does a non-finite
  gradient meeting one (in a weight gradient). A non-finite *input* is never skipped.
* ``error_model="numpy"``: division never raises, so loops with divisions still
  vectorise.
* ``fastmath`` lets LLVM fuse multiply-adds and reorder sums, but leaves out the
  "no NaN / no inf" flags, so NaN checks still work (see ``jit.FASTMATH``).
* Compiled code is kept on disk, as ``cache=True`` keeps it (``compiled/cache.py``
  says where, stamps it with every kernel file, and reads it back quickly);
  nothing is compiled at import, only on first call.
"""

from __future__ import annotations

import numpy as np

from tinynn.compiled.conv import (  # noqa: F401 (the convolution's twins, by their names)
    conv2d_backward,
    conv2d_forward,
)
from tinynn.compiled.jit import njit
from tinynn.compiled.loops import (
    _activate,
    _activate_backward,
    _affine,
    _affine_blas,
    _all_finite,
    _all_finite_each,
    _categorical_probability_cross_entropy,
    _categorical_softmax_cross_entropy,
    _correct,
    _dropout,
    _input_grads,
    _input_grads_blas,
    _key,
    _probability_cross_entropy,
    _softmax_cross_entropy,
    _sparse_affine,
    _sparse_rows,
    _sparse_weight_grads,
    _uniform_at,
    _weight_grads,
    _weight_grads_blas,
    uses_blas,
)
from tinynn.compiled.pooling import (  # noqa: F401 (the poolings' twins, by their names)
    average_pool2d_backward,
    average_pool2d_forward,
    global_average_pool2d_backward,
    global_average_pool2d_forward,
    global_max_pool2d_backward,
    global_max_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from tinynn.compiled.table import (
    CODES,
    LEAKY_RELU,
    LINEAR,
    RELU,
    SIGMOID,
    SOFTMAX,
    TANH,
)
from tinynn.compiled.updates import _adagrad, _adam, _adamw, _rmsprop, _sgd


@njit
def _apply(z, code, parameter):
    """f(z) for an array of any shape (softmax: over the last axis)."""
    z = np.ascontiguousarray(z)
    a = np.empty_like(z)
    _activate(z.reshape(-1, z.shape[-1]), a.reshape(-1, z.shape[-1]), code, parameter)
    return a


@njit
def _apply_backward(da, a, code, parameter):
    """f'(z) ⊙ da from the output a, for arrays of any shape."""
    if da.shape != a.shape:
        raise ValueError("da and a must have the same shape")
    da, a = np.ascontiguousarray(da), np.ascontiguousarray(a)
    dz = np.empty_like(a)
    u = a.shape[-1]
    _activate_backward(da.reshape(-1, u), a.reshape(-1, u), code, parameter, dz.reshape(-1, u))
    return dz


def _unary(code):
    """The twin pair of an activation without a parameter."""

    @njit
    def forward(z):
        return _apply(z, code, 0.0)

    @njit
    def backward(da, a):
        return _apply_backward(da, a, code, 0.0)

    return forward, backward


linear, linear_backward = _unary(LINEAR)
relu, relu_backward = _unary(RELU)
sigmoid, sigmoid_backward = _unary(SIGMOID)
tanh, tanh_backward = _unary(TANH)
softmax, softmax_backward = _unary(SOFTMAX)

ACTIVATIONS = {
    "linear": (linear, linear_backward),
    "relu": (relu, relu_backward),
    "sigmoid": (sigmoid, sigmoid_backward),
    "tanh": (tanh, tanh_backward),
    "softmax": (softmax, softmax_backward),
}


@njit
def leaky_relu(z, negative_slope):
    """Twin of ``reference.leaky_relu``."""
    return _apply(z, LEAKY_RELU, negative_slope)


@njit
def leaky_relu_backward(da, a, negative_slope):
    """Twin of ``reference.leaky_relu_backward``."""
    return _apply_backward(da, a, LEAKY_RELU, negative_slope)


def _no_bias(W):
    return np.empty(0, dtype=W.dtype)


@njit
def _mostly_zeros(x):
    """Whether at most half of x's entries are non-zero (MNIST's pixels: ~19 %): products
    with x then visit its non-zeros only, as the fused step's first layer does."""
    count = 0
    for r in range(x.shape[0]):
        for i in range(x.shape[1]):
            count += x[r, i] != 0
    return 2 * count <= x.size


@njit
def _dense_forward(x, W, b, code):
    z = np.empty((x.shape[0], W.shape[1]), dtype=W.dtype)
    if uses_blas(W):
        # (BLAS multiplies arrays of one dtype: W's, which z has too.)
        _affine_blas(np.ascontiguousarray(x).astype(W.dtype), np.ascontiguousarray(W), b, z)
    elif _mostly_zeros(x):
        indptr, indices, values = _sparse_rows(x)
        _sparse_affine(indptr, indices, values, np.arange(x.shape[0]), W, b, z)
    else:
        _affine(x, np.arange(x.shape[0]), W, b, z)
    a = np.empty_like(z)
    _activate(z, a, code, 0.0)
    return z, a


def _check_dense(x, W, b, *per_unit):
    """The loops index by these shapes: refuse arrays that disagree (NumPy would raise too)."""
    k, u = W.shape
    if x.ndim != 2 or x.shape[1] != k or (b is not None and b.shape != (u,)) or any(
            a.shape != (len(x), u) for a in per_unit):
        raise ValueError(f"dense kernel shapes disagree: x {x.shape}, W {W.shape}, "
                         f"b {None if b is None else b.shape}, "
                         f"outputs {[a.shape for a in per_unit]}")


def dense_forward(x, W, b, activation):
    """Twin of ``reference.dense_forward``: z = x · W + b, a = f(z)."""
    _check_dense(x, W, b)
    return _dense_forward(x, W, _no_bias(W) if b is None else b, CODES[activation])


@njit
def _dense_backward(x, W, a, da, code, need_dx):
    dz = np.empty_like(a)
    _activate_backward(da, a, code, 0.0, dz)
    dW = np.empty(W.shape, dtype=W.dtype)
    db = np.empty(W.shape[1], dtype=W.dtype)
    dx = np.empty((x.shape[0], W.shape[0]), dtype=W.dtype)
    if uses_blas(W):
        dzw = dz.astype(W.dtype)
        _weight_grads_blas(np.ascontiguousarray(x).astype(W.dtype), dzw, dW, db)
        if need_dx:
            _input_grads_blas(dzw, np.ascontiguousarray(W), dx)
    else:
        if _mostly_zeros(x):
            indptr, indices, values = _sparse_rows(x)
            _sparse_weight_grads(indptr, indices, values, np.arange(x.shape[0]), dz, dW, db,
                                 0, len(dW))
        else:
            _weight_grads(x, np.arange(x.shape[0]), dz, dW, db)
        if need_dx:
            _input_grads(dz, W, dx)
    return dx, dW, db


def dense_backward(x, W, a, da, activation, need_dx=True):
    """Twin of ``reference.dense_backward``: returns (dx or None, dW, db)."""
    _check_dense(x, W, None, a, da)
    dx, dW, db = _dense_backward(x, W, a, da, CODES[activation], need_dx)
    return (dx if need_dx else None), dW, db


@njit
def _check_labels(z, labels):
    """One label per row, each a column of z: the loops index z by them."""
    if len(labels) != z.shape[0]:
        raise ValueError("labels must have one entry per row")
    for y in labels:
        if y < 0 or y >= z.shape[1]:
            raise ValueError("labels must be in [0, number of columns)")


@njit
def _check_targets(z, targets):
    if targets.shape != z.shape:
        raise ValueError("targets must have the shape of the outputs")


@njit
def sparse_softmax_cross_entropy(logits, labels):
    """Twin of ``reference.sparse_softmax_cross_entropy``."""
    _check_labels(logits, labels)
    return _softmax_cross_entropy(
        logits, labels, np.arange(len(labels)), len(labels), np.empty_like(logits)
    ).astype(logits.dtype)


@njit
def sparse_softmax_cross_entropy_backward(logits, labels):
    """Twin of ``reference.sparse_softmax_cross_entropy_backward``."""
    _check_labels(logits, labels)
    dz = np.empty_like(logits)
    _softmax_cross_entropy(logits, labels, np.arange(len(labels)), len(labels), dz)
    return dz


@njit
def sparse_probability_cross_entropy(probs, labels, epsilon=1e-7):
    """Twin of ``reference.sparse_probability_cross_entropy``."""
    _check_labels(probs, labels)
    return _probability_cross_entropy(
        probs, labels, np.arange(len(labels)), len(labels), epsilon, np.empty_like(probs)
    ).astype(probs.dtype)


@njit
def sparse_probability_cross_entropy_backward(probs, labels, epsilon=1e-7):
    """Twin of ``reference.sparse_probability_cross_entropy_backward``."""
    _check_labels(probs, labels)
    dp = np.empty_like(probs)
    _probability_cross_entropy(probs, labels, np.arange(len(labels)), len(labels), epsilon, dp)
    return dp


@njit
def categorical_softmax_cross_entropy(logits, targets):
    """Twin of ``reference.categorical_softmax_cross_entropy``."""
    _check_targets(logits, targets)
    return _categorical_softmax_cross_entropy(
        logits, targets, np.arange(len(targets)), len(targets), np.empty_like(logits)
    ).astype(logits.dtype)


@njit
def categorical_softmax_cross_entropy_backward(logits, targets):
    """Twin of ``reference.categorical_softmax_cross_entropy_backward``."""
    _check_targets(logits, targets)
    dz = np.empty_like(logits)
    _categorical_softmax_cross_entropy(logits, targets, np.arange(len(targets)), len(targets),
                                       dz)
    return dz


@njit
def categorical_probability_cross_entropy(probs, targets, epsilon=1e-7):
    """Twin of ``reference.categorical_probability_cross_entropy``."""
    _check_targets(probs, targets)
    return _categorical_probability_cross_entropy(
        probs, targets, np.arange(len(targets)), len(targets), epsilon, np.empty_like(probs)
    ).astype(probs.dtype)


@njit
def categorical_probability_cross_entropy_backward(probs, targets, epsilon=1e-7):
    """Twin of ``reference.categorical_probability_cross_entropy_backward``."""
    _check_targets(probs, targets)
    dp = np.empty_like(probs)
    _categorical_probability_cross_entropy(probs, targets, np.arange(len(targets)),
                                           len(targets), epsilon, dp)
    return dp


@njit
def sparse_categorical_accuracy(outputs, labels):
    """Twin of ``reference.sparse_categorical_accuracy``."""
    if len(labels) != outputs.shape[0]:
        raise ValueError("labels must have one entry per row")
    hits = np.empty(outputs.shape[0], dtype=outputs.dtype)
    for r in range(outputs.shape[0]):
        hits[r] = _correct(outputs[r : r + 1], labels[r : r + 1], np.zeros(1, np.int64))
    return hits


def all_finite(*arrays):
    """Twin of ``reference.all_finite``: one pass over each array, no temporary array, and
    one compiled call for arrays of one dtype (a step-by-step fit checks a dozen per step)."""
    flat = tuple(np.ascontiguousarray(a).reshape(-1) for a in arrays)
    if flat and all(f.dtype == flat[0].dtype for f in flat):
        return bool(_all_finite_each(flat))
    return all(bool(_all_finite(f)) for f in flat)


@njit
def _check_sizes(w, g, *slots):
    """The update loops run over w.size entries of every array: all must have w's shape."""
    if g.shape != w.shape:
        raise ValueError("the gradient must have the parameter's shape")
    for s in slots:
        if s.shape != w.shape:
            raise ValueError("the optimizer's slots must have the parameter's shape")


@njit
def adam_update(w, g, m, v, lr_t, beta_1, beta_2, epsilon):
    """Twin of ``reference.adam_update``: one fused pass; w, m and v must be contiguous.

    Moments below ``FLUSH`` are set to 0 (see ``FLUSH``); the reference keeps them. Returns
    whether every value written is finite, as every update twin here does (the reference
    returns None: ``Optimizer.checked_step`` then checks with ``all_finite``).
    """
    _check_sizes(w, g, m, v)
    g = np.ascontiguousarray(g).reshape(-1)
    return _adam(w.reshape(-1), g, m.reshape(-1), v.reshape(-1), lr_t, beta_1, beta_2, epsilon)


@njit
def adamw_update(w, g, m, v, lr_t, beta_1, beta_2, epsilon, decay):
    """Twin of ``reference.adamw_update``; w, m and v must be contiguous."""
    _check_sizes(w, g, m, v)
    g = np.ascontiguousarray(g).reshape(-1)
    return _adamw(w.reshape(-1), g, m.reshape(-1), v.reshape(-1), lr_t, beta_1, beta_2,
                  epsilon, decay)


@njit
def sgd_update(w, g, velocity, lr, momentum, nesterov):
    """Twin of ``reference.sgd_update``: one fused pass; w and velocity must be contiguous."""
    _check_sizes(w, g, velocity)
    return _sgd(w.reshape(-1), np.ascontiguousarray(g).reshape(-1), velocity.reshape(-1), lr,
                momentum, nesterov)


@njit
def rmsprop_update(w, g, velocity, momentum_slot, average_gradient, lr, rho, momentum, epsilon,
                   centered):
    """Twin of ``reference.rmsprop_update``; w and the slots must be contiguous."""
    _check_sizes(w, g, velocity, momentum_slot, average_gradient)
    return _rmsprop(w.reshape(-1), np.ascontiguousarray(g).reshape(-1), velocity.reshape(-1),
                    momentum_slot.reshape(-1), average_gradient.reshape(-1), lr, rho, momentum,
                    epsilon, centered)


@njit
def adagrad_update(w, g, accumulator, lr, epsilon):
    """Twin of ``reference.adagrad_update``; w and accumulator must be contiguous."""
    _check_sizes(w, g, accumulator)
    return _adagrad(w.reshape(-1), np.ascontiguousarray(g).reshape(-1), accumulator.reshape(-1),
                    lr, epsilon)


@njit
def uniform(seed, step, size):
    """Twin of ``reference.uniform``."""
    key = _key(seed, step)
    out = np.empty(size, np.float32)
    for i in range(size):
        out[i] = _uniform_at(key, i)
    return out


@njit
def dropout_forward(x, rate, seed, step):
    """Twin of ``reference.dropout_forward``."""
    x = np.ascontiguousarray(x)
    y, s = np.empty_like(x), np.empty_like(x)
    _dropout(x.reshape(-1, x.shape[-1]), rate, seed, step, 0, y.reshape(-1, x.shape[-1]),
             s.reshape(-1, x.shape[-1]))
    return y, s


@njit
def dropout_backward(dy, s):
    """Twin of ``reference.dropout_backward``."""
    return dy * s

