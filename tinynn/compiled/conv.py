"""Compiled twins of ``tinynn/convolution.py``: convolution and pooling, same names and results.

A convolution is three matrix products per step (z = cols · W, dW = colsᵀ · dz,
dcols = dz · Wᵀ), where ``cols`` holds every window of the input as a row
(``_im2col``, shape (n · oh · ow, kh · kw · c)). The products go through NumPy's BLAS,
which uses every core and computes each entry in one order whatever the thread count;
the loops here move the numbers into and out of rows (``_im2col``, ``_col2im``), add
the bias and the activation, and pool. Each loop is compiled on first use and kept on
disk (``jit.njit``).
"""

from __future__ import annotations

import numpy as np

from tinynn.compiled.jit import inline, njit
from tinynn.compiled.loops import _activate, _activate_backward
from tinynn.compiled.table import CODES
from tinynn.convolution import geometry


def _geometries(x_shape, window, strides, dilation, padding):
    """(oh, top, _), (ow, left, _) of ``tinynn.convolution.geometry`` along h and w."""
    return [geometry(x_shape[1 + a], window[a], strides[a], dilation[a], padding) for a in (0, 1)]


@njit
def _im2col(x, kh, kw, sh, sw, dh, dw, top, left, oh, ow, cols):
    """cols[(s · oh + i) · ow + j, (a · kw + b) · c + ch] = x_p[s, i·sh + a·dh, j·sw + b·dw, ch]
    (0 in the padding)."""
    n, h, w, c = x.shape
    for s in range(n):
        for i in range(oh):
            for j in range(ow):
                row = (s * oh + i) * ow + j
                for a in range(kh):
                    r = i * sh + a * dh - top
                    for b in range(kw):
                        q = j * sw + b * dw - left
                        base = (a * kw + b) * c
                        if 0 <= r < h and 0 <= q < w:
                            for ch in range(c):
                                cols[row, base + ch] = x[s, r, q, ch]
                        else:
                            for ch in range(c):
                                cols[row, base + ch] = 0


@njit
def _col2im(dcols, kh, kw, sh, sw, dh, dw, top, left, oh, ow, dx):
    """The backward of ``_im2col``: add each row's entries back at the pixels they came
    from (dx starts at zero; the padding's share is dropped)."""
    n, h, w, c = dx.shape
    for s in range(n):
        for i in range(oh):
            for j in range(ow):
                row = (s * oh + i) * ow + j
                for a in range(kh):
                    r = i * sh + a * dh - top
                    if 0 <= r < h:
                        for b in range(kw):
                            q = j * sw + b * dw - left
                            if 0 <= q < w:
                                base = (a * kw + b) * c
                                for ch in range(c):
                                    dx[s, r, q, ch] += dcols[row, base + ch]


@njit
def _add_bias(z, b):
    for r in range(z.shape[0]):
        for f in range(z.shape[1]):
            z[r, f] += b[f]


@njit
def _bias_grads(dz, db):
    db[:] = 0
    for r in range(dz.shape[0]):
        for f in range(dz.shape[1]):
            db[f] += dz[r, f]


def _cols(x, W, strides, padding, dilation_rate):
    """(cols, (oh, top), (ow, left)) of x for a (kh, kw, c, f) kernel."""
    kh, kw, c, _ = W.shape
    (oh, top, _), (ow, left, _) = _geometries(x.shape, W.shape, strides, dilation_rate, padding)
    cols = np.empty((len(x) * oh * ow, kh * kw * c), W.dtype)
    _im2col(np.ascontiguousarray(x, W.dtype), kh, kw, *strides, *dilation_rate, top, left,
            oh, ow, cols)
    return cols, (oh, top), (ow, left)


def _check_conv(x, W, b, *per_output):
    if x.ndim != 4 or W.ndim != 4 or x.shape[3] != W.shape[2] or (
            b is not None and b.shape != (W.shape[3],)):
        raise ValueError(f"conv2d kernel shapes disagree: x {x.shape}, W {W.shape}, "
                         f"b {None if b is None else b.shape}")
    if any(a.shape[0] != len(x) or a.shape[3] != W.shape[3] for a in per_output):
        raise ValueError(f"conv2d outputs {[a.shape for a in per_output]} do not fit x "
                         f"{x.shape} and W {W.shape}")


def conv2d_forward(x, W, b, strides, padding, dilation_rate, activation):
    """Twin of ``reference.conv2d_forward``."""
    _check_conv(x, W, b)
    cols, (oh, _), (ow, _) = _cols(x, W, strides, padding, dilation_rate)
    z = cols @ W.reshape(-1, W.shape[3])
    if b is not None:
        _add_bias(z, b)
    a = np.empty_like(z)
    _activate(z, a, CODES[activation], 0.0)
    shape = (len(x), oh, ow, W.shape[3])
    return z.reshape(shape), a.reshape(shape)


def conv2d_backward(x, W, a, da, strides, padding, dilation_rate, activation, need_dx=True):
    """Twin of ``reference.conv2d_backward``: returns (dx or None, dW, db)."""
    _check_conv(x, W, None, a, da)
    f = W.shape[3]
    a2, da2 = a.reshape(-1, f), np.ascontiguousarray(da, W.dtype).reshape(-1, f)
    dz = np.empty_like(a2)
    _activate_backward(da2, a2, CODES[activation], 0.0, dz)
    cols, (oh, top), (ow, left) = _cols(x, W, strides, padding, dilation_rate)
    dW = (cols.T @ dz).reshape(W.shape)
    db = np.empty(f, W.dtype)
    _bias_grads(dz, db)
    if not need_dx:
        return None, dW, db
    dx = np.zeros(x.shape, W.dtype)
    _col2im(dz @ W.reshape(-1, f).T, W.shape[0], W.shape[1], *strides, *dilation_rate,
            top, left, oh, ow, dx)
    return dx, dW, db


# ---------------------------------------------------------------- pooling


@inline
def _not_nan(v):
    """False for NaN only (an ordered comparison survives fastmath's "reassoc")."""
    return v <= np.inf


@njit
def _max_pool(x, ph, pw, sh, sw, top, left, y, first):
    """y = each window's max (the first NaN if any, as NumPy's max); first = where it is,
    as r · w + q (the first maximum in row-major window order). Channels innermost: they
    are adjacent in memory, so the comparisons run in vectors."""
    n, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    for s in range(n):
        for i in range(oh):
            r0, r1 = max(i * sh - top, 0), min(i * sh - top + ph, h)
            for j in range(ow):
                q0, q1 = max(j * sw - left, 0), min(j * sw - left + pw, w)
                best, where = y[s, i, j], first[s, i, j]
                for ch in range(c):
                    best[ch] = x[s, r0, q0, ch]
                    where[ch] = r0 * w + q0
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        for ch in range(c):
                            v = x[s, r, q, ch]
                            # (a NaN, once it is the best, stays: NumPy's max is NaN then)
                            if v > best[ch] or (_not_nan(best[ch]) and not _not_nan(v)):
                                best[ch] = v
                                where[ch] = r * w + q


@njit
def _max_pool_backward(dy, first, dx):
    """Each window's dy to its first maximum (dx starts at zero)."""
    n, oh, ow, c = dy.shape
    w = dx.shape[2]
    for s in range(n):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    where = first[s, i, j, ch]
                    dx[s, where // w, where % w, ch] += dy[s, i, j, ch]


def _pool_shape(x_shape, pool_size, strides, padding):
    (oh, top, _), (ow, left, _) = _geometries(x_shape, pool_size, strides, (1, 1), padding)
    return (x_shape[0], oh, ow, x_shape[3]), top, left


def max_pool2d_forward(x, pool_size, strides, padding):
    """Twin of ``reference.max_pool2d_forward``."""
    shape, top, left = _pool_shape(x.shape, pool_size, strides, padding)
    y = np.empty(shape, x.dtype)
    _max_pool(np.ascontiguousarray(x), *pool_size, *strides, top, left, y,
              np.empty(shape, np.int64))
    return y


def max_pool2d_backward(dy, x, pool_size, strides, padding):
    """Twin of ``reference.max_pool2d_backward``."""
    shape, top, left = _pool_shape(x.shape, pool_size, strides, padding)
    if dy.shape != shape:
        raise ValueError(f"max_pool2d_backward: dy has shape {dy.shape}, expected {shape}")
    first = np.empty(shape, np.int64)
    _max_pool(np.ascontiguousarray(x), *pool_size, *strides, top, left,
              np.empty(shape, x.dtype), first)
    dx = np.zeros(x.shape, dy.dtype)
    _max_pool_backward(np.ascontiguousarray(dy), first, dx)
    return dx


@njit
def _average_pool(x, ph, pw, sh, sw, top, left, y):
    """y = each window's mean over its in-image inputs."""
    n, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    for s in range(n):
        for i in range(oh):
            r0, r1 = max(i * sh - top, 0), min(i * sh - top + ph, h)
            for j in range(ow):
                q0, q1 = max(j * sw - left, 0), min(j * sw - left + pw, w)
                for ch in range(c):
                    total = 0.0
                    for r in range(r0, r1):
                        for q in range(q0, q1):
                            total += x[s, r, q, ch]
                    y[s, i, j, ch] = total / ((r1 - r0) * (q1 - q0))


@njit
def _average_pool_backward(dy, ph, pw, sh, sw, top, left, dx):
    """Each window's dy, divided by its count, to each input it averaged (dx starts at 0)."""
    n, h, w, c = dx.shape
    _, oh, ow, _ = dy.shape
    for s in range(n):
        for i in range(oh):
            r0, r1 = max(i * sh - top, 0), min(i * sh - top + ph, h)
            for j in range(ow):
                q0, q1 = max(j * sw - left, 0), min(j * sw - left + pw, w)
                scale = 1.0 / ((r1 - r0) * (q1 - q0))
                for ch in range(c):
                    share = dy[s, i, j, ch] * scale
                    for r in range(r0, r1):
                        for q in range(q0, q1):
                            dx[s, r, q, ch] += share


def average_pool2d_forward(x, pool_size, strides, padding):
    """Twin of ``reference.average_pool2d_forward``."""
    shape, top, left = _pool_shape(x.shape, pool_size, strides, padding)
    y = np.empty(shape, x.dtype)
    _average_pool(np.ascontiguousarray(x), *pool_size, *strides, top, left, y)
    return y


def average_pool2d_backward(dy, x_shape, pool_size, strides, padding):
    """Twin of ``reference.average_pool2d_backward``."""
    shape, top, left = _pool_shape(tuple(x_shape), pool_size, strides, padding)
    if dy.shape != shape:
        raise ValueError(f"average_pool2d_backward: dy has shape {dy.shape}, expected {shape}")
    dx = np.zeros(tuple(x_shape), dy.dtype)
    _average_pool_backward(np.ascontiguousarray(dy), *pool_size, *strides, top, left, dx)
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
