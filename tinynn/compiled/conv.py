"""Compiled twins of ``tinynn/convolution.py``'s convolution: same names and results
(the poolings' are in ``pooling.py``).

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

The samples are shared between threads as ``sharing`` says, and each BLAS product covers
a fixed number of samples (``CHUNK``), since OpenBLAS rounds a row differently among
other rows: the weights do not depend on any thread count.
"""

from __future__ import annotations

import numpy as np

from tinynn.compiled.jit import njit
from tinynn.compiled.loops import _activate, _activate_backward
from tinynn.compiled.sharing import _in_threads, _summed_in_parts
from tinynn.compiled.table import CODES
from tinynn.convolution import geometry

#: Windows of at most this many weights per filter are computed by loops, larger ones by BLAS.
DIRECT_MAX = 32
#: The backward skips windows whose gradient is 0 if at most this share of them has one.
LIVE_MAX = 0.9
#: Samples per matrix product (fixed: see the module docstring; ~1,000 rows of a 28 × 28 convnet's
#: second layer).
CHUNK = 8


def _geometries(x_shape, window, strides, dilation, padding):
    """(oh, top, _), (ow, left, _) of ``tinynn.convolution.geometry`` along h and w."""
    return [geometry(x_shape[1 + a], window[a], strides[a], dilation[a], padding)
            for a in (0, 1)]


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


def _bias_activate_rows(z, b, a, code, s0, s1):
    """z += b, then a = f(z) (``loops._activate``), for samples [s0, s1) (z, a: (n, rows
    per sample, f)). Plain Python around a NumPy add and a kernel the Dense twins compile
    anyway (both release the GIL): one kernel fewer to compile on a first run."""
    rows, f = z[s0:s1].reshape(-1, z.shape[2]), z.shape[2]
    rows += b
    _activate(rows, a[s0:s1].reshape(-1, f), code, 0.0)


def _activate_backward_rows(da, a, code, dz, s0, s1):
    """dz = f'(z) ⊙ da for samples [s0, s1) (``loops._activate_backward``), as above."""
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
