"""Numba twins of ``tinynn.reference``: the same functions, compiled.

Every public function here has the name, arguments and results of its twin in
``reference.py`` (read that file for the math); ``tests/test_kernels.py`` checks
each pair against each other. The twins are built from a few small loop
kernels (the ``_``-prefixed functions), which ``tinynn.compiled.fused`` reuses
to run whole training steps without returning to Python.

Choices that matter for speed:

* Matrix products are hand-written loops, except with kernels of at least
  ``BLAS_MIN_WEIGHTS`` weights, which go through BLAS (SciPy's).
  Loops over an input skip the zero entries: MNIST images are ~80 % zeros, so
  x · W and xᵀ · dz do a fifth of the work. Adding 0 · w is exact, so the result
  is the one the dense product gives, with one difference: a non-finite weight
  meeting a zero input yields 0, not NaN.
* ``error_model="numpy"``: division never raises, so loops with divisions still
  vectorise.
* ``fastmath`` lets LLVM fuse multiply-adds and reorder sums, but leaves out the
  "no NaN / no inf" flags, so NaN checks still work (see ``FASTMATH``).
* Compiled code is kept on disk, as ``cache=True`` keeps it (``compiled/cache.py``
  says where, stamps it with every kernel file, and reads it back quickly);
  nothing is compiled at import, only on first call.
"""

from __future__ import annotations

import numba
import numpy as np

from tinynn.compiled import cache
from tinynn.compiled.table import (
    ADAGRAD_UPDATE,
    ADAM_UPDATE,
    ADAMW_UPDATE,
    CODES,
    LEAKY_RELU,
    LINEAR,
    RELU,
    RMSPROP_UPDATE,
    SGD_UPDATE,
    SIGMOID,
    SOFTMAX,
    TANH,
)

cache.install()  # before any @njit: see cache.py for why

#: LLVM fast-math flags: fused multiply-adds ("contract") and reordered sums
#: ("reassoc", so that reductions vectorise), and signed zeros ignored. Left out:
#: "nnan"/"ninf" (NaN checks would fold away), "afn" (may approximate exp and
#: log) and "arcp" (x / y as x · (1/y), which together with "contract" turns
#: softmax − onehot = 0 into a rounding residue that Adam then scales up).
#: Even so, "reassoc" lets LLVM fold np.isfinite to True: use ``_finite``.
FASTMATH = {"nsz", "contract", "reassoc"}
#: One set of options for every kernel.
JIT = {"error_model": "numpy", "fastmath": FASTMATH, "nogil": True}


def njit(function):
    """``numba.njit(**JIT)``, its compiled code kept on disk (``cache=True``, read as
    ``cache.py`` says)."""
    return cache.on_disk(numba.njit(**JIT)(function))


#: Adam's moments below this are set to 0. Moments of weights that rarely see a
#: gradient (MNIST's border pixels) decay towards subnormal numbers, which the
#: CPU handles ~100× slower; TensorFlow's CPU kernels flush subnormals too. The
#: bound sits far enough above the smallest normal float32 (1.2e-38) that no
#: step's arithmetic makes a subnormal; a moment this small moves w by < 1e-22.
FLUSH = 1e-30


# ---------------------------------------------------------------- loop kernels


@njit
def _activate(z, a, code, parameter):
    """a = f(z) for a (n, u) batch, f by its code (``table.ACTIVATIONS``) and ``parameter``
    (LeakyReLU's slope; unused by the others); a may be z itself."""
    n, u = z.shape
    for r in range(n):
        if code == SOFTMAX:
            top = z[r, 0]
            for j in range(1, u):
                top = max(top, z[r, j])
            total = 0.0
            for j in range(u):
                a[r, j] = np.exp(z[r, j] - top)
                total += a[r, j]
            for j in range(u):
                a[r, j] /= total
        else:
            for j in range(u):
                v = z[r, j]
                if code == RELU:
                    a[r, j] = max(v, 0)
                elif code == SIGMOID:
                    e = np.exp(-abs(v))
                    a[r, j] = 1 / (1 + e) if v >= 0 else e / (1 + e)
                elif code == TANH:
                    a[r, j] = np.tanh(v)
                elif code == LEAKY_RELU:
                    a[r, j] = v if v > 0 else v * a.dtype.type(parameter)
                elif code == LINEAR:
                    a[r, j] = v
                else:
                    raise ValueError("unknown activation code (see table.py)")


@njit
def _activate_backward(da, a, code, parameter, dz):
    """dz = f'(z) ⊙ da, from the output a (``_activate``'s code and parameter); dz may be
    da itself."""
    n, u = a.shape
    for r in range(n):
        if code == SOFTMAX:
            s = 0.0
            for j in range(u):
                s += da[r, j] * a[r, j]
            for j in range(u):
                dz[r, j] = a[r, j] * (da[r, j] - s)
        else:
            for j in range(u):
                if code == RELU:
                    dz[r, j] = da[r, j] if a[r, j] > 0 else 0
                elif code == SIGMOID:
                    dz[r, j] = da[r, j] * a[r, j] * (1 - a[r, j])
                elif code == TANH:
                    dz[r, j] = da[r, j] * (1 - a[r, j] * a[r, j])
                elif code == LEAKY_RELU:
                    dz[r, j] = da[r, j] if a[r, j] > 0 else da[r, j] * dz.dtype.type(parameter)
                elif code == LINEAR:
                    dz[r, j] = da[r, j]
                else:
                    raise ValueError("unknown activation code (see table.py)")


@njit
def _affine(x, rows, W, b, z):
    """z[r] = x[rows[r]] · W + b, as dot products of x's rows with W's columns."""
    k, u = W.shape
    Wt = np.ascontiguousarray(W.T)  # columns made contiguous, so each dot product vectorises
    for r in range(len(rows)):
        xr = x[rows[r]]
        for j in range(u):
            s = W.dtype.type(b[j] if len(b) else 0)
            Wj = Wt[j]
            for i in range(k):
                s += xr[i] * Wj[i]
            z[r, j] = s


#: A kernel with at least this many weights multiplies through BLAS (SciPy's, from
#: Numba): on both cores, and fast for wide layers, where the hand loops run on one
#: core; below it, a BLAS call costs more than it saves (and the sparse first layer
#: of a narrow model is faster by hand).
BLAS_MIN_WEIGHTS = 200_000


@njit
def uses_blas(W):
    """Whether products with kernel W go through BLAS (see ``BLAS_MIN_WEIGHTS``)."""
    return W.size >= BLAS_MIN_WEIGHTS


@njit
def _add_bias(z, b):
    if len(b):
        for r in range(z.shape[0]):
            for j in range(z.shape[1]):
                z[r, j] += b[j]


@njit
def _affine_blas(x, W, b, z):
    """z = x · W + b through BLAS; x and W contiguous."""
    np.dot(x, W, z)
    _add_bias(z, b)


@njit
def _weight_grads_blas(x, dz, dW, db):
    """dW = xᵀ · dz through BLAS, and db = Σ_r dz[r]."""
    np.dot(x.T, dz, dW)
    _bias_grads(dz, db)


@njit
def _input_grads_blas(dz, W, dx):
    """dx = dz · Wᵀ through BLAS."""
    np.dot(dz, W.T, dx)


@njit
def _sparse_rows(x):
    """x (n, k) as compressed sparse rows: row r's non-zeros are values[indptr[r]:indptr[r+1]],
    in columns indices[indptr[r]:indptr[r+1]]."""
    n, k = x.shape
    indptr = np.zeros(n + 1, np.int64)
    for r in range(n):
        count = 0
        for i in range(k):
            count += x[r, i] != 0
        indptr[r + 1] = indptr[r] + count
    indices = np.empty(indptr[n] + 1, np.int32)  # +1: the branch-free fill writes one past
    values = np.empty(indptr[n] + 1, x.dtype)
    for r in range(n):
        _compact(x[r], indices[indptr[r] :], values[indptr[r] :])
    return indptr, indices, values


@njit
def _sparse_row_affine(indices, values, start, end, W, b, zr):
    """zr = x · W + b for one input x given by its non-zeros values[start:end] at indices[…]."""
    u = W.shape[1]
    for j in range(u):
        zr[j] = b[j] if len(b) else 0
    p = start
    # Four rows of W per pass over zr: a quarter of the loads and stores of zr.
    while p + 4 <= end:
        x0, x1, x2, x3 = values[p], values[p + 1], values[p + 2], values[p + 3]
        W0, W1, W2, W3 = W[indices[p]], W[indices[p + 1]], W[indices[p + 2]], W[indices[p + 3]]
        for j in range(u):
            zr[j] += x0 * W0[j] + x1 * W1[j] + x2 * W2[j] + x3 * W3[j]
        p += 4
    for q in range(p, end):
        xi = values[q]
        Wi = W[indices[q]]
        for j in range(u):
            zr[j] += xi * Wi[j]


@njit
def _sparse_affine(indptr, indices, values, rows, W, b, z):
    """z[r] = x[rows[r]] · W + b for x in compressed sparse rows: only non-zeros are visited."""
    for r in range(len(rows)):
        _sparse_row_affine(indices, values, indptr[rows[r]], indptr[rows[r] + 1], W, b, z[r])


@njit
def _compact(xr, indices, values):
    """Write the non-zeros of the row xr to indices/values (length ≥ len(xr) + 1); return how many.

    Branch-free: every entry is written, and the write position only advances
    past non-zeros, so a mix of zeros and non-zeros costs no mispredictions.
    """
    count = 0
    for i in range(len(xr)):
        indices[count] = i
        values[count] = xr[i]
        count += xr[i] != 0
    return count


@njit
def _first_at_least(indices, start, end, k):
    """The first position p in start … end − 1 with indices[p] ≥ k (end if none), for
    ascending indices: a binary search (np.searchsorted costs seconds more to compile)."""
    while start < end:
        middle = (start + end) // 2
        if indices[middle] < k:
            start = middle + 1
        else:
            end = middle
    return start


@njit
def _sparse_weight_grads(indptr, indices, values, rows, dz, dW, db, k0, k1):
    """Rows k0 … k1 − 1 of dW = x[rows]ᵀ · dz, and db = Σ_r dz[r], for x in compressed
    sparse rows (each row's indices ascending). A thread computes its own range of
    rows; each entry is summed in the same order whatever the range."""
    u = dW.shape[1]
    dW[k0:k1] = 0
    part = k0 > 0 or k1 < dW.shape[0]
    for r in range(len(rows)):
        dzr = dz[r]
        start, end = indptr[rows[r]], indptr[rows[r] + 1]
        if part:
            start = _first_at_least(indices, start, end, k0)
            end = _first_at_least(indices, start, end, k1)
        for p in range(start, end):
            xi = values[p]
            dWi = dW[indices[p]]
            for j in range(u):
                dWi[j] += xi * dzr[j]
    _bias_grads(dz, db)


@njit
def _touch_rows(indptr, indices, values, rows):
    """Read one entry per cache line of the given sparse rows, so that the next
    step finds them in cache: the loads are independent, so the CPU overlaps
    their trips to memory, which the step itself would make one row at a time."""
    total = 0.0
    for r in range(len(rows)):
        for p in range(indptr[rows[r]], indptr[rows[r] + 1], 16):
            total += values[p] + indices[p]
    return total


@njit
def _bias_grads(dz, db):
    """db = Σ_r dz[r] (nothing for a layer without bias)."""
    if len(db):
        db[:] = 0
        for r in range(dz.shape[0]):
            for j in range(dz.shape[1]):
                db[j] += dz[r, j]


@njit
def _weight_grads(x, rows, dz, dW, db):
    """dW = x[rows]ᵀ · dz and db = Σ_r dz[r], as dot products over the batch."""
    k, u = dW.shape
    n = len(rows)
    xt = np.empty((k, n), dtype=dW.dtype)  # x[rows]ᵀ and dzᵀ: batch axis contiguous
    for r in range(n):
        for i in range(k):
            xt[i, r] = x[rows[r], i]
    dzt = np.ascontiguousarray(dz.T)
    for i in range(k):
        for j in range(u):
            s = dW.dtype.type(0)
            for r in range(n):
                s += xt[i, r] * dzt[j, r]
            dW[i, j] = s
    _bias_grads(dz, db)


@njit
def _input_grads(dz, W, dx):
    """dx = dz · Wᵀ, as dx[r] = Σ_j dz[r, j] · (column j of W)."""
    k, u = W.shape
    Wt = np.ascontiguousarray(W.T)
    for r in range(dz.shape[0]):
        dxr = dx[r]
        dxr[:] = 0
        for j in range(u):
            d = dz[r, j]
            Wj = Wt[j]
            for i in range(k):
                dxr[i] += d * Wj[i]


@njit
def _softmax_cross_entropy(z, labels, rows, batch, dz):
    """Per-sample losses of softmax(z) against labels[rows]; dz = (softmax(z) − onehot) / batch.

    (z may be part of a batch of ``batch`` rows: the gradient is of the batch's mean.)
    """
    n, c = z.shape
    f = dz.dtype.type  # all arithmetic in the arrays' precision, as the reference does
    losses = np.empty(n, dtype=np.float64)
    for r in range(n):
        top = z[r, 0]
        for j in range(1, c):
            top = max(top, z[r, j])
        total = f(0)
        for j in range(c):
            dz[r, j] = np.exp(z[r, j] - top)
            total += dz[r, j]
        y = labels[rows[r]]
        losses[r] = np.log(total) - (z[r, y] - top)
        for j in range(c):
            dz[r, j] = (dz[r, j] / total - (f(1) if j == y else f(0))) / f(batch)
    return losses


@njit
def _probability_cross_entropy(p, labels, rows, batch, epsilon, dp):
    """Per-sample losses of clipped outputs read as probabilities; dp its gradient."""
    n, c = p.shape
    f = dp.dtype.type
    lo, hi = f(epsilon), f(1 - epsilon)
    losses = np.empty(n, dtype=np.float64)
    for r in range(n):
        total = f(0)
        for j in range(c):
            total += min(max(p[r, j], lo), hi)
        y = labels[rows[r]]
        py = min(max(p[r, y], lo), hi)
        losses[r] = np.log(total) - np.log(py)
        for j in range(c):
            inside = lo <= p[r, j] <= hi
            grad = (f(1) / total - (f(1) / py if j == y else f(0))) / f(batch)
            dp[r, j] = grad if inside else f(0)
    return losses


@njit
def _categorical_softmax_cross_entropy(z, targets, rows, batch, dz):
    """Per-sample losses of softmax(z) against targets[rows]; dz = (softmax(z) · Σt − t) / batch."""
    n, c = z.shape
    f = dz.dtype.type
    losses = np.empty(n, dtype=np.float64)
    for r in range(n):
        t = targets[rows[r]]
        top = z[r, 0]
        for j in range(1, c):
            top = max(top, z[r, j])
        total, mass, dot = f(0), f(0), f(0)
        for j in range(c):
            dz[r, j] = np.exp(z[r, j] - top)
            total += dz[r, j]
            mass += t[j]
            dot += t[j] * (z[r, j] - top)
        losses[r] = mass * np.log(total) - dot
        for j in range(c):
            dz[r, j] = (dz[r, j] / total * mass - t[j]) / f(batch)
    return losses


@njit
def _categorical_probability_cross_entropy(p, targets, rows, batch, epsilon, dp):
    """Per-sample losses of outputs normalised, clipped, read as probabilities; dp: gradient."""
    n, c = p.shape
    f = dp.dtype.type
    lo, hi = f(epsilon), f(1 - epsilon)
    losses = np.empty(n, dtype=np.float64)
    for r in range(n):
        t = targets[rows[r]]
        total = f(0)
        for j in range(c):
            total += p[r, j]
        loss, gq = f(0), f(0)
        for j in range(c):
            q = p[r, j] / total
            clipped = min(max(q, lo), hi)
            loss -= t[j] * np.log(clipped)
            dp[r, j] = -t[j] / clipped if lo <= q <= hi else f(0)  # dL/dq_j, for now
            gq += dp[r, j] * q
        losses[r] = loss
        for j in range(c):
            dp[r, j] = (dp[r, j] - gq) / (total * f(batch))
    return losses


@njit
def _correct(a, labels, rows):
    """How many rows of a have their largest entry at the label."""
    count = 0
    for r in range(a.shape[0]):
        best = 0
        for j in range(1, a.shape[1]):
            if a[r, j] > a[r, best]:
                best = j
        count += best == labels[rows[r]]
    return count


# ---------------------------------------------------------------- the twins


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
def _dense_forward(x, W, b, code):
    z = np.empty((x.shape[0], W.shape[1]), dtype=W.dtype)
    if uses_blas(W):
        # (BLAS multiplies arrays of one dtype: W's, which z has too.)
        _affine_blas(np.ascontiguousarray(x).astype(W.dtype), np.ascontiguousarray(W), b, z)
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


@njit
def _all_finite(a):
    zero, check = a.dtype.type(0), a.dtype.type(0)
    for i in range(a.size):
        check += a[i] * zero  # NaN from here on if any entry is NaN or ±inf
    return check == zero


@njit
def _all_finite_each(arrays):
    for a in arrays:
        if not _all_finite(a):
            return False
    return True


def all_finite(*arrays):
    """Twin of ``reference.all_finite``: one pass over each array, no temporary array, and
    one compiled call for arrays of one dtype (a step-by-step fit checks a dozen per step)."""
    flat = tuple(np.ascontiguousarray(a).reshape(-1) for a in arrays)
    if flat and all(f.dtype == flat[0].dtype for f in flat):
        return bool(_all_finite_each(flat))
    return all(bool(_all_finite(f)) for f in flat)


@njit
def _finite(value):
    """Neither NaN nor ±inf. (np.isfinite can be folded to True under "reassoc";
    an ordered comparison with inf cannot.)"""
    return abs(value) < np.inf


@njit
def _adam(w, g, m, v, lr_t, beta_1, beta_2, epsilon):
    """One Adam step over flat arrays, in place, in the dtype of w.

    As Keras: 1 − β is computed in double precision, then rounded to w's dtype.
    Returns False if any w or v is not finite (a flush must not hide a NaN:
    ``x < flush`` is False for NaN, so NaN moments are kept, and caught).
    """
    f = w.dtype.type
    lr_t, c1, c2, epsilon = f(lr_t), f(1.0 - beta_1), f(1.0 - beta_2), f(epsilon)
    flush, zero = f(FLUSH), f(0)
    check = zero
    for i in range(w.size):
        mi = m[i] + (g[i] - m[i]) * c1
        vi = v[i] + (g[i] * g[i] - v[i]) * c2
        m[i] = zero if abs(mi) < flush else mi
        v[i] = zero if vi < flush else vi
        w[i] -= lr_t * m[i] / (np.sqrt(v[i]) + epsilon)
        check += w[i] * zero + v[i] * zero  # stays 0 unless some w or v is NaN or ±inf
    return check == zero


@njit
def _adamw(w, g, m, v, lr_t, beta_1, beta_2, epsilon, decay):
    """Decoupled weight decay w −= w · decay, then ``_adam``."""
    d = w.dtype.type(decay)
    for i in range(w.size):
        w[i] -= w[i] * d
    return _adam(w, g, m, v, lr_t, beta_1, beta_2, epsilon)


@njit
def _sgd(w, g, velocity, lr, momentum, nesterov):
    """One SGD step over flat arrays, in place, in the dtype of w; False if any w is not finite."""
    f = w.dtype.type
    lr, momentum, zero = f(lr), f(momentum), f(0)
    check = zero
    for i in range(w.size):
        # lr · g once, used twice: LLVM then fuses only momentum · velocity into a
        # multiply-add, always the same one (with lr · g written twice, a freshly compiled
        # kernel and one read from the cache were seen to fuse differently).
        step = lr * g[i]
        velocity[i] = momentum * velocity[i] - step
        if nesterov:
            w[i] += momentum * velocity[i] - step
        else:
            w[i] += velocity[i]
        check += w[i] * zero  # as in _adam
    return check == zero


@njit
def _rmsprop(w, g, velocity, momentum_slot, average_gradient, lr, rho, momentum, epsilon,
             centered):
    """One RMSprop step over flat arrays, in place; False if any w or velocity is not finite."""
    f = w.dtype.type
    lr, r, c, mu, epsilon, zero = f(lr), f(rho), f(1.0 - rho), f(momentum), f(epsilon), f(0)
    check = zero
    for i in range(w.size):
        velocity[i] = r * velocity[i] + c * (g[i] * g[i])
        denominator = velocity[i] + epsilon
        if centered:
            average_gradient[i] = r * average_gradient[i] + c * g[i]
            denominator = velocity[i] - average_gradient[i] * average_gradient[i] + epsilon
        increment = lr * g[i] / np.sqrt(denominator)
        if momentum > 0:
            momentum_slot[i] = mu * momentum_slot[i] + increment
            w[i] -= momentum_slot[i]
        else:
            w[i] -= increment
        check += w[i] * zero + velocity[i] * zero
    return check == zero


@njit
def _adagrad(w, g, accumulator, lr, epsilon):
    """One Adagrad step over flat arrays, in place; False if any w or accumulator is not
    finite."""
    f = w.dtype.type
    lr, epsilon, zero = f(lr), f(epsilon), f(0)
    check = zero
    for i in range(w.size):
        accumulator[i] += g[i] * g[i]
        w[i] -= lr * g[i] / np.sqrt(accumulator[i] + epsilon)
        check += w[i] * zero + accumulator[i] * zero
    return check == zero


@njit
def _update(code, w, g, S, p, lo, hi, args):
    """The update ``table.UPDATES[code]`` of the flat parameter w from its gradient g, with
    slot k being ``S[k][p][lo:hi]`` and the step's scalar arguments ``args``. Returns
    whether every value it wrote is finite."""
    if code == SGD_UPDATE:
        return _sgd(w, g, S[0][p][lo:hi], args[0], args[1], args[2])
    if code == ADAM_UPDATE:
        return _adam(w, g, S[0][p][lo:hi], S[1][p][lo:hi], args[0], args[1], args[2], args[3])
    if code == ADAMW_UPDATE:
        return _adamw(w, g, S[0][p][lo:hi], S[1][p][lo:hi], args[0], args[1], args[2],
                      args[3], args[4])
    if code == RMSPROP_UPDATE:
        return _rmsprop(w, g, S[0][p][lo:hi], S[1][p][lo:hi], S[2][p][lo:hi], args[0],
                        args[1], args[2], args[3], args[4])
    if code == ADAGRAD_UPDATE:
        return _adagrad(w, g, S[0][p][lo:hi], args[0], args[1])
    raise ValueError("unknown update code (see table.py)")


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

    Moments below ``FLUSH`` are set to 0 (see ``FLUSH``); the reference keeps them.
    """
    _check_sizes(w, g, m, v)
    g = np.ascontiguousarray(g).reshape(-1)
    _adam(w.reshape(-1), g, m.reshape(-1), v.reshape(-1), lr_t, beta_1, beta_2, epsilon)


@njit
def adamw_update(w, g, m, v, lr_t, beta_1, beta_2, epsilon, decay):
    """Twin of ``reference.adamw_update``; w, m and v must be contiguous."""
    _check_sizes(w, g, m, v)
    g = np.ascontiguousarray(g).reshape(-1)
    _adamw(w.reshape(-1), g, m.reshape(-1), v.reshape(-1), lr_t, beta_1, beta_2, epsilon, decay)


@njit
def sgd_update(w, g, velocity, lr, momentum, nesterov):
    """Twin of ``reference.sgd_update``: one fused pass; w and velocity must be contiguous."""
    _check_sizes(w, g, velocity)
    _sgd(w.reshape(-1), np.ascontiguousarray(g).reshape(-1), velocity.reshape(-1), lr, momentum,
         nesterov)


@njit
def rmsprop_update(w, g, velocity, momentum_slot, average_gradient, lr, rho, momentum, epsilon,
                   centered):
    """Twin of ``reference.rmsprop_update``; w and the slots must be contiguous."""
    _check_sizes(w, g, velocity, momentum_slot, average_gradient)
    _rmsprop(w.reshape(-1), np.ascontiguousarray(g).reshape(-1), velocity.reshape(-1),
             momentum_slot.reshape(-1), average_gradient.reshape(-1), lr, rho, momentum, epsilon,
             centered)


@njit
def adagrad_update(w, g, accumulator, lr, epsilon):
    """Twin of ``reference.adagrad_update``; w and accumulator must be contiguous."""
    _check_sizes(w, g, accumulator)
    _adagrad(w.reshape(-1), np.ascontiguousarray(g).reshape(-1), accumulator.reshape(-1), lr,
             epsilon)


# ---------------------------------------------------------------- dropout

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit
def _mix(z):
    """SplitMix64's finaliser, as ``reference._mix``."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit
def _uniform_at(key, i):
    """The i-th number of the stream with key ``key`` (see ``reference.uniform``)."""
    z = _mix(key + np.uint64(i + 1) * _GOLDEN)
    return np.float32(z >> np.uint64(40)) * np.float32(2.0**-24)


@njit
def _key(seed, step):
    return _mix(np.uint64(seed) ^ _mix(np.uint64(step)))


@njit
def uniform(seed, step, size):
    """Twin of ``reference.uniform``."""
    key = _key(seed, step)
    out = np.empty(size, np.float32)
    for i in range(size):
        out[i] = _uniform_at(key, i)
    return out


@njit
def _dropout(x, rate, seed, step, row0, y, s):
    """y = x · s, s = 1 / (1 − rate) or 0, for rows row0 … of a (n, u) batch
    (``reference.dropout_forward``; a thread passes its part of the batch)."""
    n, u = x.shape
    key = _key(seed, step)
    f = y.dtype.type
    scale, zero = f(1.0 / (1.0 - rate)), f(0)
    for r in range(n):
        for j in range(u):
            keep = _uniform_at(key, (row0 + r) * u + j) >= rate
            s[r, j] = scale if keep else zero
            y[r, j] = x[r, j] * s[r, j]


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
