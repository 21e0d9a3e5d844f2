"""Whole training steps in one compiled call, built from the loop kernels of ``compiled``.

Why this exists: the readable path calls a kernel per layer, per loss and per
optimizer update, and each call from Python costs microseconds. On the
notebook's simple model a whole step is ~20 µs of arithmetic, so the calls
would cost more than the math. Here one call runs many steps of the same
algorithm (forward through every op, loss, backward, optimizer update), with
all buffers allocated once.

The model arrives as a table of *ops*, one row each, ``[kind, arg, width]``:

* ``AFFINE``: z = x · W + b, with ``arg`` the index into ``Ws``/``bs`` (a Dense layer);
* ``ACTIVATE``: a = f(z), with ``arg`` the activation code (``compiled.CODES``);
* ``DROPOUT``: y = x · s, with ``arg`` the index into ``rates``/``seeds``/``counters``.

``width`` is the op's output width. Optimizer state arrives flat: ``P``,
``S0``, ``S1``, ``S2`` hold, for every parameter in the model's order (kernel,
bias, kernel, …), a 1-D view of the parameter and of up to three slot arrays
(empty where the optimizer has fewer); ``param_index[a]`` is where affine op
a's kernel sits (its bias, if any, right after).
"""

from __future__ import annotations

import numpy as np

from tinynn.kernels.compiled import (
    _activate,
    _activate_backward,
    _affine,
    _affine_blas,
    _categorical_probability_cross_entropy,
    _categorical_softmax_cross_entropy,
    _compact,
    _correct,
    _dropout,
    _finite,
    _input_grads,
    _input_grads_blas,
    _probability_cross_entropy,
    _softmax_cross_entropy,
    _sparse_affine,
    _sparse_row_affine,
    _sparse_weight_grads,
    _touch_rows,
    _update,
    _weight_grads,
    _weight_grads_blas,
    njit,
    uses_blas,
)

AFFINE, ACTIVATE, DROPOUT = 0, 1, 2
#: How train_steps ended: all steps run, or stopped at a step whose loss was not
#: finite (nothing updated by that step), or whose update made a weight or an
#: optimizer state non-finite.
FINISHED, LOSS_NOT_FINITE, WEIGHTS_NOT_FINITE = 0, 1, 2


@njit
def _gather(indptr, indices, values, rows, out):
    """Dense rows out[r] = x[rows[r]] from compressed sparse rows."""
    out[:] = 0
    for r in range(len(rows)):
        for p in range(indptr[rows[r]], indptr[rows[r] + 1]):
            out[r, indices[p]] = values[p]


@njit
def _forward(x, rows, ops, Ws, bs, rates, seeds, counters, outs, scales, dense_x, identity):
    """Every op's output for the samples ``rows`` of x (sparse rows), in training mode."""
    n = len(rows)
    indptr, indices, values = x
    prev = dense_x[:n]
    if ops[0, 0] != AFFINE or uses_blas(Ws[ops[0, 1]]):
        _gather(indptr, indices, values, rows, prev)
    for i in range(len(ops)):
        kind, arg = ops[i, 0], ops[i, 1]
        out = outs[i][:n]
        if kind == AFFINE and uses_blas(Ws[arg]):
            _affine_blas(prev, Ws[arg], bs[arg], out)
        elif kind == AFFINE and i == 0:
            _sparse_affine(indptr, indices, values, rows, Ws[arg], bs[arg], out)
        elif kind == AFFINE:
            _affine(prev, identity[:n], Ws[arg], bs[arg], out)
        elif kind == ACTIVATE:
            _activate(prev, out, arg)
        else:
            _dropout(prev, rates[arg], seeds[arg], counters[arg], out, scales[i][:n])
        prev = out
    return prev


@njit
def _loss(z, labels, targets, rows, categorical, softmax_formula, clip_epsilon, grad):
    """Per-sample losses of z against the batch's targets; grad gets dL/dz of the batch mean."""
    if categorical and softmax_formula:
        return _categorical_softmax_cross_entropy(z, targets, rows, grad)
    if categorical:
        return _categorical_probability_cross_entropy(z, targets, rows, clip_epsilon, grad)
    if softmax_formula:
        return _softmax_cross_entropy(z, labels, rows, grad)
    return _probability_cross_entropy(z, labels, rows, clip_epsilon, grad)


@njit
def train_steps(x, labels, targets, order, batch_size, first_step, last_step,
                ops, Ws, bs, param_index, rates, seeds, counters,
                on_logits, categorical, softmax_formula, clip_epsilon,
                update, P, S0, S1, S2, arguments):
    """Run steps first_step … last_step − 1 of an epoch whose sample order is ``order``.

    Args:
        x: training inputs (N, k) as float32 sparse rows (indptr, indices, values).
        labels: integer class labels, shape (N,) (for accuracy, and the sparse loss).
        targets: one-hot rows, shape (N, c), for the categorical loss (else unused).
        order: this epoch's permutation of range(N).
        batch_size: samples per step; the last step takes what remains.
        first_step, last_step: which steps to run.
        ops, Ws, bs, param_index, rates, seeds: the model (see module docstring).
        counters: each dropout's mask counter at first_step.
        on_logits: the loss reads the input of the last op (an activation): Keras's logits rule.
        categorical: targets are rows (else integer labels).
        softmax_formula: softmax cross-entropy (else the clipped probability formula).
        clip_epsilon: the probability formula's clipping bound.
        update: the optimizer's kernel, an index into ``compiled.UPDATES``.
        P, S0, S1, S2: parameters and optimizer slots, flat (see module docstring).
        arguments: the update's scalar arguments, one row per step.

    Returns:
        (sum of per-sample losses, number classified right, samples seen, the step
        it stopped at, how it ended): FINISHED after last_step − 1, or the step
        whose loss or update was not finite. After a bad update the weights are
        partly updated: the caller restores them. The sums count only the steps
        before the stop.
    """
    n_ops = len(ops)
    widths = ops[:, 2]
    outs = [np.empty((batch_size, widths[i]), np.float32) for i in range(n_ops)]
    grads = [np.empty((batch_size, widths[i]), np.float32) for i in range(n_ops)]
    scales = [np.empty((batch_size if ops[i, 0] == DROPOUT else 1, widths[i]), np.float32)
              for i in range(n_ops)]
    k = Ws[0].shape[0] if ops[0, 0] == AFFINE else widths[0]
    dense_x = np.empty((batch_size, k), np.float32)
    dWs = [np.empty_like(W) for W in Ws]
    dbs = [np.empty_like(b) for b in bs]
    first_affine = 0
    while ops[first_affine, 0] != AFFINE:
        first_affine += 1
    step_counters = counters.copy()
    loss_sum, correct, seen, touched = 0.0, 0, 0, 0.0
    N = len(order)
    identity = np.arange(batch_size)
    for step in range(first_step, last_step):
        rows = order[step * batch_size : min((step + 1) * batch_size, N)]
        n = len(rows)
        touched += _touch_rows(*x, order[(step + 1) * batch_size : (step + 2) * batch_size])
        for d in range(len(counters)):
            step_counters[d] = counters[d] + step - first_step
        out = _forward(x, rows, ops, Ws, bs, rates, seeds, step_counters, outs, scales,
                       dense_x, identity)

        # The loss, and its gradient with respect to what it read.
        top = n_ops - 2 if on_logits else n_ops - 1
        losses = _loss(outs[top][:n], labels, targets, rows, categorical, softmax_formula,
                       clip_epsilon, grads[top][:n])
        batch_loss = losses.astype(np.float32).mean()
        if not _finite(batch_loss):
            return loss_sum + 0 * touched, correct, seen, step, LOSS_NOT_FINITE
        batch_correct = _correct(out, labels, rows)

        # Backward, op by op; an affine op's update follows its gradients (its
        # input gradient is computed first, with the old weights).
        args = arguments[step - first_step]
        finite = True
        for i in range(top, first_affine - 1, -1):
            kind, arg = ops[i, 0], ops[i, 1]
            dout = grads[i][:n]
            if kind == ACTIVATE:
                _activate_backward(dout, outs[i][:n], arg, grads[i - 1][:n])
            elif kind == DROPOUT:
                grads[i - 1][:n] = dout * scales[i][:n]
            else:
                inp = outs[i - 1][:n] if i > 0 else dense_x[:n]
                if uses_blas(Ws[arg]):
                    _weight_grads_blas(inp, dout, dWs[arg], dbs[arg])
                    if i > first_affine:
                        _input_grads_blas(dout, Ws[arg], grads[i - 1][:n])
                elif i == 0:
                    _sparse_weight_grads(*x, rows, dout, dWs[arg], dbs[arg])
                else:
                    _weight_grads(inp, identity[:n], dout, dWs[arg], dbs[arg])
                    if i > first_affine:
                        _input_grads(dout, Ws[arg], grads[i - 1][:n])
                p = param_index[arg]
                finite &= _update(update, P[p], dWs[arg].reshape(-1), S0[p], S1[p], S2[p], args)
                if len(bs[arg]):
                    finite &= _update(update, P[p + 1], dbs[arg], S0[p + 1], S1[p + 1],
                                      S2[p + 1], args)
        if not finite:
            return loss_sum + 0 * touched, correct, seen, step, WEIGHTS_NOT_FINITE
        loss_sum += batch_loss * n
        correct += batch_correct
        seen += n
    return loss_sum + 0 * touched, correct, seen, last_step, FINISHED


@njit
def forward_rows(x, first, last, ops, Ws, bs, out_z, out_a):
    """The logits (input of a final activation, else the output) and outputs of rows
    first … last − 1 of x (dense, (N, k)), at inference (no dropout op in ``ops``).

    Each row's non-zeros are compacted before a first affine op, so that op
    does the work of a sparse product without a sparse copy of x. Rows are
    independent, and the kernel releases the GIL, so threads can share the rows.
    Returns whether every input was finite (checked here, while each row is in
    cache, rather than in a separate pass over x).
    """
    chunk = 64
    k = x.shape[1]
    n_ops = len(ops)
    indices = np.empty(k + 1, np.int32)
    values = np.empty(k + 1, np.float32)
    outs = [np.empty((chunk, ops[i, 2]), np.float32) for i in range(n_ops)]
    identity = np.arange(chunk)
    top = n_ops - 2 if n_ops > 1 and ops[n_ops - 1, 0] == ACTIVATE else n_ops - 1
    check, zero = np.float32(0), np.float32(0)
    for start in range(first, last, chunk):
        n = min(chunk, last - start)
        for r in range(n):
            for i in range(k):
                check += x[start + r, i] * zero  # NaN from here on if any input is NaN or ±inf
        prev = x[start : start + n]
        for i in range(n_ops):
            kind, arg = ops[i, 0], ops[i, 1]
            out = outs[i][:n]
            if kind == AFFINE and uses_blas(Ws[arg]):
                _affine_blas(prev, Ws[arg], bs[arg], out)
            elif kind == AFFINE and i == 0:
                for r in range(n):
                    count = _compact(x[start + r], indices, values)
                    _sparse_row_affine(indices, values, 0, count, Ws[arg], bs[arg], out[r])
            elif kind == AFFINE:
                _affine(prev, identity[:n], Ws[arg], bs[arg], out)
            else:
                _activate(prev, out, arg)
            prev = out
        out_z[start : start + n] = outs[top][:n]
        out_a[start : start + n] = prev
    return check == zero
