"""Whole training steps in one compiled call, built from the loop kernels of ``compiled``.

Why this exists: the readable path calls a kernel per layer, per loss and per
optimizer update, and each call from Python costs microseconds. On the
notebook's simple model a whole step is ~20 µs of arithmetic, so the calls
would cost more than the math. Here one call runs many steps of the same
algorithm (forward through every layer, loss, backward, optimizer update) for a
stack of Dense layers, with all buffers allocated once.

The layer stack arrives as tuples, one entry per layer: kernels ``Ws``,
biases ``bs`` (empty arrays for layers without one) and activation codes.
Optimizer state arrives the same way: ``s1W``/``s1b`` are Adam's m (or SGD's
velocity) and ``s2W``/``s2b`` Adam's v, views of the arrays the optimizer owns.
"""

from __future__ import annotations

import numpy as np

from tinynn.kernels.compiled import (
    _activate,
    _activate_backward,
    _adam,
    _affine,
    _compact,
    _correct,
    _finite,
    _input_grads,
    _probability_cross_entropy,
    _sgd,
    _softmax_cross_entropy,
    _sparse_affine,
    _sparse_row_affine,
    _sparse_weight_grads,
    _touch_rows,
    _weight_grads,
    njit,
)

ADAM, SGD = 0, 1
#: How train_steps ended: all steps run, or stopped at a step whose loss was not
#: finite (weights untouched by that step), or whose update made a weight non-finite.
FINISHED, LOSS_NOT_FINITE, WEIGHTS_NOT_FINITE = 0, 1, 2

#: Numba's disk cache notices changes to this file only, not to the kernels it
#: calls from ``compiled.py``. This stamp, the start of compiled.py's SHA-256
#: (checked by tests/test_kernels.py), changes whenever compiled.py does, and so
#: keeps a stale compiled step from being loaded.
COMPILED_SOURCE_STAMP = "8543b69c00f6b7ba"


@njit
def _step_update(w, g, s1, s2, optimizer, lr, beta_1, beta_2, epsilon, t):
    """Update a parameter by Adam (step t) or SGD (momentum beta_1); False if w is not finite."""
    w, g, s1, s2 = w.reshape(-1), g.reshape(-1), s1.reshape(-1), s2.reshape(-1)
    if optimizer == ADAM:
        # In float32, as Keras computes lr_t.
        f, t = np.float32, np.float32(t)
        lr_t = f(lr) * np.sqrt(f(1) - f(beta_2) ** t) / (f(1) - f(beta_1) ** t)
        return _adam(w, g, s1, s2, lr_t, beta_1, beta_2, epsilon)
    return _sgd(w, g, s1, lr, beta_1)


@njit
def _forward(x, rows, Ws, bs, codes, zs, As, identity):
    """Every layer's z and a for the samples rows of x (sparse rows); returns the last a."""
    n = len(rows)
    indptr, indices, values = x
    _sparse_affine(indptr, indices, values, rows, Ws[0], bs[0], zs[0][:n])
    _activate(zs[0][:n], As[0][:n], codes[0])
    for layer in range(1, len(Ws)):
        _affine(As[layer - 1][:n], identity[:n], Ws[layer], bs[layer], zs[layer][:n])
        _activate(zs[layer][:n], As[layer][:n], codes[layer])
    return As[len(Ws) - 1][:n]


@njit
def train_steps(x, y, order, batch_size, first_step, last_step,
                Ws, bs, codes, s1W, s1b, s2W, s2b,
                on_logits, softmax_formula, clip_epsilon,
                optimizer, lr, beta_1, beta_2, epsilon, iterations):
    """Run steps first_step … last_step − 1 of an epoch whose sample order is ``order``.

    Args:
        x: training inputs (N, k) as float32 sparse rows (indptr, indices, values).
        y: integer labels, shape (N,).
        order: this epoch's permutation of range(N).
        batch_size: samples per step; the last step takes what remains.
        first_step, last_step: which steps to run.
        Ws, bs, codes: the layers (see module docstring).
        s1W, s1b, s2W, s2b: optimizer state (see module docstring).
        on_logits: the loss works on the last layer's z (Keras's logits rule).
        softmax_formula: softmax cross-entropy (else the clipped probability formula).
        clip_epsilon: the probability formula's clipping bound.
        optimizer: ADAM or SGD; lr, beta_1 (SGD: momentum), beta_2, epsilon: floats.
        iterations: optimizer steps taken before this call.

    Returns:
        (sum of per-sample losses, number classified right, samples seen, the step
        it stopped at, how it ended): FINISHED after last_step − 1; or stopped at a
        step whose loss was not finite, before its update; or at a step whose update
        made a weight non-finite (that step's weights are then partly updated: the
        caller restores them). The sums count only the steps before the stop.
    """
    n_layers = len(Ws)
    zs = [np.empty((batch_size, W.shape[1]), np.float32) for W in Ws]
    As = [np.empty((batch_size, W.shape[1]), np.float32) for W in Ws]
    dAs = [np.empty((batch_size, W.shape[1]), np.float32) for W in Ws]
    dWs = [np.empty_like(W) for W in Ws]
    dbs = [np.empty_like(b) for b in bs]
    loss_sum, correct, seen, touched = 0.0, 0, 0, 0.0
    N = len(order)
    identity = np.arange(batch_size)
    for step in range(first_step, last_step):
        rows = order[step * batch_size : min((step + 1) * batch_size, N)]
        n = len(rows)
        touched += _touch_rows(*x, order[(step + 1) * batch_size : (step + 2) * batch_size])
        out = _forward(x, rows, Ws, bs, codes, zs, As, identity)

        # The loss and its gradient, with respect to z or to a of the last layer.
        last = n_layers - 1
        grad = dAs[last][:n]
        if on_logits:
            losses = _softmax_cross_entropy(zs[last][:n], y, rows, grad)
        elif softmax_formula:
            losses = _softmax_cross_entropy(out, y, rows, grad)
        else:
            losses = _probability_cross_entropy(out, y, rows, clip_epsilon, grad)
        batch_loss = losses.astype(np.float32).mean()
        if not _finite(batch_loss):
            return loss_sum + 0 * touched, correct, seen, step, LOSS_NOT_FINITE
        batch_correct = _correct(out, y, rows)

        # Backward, layer by layer; each layer's update follows its gradients
        # (its input gradient is already computed with the old weights).
        t = iterations + step - first_step + 1
        finite = True
        for layer in range(last, -1, -1):
            dz = dAs[layer][:n]
            if not (layer == last and on_logits):
                _activate_backward(dz, As[layer][:n], codes[layer], dz)
            if layer > 0:
                _weight_grads(As[layer - 1][:n], identity[:n], dz, dWs[layer], dbs[layer])
                _input_grads(dz, Ws[layer], dAs[layer - 1][:n])
            else:
                _sparse_weight_grads(*x, rows, dz, dWs[layer], dbs[layer])
            finite &= _step_update(Ws[layer], dWs[layer], s1W[layer], s2W[layer],
                                   optimizer, lr, beta_1, beta_2, epsilon, t)
            if len(bs[layer]):
                finite &= _step_update(bs[layer], dbs[layer], s1b[layer], s2b[layer],
                                       optimizer, lr, beta_1, beta_2, epsilon, t)
        if not finite:
            return loss_sum + 0 * touched, correct, seen, step, WEIGHTS_NOT_FINITE
        loss_sum += batch_loss * n
        correct += batch_correct
        seen += n
    return loss_sum + 0 * touched, correct, seen, last_step, FINISHED


@njit
def forward_rows(x, first, last, Ws, bs, codes, out_z, out_a):
    """The last layer's z and a for rows first … last − 1 of x (dense, (N, k)).

    Each row's non-zeros are compacted before the first layer, so that layer
    does the work of a sparse product without a sparse copy of x. Rows are
    independent, and the kernel releases the GIL, so threads can share the rows.
    Returns whether every input was finite (checked here, while each row is in
    cache, rather than in a separate pass over x).
    """
    chunk = 64
    k = x.shape[1]
    indices = np.empty(k + 1, np.int32)
    values = np.empty(k + 1, np.float32)
    zs = [np.empty((chunk, W.shape[1]), np.float32) for W in Ws]
    As = [np.empty((chunk, W.shape[1]), np.float32) for W in Ws]
    identity = np.arange(chunk)
    last_layer = len(Ws) - 1
    check, zero = np.float32(0), np.float32(0)
    for start in range(first, last, chunk):
        n = min(chunk, last - start)
        for r in range(n):
            for i in range(k):
                check += x[start + r, i] * zero  # NaN from here on if any input is NaN or ±inf
            count = _compact(x[start + r], indices, values)
            _sparse_row_affine(indices, values, 0, count, Ws[0], bs[0], zs[0][r])
        _activate(zs[0][:n], As[0][:n], codes[0])
        for layer in range(1, len(Ws)):
            _affine(As[layer - 1][:n], identity[:n], Ws[layer], bs[layer], zs[layer][:n])
            _activate(zs[layer][:n], As[layer][:n], codes[layer])
        out_z[start : start + n] = zs[last_layer][:n]
        out_a[start : start + n] = As[last_layer][:n]
    return check == zero
