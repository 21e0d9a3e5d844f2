"""The optimizers' update loops, compiled: one pass over flat arrays each, in place.

Each returns whether every value it wrote is finite (a NaN must not hide: see
``FLUSH``); ``update_with`` picks one, at compile time, by its code in
``table.UPDATES``. The twins in ``kernels.py`` and the fused step in ``fused.py`` call
them.
"""

from __future__ import annotations

import numpy as np

from tinynn.compiled.jit import chosen_by_type, njit
from tinynn.compiled.table import (
    ADAGRAD_UPDATE,
    ADAM_UPDATE,
    ADAMW_UPDATE,
    RMSPROP_UPDATE,
    SGD_UPDATE,
)

#: Adam's moments below this are set to 0. Moments of weights that rarely see a
#: gradient (MNIST's border pixels) decay towards subnormal numbers, which the
#: CPU handles ~100× slower; TensorFlow's CPU kernels flush subnormals too. The
#: bound sits far enough above the smallest normal float32 (1.2e-38) that no
#: step's arithmetic makes a subnormal; a moment this small moves w by < 1e-22.
FLUSH = 1e-30


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


#: Each update's loop by code (``table.UPDATES``), called with the parameter, its gradient,
#: its slots 0 … n − 1 and its scalar arguments 0 … m − 1: (loop, n, m).
LOOPS = {SGD_UPDATE: (_sgd, 1, 3), ADAM_UPDATE: (_adam, 2, 4), ADAMW_UPDATE: (_adamw, 2, 5),
         RMSPROP_UPDATE: (_rmsprop, 3, 5), ADAGRAD_UPDATE: (_adagrad, 1, 2)}


@chosen_by_type
def update_with(kind, w, g, S, p, lo, hi, args):
    """The update of ``kind`` (an ``Update`` whose class names its code: see ``fused.py``)
    on the flat parameter w from its gradient g, with slot k being ``S[k][p][lo:hi]`` and
    the step's scalar arguments ``args``; returns whether every value it wrote is finite.
    Only that update's loop is compiled into the caller."""
    code = kind.instance_class.code
    if code not in LOOPS:
        raise TypeError(f"unknown update code {code} (see table.py)")
    loop, slots, arguments = LOOPS[code]
    if (slots, arguments) == (1, 2):
        return lambda kind, w, g, S, p, lo, hi, args: loop(
            w, g, S[0][p][lo:hi], args[0], args[1])
    if (slots, arguments) == (1, 3):
        return lambda kind, w, g, S, p, lo, hi, args: loop(
            w, g, S[0][p][lo:hi], args[0], args[1], args[2])
    if (slots, arguments) == (2, 4):
        return lambda kind, w, g, S, p, lo, hi, args: loop(
            w, g, S[0][p][lo:hi], S[1][p][lo:hi], args[0], args[1], args[2], args[3])
    if (slots, arguments) == (2, 5):
        return lambda kind, w, g, S, p, lo, hi, args: loop(
            w, g, S[0][p][lo:hi], S[1][p][lo:hi], args[0], args[1], args[2], args[3], args[4])
    return lambda kind, w, g, S, p, lo, hi, args: loop(
        w, g, S[0][p][lo:hi], S[1][p][lo:hi], S[2][p][lo:hi], args[0], args[1], args[2],
        args[3], args[4])
