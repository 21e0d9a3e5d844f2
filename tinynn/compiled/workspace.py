"""The buffers of a fused training step (``fused.py``), laid out in one flat float32 array.

Why one array: the threads of a step share every buffer (each writes its own rows or
kernel rows, and reads the others' after a meeting), so they are views of one array
that ``engine.CompiledRunner`` makes once per batch size and hands to every thread.
"""

from __future__ import annotations

import numpy as np

from tinynn.compiled.jit import inline, njit
from tinynn.compiled.table import AFFINE, DROPOUT, USER


@inline
def gather(indptr, indices, values, rows, out):
    """Dense rows out[r] = x[rows[r]] from compressed sparse rows (a row at a time, so that
    the step run as Python, ``meanwhile.py``, does it in NumPy)."""
    out[:] = 0
    for r in range(len(rows)):
        start, end = indptr[rows[r]], indptr[rows[r] + 1]
        out[r][indices[start:end]] = values[start:end]


@inline
def input_width(model):
    """The width of the model's input: rows of the first kernel, a first user layer's input
    width, or the first op's width."""
    kind = model.ops[0, 0]
    if kind == AFFINE:
        return model.Ws[0].shape[0]
    return model.users[model.ops[0, 1], 0] if kind == USER else model.ops[0, 2]


@inline
def layout(model, batch_size):
    """Where each buffer of a training step starts in the flat workspace: per op its
    output, its gradient and its dropout scales; per affine op dW and db; then the
    batch's dense inputs; the last entry is the total size."""
    ops, Ws, bs = model.ops, model.Ws, model.bs
    n_ops, n_affine = len(ops), len(Ws)
    sizes = np.zeros(3 * n_ops + 2 * n_affine + 1, np.int64)
    for i in range(n_ops):
        sizes[i] = sizes[n_ops + i] = batch_size * ops[i, 2]
        if ops[i, 0] == DROPOUT:
            sizes[2 * n_ops + i] = batch_size * ops[i, 2]
    for a in range(n_affine):
        sizes[3 * n_ops + a] = Ws[a].size
        sizes[3 * n_ops + n_affine + a] = len(bs[a])
    sizes[-1] = batch_size * input_width(model)
    starts = np.zeros(len(sizes) + 1, np.int64)
    for i in range(len(sizes)):
        starts[i + 1] = starts[i] + sizes[i]
    return starts


@njit
def workspace(model, batch_size):
    """The buffers of a training step, flat: made once, shared by the threads of a call;
    starting on a 64-byte boundary (a cache line) whether numba or NumPy (16 bytes: the
    step run as Python, ``meanwhile.py``) allocates it."""
    size = layout(model, batch_size)[-1]
    raw = np.empty(size + 16, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip : skip + size]


@inline
def carve(work, model, batch_size):
    """The workspace's buffers as arrays (views: every thread sees the same memory), and
    the row numbers 0 … batch_size − 1."""
    ops, Ws = model.ops, model.Ws
    at = layout(model, batch_size)
    n, a = len(ops), len(Ws)

    def rows(i, height, width):
        return work[at[i] : at[i + 1]].reshape(height, width)

    outs = [rows(i, batch_size, ops[i, 2]) for i in range(n)]
    grads = [rows(n + i, batch_size, ops[i, 2]) for i in range(n)]
    scales = [rows(2 * n + i, batch_size if ops[i, 0] == DROPOUT else 0, ops[i, 2])
              for i in range(n)]
    dWs = [rows(3 * n + j, Ws[j].shape[0], Ws[j].shape[1]) for j in range(a)]
    dbs = [work[at[3 * n + a + j] : at[3 * n + a + j + 1]] for j in range(a)]
    dense_x = rows(3 * n + 2 * a, batch_size, input_width(model))
    return outs, grads, scales, dWs, dbs, dense_x, np.arange(batch_size)
