"""The fast path of ``Sequential``: hands a stack of Dense layers to ``kernels.fused``.

Why: called layer by layer, the compiled kernels spend more time crossing from
Python than computing (a step of the notebook's simple model is ~20 µs of
arithmetic). So with the ``numba`` backend, when every layer is a ``Dense``
(after any leading ``Flatten``), ``fit`` runs many whole steps per compiled call
and ``evaluate``/``predict`` run the forward pass over all rows in one.
Otherwise they go layer by layer, which computes the same thing.

The kernels work on *views* of the layers' parameters and of the optimizer's
state, so both stay where they belong and are updated in place. Numba is
imported only when this path first runs, so ``import tinynn`` compiles nothing.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tinynn import optimizers
from tinynn.activations import KEEPS_LOGITS
from tinynn.backend import get_backend, kernels
from tinynn.layers import Dense, Flatten

#: Below this many rows per thread, starting threads costs more than it saves.
MIN_ROWS_PER_THREAD = 2048


def dense_layers(model) -> list[Dense] | None:
    """The model's Dense layers if the fused path can run it, else None."""
    if get_backend() != "numba" or not model.built:
        return None
    layers = list(model.layers)
    while layers and isinstance(layers[0], Flatten):
        layers.pop(0)
    if not layers or not all(isinstance(layer, Dense) for layer in layers):
        return None
    if any(p.dtype != np.float32 for layer in layers for p in layer.params.values()):
        return None
    return layers


def _fused():
    from tinynn.kernels import fused

    return fused


def _stack(layers: list[Dense]):
    """The layers as the kernels take them: kernels, biases (empty if none), activation codes."""
    empty = np.empty(0, np.float32)
    return (
        tuple(layer.params["kernel"] for layer in layers),
        tuple(layer.params.get("bias", empty) for layer in layers),
        np.array([kernels().CODES[layer.activation] for layer in layers], np.int64),
    )


def _rows_2d(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)


class FusedTrainer:
    """Runs the steps of ``fit`` for a model of Dense layers, many per compiled call."""

    def __init__(self, model, layers: list[Dense]):
        self.model = model
        self.Ws, self.bs, self.codes = _stack(layers)
        opt = model.optimizer
        if opt.slots is None:
            opt.build(model.weights)
        # Slots come in model.weights order: kernel, bias, kernel, bias, …
        slots = iter(opt.slots)
        per_layer = [{key: next(slots) for key in layer.params} for layer in layers]
        empty = np.empty(0, np.float32)

        def state(name: str, key: str):
            return tuple(s[key][name] if key in s else empty for s in per_layer)

        fused = _fused()
        if isinstance(opt, optimizers.Adam):
            self.kind = fused.ADAM
            self.s1W, self.s1b = state("m", "kernel"), state("m", "bias")
            self.s2W, self.s2b = state("v", "kernel"), state("v", "bias")
            self.hyper = (opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon)
        elif isinstance(opt, optimizers.SGD):
            self.kind = fused.SGD
            self.s1W, self.s1b = state("velocity", "kernel"), state("velocity", "bias")
            self.s2W, self.s2b = self.s1W, self.s1b
            self.hyper = (opt.learning_rate, opt.momentum, 0.0, 0.0)
        else:
            raise TypeError(f"no fused update for {type(opt).__name__}")
        loss = model.loss
        self.on_logits = loss.use_output_logits and layers[-1].activation in KEEPS_LOGITS
        self.softmax_formula = self.on_logits or loss.from_logits
        self.clip_epsilon = np.float32(loss.epsilon)

    def sparse_inputs(self, x: np.ndarray):
        """x as compressed sparse rows, the form the first layer reads (made once per fit)."""
        return kernels()._sparse_rows(_rows_2d(x))

    def run(self, x, y, order, batch_size: int, first: int, last: int) -> tuple:
        """Steps first … last − 1 on ``sparse_inputs(x)``.

        Returns (loss sum, correct, seen, step stopped at, fault code): see
        ``kernels.fused.train_steps``.
        """
        opt = self.model.optimizer
        lr, b1, b2, eps = self.hyper
        result = _fused().train_steps(
            x, y, order, batch_size, first, last,
            self.Ws, self.bs, self.codes, self.s1W, self.s1b, self.s2W, self.s2b,
            self.on_logits, self.softmax_formula, self.clip_epsilon,
            self.kind, lr, b1, b2, eps, opt.iterations,
        )  # fmt: skip
        opt.iterations += result[3] - first
        return result


def forward_all(layers: list[Dense], x: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(z of the last layer, outputs, whether x was all finite) for every row of x.

    z and outputs have shape (n, c).

    Rows are independent, so large inputs are split between threads (one per
    core): each runs the compiled kernel, which releases the GIL, on its own
    rows. The results do not depend on the split.
    """
    fused = _fused()
    Ws, bs, codes = _stack(layers)
    x = _rows_2d(x)
    n, c = len(x), layers[-1].units
    out_z, out_a = np.empty((n, c), np.float32), np.empty((n, c), np.float32)
    workers = min(os.cpu_count() or 1, max(1, n // MIN_ROWS_PER_THREAD))
    bounds = np.linspace(0, n, workers + 1).astype(int)

    def work(i: int) -> bool:
        return fused.forward_rows(x, int(bounds[i]), int(bounds[i + 1]), Ws, bs, codes,
                                  out_z, out_a)

    finite = work(0) if workers == 1 else all(_pool().map(work, range(workers)))
    return out_z, out_a, finite


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """One pool of threads for the life of the process, made on first use."""
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="tinynn")
