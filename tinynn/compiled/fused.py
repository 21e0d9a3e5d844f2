"""Whole training steps in one compiled call, built from the loop kernels of ``loops.py``
and ``updates.py``.

Why this exists: the readable path calls a kernel per layer, per loss and per
optimizer update, and each call from Python costs microseconds. On the
notebook's simple model a whole step is ~20 µs of arithmetic, so the calls
would cost more than the math. Here one call runs many steps of the same
algorithm as ``Sequential.train_step`` (forward through every op, loss,
backward, optimizer update), with all buffers allocated once.

The model arrives as a table of *ops* (``engine.Plan``, lowered by
``table.LAYERS``), one row each, ``[kind, arg, width]``, with one float
parameter per op:

* ``AFFINE``: z = x · W + b, with ``arg`` the index into ``Ws``/``bs`` (a Dense layer);
* ``ACTIVATE``: a = f(z), with ``arg`` the activation code (``table.ACTIVATIONS``) and
  the parameter its argument (LeakyReLU's negative_slope);
* ``DROPOUT``: y = x · s, with ``arg`` the index into the dropout rates, seeds and counters;
* ``USER``: a user's layer, with ``arg`` its number: thread 0 calls its own forward and
  backward on the whole batch (``users.py``), and the update applies its ``grads``.

``width`` is the op's output width. ``train_steps`` takes its arguments in named
groups (``Data``, ``Epoch``, ``Model``, ``Dropouts``, ``LossRule``, ``Update``,
``Threads``). Optimizer state arrives flat: ``Update.P`` holds, for every
parameter in the model's order (kernel, bias, kernel, …), a 1-D view of it, and
``Update.S[k]`` the views of its slot k (empty where the optimizer has fewer
than ``table.MAX_SLOTS``); ``Model.param_index[a]`` is where affine op a's kernel
sits (its bias, if any, right after).

Both cores: ``engine.CompiledRunner`` calls ``train_steps`` once per thread,
with the same arguments and shared buffers (``workspace``); the threads split
every step between them and meet at a spin barrier (``sync.py``). How they
split it keeps each number's arithmetic that of one thread, so the weights do
not depend on the thread count (``train_steps`` says how).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from tinynn.compiled.jit import chosen_by_type, inline, njit
from tinynn.compiled.loops import (
    _activate,
    _activate_backward,
    _affine,
    _affine_blas,
    _categorical_probability_cross_entropy,
    _categorical_softmax_cross_entropy,
    _correct,
    _dropout,
    _finite,
    _input_grads,
    _input_grads_blas,
    _probability_cross_entropy,
    _softmax_cross_entropy,
    _sparse_affine,
    _sparse_weight_grads,
    _touch_rows,
    _weight_grads,
    _weight_grads_blas,
    uses_blas,
)
from tinynn.compiled.sync import barrier, publish, read
from tinynn.compiled.table import (
    ABORTED,
    ACTIVATE,
    AFFINE,
    DROPOUT,
    FINISHED,
    LOSS_NOT_FINITE,
    USER,
    WEIGHTS_NOT_FINITE,
)
from tinynn.compiled.table import UPDATES as UPDATES_BY_CODE
from tinynn.compiled.updates import update_with
from tinynn.compiled.workspace import carve, gather

#: The training inputs as compressed sparse rows, class labels (N,), and target rows
#: (N, c) for a categorical loss (else a (1, 1) placeholder).
Data = namedtuple("Data", "indptr indices values labels targets")
#: This epoch's sample order, the batch size, the steps to run (first … last − 1), and
#: the epoch's loss sum before ``first`` (continued step by step: the sum does not depend
#: on how an epoch is split into calls).
Epoch = namedtuple("Epoch", "order batch_size first last loss_sum")
#: The op table, each op's float parameter, the Dense kernels and biases, where each
#: kernel sits among the optimizer's parameters, and per user layer (input width, first
#: parameter, number of parameters). Its class (``MODELS``) says whether any product goes
#: through BLAS and whether there are user layers: a model without compiles no BLAS call,
#: no call to Python.
Model = namedtuple("Model", "ops parameters Ws bs param_index users")
#: Each Dropout's rate, seed and mask counter at step ``first`` (``NoDropouts`` for a
#: model without one: it compiles no dropout).
Dropouts = namedtuple("Dropouts", "rates seeds counters")
#: Keras's logits rule as the loss applies it (``Loss.formula``): the loss reads the input
#: of the last op (an activation), and the probability formula's clipping bound; its class
#: (``LOSS_RULES``) says which formula, on labels or on target rows.
LossRule = namedtuple("LossRule", "on_logits clip_epsilon")
#: The update's code (``table.UPDATES``), parameters and slots (flat views), and its
#: scalar arguments, one row per step; its class (``UPDATES``) says which update.
Update = namedtuple("Update", "code P S arguments")


def _variant(group: type, name: str, **facts) -> type:
    """A class of ``group``'s fields whose class attributes are facts the fused step's
    compile-time choices read (``jit.chosen_by_type``); module-level, so that compiled code
    typed by it can be cached."""
    cls = namedtuple(name, group._fields)
    for key, value in facts.items():
        setattr(cls, key, value)
    globals()[name] = cls
    return cls


Model.blas = Model.user = False
#: The Model class of each (any BLAS product, any user layer).
MODELS = {(False, False): Model, (True, False): _variant(Model, "BlasModel", blas=True, user=False),
          (False, True): _variant(Model, "UserModel", blas=False, user=True),
          (True, True): _variant(Model, "BlasUserModel", blas=True, user=True)}
NoDropouts = _variant(Dropouts, "NoDropouts", present=False)
Dropouts.present = True
#: The Update class of each update code.
UPDATES = {code: _variant(Update, "".join(w.title() for w in name.split("_")), code=code)
           for code, name in enumerate(UPDATES_BY_CODE)}
#: The LossRule class of each (categorical, softmax formula).
LOSS_RULES = {(categorical, softmax): _variant(
    LossRule, f"{'Categorical' if categorical else 'Sparse'}"
              f"{'Softmax' if softmax else 'Probability'}Loss",
    categorical=categorical, softmax=softmax)
    for categorical in (False, True) for softmax in (False, True)}
#: Which thread this is, of how many; how they split each affine op's kernel rows
#: (``splits[a, t]`` … ``splits[a, t + 1]`` − 1 are thread t's); their meeting place
#: (``sync.new``); the buffers they share: the workspace, per-sample losses, and the flat
#: gradient of each parameter of a user layer (empty for the others); and the number
#: under which the fit registered its user layers (``users.register``).
Threads = namedtuple("Threads", "thread count splits sync work sample_losses user_grads handle")


@njit
def any_blas(Ws):
    """Whether some kernel's products go through BLAS (the model is then a ``BlasModel``)."""
    found = False
    for a in range(len(Ws)):
        found |= uses_blas(Ws[a])
    return found


@inline
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


@inline
def _forward(data, rows, model, dropout, offset, blas, buffers, threads, meeting):
    """Every op's output for this thread's rows of the batch (samples ``rows`` of the
    data), in training mode (``offset``: steps since ``Epoch.first``, for the dropout
    masks). Rows are independent: threads share a batch by rows, except at a user layer,
    which thread 0 runs on the whole batch. Returns False if a partner thread never came."""
    outs, scales, dense_x, identity = buffers[0], buffers[2], buffers[5], buffers[6]
    ops = model.ops
    r0, r1 = _mine(len(rows), threads)
    mine, n, alive = rows[r0:r1], r1 - r0, True
    prev = dense_x[r0:r1]
    if ops[0, 0] != AFFINE or blas[ops[0, 1]]:
        gather(data.indptr, data.indices, data.values, mine, prev)
    for i in range(len(ops)):
        kind, arg = ops[i, 0], ops[i, 1]
        out = outs[i][r0:r1]
        if kind == AFFINE and blas[arg]:
            _blas_affine(model, prev, model.Ws[arg], model.bs[arg], out)
        elif kind == AFFINE and i == 0:
            _sparse_affine(data.indptr, data.indices, data.values, mine, model.Ws[arg],
                           model.bs[arg], out)
        elif kind == AFFINE:
            _affine(prev, identity[:n], model.Ws[arg], model.bs[arg], out)
        elif kind == ACTIVATE:
            _activate(prev, out, arg, model.parameters[i])
        elif kind == DROPOUT:
            _dropout_op(dropout, arg, offset, prev, r0, out, scales[i][r0:r1])
        elif kind == USER:
            alive = alive and _user_forward(model, threads, meeting, i, len(rows), buffers)
        else:
            raise ValueError("unknown op kind (see table.py)")
        prev = out
    return alive


@chosen_by_type
def _loss(z, data, rows, batch, loss, grad):
    """Per-sample losses of z (rows of a batch of ``batch``) against their targets; grad
    gets dL/dz of the batch mean. The formula is the one ``loss``'s class names."""
    rule = loss.instance_class
    if rule.categorical and rule.softmax:
        return lambda z, data, rows, batch, loss, grad: _categorical_softmax_cross_entropy(
            z, data.targets, rows, batch, grad)
    if rule.categorical:
        return lambda z, data, rows, batch, loss, grad: _categorical_probability_cross_entropy(
            z, data.targets, rows, batch, loss.clip_epsilon, grad)
    if rule.softmax:
        return lambda z, data, rows, batch, loss, grad: _softmax_cross_entropy(
            z, data.labels, rows, batch, grad)
    return lambda z, data, rows, batch, loss, grad: _probability_cross_entropy(
        z, data.labels, rows, batch, loss.clip_epsilon, grad)


@chosen_by_type
def _user_forward(model, threads, meeting, i, n, buffers):
    """Op i's user layer's forward on the whole batch of n (``users.user_forward``), by
    thread 0 once every thread's rows of its input are written; every thread then waits
    for its output. Returns False if a partner thread never came. (Nothing compiled for a
    model without user layers: its fused step stays as small, and as quick to compile.)"""
    if not model.instance_class.user:
        return lambda model, threads, meeting, i, n, buffers: True
    from tinynn.compiled.users import user_forward  # (Numba's objmode: only if needed)

    def forward(model, threads, meeting, i, n, buffers):
        outs, dense_x = buffers[0], buffers[5]
        alive = _meet(threads, meeting)
        if alive and threads.thread == 0:
            x = outs[i - 1][:n] if i > 0 else dense_x[:n]
            user_forward(threads.handle, model.ops[i, 1], x, outs[i][:n])
        return alive and _meet(threads, meeting)

    return forward


@chosen_by_type
def _user_backward(model, update, i, first, args, threads, meeting, n, buffers, finite):
    """Op i's user layer's backward by thread 0 (``users.user_backward``: its dx, none for
    the ``first`` op with weights, and its ``grads`` into ``threads.user_grads``), then the
    update of each of its parameters; every thread then waits for its dx. Returns (whether
    every partner came, ``finite`` and whether every updated value is finite)."""
    if not model.instance_class.user:
        return lambda model, update, i, first, args, threads, meeting, n, buffers, finite: (
            True, finite)
    from tinynn.compiled.users import user_backward

    def backward(model, update, i, first, args, threads, meeting, n, buffers, finite):
        grads, u = buffers[1], model.ops[i, 1]
        if threads.thread == 0:
            user_backward(threads.handle, u, grads[i][:n],
                          grads[i - 1][:n] if i > first else grads[i][:0])
            for p in range(model.users[u, 1], model.users[u, 1] + model.users[u, 2]):
                g = threads.user_grads[p]
                finite &= update_with(update, update.P[p], g, update.S, p, 0, len(g), args)
        return _meet(threads, meeting), finite

    return backward


@chosen_by_type
def _blas_affine(model, x, W, b, z):
    """``_affine_blas`` in a model with a BLAS-sized kernel; in any other, nothing (its
    ops never ask), and no BLAS call compiled."""
    if model.instance_class.blas:
        return lambda model, x, W, b, z: _affine_blas(x, W, b, z)
    return lambda model, x, W, b, z: None


@chosen_by_type
def _blas_backward(model, x, dz, W, dW, db, dx, need_dx):
    """``_weight_grads_blas`` (and ``_input_grads_blas`` if ``need_dx``), as ``_blas_affine``."""
    if not model.instance_class.blas:
        return lambda model, x, dz, W, dW, db, dx, need_dx: None

    def backward(model, x, dz, W, dW, db, dx, need_dx):
        _weight_grads_blas(x, dz, dW, db)
        if need_dx:
            _input_grads_blas(dz, W, dx)

    return backward


@chosen_by_type
def _dropout_op(dropout, arg, offset, x, r0, y, s):
    """Dropout op ``arg`` on these rows (``_dropout``); nothing compiled for NoDropouts."""
    if not dropout.instance_class.present:
        return lambda dropout, arg, offset, x, r0, y, s: None
    return lambda dropout, arg, offset, x, r0, y, s: _dropout(
        x, dropout.rates[arg], dropout.seeds[arg], dropout.counters[arg] + offset, r0, y, s)


@inline
def _batch_mean(sample_losses, n):
    """The mean of the first n per-sample losses, as Keras reports it: each loss rounded
    to float32, their sum, divided by n, rounded to float32. The sum is in float64, where
    it is exact for any losses within ~2^30/n of each other: so it does not depend on the
    order the vector lanes add in (``reassoc``), and the step run as Python
    (``meanwhile.py``) gets the same number. A loop rather than ``.mean()``: numba keeps
    its array methods in a module whose loading imports SciPy's linalg, ~0.3 s of a
    process's first fit even with every kernel compiled already."""
    total = 0.0
    for r in range(n):
        total += np.float64(np.float32(sample_losses[r]))
    return np.float32(total / n)


@inline
def _batch(epoch, step):
    """The samples of step ``step``: the last step of an epoch takes what remains."""
    size = epoch.batch_size
    return epoch.order[step * size : min((step + 1) * size, len(epoch.order))]


@inline
def _mine(n, threads):
    """This thread's rows r0 … r1 − 1 of a batch of n."""
    return n * threads.thread // threads.count, n * (threads.thread + 1) // threads.count


@inline
def _meet(threads, meeting):
    """Wait until every thread has reached the next meeting (``meeting[0]`` counts them);
    False if a partner thread never came (``sync.abort``)."""
    meeting[0] += 1
    return barrier(threads.sync, threads.thread, threads.count, meeting[0])


@njit
def train_steps(data, epoch, model, dropout, loss, update, threads):
    """Run steps ``epoch.first`` … ``epoch.last`` − 1 of an epoch, as thread
    ``threads.thread`` of ``threads.count`` (each thread calls this with the same
    arguments; the groups are described where they are defined, above).

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
        (the epoch's loss sum continued by these steps' per-sample losses, number
        classified right, samples seen, the step it stopped at, how it ended):
        FINISHED after the last step, or the step whose loss (LOSS_NOT_FINITE) or
        update (WEIGHTS_NOT_FINITE) was not finite, or ABORTED (a partner thread
        failed to start). After a bad update the weights are partly updated: the
        caller restores them. The sums count only the steps before the stop; the
        number classified right is counted by thread 0.
    """
    buffers = carve(threads.work, model, epoch.batch_size)
    blas = blas_in_training(model.ops, model.Ws)
    meeting = np.zeros(1, np.int64)
    loss_sum, correct, seen, touched = epoch.loss_sum, 0, 0, 0.0
    step, fault = epoch.first, FINISHED
    while step < epoch.last and fault == FINISHED:
        # Ask for the next batch's rows now, so that they are in cache when it starts.
        after = _batch(epoch, step + 1) if step + 1 < epoch.last else epoch.order[:0]
        a0, a1 = _mine(len(after), threads)
        touched += _touch_rows(data.indptr, data.indices, data.values, after[a0:a1])
        fault, batch_loss, right, n = _step(data, epoch, step, model, dropout, loss, update,
                                            threads, buffers, blas, meeting)
        if fault == FINISHED:
            loss_sum += np.float64(batch_loss) * n  # (as numba types it; run as Python too)
            correct += right
            seen += n
            step += 1
    return loss_sum + 0 * touched, correct, seen, step, fault


@inline
def _step(data, epoch, step, model, dropout, loss, update, threads, buffers, blas, meeting):
    """This thread's part of one step (see ``train_steps``): forward, loss, backward and
    update. Returns (how it ended, the batch's mean loss, number right, batch size)."""
    outs, grads = buffers[0], buffers[1]
    rows = _batch(epoch, step)
    n = len(rows)
    r0, r1 = _mine(n, threads)
    alive = _forward(data, rows, model, dropout, step - epoch.first, blas, buffers, threads,
                     meeting)
    n_ops = len(model.ops)
    top = n_ops - 2 if loss.on_logits else n_ops - 1  # the op whose output the loss reads
    losses = _loss(outs[top][r0:r1], data, rows[r0:r1], n, loss, grads[top][r0:r1])
    for r in range(r1 - r0):
        threads.sample_losses[r0 + r] = losses[r]
    fault = FINISHED if alive and _meet(threads, meeting) else ABORTED
    batch_loss, right = np.float32(0), 0
    if fault == FINISHED:
        batch_loss = _batch_mean(threads.sample_losses, n)
        if not _finite(batch_loss):
            fault = LOSS_NOT_FINITE
    if fault == FINISHED:
        if threads.thread == 0:
            right = _correct(outs[n_ops - 1][:n], data.labels, rows)
        args = update.arguments[step - epoch.first]
        fault = _backward(data, rows, top, model, update, args, threads, buffers, blas,
                          meeting)
    return fault, batch_loss, right, n


@inline
def _backward(data, rows, top, model, update, args, threads, buffers, blas, meeting):
    """Backward, op by op from ``top`` down to the first op with weights (affine or a
    user's), with each affine op's update once every thread has read its old weights
    (a user layer's, by thread 0, right after its backward); then the step's last meeting.
    Returns FINISHED, WEIGHTS_NOT_FINITE (some thread's update was not finite) or ABORTED."""
    outs, grads, scales = buffers[0], buffers[1], buffers[2]
    ops = model.ops
    r0, r1 = _mine(len(rows), threads)
    first_affine = 0  # (the first op with weights: below it, no gradient is needed)
    while ops[first_affine, 0] != AFFINE and ops[first_affine, 0] != USER:
        first_affine += 1
    finite, met, alive, pending = True, True, True, -1
    i = top
    while i >= first_affine and alive:
        kind, arg = ops[i, 0], ops[i, 1]
        if kind == ACTIVATE:
            _activate_backward(grads[i][r0:r1], outs[i][r0:r1], arg, model.parameters[i],
                               grads[i - 1][r0:r1])
            met = False
        elif kind == DROPOUT:
            _scale(grads[i][r0:r1], scales[i][r0:r1], grads[i - 1][r0:r1])
            met = False
        elif kind != AFFINE and kind != USER:
            raise ValueError("unknown op kind (see table.py)")
        else:  # an op with weights: its gradients read every thread's rows
            if not met:
                alive = _meet(threads, meeting)
            if alive and pending >= 0:
                finite &= _update_part(update, model, pending, args, threads, buffers)
            if alive and kind == USER:
                alive, finite = _user_backward(model, update, i, first_affine, args, threads,
                                               meeting, len(rows), buffers, finite)
                pending, met = -1, True
            elif alive:
                _affine_backward(data, rows, i, first_affine, model, threads, buffers, blas)
                pending, met = arg, False
                if i == first_affine:  # nobody reads these weights again in this step
                    finite &= _update_part(update, model, arg, args, threads, buffers)
        i -= 1
    # Every thread's updates are done, and all finite, before the next step.
    if alive:
        publish(threads.sync, threads.thread, threads.count, 1 if finite else 0)
        alive = _meet(threads, meeting)
    if alive:
        for t in range(threads.count):
            finite &= read(threads.sync, t, threads.count) == 1
    return ABORTED if not alive else FINISHED if finite else WEIGHTS_NOT_FINITE


@inline
def _scale(dout, s, dx):
    """Dropout's backward on this thread's rows: dx = dout · s (a ufunc into dx: one loop
    compiled, and NumPy's own when the step runs as Python, ``meanwhile.py``)."""
    np.multiply(dout, s, dx)


@inline
def _affine_backward(data, rows, i, first_affine, model, threads, buffers, blas):
    """Affine op i's part of this thread: its rows of dW (thread 0: db), and its rows of
    the batch's dx (none for the first affine op: nobody reads it)."""
    outs, grads, dWs, dbs, dense_x, identity = (buffers[0], buffers[1], buffers[3],
                                                buffers[4], buffers[5], buffers[6])
    arg, n, t = model.ops[i, 1], len(rows), threads.thread
    r0, r1 = _mine(n, threads)
    W, dW = model.Ws[arg], dWs[arg]
    k0, k1 = threads.splits[arg, t], threads.splits[arg, t + 1]
    db = dbs[arg] if t == 0 else dbs[arg][:0]
    inp = outs[i - 1][:n] if i > 0 else dense_x[:n]
    whole = grads[i][:n]
    if blas[arg]:  # (run by one thread: see engine.training_threads)
        _blas_backward(model, inp, whole, W, dW, dbs[arg], grads[i - 1][:n], i > first_affine)
    elif i == 0:
        _sparse_weight_grads(data.indptr, data.indices, data.values, rows, whole, dW, db,
                             k0, k1)
    else:
        _weight_grads(inp[:, k0:k1], identity[:n], whole, dW[k0:k1], db)
        if i > first_affine:
            _input_grads(grads[i][r0:r1], W, grads[i - 1][r0:r1])


@inline
def _update_part(update, model, a, args, threads, buffers):
    """This thread's part of affine op a's update: its rows of the kernel, and (thread 0)
    the bias. Returns whether every updated value is finite."""
    dW, db = buffers[3][a], buffers[4][a]
    p, t, u = model.param_index[a], threads.thread, dW.shape[1]
    lo, hi = threads.splits[a, t] * u, threads.splits[a, t + 1] * u  # in the flat views
    finite = update_with(update, update.P[p][lo:hi], dW.reshape(-1)[lo:hi], update.S, p, lo,
                         hi, args)
    if t == 0 and len(db):
        finite &= update_with(update, update.P[p + 1], db, update.S, p + 1, 0, len(db), args)
    return finite
