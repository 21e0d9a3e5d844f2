"""Compiled twins of ``tinynn/convolution.py``: convolution and pooling, same names and results.

How a convolution is computed here depends on its window's size K = kh · kw · c:

* **Small windows** (K ≤ ``DIRECT_MAX``, e.g. a first layer over grayscale images, K = 9):
  loops over the output pixels, each adding ``x · W[a, b, c, :]`` for each tap whose
  input is not zero (MNIST's pixels are ~80 % zeros; adding 0 · w is exact, so only a
  non-finite weight meeting a zero input differs: it gives 0, as the Dense twins do).
* **Larger windows**: three matrix products per step through NumPy's BLAS
  (z = cols · W, dW = colsᵀ · dz, dcols = dz · Wᵀ), where ``cols`` holds every window
  as a row (``_im2col``, shape (n · oh · ow, K)). The backward leaves out the windows
  whose gradient is all 0 (``_live_rows``: after a pooling, ~30 % of them here): their
  share of dW and dx is 0, unless an input is not finite (0 · inf), as above.

The work is split between threads (``engine.threads()``, one per core), by samples: the
loops are compiled and release the GIL, and so does BLAS. Sums over samples (the weight
gradients) are ``PARTS`` partial sums over fixed slices of the batch, added in order
(``_summed_in_parts``); each product runs on one of BLAS's threads (OpenBLAS's
``openblas_set_num_threads_local``), since OpenBLAS rounds differently with more, over a
fixed number of samples (``CHUNK``), since it rounds a row differently among other rows.
So the weights do not depend on any thread count.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from pathlib import Path

import numpy as np

from tinynn.compiled import engine
from tinynn.compiled.jit import inline, njit
from tinynn.compiled.loops import _activate, _activate_backward
from tinynn.compiled.table import CODES
from tinynn.convolution import geometry

#: Windows of at most this many weights per filter are computed by loops, larger ones by BLAS.
DIRECT_MAX = 32
#: Partial sums of a weight gradient over the batch (fixed: see the module docstring).
PARTS = 4
#: The backward skips windows whose gradient is 0 if at most this share of them has one.
LIVE_MAX = 0.9
#: Samples per matrix product (fixed, for the same reason; ~1,000 rows of a 28 × 28 convnet's
#: second layer).
CHUNK = 8


def _geometries(x_shape, window, strides, dilation, padding):
    """(oh, top, _), (ow, left, _) of ``tinynn.convolution.geometry`` along h and w."""
    return [geometry(x_shape[1 + a], window[a], strides[a], dilation[a], padding)
            for a in (0, 1)]


@functools.cache
def _blas_threads_setter():
    """NumPy's OpenBLAS ``openblas_set_num_threads_local`` (OpenBLAS ≥ 0.3.27), or None."""
    for path in sorted((Path(np.__file__).parent.parent / "numpy.libs").glob("*openblas*")):
        try:
            setter = ctypes.CDLL(str(path)).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        return setter
    return None


#: Who is inside ``_one_blas_thread`` now, and BLAS's thread count before the first came.
_blas = {"lock": threading.Lock(), "inside": 0, "before": None}


@contextlib.contextmanager
def _one_blas_thread():
    """Within the block, BLAS products run on one thread each; after it, on as many as
    before. Despite its name, NumPy's (pthreads) OpenBLAS keeps that count process-wide,
    so the calling thread sets it around all its threads' work, and with several callers
    at once (two models in two threads) the first sets it and the last restores it."""
    setter = _blas_threads_setter()
    if setter is None:
        yield
        return
    with _blas["lock"]:
        if _blas["inside"] == 0:
            _blas["before"] = setter(1)
        _blas["inside"] += 1
    try:
        yield
    finally:
        with _blas["lock"]:
            _blas["inside"] -= 1
            if _blas["inside"] == 0:
                setter(_blas["before"])


def _shared(run, count: int) -> None:
    """``run(t)`` for t in [0, count), on tinynn's threads (the calling one alone if count
    is 1), each BLAS product on one thread."""
    with _one_blas_thread():
        if count == 1:
            run(0)
        else:
            list(engine._pool().map(run, range(count)))


def _summed_in_parts(kernel, n: int, shape, dtype, *args) -> np.ndarray:
    """Σ over ``PARTS`` fixed slices of the samples of ``kernel(*args, part, s0, s1)``
    (each part a zeroed array of ``shape``), added in order; the threads share the parts."""
    engine._announce_compiling(kernel)
    parts = np.zeros((PARTS, *shape), dtype)
    bounds = [n * p // PARTS for p in range(PARTS + 1)]
    count = min(engine.threads(), PARTS)

    def run(t: int) -> None:
        for p in range(PARTS * t // count, PARTS * (t + 1) // count):
            kernel(*args, parts[p], bounds[p], bounds[p + 1])

    _shared(run, count)
    total = parts[0]
    for p in range(1, PARTS):
        total += parts[p]
    return total


def _in_threads(kernel, n: int, *args, unit: int = 1) -> None:
    """``kernel(*args, s0, s1)`` over samples [0, n), split between the threads at
    multiples of ``unit`` samples."""
    engine._announce_compiling(kernel)
    units = -(-n // unit)
    count = min(engine.threads(), units)
    cuts = [min(n, unit * (units * t // count)) for t in range(count + 1)]
    _shared(lambda t: kernel(*args, cuts[t], cuts[t + 1]), count)


# ---------------------------------------------------------------- rows of windows


@njit
def _im2col(x, kh, kw, sh, sw, dh, dw, top, left, oh, ow, rows, starts, cols, s0, s1):
    """cols[k, (a · kw + b) · c + ch] = x_p[s, i·sh + a·dh, j·sw + b·dw, ch] (0 in the
    padding) for the windows listed in ``rows`` (row = (s · oh + i) · ow + j) of samples
    [s0, s1): those at k in [starts[s0], starts[s1])."""
    _, h, w, c = x.shape
    for k in range(starts[s0], starts[s1]):
        s, ij = divmod(rows[k], oh * ow)
        i, j = divmod(ij, ow)
        for a in range(kh):
            r = i * sh + a * dh - top
            for b in range(kw):
                q = j * sw + b * dw - left
                base = (a * kw + b) * c
                inside = 0 <= r < h and 0 <= q < w
                for ch in range(c):
                    cols[k, base + ch] = x[s, r, q, ch] if inside else 0


@njit
def _col2im(dcols, kh, kw, sh, sw, dh, dw, top, left, oh, ow, rows, starts, dx, s0, s1):
    """The backward of ``_im2col``: add each listed row's entries back at the pixels they
    came from (dx starts at zero; the padding's share is dropped)."""
    _, h, w, c = dx.shape
    for k in range(starts[s0], starts[s1]):
        s, ij = divmod(rows[k], oh * ow)
        i, j = divmod(ij, ow)
        for a in range(kh):
            r = i * sh + a * dh - top
            if 0 <= r < h:
                for b in range(kw):
                    q = j * sw + b * dw - left
                    if 0 <= q < w:
                        base = (a * kw + b) * c
                        for ch in range(c):
                            dx[s, r, q, ch] += dcols[k, base + ch]


@njit
def _mark_live(dz, live, s0, s1):
    """live[s, p] = whether row p of sample s has a gradient other than 0 (NaN counts)."""
    for s in range(s0, s1):
        for p in range(dz.shape[1]):
            row = dz[s, p]
            any_ = False
            for k in range(row.shape[0]):
                any_ = any_ or row[k] != 0
            live[s, p] = any_


# ---------------------------------------------------------------- small windows, by loops


@njit
def _conv_direct(x, W, b, code, sh, sw, dh, dw, top, left, z, a, s0, s1):
    """z[s, i, j, :] = b + Σ over the window's non-zero inputs v of v · W[a, b, ch, :], and
    a = f(z) (f by its ``code``). By output rows: each tap's weights serve the whole row
    (taps outside the loop over j: 27 % faster here than taps inside), and the row is
    activated while in cache."""
    _, h, w, c = x.shape
    kh, kw, _, f = W.shape
    _, oh, ow, _ = z.shape
    for s in range(s0, s1):
        for i in range(oh):
            for j in range(ow):
                for k in range(f):
                    z[s, i, j, k] = b[k]
            for aa in range(kh):
                r = i * sh + aa * dh - top
                if 0 <= r < h:
                    for bb in range(kw):
                        for ch in range(c):
                            for j in range(ow):
                                q = j * sw + bb * dw - left
                                if 0 <= q < w and x[s, r, q, ch] != 0:
                                    v = x[s, r, q, ch]
                                    for k in range(f):
                                        z[s, i, j, k] += v * W[aa, bb, ch, k]
            _activate(z[s, i], a[s, i], code, 0.0)


@njit
def _conv_direct_backward(x, a, da, code, kh, kw, sh, sw, dh, dw, top, left, dz, grads, s0, s1):
    """For samples [s0, s1): dz = f'(z) ⊙ da row by row of the output, and, added to
    ``grads`` (it starts at zero), dW tap by tap in its first kh · kw · c rows (row
    (a · kw + b) · c + ch) and db in its last; by output rows, as ``_conv_direct``."""
    _, h, w, c = x.shape
    _, oh, ow, f = dz.shape
    last = kh * kw * c
    for s in range(s0, s1):
        for i in range(oh):
            _activate_backward(da[s, i], a[s, i], code, 0.0, dz[s, i])
            for j in range(ow):
                for k in range(f):
                    grads[last, k] += dz[s, i, j, k]
            for aa in range(kh):
                r = i * sh + aa * dh - top
                if 0 <= r < h:
                    for bb in range(kw):
                        for ch in range(c):
                            row = (aa * kw + bb) * c + ch
                            for j in range(ow):
                                q = j * sw + bb * dw - left
                                if 0 <= q < w and x[s, r, q, ch] != 0:
                                    v = x[s, r, q, ch]
                                    for k in range(f):
                                        grads[row, k] += v * dz[s, i, j, k]


# ---------------------------------------------------------------- the twins


@njit
def _bias_activate_rows(z, b, a, code, s0, s1):
    """z += b, then a = f(z) (``loops._activate``), sample by sample of [s0, s1) while its
    rows are in cache (z, a: (n, rows per sample, f))."""
    for s in range(s0, s1):
        rows = z[s]
        for r in range(rows.shape[0]):
            row = rows[r]
            for k in range(row.shape[0]):
                row[k] += b[k]
        _activate(rows, a[s], code, 0.0)


@njit
def _activate_backward_rows(da, a, code, dz, s0, s1):
    f = a.shape[2]
    _activate_backward(da[s0:s1].reshape(-1, f), a[s0:s1].reshape(-1, f), code, 0.0,
                       dz[s0:s1].reshape(-1, f))


def _check_conv(x, W, b, *per_output):
    if x.ndim != 4 or W.ndim != 4 or x.shape[3] != W.shape[2] or (
            b is not None and b.shape != (W.shape[3],)):
        raise ValueError(f"conv2d kernel shapes disagree: x {x.shape}, W {W.shape}, "
                         f"b {None if b is None else b.shape}")
    if any(a.shape[0] != len(x) or a.shape[3] != W.shape[3] for a in per_output):
        raise ValueError(f"conv2d outputs {[a.shape for a in per_output]} do not fit x "
                         f"{x.shape} and W {W.shape}")


class _Conv:
    """One call's shapes: the geometry, and whether loops or BLAS do the products."""

    def __init__(self, x, W, strides, padding, dilation_rate):
        self.n, (self.kh, self.kw, self.c, self.f) = len(x), W.shape
        (self.oh, self.top, _), (self.ow, self.left, _) = _geometries(
            x.shape, W.shape, strides, dilation_rate, padding)
        self.x = np.ascontiguousarray(x, W.dtype)
        self.W = np.ascontiguousarray(W)
        self.window = (self.kh, self.kw, *strides, *dilation_rate, self.top, self.left)
        self.direct = self.kh * self.kw * self.c <= DIRECT_MAX
        self.out = (self.n, self.oh, self.ow, self.f)

    def all_rows(self):
        """Every window, listed as ``_im2col`` lists them: (rows, starts)."""
        per_sample = self.oh * self.ow
        return np.arange(self.n * per_sample), np.arange(self.n + 1) * per_sample

    def cols(self, rows, starts):
        """The listed windows as rows: (len(rows), kh · kw · c)."""
        cols = np.empty((len(rows), self.kh * self.kw * self.c), self.W.dtype)
        _in_threads(_im2col, self.n, self.x, *self.window, self.oh, self.ow, rows, starts, cols)
        return cols


def _product(a, b, starts, out, s0, s1):
    """out = a · b for the rows of samples [s0, s1) (those in [starts[s0], starts[s1])),
    on one BLAS thread (see above), as one 2-D product per ``CHUNK`` samples counted from
    sample 0: OpenBLAS's result for a row depends on the rows multiplied with it, so the
    products must not depend on how the samples were split between threads. (One product
    per sample, as a batched matmul makes, ran at ~60 % of this speed here.)"""
    for c0 in range(s0, s1, CHUNK):  # s0 is a multiple of CHUNK: see _products
        lo, hi = starts[c0], starts[min(c0 + CHUNK, s1)]
        np.matmul(a[lo:hi], b, out=out[lo:hi])


def _products(a, b, starts, out) -> None:
    """``_product`` over all samples, the threads' shares whole chunks."""
    _in_threads(_product, len(starts) - 1, a, b, starts, out, unit=CHUNK)


def _weight_product(cols, dz, starts, grads, s0, s1):
    """Over the rows of samples [s0, s1) (cols: (rows, K), dz: (rows, f)):
    grads[:K] += colsᵀ · dz (dW) and grads[K] += the sum of dz's rows (db)."""
    lo, hi = starts[s0], starts[s1]
    grads[:-1] += cols[lo:hi].T @ dz[lo:hi]
    grads[-1] += dz[lo:hi].sum(axis=0)


def _live_rows(g, dz):
    """(rows, starts) of the windows whose gradient is not all 0, if at most ``LIVE_MAX``
    of them, else of all. A pooling after a convolution sends each window's gradient to
    one pixel: in Keras's convnet the second convolution's 11th row and column (17 % of
    its windows) have none, and their share of the two products is skipped."""
    live = np.empty(dz.shape[:2], np.bool_)
    _in_threads(_mark_live, g.n, dz, live)
    rows = np.flatnonzero(live)
    if len(rows) > LIVE_MAX * live.size:
        return g.all_rows()
    return rows, np.searchsorted(rows, np.arange(g.n + 1) * live.shape[1])


def conv2d_forward(x, W, b, strides, padding, dilation_rate, activation):
    """Twin of ``reference.conv2d_forward``."""
    _check_conv(x, W, b)
    g = _Conv(x, W, strides, padding, dilation_rate)
    bias = np.zeros(g.f, W.dtype) if b is None else np.ascontiguousarray(b, W.dtype)
    z, a = np.empty(g.out, W.dtype), np.empty(g.out, W.dtype)
    if g.direct:
        _in_threads(_conv_direct, g.n, g.x, g.W, bias, CODES[activation], *g.window[2:], z, a)
        return z, a
    rows, starts = g.all_rows()
    _products(g.cols(rows, starts), g.W.reshape(-1, g.f), starts, z.reshape(-1, g.f))
    _in_threads(_bias_activate_rows, g.n, z.reshape(g.n, -1, g.f), bias,
                a.reshape(g.n, -1, g.f), CODES[activation])
    return z, a


def conv2d_backward(x, W, a, da, strides, padding, dilation_rate, activation, need_dx=True):
    """Twin of ``reference.conv2d_backward``: returns (dx or None, dW, db)."""
    _check_conv(x, W, None, a, da)
    g = _Conv(x, W, strides, padding, dilation_rate)
    da = np.ascontiguousarray(da, W.dtype).reshape(g.out)
    a = np.ascontiguousarray(a, W.dtype).reshape(g.out)
    dz = np.empty(g.out, W.dtype)
    K = g.kh * g.kw * g.c
    if g.direct:
        grads = _summed_in_parts(_conv_direct_backward, g.n, (K + 1, g.f), W.dtype, g.x, a, da,
                                 CODES[activation], *g.window, dz)
    else:
        _in_threads(_activate_backward_rows, g.n, da.reshape(g.n, -1, g.f),
                    a.reshape(g.n, -1, g.f), CODES[activation], dz.reshape(g.n, -1, g.f))
        rows, starts = _live_rows(g, dz.reshape(g.n, -1, g.f))
        dz = dz.reshape(-1, g.f)
        dz = dz if len(rows) == len(dz) else dz[rows]
        grads = _summed_in_parts(_weight_product, g.n, (K + 1, g.f), W.dtype,
                                 g.cols(rows, starts), dz, starts)
    dW, db = grads[:K].reshape(W.shape), grads[K]
    if not need_dx:
        return None, dW, db
    if g.direct:
        rows, starts = g.all_rows()
        dz = dz.reshape(-1, g.f)
    dcols = np.empty((len(rows), K), W.dtype)
    _products(dz, g.W.reshape(-1, g.f).T, starts, dcols)
    dx = np.zeros(x.shape, W.dtype)
    _in_threads(_col2im, g.n, dcols, *g.window, g.oh, g.ow, rows, starts, dx)
    return dx, dW, db


# ---------------------------------------------------------------- pooling


@inline
def _not_nan(v):
    """False for NaN only (an ordered comparison survives fastmath's "reassoc")."""
    return v <= np.inf


@inline
def _window(i, j, ph, pw, sh, sw, top, left, h, w):
    """The in-image rows [r0, r1) and columns [q0, q1) of the window at (i, j)."""
    r0, q0 = i * sh - top, j * sw - left
    return max(r0, 0), min(r0 + ph, h), max(q0, 0), min(q0 + pw, w)


@inline
def _takes(v, m):
    """Whether v replaces m as a running max: greater, or the first NaN (a NaN max stays)."""
    return (v > m or not _not_nan(v)) and _not_nan(m)


# The pooling loops index 1-D rows (x[s, r, q], one pixel's channels): with them LLVM
# vectorises the loops over channels (3.4× faster here than indexing x[s, r, q, ch]).


@njit
def _max_pool(x, ph, pw, sh, sw, top, left, y, s0, s1):
    """y = each window's max (NaN if the window holds one, as NumPy's max), channels
    innermost: they are adjacent in memory, so the comparisons run in vectors."""
    _, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    for s in range(s0, s1):
        for i in range(oh):
            for j in range(ow):
                r0, r1, q0, q1 = _window(i, j, ph, pw, sh, sw, top, left, h, w)
                out, start = y[s, i, j], x[s, r0, q0]
                for ch in range(c):
                    out[ch] = start[ch]
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        pixel = x[s, r, q]
                        for ch in range(c):
                            v, m = pixel[ch], out[ch]
                            out[ch] = v if _takes(v, m) else m


@njit
def _max_pool_backward(x, dy, ph, pw, sh, sw, top, left, dx, s0, s1):
    """Each window's dy to the first input equal to its max (its first NaN if the max is
    NaN), in row-major window order; dx starts at zero. Per window, one pass finds each
    channel's max and the tap where it first appears (a strict > keeps the first), a
    second adds dy at that tap: selects over the channels, no division, no scatter."""
    _, h, w, c = x.shape
    _, oh, ow, _ = dy.shape
    best = np.empty(c, x.dtype)
    first = np.empty(c, np.int32)
    zero = x.dtype.type(0)
    for s in range(s0, s1):
        for i in range(oh):
            for j in range(ow):
                r0, r1, q0, q1 = _window(i, j, ph, pw, sh, sw, top, left, h, w)
                start = x[s, r0, q0]
                for ch in range(c):
                    best[ch] = start[ch]
                    first[ch] = 0
                tap = 0
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        pixel = x[s, r, q]
                        for ch in range(c):
                            v, m = pixel[ch], best[ch]
                            take = _takes(v, m)
                            best[ch] = v if take else m
                            first[ch] = tap if take else first[ch]
                        tap += 1
                g, tap = dy[s, i, j], 0
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        d = dx[s, r, q]
                        for ch in range(c):
                            d[ch] += g[ch] if first[ch] == tap else zero
                        tap += 1


@njit
def _max_pool_2x2_backward(x, dy, sh, sw, add, dx, s0, s1):
    """``_max_pool_backward`` for 2 × 2 windows inside the image (Keras's default pool),
    each channel's max and first tap kept in registers, not in arrays (the tap as x's
    dtype, so that the selects run in vectors of one width): 2× faster here. With ``add``
    False the windows must not overlap: dx is written, not added to (it need not be
    zeroed first, except where no window reaches)."""
    _, oh, ow, c = dy.shape
    zero, one, two, three = x.dtype.type(0), x.dtype.type(1), x.dtype.type(2), x.dtype.type(3)
    for s in range(s0, s1):
        for i in range(oh):
            for j in range(ow):
                r, q = i * sh, j * sw
                x0, x1, x2, x3 = x[s, r, q], x[s, r, q + 1], x[s, r + 1, q], x[s, r + 1, q + 1]
                d0, d1, d2, d3 = dx[s, r, q], dx[s, r, q + 1], dx[s, r + 1, q], dx[s, r + 1, q + 1]
                g = dy[s, i, j]
                for ch in range(c):  # (one assignment a line: tuples stop the vectoriser)
                    m = x0[ch]
                    tap = zero
                    v = x1[ch]
                    take = _takes(v, m)
                    m = v if take else m
                    tap = one if take else tap
                    v = x2[ch]
                    take = _takes(v, m)
                    m = v if take else m
                    tap = two if take else tap
                    v = x3[ch]
                    tap = three if _takes(v, m) else tap
                    gc = g[ch]
                    d0[ch] = (d0[ch] if add else zero) + (gc if tap == zero else zero)
                    d1[ch] = (d1[ch] if add else zero) + (gc if tap == one else zero)
                    d2[ch] = (d2[ch] if add else zero) + (gc if tap == two else zero)
                    d3[ch] = (d3[ch] if add else zero) + (gc if tap == three else zero)


def _pool_geometry(x_shape, pool_size, strides, padding):
    """(output shape, top, left) of a pooling."""
    (oh, top, _), (ow, left, _) = _geometries(x_shape, pool_size, strides, (1, 1), padding)
    return (x_shape[0], oh, ow, x_shape[3]), top, left


def _max_pooled(x, pool_size, strides, padding):
    shape, top, left = _pool_geometry(x.shape, pool_size, strides, padding)
    y = np.empty(shape, x.dtype)
    _in_threads(_max_pool, len(x), x, *pool_size, *strides, top, left, y)
    return y, top, left


def max_pool2d_forward(x, pool_size, strides, padding):
    """Twin of ``reference.max_pool2d_forward``."""
    return _max_pooled(np.ascontiguousarray(x), pool_size, strides, padding)[0]


def max_pool2d_backward(dy, x, pool_size, strides, padding):
    """Twin of ``reference.max_pool2d_backward``."""
    shape, top, left = _pool_geometry(x.shape, pool_size, strides, padding)
    if dy.shape != shape:
        raise ValueError(f"max_pool2d_backward: dy has shape {dy.shape}, expected {shape}")
    x, dy = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    if tuple(pool_size) == (2, 2) and padding == "valid":
        apart = min(strides) >= 2  # the windows do not overlap: dx written once, not added to
        dx = np.empty(x.shape, dy.dtype) if apart else np.zeros(x.shape, dy.dtype)
        if apart:  # the rows and columns no window reaches
            dx[:, (shape[1] - 1) * strides[0] + 2:] = 0
            dx[:, :, (shape[2] - 1) * strides[1] + 2:] = 0
            for a in (0, 1):  # and between windows, with strides > 2
                for gap in range(2, strides[a]):
                    dx[(slice(None),) * (1 + a) + (slice(gap, None, strides[a]),)] = 0
        _in_threads(_max_pool_2x2_backward, len(x), x, dy, *strides, not apart, dx)
        return dx
    dx = np.zeros(x.shape, dy.dtype)
    _in_threads(_max_pool_backward, len(x), x, dy, *pool_size, *strides, top, left, dx)
    return dx


@njit
def _average_pool(x, ph, pw, sh, sw, top, left, y, s0, s1):
    """y = each window's mean over its in-image inputs."""
    _, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    for s in range(s0, s1):
        for i in range(oh):
            for j in range(ow):
                r0, r1, q0, q1 = _window(i, j, ph, pw, sh, sw, top, left, h, w)
                for ch in range(c):
                    y[s, i, j, ch] = 0
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        for ch in range(c):
                            y[s, i, j, ch] += x[s, r, q, ch]
                scale = y.dtype.type(1.0 / ((r1 - r0) * (q1 - q0)))
                for ch in range(c):
                    y[s, i, j, ch] *= scale


@njit
def _average_pool_backward(dy, ph, pw, sh, sw, top, left, dx, s0, s1):
    """Each window's dy, divided by its count, to each input it averaged (dx starts at 0)."""
    _, h, w, c = dx.shape
    _, oh, ow, _ = dy.shape
    for s in range(s0, s1):
        for i in range(oh):
            for j in range(ow):
                r0, r1, q0, q1 = _window(i, j, ph, pw, sh, sw, top, left, h, w)
                scale = dx.dtype.type(1.0 / ((r1 - r0) * (q1 - q0)))
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        for ch in range(c):
                            dx[s, r, q, ch] += dy[s, i, j, ch] * scale


def average_pool2d_forward(x, pool_size, strides, padding):
    """Twin of ``reference.average_pool2d_forward``."""
    shape, top, left = _pool_geometry(x.shape, pool_size, strides, padding)
    y = np.empty(shape, x.dtype)
    _in_threads(_average_pool, len(x), np.ascontiguousarray(x), *pool_size, *strides, top,
                left, y)
    return y


def average_pool2d_backward(dy, x_shape, pool_size, strides, padding):
    """Twin of ``reference.average_pool2d_backward``."""
    shape, top, left = _pool_geometry(tuple(x_shape), pool_size, strides, padding)
    if dy.shape != shape:
        raise ValueError(f"average_pool2d_backward: dy has shape {dy.shape}, expected {shape}")
    dx = np.zeros(tuple(x_shape), dy.dtype)
    _in_threads(_average_pool_backward, len(dy), np.ascontiguousarray(dy), *pool_size,
                *strides, top, left, dx)
    return dx


def _whole(x_shape):
    """A window over the whole image: global pooling is pooling with one window."""
    return tuple(x_shape[1:3])


def global_max_pool2d_forward(x):
    """Twin of ``reference.global_max_pool2d_forward``."""
    return max_pool2d_forward(x, _whole(x.shape), _whole(x.shape), "valid").reshape(
        len(x), x.shape[3])


def global_max_pool2d_backward(dy, x):
    """Twin of ``reference.global_max_pool2d_backward``."""
    return max_pool2d_backward(dy.reshape(len(dy), 1, 1, -1), x, _whole(x.shape),
                               _whole(x.shape), "valid")


def global_average_pool2d_forward(x):
    """Twin of ``reference.global_average_pool2d_forward``."""
    return average_pool2d_forward(x, _whole(x.shape), _whole(x.shape), "valid").reshape(
        len(x), x.shape[3])


def global_average_pool2d_backward(dy, x_shape):
    """Twin of ``reference.global_average_pool2d_backward``."""
    return average_pool2d_backward(dy.reshape(len(dy), 1, 1, -1), x_shape, _whole(x_shape),
                                   _whole(x_shape), "valid")
