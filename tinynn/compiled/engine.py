"""The compiled path: hands a model of built-in parts to ``kernels.fused``.

Why: called layer by layer, the compiled kernels spend more time crossing from
Python than computing (a step of the notebook's simple model is ~20 µs of
arithmetic). So with the ``numba`` backend, when every layer, the loss and the
optimizer are built-in, ``fit`` runs many whole steps per compiled call and
``evaluate``/``predict`` run the forward pass over all rows in one. Otherwise
they go step by step (``training.StepRunner``), which computes the same thing.

The model becomes a table of ops (see ``kernels.fused``). The kernels work on
*views* of the layers' parameters and of the optimizer's state, so both stay
where they belong and are updated in place. Numba is imported only when this
path first runs, so ``import tinynn`` compiles nothing.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from tinynn import activations, layers, losses, optimizers
from tinynn.backend import kernels

#: Below this many rows per thread, starting threads costs more than it saves.
MIN_ROWS_PER_THREAD = 2048
#: Training threads by default: one per core, up to this many (measured on two cores;
#: any number computes the same weights).
MAX_TRAINING_THREADS = 2
THREADS_VAR = "TINYNN_THREADS"


def _fused():
    from tinynn.backend import import_kernels

    return import_kernels("tinynn.compiled.fused")


def _sync():
    from tinynn.backend import import_kernels

    return import_kernels("tinynn.compiled.sync")


def _announce_compiling(kernel) -> None:
    """Say so, once, when a fused kernel is about to compile for the first time on this
    machine (nothing on disk yet): the first fit after install waits for it."""
    try:
        first = not kernel.overloads and not os.path.exists(kernel._cache._cache_file._index_path)
    except AttributeError:  # numba's internals moved: say nothing rather than fail
        return
    if first and not _announce_compiling.done:
        _announce_compiling.done = True
        print("tinynn: compiling kernels, first run only (they are kept on disk)…",
              file=sys.stderr, flush=True)


_announce_compiling.done = False


#: The layers the fused kernels can run (as ops; see ``Plan._add``).
FUSABLE = (layers.Dense, layers.Activation, layers.Dropout, layers.Flatten)


def _is_builtin(obj, registry: dict) -> bool:
    """Exactly a built-in class: a user's subclass may have changed the math."""
    return registry.get(type(obj).__name__) is type(obj)


class Plan:
    """A model's layers as fused ops: the table, the Dense layers and the Dropout layers."""

    def __init__(self, model, training: bool):
        self.rows, self.dense, self.dropouts = [], [], []
        width = int(np.prod(model.leaf_layers[0].input_shape))
        for layer in model.leaf_layers:
            self._add(layer, width, training)
            width = int(np.prod(layer.compute_output_shape(layer.input_shape)))
        self.ops = np.array(self.rows, np.int64).reshape(-1, 3)
        self.Ws = tuple(d.params["kernel"] for d in self.dense)
        empty = np.empty(0, np.float32)
        self.bs = tuple(d.params.get("bias", empty) for d in self.dense)
        last = model.leaf_layers[-1]
        #: The output is a sigmoid or softmax's, whose logits a loss may read: decided by
        #: the last layer, as the step-by-step path decides it (an identity layer after the
        #: activation keeps no logits, even where it makes no op here).
        self.has_logits = (isinstance(last, (layers.Dense, layers.Activation))
                           and last.activation in activations.KEEPS_LOGITS)

    def _add(self, layer, width: int, training: bool) -> None:
        codes, fused = kernels().CODES, _fused()
        if isinstance(layer, layers.Dense):
            _check_shape(layer, "kernel", (width, layer.units))
            if layer.use_bias:
                _check_shape(layer, "bias", (layer.units,))
            self.rows.append((fused.AFFINE, len(self.dense), layer.units))
            self.dense.append(layer)
            width = layer.units
        if isinstance(layer, (layers.Dense, layers.Activation)) and layer.activation != "linear":
            self.rows.append((fused.ACTIVATE, codes[layer.activation], width))
        if isinstance(layer, layers.Dropout) and training and layer.rate > 0:
            self.rows.append((fused.DROPOUT, len(self.dropouts), width))
            self.dropouts.append(layer)


def _check_shape(layer, key: str, shape: tuple) -> None:
    """The kernels index arrays by these shapes: a parameter replaced since ``build`` must
    still have them (else reads and writes would go out of bounds)."""
    got = layer.params.get(key)
    if got is None or got.shape != shape or got.dtype != np.float32 \
            or not got.flags.c_contiguous:
        raise ValueError(f"layer {layer.name!r}: params[{key!r}] must be a C-contiguous float32 "
                         f"array of shape {shape}, got "
                         f"{None if got is None else (got.dtype, got.shape)}")


def plan(model, training: bool) -> Plan | None:
    """The model as fused ops, or None if the compiled path cannot run it.

    It runs models whose layers are all built-in, with float32 weights and at
    least one Dense layer (``training.compiled_plan`` asks, on the numba backend); for
    training, the loss and the optimizer must be built-in too.
    """
    if not model.built:
        return None
    leaves = model.leaf_layers
    if not all(_is_builtin(layer, layers.LAYERS) and isinstance(layer, FUSABLE)
               for layer in leaves):
        return None
    if not any(isinstance(layer, layers.Dense) for layer in leaves):
        return None
    if any(w.dtype != np.float32 or not w.flags.c_contiguous for w in model.weights):
        return None
    if training and not (_is_builtin(model.optimizer, optimizers.OPTIMIZERS)
                         and _is_builtin(model.loss, losses.LOSSES)):
        return None
    return Plan(model, training)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on
    except AttributeError:  # (not on every system)
        return os.cpu_count() or 1


def training_threads(fused_plan: Plan) -> int:
    """How many threads share each compiled training step: ``$TINYNN_THREADS`` if set,
    else one per core (at most ``MAX_TRAINING_THREADS``); one for a model whose products
    go through BLAS, which already uses every core."""
    value = os.environ.get(THREADS_VAR, "").strip()
    if value and (not value.isdigit() or not 1 <= int(value) <= 64):
        raise ValueError(f"${THREADS_VAR}={value!r}: expected a whole number of threads "
                         f"from 1 to 64, or unset for one per core")
    if _fused().blas_in_training(fused_plan.ops, fused_plan.Ws).any():
        return 1
    return int(value) if value else min(_cores(), MAX_TRAINING_THREADS)


def _column_counts(indices: np.ndarray, k: int) -> np.ndarray:
    """How many non-zeros each of k columns has, counted a slice at a time (bincount
    copies its input to 64-bit integers: whole, that would be 75 MB more for MNIST)."""
    counts = np.zeros(k, np.int64)
    for start in range(0, len(indices), 1 << 20):
        counts += np.bincount(indices[start : start + (1 << 20)], minlength=k)[:k]
    return counts


def _rows_2d(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)


class CompiledRunner:
    """Runs the steps of ``fit`` for a model of built-in parts, many per compiled call."""

    def __init__(self, model, fused_plan: Plan):
        self.model, self.plan = model, fused_plan
        opt = model.optimizer
        opt.check_variables(model.weights)  # slots shaped like the weights, as the loops read
        weights = model.weights
        self.P = tuple(w.reshape(-1) for w in weights)
        empty = np.empty(0, np.float32)
        names = opt.slot_names
        self.S = tuple(
            tuple(s[names[i]].reshape(-1) if i < len(names) else empty for s in opt.slots)
            for i in range(3))
        starts = np.cumsum([0] + [len(layer.params) for layer in model.leaf_layers])
        where = {id(layer): int(s) for layer, s in zip(model.leaf_layers, starts)}
        self.param_index = np.array([where[id(d)] for d in fused_plan.dense], np.int64)
        self.update = kernels().UPDATES.index(opt.kernel)
        loss = model.loss
        formula = loss.formula(fused_plan.has_logits)
        self.on_logits = formula == "output_logits"
        self.softmax_formula = formula != "probabilities"
        self.categorical = isinstance(loss, losses.CategoricalCrossentropy)
        self.clip_epsilon = np.float32(loss.epsilon)
        d = fused_plan.dropouts
        self.rates = np.array([layer.rate for layer in d], np.float64)
        self.seeds = np.array([layer.seed for layer in d], np.int64)
        self.threads = training_threads(fused_plan)
        self._buffers = {}

    def _parts(self, x: tuple, batch_size: int) -> tuple:
        """The shared buffers of a step of ``batch_size``, and how the threads split each
        affine op's kernel rows (``splits``, see ``fused.train_steps``): evenly, except the
        first layer's, where a row's work grows with how often its input is non-zero."""
        if batch_size not in self._buffers:
            p, t, fused = self.plan, self.threads, _fused()
            indptr, indices, _ = x
            splits = np.zeros((len(p.Ws), t + 1), np.int64)
            for a, W in enumerate(p.Ws):
                cost = np.ones(len(W))
                if p.ops[0, 0] == fused.AFFINE and p.ops[0, 1] == a:
                    cost += _column_counts(indices[: indptr[-1]], len(W)) * batch_size \
                        / max(len(indptr) - 1, 1)
                total = np.concatenate([[0], np.cumsum(cost)])
                # Each part starts on a multiple of 64 weights: the update loops then treat
                # every weight as one thread would (in their vectorised body; a loop's
                # scalar tail may fuse a multiply-add differently).
                rows = 64 // math.gcd(W.shape[1], 64)
                ends = np.searchsorted(total, np.linspace(0, total[-1], t + 1))
                splits[a] = np.clip(np.round(ends / rows) * rows, 0, len(W))
                splits[a, 0], splits[a, -1] = 0, len(W)
            work = fused.workspace(p.ops, p.Ws, p.bs, batch_size)
            self._buffers = {batch_size: (work, np.empty(batch_size), splits)}
        return self._buffers[batch_size]

    def prepare(self, x: np.ndarray, y: np.ndarray) -> tuple:
        """The data as the kernel reads it: x as compressed sparse rows (made once per fit),
        class labels, and target rows for a categorical loss."""
        labels = y if y.ndim == 1 else np.argmax(y, axis=1)
        targets = y if y.ndim == 2 else np.empty((1, 1), np.float32)
        return kernels()._sparse_rows(_rows_2d(x)), labels, targets

    def run(self, data: tuple, order, batch_size: int, first: int, last: int,
            loss_sum: float = 0.0) -> tuple:
        """Steps first … last − 1; returns (loss_sum continued by their losses, correct, seen,
        step stopped at, fault)."""
        x, labels, targets = data
        opt, p = self.model.optimizer, self.plan
        steps = np.arange(opt.iterations + 1, opt.iterations + 1 + last - first)
        # One row per step (arguments that hold for every step are repeated): the kernel
        # reads row s at step s, so the table must have exactly last − first rows.
        columns = np.broadcast_arrays(steps, *opt.update_arguments(steps))[1:]
        arguments = np.column_stack(columns).astype(np.float64)
        if arguments.shape[0] != last - first:  # (never: the kernel would read past it)
            raise RuntimeError(f"{type(opt).__name__}.update_arguments gave "
                               f"{arguments.shape[0]} rows for {last - first} steps")
        counters = np.array([int(layer.state["step"][0]) for layer in p.dropouts], np.int64)
        work, sample_losses, splits = self._parts(x, batch_size)
        kernel = _fused().train_steps
        _announce_compiling(kernel)
        sync = _sync().new(self.threads)

        def thread(t: int) -> tuple:
            try:
                return kernel(
                    x, labels, targets, order, batch_size, first, last, float(loss_sum),
                    p.ops, p.Ws, p.bs, self.param_index, self.rates, self.seeds, counters,
                    self.on_logits, self.categorical, self.softmax_formula, self.clip_epsilon,
                    self.update, self.P, *self.S, arguments,
                    work, sample_losses, t, self.threads, splits, sync,
                )  # fmt: skip
            except BaseException:
                _sync().abort(sync)  # the other threads stop waiting for this one
                raise

        others = []
        try:
            for t in range(1, self.threads):
                others.append(_training_pool().submit(thread, t))
            result = thread(0)
        except BaseException:
            _sync().abort(sync)  # (also when a partner could not even be started)
            raise
        finally:
            wait(others)  # every partner has stopped touching the weights
        for f in others:
            f.result()  # (re-raises a partner thread's error)
        done = result[3] - first
        opt.iterations += done
        for layer in p.dropouts:
            layer.state["step"][0] += done
        return result


def forward_all(fused_plan: Plan, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(logits, outputs, whether x was all finite) for every row of x, at inference.

    Logits and outputs have shape (n, c); the logits are the input of a final
    activation (else the outputs).

    Rows are independent, so large inputs are split between threads (one per
    core): each runs the compiled kernel, which releases the GIL, on its own
    rows. The results do not depend on the split.
    """
    fused = _fused()
    _announce_compiling(fused.forward_rows)
    p = fused_plan
    x = _rows_2d(x)
    n, c = len(x), int(p.ops[-1, 2])
    out_z, out_a = np.empty((n, c), np.float32), np.empty((n, c), np.float32)
    workers = min(_cores(), max(1, n // MIN_ROWS_PER_THREAD))
    bounds = np.linspace(0, n, workers + 1).astype(int)

    def work(i: int) -> bool:
        return fused.forward_rows(x, int(bounds[i]), int(bounds[i + 1]), p.ops, p.Ws, p.bs,
                                  out_z, out_a)

    finite = work(0) if workers == 1 else all(_pool().map(work, range(workers)))
    return out_z, out_a, finite


def _training_pool() -> ThreadPoolExecutor:
    """The partner threads of training steps, apart from predict's. A partner must start
    at once (the others wait for it at the first meeting): the pool may grow to a thread
    per partner of every fit running at the same time (it makes threads only on demand)."""
    return _pools(os.getpid(), "tinynn-train", 256)


def _pool() -> ThreadPoolExecutor:
    """The threads that share predict's rows."""
    return _pools(os.getpid(), "tinynn", _cores())


@functools.cache
def _pools(pid: int, name: str, workers: int) -> ThreadPoolExecutor:
    """One pool per name for the life of the process, made on first use; by process id,
    because a child made by fork inherits the pool but not its threads (its tasks would
    wait for ever, and a training step's threads with them)."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name)
