"""Compiled twins of the poolings of ``tinynn/convolution.py``: same names and results.

Each loop runs over one pixel's channels as a 1-D row (``x[s, r, q]``), adjacent in
memory: LLVM vectorises those (3.4× faster here than indexing ``x[s, r, q, ch]``). The
samples are shared between threads as ``sharing`` says.
"""

from __future__ import annotations

import numpy as np

from tinynn.compiled.conv import _geometries
from tinynn.compiled.jit import inline, njit
from tinynn.compiled.sharing import _in_threads


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
