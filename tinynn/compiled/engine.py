"""The compiled path: hands a model of built-in parts to ``kernels.fused``.

Why: called layer by layer, the compiled kernels spend more time crossing from
Python than computing (a step of the notebook's simple model is ~20 µs of
arithmetic). So with the ``numba`` backend, when every layer, the loss and the
optimizer are built-in, ``fit`` runs many whole steps per compiled call and
``evaluate``/``predict`` run the forward pass over all rows in one; ``fit`` does so
too with a user's layer among them, calling its forward and backward from the step
(``users.py``). Otherwise they go step by step (``training.StepRunner``), which
computes the same thing.

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

from tinynn import activations, layers, optimizers
from tinynn.backend import import_kernels
from tinynn.compiled import table

#: Below this many rows per thread, starting threads costs more than it saves.
MIN_ROWS_PER_THREAD = 2048
#: Training threads by default: one per core, up to this many (measured on two cores;
#: any number computes the same weights).
MAX_TRAINING_THREADS = 2
THREADS_VAR = "TINYNN_THREADS"


def _compiled(name: str):
    """A module of this package, imported on first use (it imports Numba)."""
    return import_kernels(f"tinynn.compiled.{name}")


def _fused():
    return _compiled("fused")


def _announce_compiling(kernel) -> None:
    """Say so, once, when a compiled kernel (a fused step, a convolution's loop) is about to
    compile for the first time on this machine (nothing on disk yet): the first fit after
    install waits for it. (Anything but a numba dispatcher: nothing to say.)"""
    try:
        first = not kernel.overloads and not os.path.exists(kernel._cache._cache_file._index_path)
    except AttributeError:  # numba's internals moved: say nothing rather than fail
        return
    if first and not _announce_compiling.done:
        _announce_compiling.done = True
        print("tinynn: compiling kernels, first run only (they are kept on disk)…",
              file=sys.stderr, flush=True)


_announce_compiling.done = False


def _is_builtin(obj, classes) -> bool:
    """Exactly a built-in class with a row in the table: a user's subclass may have changed
    the math."""
    return type(obj) in classes


def _lowering(layer, training: bool):
    """How ``layer`` becomes fused ops: its row in ``table.LAYERS``; for a layer with no
    row, in training, ``table.lower_user``; else ``table.STEP_BY_STEP`` (it cannot)."""
    if _is_builtin(layer, table.LAYERS):
        return table.LAYERS[type(layer)]
    return table.lower_user if training else table.STEP_BY_STEP


class Plan:
    """A model's layers as fused ops (lowered by ``table.LAYERS``): the op table, each op's
    parameter, the Dense layers (the ``arg`` of AFFINE ops) and the Dropout layers."""

    def __init__(self, model, training: bool):
        rows, parameters, self.dense, self.dropouts, self.users = [], [], [], [], []
        width = int(np.prod(model.leaf_layers[0].input_shape))
        numbered = {table.AFFINE: self.dense, table.DROPOUT: self.dropouts,
                    table.USER: self.users}
        for layer in model.leaf_layers:
            for kind, arg, out, parameter in _lowering(layer, training)(layer, width, training):
                if kind in numbered:
                    arg = len(numbered[kind])
                    numbered[kind].append(layer)
                rows.append((kind, arg, out))
                parameters.append(parameter)
                width = out
            width = int(np.prod(layer.compute_output_shape(layer.input_shape)))
        self.ops = np.array(rows, np.int64).reshape(-1, 3)
        self.parameters = np.array(parameters, np.float64)
        self.Ws = tuple(d.params["kernel"] for d in self.dense)
        empty = np.empty(0, np.float32)
        self.bs = tuple(d.params.get("bias", empty) for d in self.dense)
        last = model.leaf_layers[-1]
        #: The output is a sigmoid or softmax's, whose logits a loss may read: decided by
        #: the last layer, as the step-by-step path decides it (an identity layer after the
        #: activation keeps no logits, even where it makes no op here).
        self.has_logits = (isinstance(last, (layers.Dense, layers.Activation))
                           and last.activation in activations.KEEPS_LOGITS)

    def model(self, first_params: dict | None = None):
        """The op table and the kernels as ``fused.Model``, of the variant (``fused.MODELS``)
        that says whether some product goes through BLAS and whether there are user
        layers. ``first_params``: where each layer's first parameter sits among the
        optimizer's, by ``id`` (for training)."""
        at = first_params or {}
        index = np.array([at[id(d)] for d in self.dense] if at else [], np.int64)
        users = np.array([(math.prod(u.input_shape), at.get(id(u), 0), len(u.params))
                          for u in self.users], np.int64).reshape(-1, 3)
        fused = _fused()
        any_blas = _compiled("meanwhile").python_twin(fused.any_blas)  # (nothing to compile)
        kind = fused.MODELS[bool(any_blas(self.Ws)), bool(self.users)]
        return kind(self.ops, self.parameters, self.Ws, self.bs, index, users)


def plan(model, training: bool) -> Plan | None:
    """The model as fused ops, or None if the compiled path cannot run it.

    It runs models whose layers all have a row in ``table.LAYERS``, with float32 weights
    (the layers checked them against their built shapes: ``Layer.check``) and at least
    one Dense layer (``training.compiled_plan`` asks, on the numba backend); for
    training, the loss and the optimizer must have rows too, and a layer with no row
    (a user's) runs inside the fused step as a ``USER`` op, unless it is the last.
    """
    if not model.built:
        return None
    leaves = model.leaf_layers
    if any(_lowering(layer, training) is table.STEP_BY_STEP for layer in leaves):
        return None
    # A user's last layer may keep logits for the loss, decided as it runs (the logits
    # rule, ``losses``); a layer held twice would be updated twice. Both go step by step.
    if _lowering(leaves[-1], training) is table.lower_user:
        return None
    if len({id(layer) for layer in leaves}) != len(leaves):
        return None
    if not any(isinstance(layer, layers.Dense) for layer in leaves):
        return None
    if any(w.dtype != np.float32 or not w.flags.c_contiguous for w in model.weights):
        return None
    if training and not (_is_builtin(model.optimizer, optimizers.OPTIMIZERS.values())
                         and _is_builtin(model.loss, table.LOSSES)):
        return None
    return Plan(model, training)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on
    except AttributeError:  # (not on every system)
        return os.cpu_count() or 1


def threads() -> int:
    """How many threads share compiled work: ``$TINYNN_THREADS`` if set, else one per core
    (at most ``MAX_TRAINING_THREADS``)."""
    value = os.environ.get(THREADS_VAR, "").strip()
    if value and (not value.isdigit() or not 1 <= int(value) <= 64):
        raise ValueError(f"${THREADS_VAR}={value!r}: expected a whole number of threads "
                         f"from 1 to 64, or unset for one per core")
    return int(value) if value else min(_cores(), MAX_TRAINING_THREADS)


def training_threads(fused_plan: Plan) -> int:
    """How many threads share each compiled training step: ``threads()``, or one for a
    model whose products go through BLAS, which already uses every core; and one for a
    model with a user layer unless ``$TINYNN_THREADS`` asks for more: its own code may
    use every core too (NumPy's products), and a partner thread waiting for it fights it
    for them (the benchmark's hidden-user model: 7.4 s/epoch on two threads, 0.50 on one,
    2026-12-07)."""
    count = threads()
    blas_in_training = _compiled("meanwhile").python_twin(_fused().blas_in_training)
    if blas_in_training(fused_plan.ops, fused_plan.Ws).any():
        return 1
    if fused_plan.users and not os.environ.get(THREADS_VAR, "").strip():
        return 1
    return count


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
        opt, loss, fused = model.optimizer, model.loss, _fused()
        opt.check_variables(model.weights)  # slots shaped like the weights, as the loops read
        starts = np.cumsum([0] + [len(layer.params) for layer in model.leaf_layers])
        where = {id(layer): int(s) for layer, s in zip(model.leaf_layers, starts)}
        self.fused_model = fused_plan.model(where)
        self.P = tuple(w.reshape(-1) for w in model.weights)
        empty = np.empty(0, np.float32)
        # The gradients of user layers' parameters, flat, where the fused update reads them
        # (``users.py`` copies each layer's ``grads`` there); empty for the built-ins'.
        self.user_params = [list(u.params.values()) for u in fused_plan.users]
        self.user_grads = [[np.zeros(p.size, np.float32) for p in params]
                           for params in self.user_params]
        mine = {where[id(u)] + k: g for u, gs in zip(fused_plan.users, self.user_grads)
                for k, g in enumerate(gs)}
        self.G = tuple(mine.get(i, empty) for i in range(len(self.P)))
        names = opt.slot_names
        # Slot k of every parameter, flat (empty past the optimizer's own slots).
        self.S = tuple(
            tuple(s[names[k]].reshape(-1) if k < len(names) else empty for s in opt.slots)
            for k in range(table.MAX_SLOTS))
        self.update = table.UPDATES.index(opt.kernel)
        formula = loss.formula(fused_plan.has_logits)
        rule = fused.LOSS_RULES[table.LOSSES[type(loss)], formula != "probabilities"]
        self.loss_rule = rule(formula == "output_logits", np.float32(loss.epsilon))
        d = fused_plan.dropouts
        self.rates = np.array([layer.rate for layer in d], np.float64)
        self.seeds = np.array([layer.seed for layer in d], np.int64)
        self.threads = training_threads(fused_plan)
        self._buffers = {}

    def _parts(self, x, batch_size: int) -> tuple:
        """The shared buffers of a step of ``batch_size``, and how the threads split each
        affine op's kernel rows (``splits``, see ``fused.train_steps``): evenly, except the
        first layer's, where a row's work grows with how often its input is non-zero."""
        if batch_size not in self._buffers:
            p, t = self.plan, self.threads
            splits = np.zeros((len(p.Ws), t + 1), np.int64)
            for a, W in enumerate(p.Ws):
                cost = np.ones(len(W))
                if p.ops[0, 0] == table.AFFINE and p.ops[0, 1] == a:
                    cost += _column_counts(x.indices[: x.indptr[-1]], len(W)) * batch_size \
                        / max(len(x.indptr) - 1, 1)
                total = np.concatenate([[0], np.cumsum(cost)])
                # Each part starts on a multiple of 64 weights: the update loops then treat
                # every weight as one thread would (in their vectorised body; a loop's
                # scalar tail may fuse a multiply-add differently).
                rows = 64 // math.gcd(W.shape[1], 64)
                ends = np.searchsorted(total, np.linspace(0, total[-1], t + 1))
                splits[a] = np.clip(np.round(ends / rows) * rows, 0, len(W))
                splits[a, 0], splits[a, -1] = 0, len(W)
            workspace = _compiled("meanwhile").python_twin(_compiled("workspace").workspace)
            work = workspace(self.fused_model, batch_size)  # (as Python: nothing to compile)
            self._buffers = {batch_size: (work, np.empty(batch_size), splits)}
        return self._buffers[batch_size]

    def _kernel(self, groups: tuple, work, sample_losses, splits) -> tuple:
        """The fused step to run and on how many threads: compiled, or, while it compiles
        in another process, its Python twin on one thread (``meanwhile.py``)."""
        kernel, meanwhile = _fused().train_steps, _compiled("meanwhile")
        if meanwhile.background():
            threads = _fused().Threads(0, self.threads, splits, _compiled("sync").new(1),
                                       work, sample_losses, self.G, -1)
            step = meanwhile.job(kernel, (*groups, threads))
            if not meanwhile.ready(kernel, step[2]) \
                    and meanwhile.compile_elsewhere((*self._predict_job(), step)):
                if not _announce_compiling.done:
                    _announce_compiling.done = True
                    print("tinynn: compiling the training step in the background, first "
                          "run only; training meanwhile…", file=sys.stderr, flush=True)
                return meanwhile.python_twin(kernel), 1
        _announce_compiling(kernel)
        return kernel, self.threads

    def _predict_job(self) -> tuple:
        """predict's kernel for this model, to compile before the step (only the types of
        the arguments matter): an evaluate after a first fit may need it soon."""
        if self.plan.users:  # (predict goes layer by layer)
            return ()
        some = np.empty((1, 1), np.float32)
        return (_compiled("meanwhile").job(_compiled("inference").forward_rows,
                                           (some, 0, 1, self.plan.model(), some, some)),)

    def prepare(self, x: np.ndarray, y: np.ndarray):
        """The data as the kernel reads it (``fused.Data``): x as compressed sparse rows
        (made once per fit), class labels, and target rows for a categorical loss."""
        labels = y if y.ndim == 1 else np.argmax(y, axis=1)
        targets = y if y.ndim == 2 else np.empty((1, 1), np.float32)
        return _fused().Data(*_compiled("loops")._sparse_rows(_rows_2d(x)), labels, targets)

    def run(self, data, order, batch_size: int, first: int, last: int,
            loss_sum: float = 0.0) -> tuple:
        """Steps first … last − 1; returns (loss_sum continued by their losses, correct, seen,
        step stopped at, fault)."""
        opt, p, fused = self.model.optimizer, self.plan, _fused()
        steps = np.arange(opt.iterations + 1, opt.iterations + 1 + last - first)
        # One row per step (arguments that hold for every step are repeated): the kernel
        # reads row s at step s, so the table must have exactly last − first rows.
        columns = np.broadcast_arrays(steps, *opt.update_arguments(steps))[1:]
        arguments = np.column_stack(columns).astype(np.float64)
        if arguments.shape[0] != last - first:  # (never: the kernel would read past it)
            raise RuntimeError(f"{type(opt).__name__}.update_arguments gave "
                               f"{arguments.shape[0]} rows for {last - first} steps")
        counters = np.array([int(layer.state["step"][0]) for layer in p.dropouts], np.int64)
        work, sample_losses, splits = self._parts(data, batch_size)
        groups = (data, fused.Epoch(order, batch_size, first, last, float(loss_sum)),
                  self.fused_model,
                  (fused.Dropouts if len(p.dropouts) else fused.NoDropouts)(
                      self.rates, self.seeds, counters),
                  self.loss_rule, fused.UPDATES[self.update](self.update, self.P, self.S,
                                                             arguments))
        kernel, count = self._kernel(groups, work, sample_losses, splits)
        if count == 1:
            splits = splits[:, [0, -1]]  # one thread: every kernel row its own
        sync = _compiled("sync").new(count)
        users = _compiled("users") if p.users else None
        handle = (users.register(p.users, self.user_params, self.user_grads) if users
                  else -1)

        def thread(t: int) -> tuple:
            try:
                return kernel(*groups, fused.Threads(t, count, splits, sync, work,
                                                     sample_losses, self.G, handle))
            except BaseException:
                _compiled("sync").abort(sync)  # the other threads stop waiting for this one
                raise

        others = []
        try:
            for t in range(1, count):
                others.append(_training_pool().submit(thread, t))
            result = thread(0)
        except BaseException:
            _compiled("sync").abort(sync)  # (also when a partner could not even be started)
            raise
        finally:
            wait(others)  # every partner has stopped touching the weights
            if users:
                users.release(handle)
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
    inference = _compiled("inference")
    _announce_compiling(inference.forward_rows)
    p = fused_plan
    x = _rows_2d(x)
    n, c = len(x), int(p.ops[-1, 2])
    out_z, out_a = np.empty((n, c), np.float32), np.empty((n, c), np.float32)
    workers = min(_cores(), max(1, n // MIN_ROWS_PER_THREAD))
    bounds = np.linspace(0, n, workers + 1).astype(int)

    model = p.model()

    def work(i: int) -> bool:
        return inference.forward_rows(x, int(bounds[i]), int(bounds[i + 1]), model, out_z,
                                      out_a)

    finite = work(0) if workers == 1 else all(_pool().map(work, range(workers)))
    return out_z, out_a, finite


def _training_pool() -> ThreadPoolExecutor:
    """The partner threads of training steps, apart from predict's. A partner must start
    at once (the others wait for it at the first meeting): the pool may grow to a thread
    per partner of every fit running at the same time (it makes threads only on demand)."""
    return _pools(os.getpid(), "tinynn-train", 256)


def _pool() -> ThreadPoolExecutor:
    """The threads that share predict's rows, and a step-by-step layer's samples
    (``sharing.py``)."""
    return _pools(os.getpid(), "tinynn", _cores())


@functools.cache
def _pools(pid: int, name: str, workers: int) -> ThreadPoolExecutor:
    """One pool per name for the life of the process, made on first use; by process id,
    because a child made by fork inherits the pool but not its threads (its tasks would
    wait for ever, and a training step's threads with them)."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name)
