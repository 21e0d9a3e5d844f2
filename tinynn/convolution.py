"""The textbook's convolution and pooling: the math of ``Conv2D`` and the pooling layers,
in plain NumPy (the rest of the reference kernels are in ``tinynn.reference``, which
re-exports these).

Images are channels-last, as Keras keeps them: a batch ``x`` has shape (n, h, w, c). A
convolution's kernel ``W`` has shape (kh, kw, c, f): f filters, each kh × kw × c.

Everything here rests on one idea, **windows**: the output pixel (i, j) of a convolution
or a pooling looks at a kh × kw window of the (padded) input whose top-left corner is
(i · sh, j · sw), its taps ``dilation`` apart. ``windows`` returns all of them at once,
shape (n, oh, ow, kh, kw, c), as a view (``sliding_window_view``: no copy). Then

* a convolution is a product of each window with the kernel (``tensordot``),
* a pooling is a max or a mean over each window,

and going backward, each tap (a, b) of the window sends its share of the output's gradient
back to the input pixel it read (``add_at_taps``).

Padding, as Keras and TensorFlow do it (``geometry``): ``"valid"`` uses only whole windows;
``"same"`` pads so that there are ⌈h / s⌉ outputs, the extra row or column at the bottom
or right.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _activation(name: str, backward: bool = False):
    """``tinynn.reference.ACTIVATIONS[name]``'s forward or backward (imported here, not at
    the top: ``tinynn.reference`` imports this module)."""
    from tinynn.reference import ACTIVATIONS

    return ACTIVATIONS[name][backward]

PADDINGS = ("valid", "same")


def geometry(size: int, kernel: int, stride: int, dilation: int, padding: str
             ) -> tuple[int, int, int]:
    """Along one axis: (outputs, padding before, padding after).

    A window spans e = (kernel − 1) · dilation + 1 inputs. ``"valid"``: ⌊(size − e) / s⌋ + 1
    outputs, no padding. ``"same"``: ⌈size / s⌉ outputs, padded by
    max((out − 1) · s + e − size, 0) in all, half before (rounded down), the rest after.
    """
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return max((size - span) // stride + 1, 0), 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return out, total // 2, total - total // 2


def _geometries(x_shape, window, strides, dilation, padding):
    """``geometry`` along the height and the width."""
    return [geometry(x_shape[1 + axis], window[axis], strides[axis], dilation[axis], padding)
            for axis in (0, 1)]


def pad(x: np.ndarray, geometries, value: float = 0.0) -> np.ndarray:
    """x with ``value`` added around its height and width, as ``geometries`` say."""
    (_, top, bottom), (_, left, right) = geometries
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def windows(xp: np.ndarray, window, strides, dilation, out) -> np.ndarray:
    """Every window of the padded input xp (n, H, W, c), as a view of shape
    (n, oh, ow, kh, kw, c): entry [:, i, j, a, b] is xp[:, i·sh + a·dh, j·sw + b·dw]."""
    spans = [(window[axis] - 1) * dilation[axis] + 1 for axis in (0, 1)]
    view = sliding_window_view(xp, spans, axis=(1, 2))  # (n, H', W', c, span_h, span_w)
    view = view[:, : (out[0] - 1) * strides[0] + 1 : strides[0],
                : (out[1] - 1) * strides[1] + 1 : strides[1], :, :: dilation[0], :: dilation[1]]
    return view.transpose(0, 1, 2, 4, 5, 3)


def add_at_taps(dxp: np.ndarray, d_windows: np.ndarray, strides, dilation) -> None:
    """The backward of ``windows``: add each window's gradient d_windows (n, oh, ow, kh, kw, c)
    into the padded input's gradient dxp, tap by tap (overlapping windows add up)."""
    _, oh, ow, kh, kw, _ = d_windows.shape
    for a in range(kh):
        for b in range(kw):
            rows = slice(a * dilation[0], a * dilation[0] + (oh - 1) * strides[0] + 1, strides[0])
            cols = slice(b * dilation[1], b * dilation[1] + (ow - 1) * strides[1] + 1, strides[1])
            dxp[:, rows, cols, :] += d_windows[:, :, :, a, b, :]


def _unpad(dxp: np.ndarray, geometries, x_shape) -> np.ndarray:
    (_, top, _), (_, left, _) = geometries
    return dxp[:, top : top + x_shape[1], left : left + x_shape[2], :]


# ---------------------------------------------------------------- convolution


def conv2d_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, strides: tuple,
                   padding: str, dilation_rate: tuple, activation: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D convolution (a cross-correlation: the kernel is not flipped), then an activation.

    z[n, i, j, f] = Σ_{a, b, c} x_p[n, i·sh + a·dh, j·sw + b·dw, c] · W[a, b, c, f] + b[f],
    a = f(z)

    Args:
        x: images, shape (n, h, w, c).
        W: kernel, shape (kh, kw, c, f).
        b: bias, shape (f,), or None.
        strides, dilation_rate: (sh, sw) and (dh, dw).
        padding: ``"valid"`` or ``"same"`` (see ``geometry``).
        activation: a key of ``tinynn.reference.ACTIVATIONS``.

    Returns:
        ``(z, a)``, both shape (n, oh, ow, f).
    """
    g = _geometries(x.shape, W.shape, strides, dilation_rate, padding)
    patches = windows(pad(x, g), W.shape, strides, dilation_rate, (g[0][0], g[1][0]))
    z = np.tensordot(patches, W, axes=([3, 4, 5], [0, 1, 2]))
    if b is not None:
        z = z + b
    return z, _activation(activation)(z)


def conv2d_backward(x: np.ndarray, W: np.ndarray, a: np.ndarray, da: np.ndarray,
                    strides: tuple, padding: str, dilation_rate: tuple, activation: str,
                    need_dx: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of a convolution, from what its forward pass kept.

    dz = f'(z) ⊙ da,
    dW[a, b, c, f] = Σ_{n, i, j} x_p[n, i·sh + a·dh, j·sw + b·dw, c] · dz[n, i, j, f],
    db = Σ dz,  dx = every window's dz · Wᵀ added back at its taps

    (dW correlates the input with dz; dx is the full correlation of dz with the flipped
    kernel, computed here window by window.)

    Args:
        x: the inputs, shape (n, h, w, c); W: kernel (kh, kw, c, f).
        a: the outputs f(z) and da: dL/da, both shape (n, oh, ow, f). Pass dL/dz and
            ``activation="linear"`` to skip f'.
        need_dx: False for a model's first layer (nobody reads dx).

    Returns:
        ``(dx, dW, db)``: shapes (n, h, w, c) (or None), (kh, kw, c, f), (f,).
    """
    dz = _activation(activation, backward=True)(da, a)
    g = _geometries(x.shape, W.shape, strides, dilation_rate, padding)
    patches = windows(pad(x, g), W.shape, strides, dilation_rate, dz.shape[1:3])
    dW = np.tensordot(patches, dz, axes=([0, 1, 2], [0, 1, 2]))
    db = dz.sum(axis=(0, 1, 2))
    if not need_dx:
        return None, dW, db
    dxp = np.zeros(_padded_shape(x.shape, g), x.dtype)
    add_at_taps(dxp, np.tensordot(dz, W, axes=([3], [3])), strides, dilation_rate)
    return _unpad(dxp, g, x.shape), dW, db


def _padded_shape(x_shape, geometries) -> tuple[int, ...]:
    (_, top, bottom), (_, left, right) = geometries
    return (x_shape[0], x_shape[1] + top + bottom, x_shape[2] + left + right, x_shape[3])


# ---------------------------------------------------------------- pooling
# A pooling window has no kernel: its size is ``pool_size``, and its taps are adjacent
# (dilation 1).

_ONE = (1, 1)


def max_pool2d_forward(x: np.ndarray, pool_size: tuple, strides: tuple, padding: str
                       ) -> np.ndarray:
    """y[n, i, j, c] = max over the window at (i, j) of x[n, ·, ·, c] (padding never wins:
    it is −∞).

    Args:
        x: shape (n, h, w, c). pool_size, strides: (ph, pw) and (sh, sw).

    Returns:
        y, shape (n, oh, ow, c).
    """
    g = _geometries(x.shape, pool_size, strides, _ONE, padding)
    patches = windows(pad(x, g, -np.inf), pool_size, strides, _ONE, (g[0][0], g[1][0]))
    return patches.max(axis=(3, 4))


def max_pool2d_backward(dy: np.ndarray, x: np.ndarray, pool_size: tuple, strides: tuple,
                        padding: str) -> np.ndarray:
    """dx: each window's dy goes to the input that was its maximum (on a tie, the first in
    row-major window order, as TensorFlow's CPU kernel); windows that overlap add up.

    Args:
        dy: shape (n, oh, ow, c); x: the forward's input, (n, h, w, c).
    """
    g = _geometries(x.shape, pool_size, strides, _ONE, padding)
    patches = windows(pad(x, g, -np.inf), pool_size, strides, _ONE, dy.shape[1:3])
    n, oh, ow, ph, pw, c = patches.shape
    first = patches.reshape(n, oh, ow, ph * pw, c).argmax(axis=3)  # argmax: the first max
    taps = np.arange(ph * pw).reshape(1, 1, 1, ph, pw, 1)
    d_windows = np.where(first[:, :, :, None, None, :] == taps, dy[:, :, :, None, None, :], 0)
    dxp = np.zeros(_padded_shape(x.shape, g), dy.dtype)
    add_at_taps(dxp, d_windows.astype(dy.dtype), strides, _ONE)
    return _unpad(dxp, g, x.shape)


def _counts(x_shape, pool_size, strides, padding) -> np.ndarray:
    """How many in-image inputs each window holds, shape (1, oh, ow, 1): "same" padding
    averages over those only, as Keras does."""
    g = _geometries(x_shape, pool_size, strides, _ONE, padding)
    ones = pad(np.ones((1, x_shape[1], x_shape[2], 1), np.float32), g)
    return windows(ones, pool_size, strides, _ONE, (g[0][0], g[1][0])).sum(axis=(3, 4))


def average_pool2d_forward(x: np.ndarray, pool_size: tuple, strides: tuple, padding: str
                           ) -> np.ndarray:
    """y[n, i, j, c] = the mean of x[n, ·, ·, c] over the in-image part of the window at (i, j).

    Args:
        x: shape (n, h, w, c). pool_size, strides: (ph, pw) and (sh, sw).

    Returns:
        y, shape (n, oh, ow, c).
    """
    g = _geometries(x.shape, pool_size, strides, _ONE, padding)
    patches = windows(pad(x, g), pool_size, strides, _ONE, (g[0][0], g[1][0]))
    return (patches.sum(axis=(3, 4)) / _counts(x.shape, pool_size, strides, padding)
            ).astype(x.dtype)


def average_pool2d_backward(dy: np.ndarray, x_shape: tuple, pool_size: tuple, strides: tuple,
                            padding: str) -> np.ndarray:
    """dx: each window's dy, divided by its count, goes to every input it averaged.

    Args:
        dy: shape (n, oh, ow, c); x_shape: the forward's input shape (n, h, w, c).
    """
    g = _geometries(x_shape, pool_size, strides, _ONE, padding)
    share = (dy / _counts(x_shape, pool_size, strides, padding)).astype(dy.dtype)
    d_windows = np.broadcast_to(share[:, :, :, None, None, :], (*dy.shape[:3], *pool_size,
                                                                dy.shape[3]))
    dxp = np.zeros(_padded_shape(x_shape, g), dy.dtype)
    add_at_taps(dxp, d_windows, strides, _ONE)
    return _unpad(dxp, g, x_shape)


def global_max_pool2d_forward(x: np.ndarray) -> np.ndarray:
    """y[n, c] = max over i, j of x[n, i, j, c]; x (n, h, w, c) → y (n, c)."""
    return x.max(axis=(1, 2))


def global_max_pool2d_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dx: dy[n, c] goes to the first maximum of x[n, ·, ·, c] in row-major order."""
    n, h, w, c = x.shape
    first = x.reshape(n, h * w, c).argmax(axis=1)  # (n, c)
    dx = np.zeros((n, h * w, c), dy.dtype)
    np.put_along_axis(dx, first[:, None, :], dy[:, None, :], axis=1)
    return dx.reshape(x.shape)


def global_average_pool2d_forward(x: np.ndarray) -> np.ndarray:
    """y[n, c] = the mean over i, j of x[n, i, j, c]; x (n, h, w, c) → y (n, c)."""
    return x.mean(axis=(1, 2), dtype=x.dtype)


def global_average_pool2d_backward(dy: np.ndarray, x_shape: tuple) -> np.ndarray:
    """dx[n, i, j, c] = dy[n, c] / (h · w)."""
    n, h, w, c = x_shape
    return np.broadcast_to((dy / (h * w)).astype(dy.dtype)[:, None, None, :], x_shape).copy()
