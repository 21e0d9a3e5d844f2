"""The model's forward pass at inference, compiled: ``predict`` and ``evaluate`` of a model
of built-in parts, on the same ops and loops as the fused training step (``fused.py``)."""

from __future__ import annotations

import numpy as np

from tinynn.compiled.fused import _blas_affine
from tinynn.compiled.jit import inline, njit
from tinynn.compiled.loops import _activate, _affine, _compact, _sparse_row_affine, uses_blas
from tinynn.compiled.table import ACTIVATE, AFFINE


@inline
def _copy_rows(src, dst, start, n):
    """dst[start : start + n] = src[:n], as loops: assigning an array to a slice makes
    Numba compile its shape-mismatch message, seconds of first-run compile time."""
    for r in range(n):
        for j in range(src.shape[1]):
            dst[start + r, j] = src[r, j]


@njit
def forward_rows(x, first, last, model, out_z, out_a):
    """The logits (input of a final activation, else the output) and outputs of rows
    first … last − 1 of x (dense, (N, k)), at inference (``model``: a ``Model`` with no
    dropout op).

    Each row's non-zeros are compacted before a first affine op, so that op
    does the work of a sparse product without a sparse copy of x. Rows are
    independent, and the kernel releases the GIL, so threads can share the rows.
    Returns whether every input was finite (checked here, while each row is in
    cache, rather than in a separate pass over x).
    """
    chunk = 64
    ops, Ws, bs = model.ops, model.Ws, model.bs
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
                _blas_affine(model, prev, Ws[arg], bs[arg], out)
            elif kind == AFFINE and i == 0:
                for r in range(n):
                    count = _compact(x[start + r], indices, values)
                    _sparse_row_affine(indices, values, 0, count, Ws[arg], bs[arg], out[r])
            elif kind == AFFINE:
                _affine(prev, identity[:n], Ws[arg], bs[arg], out)
            elif kind == ACTIVATE:
                _activate(prev, out, arg, model.parameters[i])
            else:
                raise ValueError("unknown op kind at inference (see table.py)")
            prev = out
        _copy_rows(outs[top], out_z, start, n)
        _copy_rows(prev, out_a, start, n)
    return check == zero
