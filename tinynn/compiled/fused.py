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

Both cores: ``engine.CompiledRunner`` calls ``train_steps`` once per thread,
with the same arguments and shared buffers (``workspace``); the threads split
every step between them and meet at a spin barrier (``compiled/sync.py``). How
they split it keeps each number's arithmetic that of one thread, so the weights
do not depend on the thread count (``train_steps`` says how).
"""

from __future__ import annotations

import numpy as np

from tinynn.compiled.kernels import (
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
from tinynn.compiled.sync import barrier, publish, read

AFFINE, ACTIVATE, DROPOUT = 0, 1, 2
#: How train_steps ended: all steps run, or stopped at a step whose loss was not
#: finite (nothing updated by that step), or whose update made a weight or an
#: optimizer state non-finite, or gave up because a partner thread never came.
FINISHED, LOSS_NOT_FINITE, WEIGHTS_NOT_FINITE, ABORTED = 0, 1, 2, 3


@njit
def _gather(indptr, indices, values, rows, out):
    """Dense rows out[r] = x[rows[r]] from compressed sparse rows."""
    out[:] = 0
    for r in range(len(rows)):
        for p in range(indptr[rows[r]], indptr[rows[r] + 1]):
            out[r, indices[p]] = values[p]


@njit
def input_width(ops, Ws):
    """The width of the model's input: rows of the first kernel, or the first op's width."""
    return Ws[0].shape[0] if ops[0, 0] == AFFINE else ops[0, 2]


@njit
def _layout(ops, Ws, bs, batch_size):
    """Where each buffer of a training step starts in the flat workspace: per op its
    output, its gradient and its dropout scales; per affine op dW and db; then the
    batch's dense inputs; the last entry is the total size."""
    n_ops, n_affine = len(ops), len(Ws)
    sizes = np.zeros(3 * n_ops + 2 * n_affine + 1, np.int64)
    for i in range(n_ops):
        sizes[i] = sizes[n_ops + i] = batch_size * ops[i, 2]
        if ops[i, 0] == DROPOUT:
            sizes[2 * n_ops + i] = batch_size * ops[i, 2]
    for a in range(n_affine):
        sizes[3 * n_ops + a] = Ws[a].size
        sizes[3 * n_ops + n_affine + a] = len(bs[a])
    sizes[-1] = batch_size * input_width(ops, Ws)
    starts = np.zeros(len(sizes) + 1, np.int64)
    for i in range(len(sizes)):
        starts[i + 1] = starts[i] + sizes[i]
    return starts


@njit
def workspace(ops, Ws, bs, batch_size):
    """The buffers of a training step, flat: made once, shared by the threads of a call."""
    return np.empty(_layout(ops, Ws, bs, batch_size)[-1], np.float32)


@njit
def _carve(work, ops, Ws, bs, batch_size):
    """The workspace's buffers as arrays (views: every thread sees the same memory)."""
    at = _layout(ops, Ws, bs, batch_size)
    n, a = len(ops), len(Ws)

    def rows(i, height, width):
        return work[at[i] : at[i + 1]].reshape(height, width)

    outs = [rows(i, batch_size, ops[i, 2]) for i in range(n)]
    grads = [rows(n + i, batch_size, ops[i, 2]) for i in range(n)]
    scales = [rows(2 * n + i, batch_size if ops[i, 0] == DROPOUT else 0, ops[i, 2])
              for i in range(n)]
    dWs = [rows(3 * n + j, Ws[j].shape[0], Ws[j].shape[1]) for j in range(a)]
    dbs = [work[at[3 * n + a + j] : at[3 * n + a + j + 1]] for j in range(a)]
    dense_x = rows(3 * n + 2 * a, batch_size, input_width(ops, Ws))
    return outs, grads, scales, dWs, dbs, dense_x


@njit
def blas_in_training(ops, Ws):
    """Which affine ops multiply through BLAS in ``train_steps``: kernels of at least
    ``BLAS_MIN_WEIGHTS`` weights, except a sparse first layer when no other kernel is that
    big. Its hand loops visit only the non-zero inputs and share both cores; BLAS at a
    batch of 32 does not (a 1024-wide hidden model: 4.9 s/epoch through BLAS on two cores,
    with hand loops on two threads ~2 s). A model with any BLAS op trains on one thread
    (``engine.training_threads``), BLAS using the cores itself."""
    blas = np.zeros(len(Ws), np.bool_)
    count = 0  # (counted, not blas.sum(): see _batch_mean)
    for a in range(len(Ws)):
        blas[a] = uses_blas(Ws[a])
        count += blas[a]
    if ops[0, 0] == AFFINE and count == 1 and blas[ops[0, 1]]:
        blas[ops[0, 1]] = False
    return blas


@njit
def _forward(x, rows, r0, ops, Ws, bs, blas, rates, seeds, counters, outs, scales, dense_x,
             identity):
    """Every op's output for the batch rows r0 … r0 + len(rows) − 1, samples ``rows`` of x
    (sparse rows), in training mode. Rows are independent: threads share a batch by rows."""
    n, r1 = len(rows), r0 + len(rows)
    indptr, indices, values = x
    prev = dense_x[r0:r1]
    if ops[0, 0] != AFFINE or blas[ops[0, 1]]:
        _gather(indptr, indices, values, rows, prev)
    for i in range(len(ops)):
        kind, arg = ops[i, 0], ops[i, 1]
        out = outs[i][r0:r1]
        if kind == AFFINE and blas[arg]:
            _affine_blas(prev, Ws[arg], bs[arg], out)
        elif kind == AFFINE and i == 0:
            _sparse_affine(indptr, indices, values, rows, Ws[arg], bs[arg], out)
        elif kind == AFFINE:
            _affine(prev, identity[:n], Ws[arg], bs[arg], out)
        elif kind == ACTIVATE:
            _activate(prev, out, arg)
        else:
            _dropout(prev, rates[arg], seeds[arg], counters[arg], r0, out, scales[i][r0:r1])
        prev = out


@njit
def _loss(z, labels, targets, rows, batch, categorical, softmax_formula, clip_epsilon, grad):
    """Per-sample losses of z (rows of a batch of ``batch``) against their targets; grad
    gets dL/dz of the batch mean."""
    if categorical and softmax_formula:
        return _categorical_softmax_cross_entropy(z, targets, rows, batch, grad)
    if categorical:
        return _categorical_probability_cross_entropy(z, targets, rows, batch, clip_epsilon, grad)
    if softmax_formula:
        return _softmax_cross_entropy(z, labels, rows, batch, grad)
    return _probability_cross_entropy(z, labels, rows, batch, clip_epsilon, grad)


@njit
def _batch_mean(sample_losses, n):
    """The mean of the first n per-sample losses, in float32 as Keras reports it: each
    loss rounded to float32, summed (in vector lanes: ``reassoc``, as in every kernel
    here), divided by n. A loop rather than ``.mean()``: numba keeps its array methods in
    a module whose loading imports SciPy's linalg, ~0.3 s of a process's first fit even
    with every kernel compiled already."""
    total = np.float32(0)
    for r in range(n):
        total += np.float32(sample_losses[r])
    return np.float32(total / n)


@njit
def train_steps(x, labels, targets, order, batch_size, first_step, last_step, loss_sum,
                ops, Ws, bs, param_index, rates, seeds, counters,
                on_logits, categorical, softmax_formula, clip_epsilon,
                update, P, S0, S1, S2, arguments,
                work, sample_losses, thread, threads, splits, sync):
    """Run steps first_step … last_step − 1 of an epoch whose sample order is ``order``,
    as thread ``thread`` of ``threads`` (each thread calls this with the same arguments).

    Args:
        x: training inputs (N, k) as float32 sparse rows (indptr, indices, values).
        labels: integer class labels, shape (N,) (for accuracy, and the sparse loss).
        targets: one-hot rows, shape (N, c), for the categorical loss (else unused).
        order: this epoch's permutation of range(N).
        batch_size: samples per step; the last step takes what remains.
        first_step, last_step: which steps to run.
        loss_sum: the epoch's sum of per-sample losses before first_step (float64), which
            the steps continue, so that the sum does not depend on how an epoch is split
            into calls (adding per-call sums would round differently).
        ops, Ws, bs, param_index, rates, seeds: the model (see module docstring).
        counters: each dropout's mask counter at first_step.
        on_logits: the loss reads the input of the last op (an activation): Keras's logits rule.
        categorical: targets are rows (else integer labels).
        softmax_formula: softmax cross-entropy (else the clipped probability formula).
        clip_epsilon: the probability formula's clipping bound.
        update: the optimizer's kernel, an index into ``compiled.UPDATES``.
        P, S0, S1, S2: parameters and optimizer slots, flat (see module docstring).
        arguments: the update's scalar arguments, one row per step.
        work: the step's buffers (``workspace``), shared by the threads.
        sample_losses: (batch_size,) float64, shared: each sample's loss.
        thread, threads: which thread this is, of how many (1: no sharing).
        splits: (affine ops, threads + 1): thread t computes rows splits[a, t] …
            splits[a, t + 1] − 1 of affine op a's weight gradient, and updates them.
        sync: the threads' meeting place (``sync.new``).

    How the threads share a step, so that every number is computed as one thread
    would compute it (the weights do not depend on the thread count): the forward
    pass, the loss and the backward pass through activations and dropout by rows of
    the batch (rows are independent); an affine op's weight gradient and update by
    rows of its kernel (each entry is a sum over the batch, in batch order; thread
    0 takes the bias); its input gradient by rows of the batch. The threads meet
    after the loss, before each affine op's weight gradient (it sums over every
    row of the batch) and at the end of the step; an op's update waits for the
    next meeting, until every thread has read the old weights.

    Returns:
        (loss_sum plus the per-sample losses of these steps, number classified right,
        samples seen, the step it stopped at, how it ended): FINISHED after last_step − 1,
        or the step whose loss or update was not finite, or ABORTED (a partner thread
        failed to start). After a bad update the weights are partly updated: the caller
        restores them. The sums count only the steps before the stop; the number
        classified right is counted by thread 0.
    """
    n_ops = len(ops)
    outs, grads, scales, dWs, dbs, dense_x = _carve(work, ops, Ws, bs, batch_size)
    blas = blas_in_training(ops, Ws)
    first_affine = 0
    while ops[first_affine, 0] != AFFINE:
        first_affine += 1
    top = n_ops - 2 if on_logits else n_ops - 1
    no_bias = dbs[0][:0]
    step_counters = counters.copy()
    correct, seen, touched, meeting = 0, 0, 0.0, 0
    N = len(order)
    identity = np.arange(batch_size)
    for step in range(first_step, last_step):
        rows = order[step * batch_size : min((step + 1) * batch_size, N)]
        n = len(rows)
        r0, r1 = n * thread // threads, n * (thread + 1) // threads  # this thread's rows
        mine = rows[r0:r1]
        after = order[(step + 1) * batch_size : (step + 2) * batch_size]
        touched += _touch_rows(*x, after[len(after) * thread // threads :
                                         len(after) * (thread + 1) // threads])
        for d in range(len(counters)):
            step_counters[d] = counters[d] + step - first_step
        _forward(x, mine, r0, ops, Ws, bs, blas, rates, seeds, step_counters, outs, scales,
                 dense_x, identity)

        # The loss, and its gradient with respect to what it read.
        losses = _loss(outs[top][r0:r1], labels, targets, mine, n, categorical,
                       softmax_formula, clip_epsilon, grads[top][r0:r1])
        for r in range(r1 - r0):
            sample_losses[r0 + r] = losses[r]
        meeting += 1
        if not barrier(sync, thread, threads, meeting):
            return loss_sum + 0 * touched, correct, seen, step, ABORTED
        batch_loss = _batch_mean(sample_losses, n)
        if not _finite(batch_loss):
            return loss_sum + 0 * touched, correct, seen, step, LOSS_NOT_FINITE
        batch_correct = _correct(outs[n_ops - 1][:n], labels, rows) if thread == 0 else 0

        # Backward, op by op. An affine op's update waits (``pending``) until every
        # thread has computed its input gradient with the old weights.
        args = arguments[step - first_step]
        finite, met, pending = True, True, -1
        for i in range(top, first_affine - 1, -1):
            kind, arg = ops[i, 0], ops[i, 1]
            dout = grads[i][r0:r1]
            if kind == ACTIVATE:
                _activate_backward(dout, outs[i][r0:r1], arg, grads[i - 1][r0:r1])
                met = False
                continue
            if kind == DROPOUT:
                s, dx = scales[i][r0:r1], grads[i - 1][r0:r1]
                for r in range(r1 - r0):
                    for j in range(ops[i, 2]):
                        dx[r, j] = dout[r, j] * s[r, j]
                met = False
                continue
            if not met:  # the weight gradient sums over every thread's rows
                meeting += 1
                if not barrier(sync, thread, threads, meeting):
                    return loss_sum + 0 * touched, correct, seen, step, ABORTED
            if pending >= 0:
                finite &= _update_part(update, P, S0, S1, S2, param_index[pending],
                                       dWs[pending], dbs[pending], splits, pending, thread,
                                       threads, args)
            inp = outs[i - 1][:n] if i > 0 else dense_x[:n]
            k0, k1 = splits[arg, thread], splits[arg, thread + 1]
            db = dbs[arg] if thread == 0 else no_bias
            whole = grads[i][:n]
            if blas[arg]:  # (run by one thread: see engine.training_threads)
                _weight_grads_blas(inp, whole, dWs[arg], dbs[arg])
                if i > first_affine:
                    _input_grads_blas(whole, Ws[arg], grads[i - 1][:n])
            elif i == 0:
                _sparse_weight_grads(*x, rows, whole, dWs[arg], db, k0, k1)
            else:
                _weight_grads(inp[:, k0:k1], identity[:n], whole, dWs[arg][k0:k1], db)
                if i > first_affine:
                    _input_grads(dout, Ws[arg], grads[i - 1][r0:r1])
            pending, met = arg, False
            if i == first_affine:  # nobody reads these weights again in this step
                finite &= _update_part(update, P, S0, S1, S2, param_index[arg], dWs[arg],
                                       dbs[arg], splits, arg, thread, threads, args)

        # Every thread's updates are done, and all finite, before the next step.
        publish(sync, thread, threads, 1 if finite else 0)
        meeting += 1
        if not barrier(sync, thread, threads, meeting):
            return loss_sum + 0 * touched, correct, seen, step, ABORTED
        for t in range(threads):
            finite &= read(sync, t, threads) == 1
        if not finite:
            return loss_sum + 0 * touched, correct, seen, step, WEIGHTS_NOT_FINITE
        loss_sum += batch_loss * n
        correct += batch_correct
        seen += n
    return loss_sum + 0 * touched, correct, seen, last_step, FINISHED


@njit
def _update_part(update, P, S0, S1, S2, p, dW, db, splits, arg, thread, threads, args):
    """This thread's part of an affine op's update: its rows of the kernel, and (thread 0)
    the bias. Returns whether every updated value is finite."""
    u = dW.shape[1]
    lo, hi = splits[arg, thread] * u, splits[arg, thread + 1] * u  # in the flat views
    finite = _update(update, P[p][lo:hi], dW.reshape(-1)[lo:hi], S0[p][lo:hi], S1[p][lo:hi],
                     S2[p][lo:hi], args)
    if thread == 0 and len(db):
        finite &= _update(update, P[p + 1], db, S0[p + 1], S1[p + 1], S2[p + 1], args)
    return finite


@njit
def _copy_rows(src, dst, start, n):
    """dst[start : start + n] = src[:n], as loops: assigning an array to a slice makes
    Numba compile its shape-mismatch message, seconds of first-run compile time."""
    for r in range(n):
        for j in range(src.shape[1]):
            dst[start + r, j] = src[r, j]


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
        _copy_rows(outs[top], out_z, start, n)
        _copy_rows(prev, out_a, start, n)
    return check == zero
