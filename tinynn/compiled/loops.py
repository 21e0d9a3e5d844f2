"""The loop kernels the compiled room is built from: activations, products, losses, dropout.

Each works in place on arrays it is given (a thread passes its part of a batch),
allocates nothing in its inner loops, and is called both by the twins in
``kernels.py`` and by the fused step in ``fused.py``. The math of each is its
twin's in ``tinynn/reference.py``.
"""

from __future__ import annotations

import numpy as np

from tinynn.compiled.jit import inline, njit
from tinynn.compiled.table import LEAKY_RELU, LINEAR, RELU, SIGMOID, SOFTMAX, TANH


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


@inline
def uses_blas(W):
    """Whether products with kernel W go through BLAS (see ``BLAS_MIN_WEIGHTS``)."""
    return W.size >= BLAS_MIN_WEIGHTS


@inline
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


@inline
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


@inline
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


@inline
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


@inline
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


@inline
def _finite(value):
    """Neither NaN nor ±inf. (np.isfinite can be folded to True under "reassoc";
    an ordered comparison with inf cannot.)"""
    return abs(value) < np.inf


# ---------------------------------------------------------------- dropout

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@inline
def _mix(z):
    """SplitMix64's finaliser, as ``reference._mix``."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@inline
def _uniform_at(key, i):
    """The i-th number of the stream with key ``key`` (see ``reference.uniform``)."""
    z = _mix(key + np.uint64(i + 1) * _GOLDEN)
    return np.float32(z >> np.uint64(40)) * np.float32(2.0**-24)


@inline
def _key(seed, step):
    return _mix(np.uint64(seed) ^ _mix(np.uint64(step)))


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
