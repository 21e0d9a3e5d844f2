"""How ``fit`` runs: the step runners, and the bookkeeping around steps.

A *runner* takes an epoch's steps ``first … last − 1`` and reports (loss sum,
number right, samples seen, the step it stopped at, a ``Fault``). There are
two, chosen once per ``fit`` by ``runner_for``:

* ``StepRunner``: the textbook, one step at a time through the model's own
  ``train_step`` (each layer's forward and backward, the optimizer's
  ``update_step``). It runs any layer or optimizer that keeps the contracts.
* ``tinynn.compiled.engine.CompiledRunner``: the same steps, many per compiled
  call, on the numba backend, for models of built-in parts (and a user's layers
  among them, which the compiled step calls back).

``compiled_plan`` is the one place that decides between them, for ``fit``,
``train_on_batch``, ``evaluate`` and ``predict`` alike.

Besides: Keras's per-epoch means, the codes for a step that broke (and the
warning that reports it), and whether a callback wants to hear about every batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
import threading
import time
import warnings

import numpy as np

from tinynn import backend
from tinynn.backend import kernels
from tinynn.callbacks import BackupAndRestore, Callback, ProgbarLogger
from tinynn.utils import generator

#: fit runs compiled steps in calls of about this many seconds. Between two calls come
#: the progress bar, the snapshot that a broken step rolls back to, and a chance to stop
#: (Ctrl-C); each call also costs ~1 ms of its own (Python, waking the partner thread),
#: which calls of a fixed 64 steps made ~10 % of the simple model's epoch
#: (``benchmarks/calls.py``).
SECONDS_PER_CALL = 0.05
#: ... and at least this many times as long as the snapshot before it (a copy of every
#: weight and optimizer slot: ~0.4 s for Adam on 20 M weights here).
SNAPSHOTS_PER_CALL = 20
#: Steps in an epoch's first call, before any call has been timed.
FIRST_CALL = 16


class Calls:
    """How many steps ``fit`` runs per call: one when a callback wants every batch, else
    about ``SECONDS_PER_CALL`` worth (or ``SNAPSHOTS_PER_CALL`` snapshots' worth), learned
    from how long the last call took, growing at most fourfold a call (so that one quick
    call cannot make the next one very long). The split does not change the result: the
    steps compute the same, and the runners continue the epoch's loss sum step by step."""

    def __init__(self, every_batch: bool, period: int = 0):
        self.every_batch = every_batch
        self.period = period  # calls end at every period-th step of the fit (0: anywhere)
        self.size = 1 if every_batch else FIRST_CALL

    def last(self, first: int, place: Place) -> int:
        """Where a call that starts at step ``first`` of ``place``'s epoch ends (exclusive):
        after ``size`` steps, at the epoch's end, or at the next multiple of ``period``
        counted in steps from the fit's first (where a backup is due)."""
        last = min(first + self.size, place.steps)
        if self.period:
            done = place.done(first)
            last = min(last, first + self.period - done % self.period)
        return last

    def took(self, steps: int, seconds: float, snapshot_seconds: float = 0.0) -> None:
        """A call of ``steps`` steps took ``seconds``, after a snapshot of
        ``snapshot_seconds``: size the next one."""
        if not self.every_batch:
            target = max(SECONDS_PER_CALL, SNAPSHOTS_PER_CALL * snapshot_seconds)
            rate = steps / max(seconds, 1e-6)
            self.size = max(1, min(4 * self.size, int(rate * target)))


class Fault(enum.IntEnum):
    """How a run of training steps ended, on either runner (the compiled step uses these
    codes: ``tinynn.compiled.table``)."""

    NONE = 0  # every step ran
    LOSS = 1  # a step's loss was NaN or infinite; it was not applied
    WEIGHTS = 2  # a step's update made a weight or optimizer state NaN or infinite; undone
    ABORTED = 3  # a partner thread of a compiled step never came (its error is raised)


@dataclasses.dataclass
class Place:
    """Where a ``fit`` is: what a backup must hold to go on from it exactly
    (``callbacks.BackupAndRestore``). ``fit`` keeps it up to date in ``model.fit_place``.

    Attributes:
        steps: steps in an epoch.
        epochs, samples, batch_size: the fit's.
        epoch: the epoch running (0-based).
        step: steps of it done.
        rng: the generator's state before this epoch's shuffle (None between epochs).
        totals: the epoch's running sums (loss, right answers, samples).
        callbacks: the fit's callbacks, in the order they are called.
    """

    steps: int
    totals: RunningMeans
    callbacks: list = dataclasses.field(default_factory=list)
    epochs: int = 1
    samples: int = 0
    batch_size: int = 1
    epoch: int = 0
    step: int = 0
    rng: dict | None = None

    def order(self, n: int, shuffle: bool) -> np.ndarray:
        """This epoch's order of the n samples: a fresh permutation when shuffling. The
        generator's state before it is kept, so that a backup can draw it again."""
        self.rng = generator().bit_generator.state
        return generator().permutation(n) if shuffle else np.arange(n)

    def done(self, step: int | None = None) -> int:
        """Steps of the fit done when this epoch has done ``step`` (default: ``self.step``)."""
        return self.epoch * self.steps + (self.step if step is None else step)

    def next_epoch(self) -> None:
        self.epoch, self.step, self.rng = self.epoch + 1, 0, None
        self.totals = RunningMeans(self.totals.metrics)


def call_order(history, callbacks: list, bar) -> list:
    """The fit's callbacks in the order they are called: the History first, the progress
    bar last, and backups after the others, so that a backup holds what the others did
    in the same hook (an EarlyStopping's wait after this epoch)."""
    backups = [hook for hook in callbacks if isinstance(hook, BackupAndRestore)]
    if len(backups) > 1:  # (if one refused its backup, the other's would stay restored)
        raise ValueError(f"callbacks: at most one BackupAndRestore, got {len(backups)}")
    others = [hook for hook in callbacks if not isinstance(hook, BackupAndRestore)]
    return [history, *others, *backups, *([bar] if bar else [])]


def call_period(hooks) -> int:
    """The steps between the calls' ends that callbacks need (``Callback.batch_interval``):
    the greatest common divisor of theirs, 0 if none needs any."""
    return math.gcd(*[hook.batch_interval or 0 for hook in hooks])


class StepRunner:
    """One step at a time: ``model.train_step`` on each batch."""

    def __init__(self, model):
        self.model = model

    def prepare(self, x: np.ndarray, y: np.ndarray) -> tuple:
        return x, y

    def run(self, data: tuple, order, batch_size: int, first: int, last: int,
            loss_sum: float = 0.0) -> tuple:
        """Steps first … last − 1; returns (loss_sum continued by their losses, correct, seen,
        step stopped at, fault)."""
        x, y = data
        totals = RunningMeans([])
        totals.loss_sum = loss_sum
        for step in range(first, last):
            idx = order[step * batch_size : (step + 1) * batch_size]
            loss, y_pred, fault = self.model.train_step(x[idx], y[idx])
            if fault:
                return totals.loss_sum, totals.correct, totals.seen, step, fault
            totals.add_batch(loss, y_pred, y[idx])
        return totals.loss_sum, totals.correct, totals.seen, last, Fault.NONE


def compiled_plan(model, training: bool):
    """The one place that decides how a model runs: the selected backend's plan of compiled
    ops for it (``tinynn.compiled.engine.plan``), or None to go step by step, layer by layer.

    Args:
        training: a plan for training steps (the loss and optimizer must be built-in too),
            else for inference.
    """
    engine = backend.engine()
    return None if engine is None else engine.plan(model, training)


def runner_for(model, one_step: bool = False):
    """The runner of ``fit``'s steps, compiled if the model can be (``compiled_plan``), else
    a ``StepRunner``; of ``train_on_batch``'s single step (``one_step``), a ``StepRunner``:
    setting a compiled run up (buffers, the data as sparse rows, a partner thread) costs
    more than one step (the hidden model's train_on_batch: 0.53 ms a call step by step,
    0.86 ms compiled, here)."""
    opt = model.optimizer
    opt.check_variables(model.weights)  # before anything changes
    if opt.slots is None:
        opt.build(model.weights)  # for either runner, before the first step
    plan = None if one_step else compiled_plan(model, training=True)
    return backend.engine().CompiledRunner(model, plan) if plan else StepRunner(model)


def forward_all(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(logits, outputs, whether x was all finite) of every row of x in one compiled call,
    or None if the model runs layer by layer (``compiled_plan``)."""
    plan = compiled_plan(model, training=False)
    if plan is None:
        return None
    z, outputs, finite = backend.engine().forward_all(plan, x)
    return (z if plan.has_logits else None), outputs, finite


def train_epoch(model, runner, data, order, batch_size: int, calls: Calls, hooks,
                place: Place, verbose: int) -> tuple[dict, dict | None]:
    """The rest of ``place``'s epoch of ``fit``: the steps in calls sized by ``calls``, the
    batch hooks after each, ``place`` kept up to date.

    Returns the epoch's running means and, if a step broke, where (see
    ``report_fault``); the model then holds the weights from before that step.
    """
    totals = place.totals
    first = place.step
    while first < place.steps and not model.stop_training:
        last = calls.last(first, place)
        started = time.perf_counter()
        saved = snapshot(model)  # so that a step that breaks the weights can be undone
        copied = time.perf_counter()
        try:
            loss_sum, correct, seen, stop, fault = runner.run(data, order, batch_size, first,
                                                              last, totals.loss_sum)
        except BaseException:  # (e.g. a thread that failed part-way through a step)
            restore(model, saved)
            raise
        calls.took(last - first, time.perf_counter() - copied, copied - started)
        while fault:
            # Back to the start of this call, then the good steps again (they compute
            # the same thing twice, bit for bit): whatever the broken step changed
            # (weights, or only Dropout's counters) is undone on either runner. If a step
            # breaks the second time round (a user's layer whose numbers do not repeat),
            # the stop moves back to it, until the steps before it run clean.
            restore(model, saved)
            if stop == first:
                break
            loss_sum, correct, seen, again, fault_again = runner.run(
                data, order, batch_size, first, stop, totals.loss_sum)
            if not fault_again:
                break
            stop, fault = again, fault_again
        totals.resume(loss_sum, correct, seen)
        if fault:
            return totals.logs(), report_fault(place.epoch, stop, Fault(fault), verbose)
        place.step = last
        hooks.call("on_train_batch_end", last - 1, totals.logs())
        first = last
    return totals.logs(), None


def snapshot(model) -> tuple:
    """Copies of everything a step changes: weights, optimizer state and step count, and
    the layers' state (Dropout's counters)."""
    opt = model.optimizer
    slots = None if opt.slots is None else [{k: a.copy() for k, a in s.items()}
                                            for s in opt.slots]
    states = [{k: a.copy() for k, a in layer.state.items()} for layer in model.leaf_layers]
    return model.get_weights(), slots, opt.iterations, states


def restore(model, state: tuple) -> None:
    """Put back what ``snapshot`` copied, in place (views of these arrays stay valid)."""
    weights, slots, iterations, states = state
    for w, saved in zip(model.weights, weights):
        w[...] = saved
    opt = model.optimizer
    if slots is None:
        opt.slots = None
    else:
        for live, saved in zip(opt.slots, slots):
            for k in live:
                live[k][...] = saved[k]
    opt.iterations = iterations
    for layer, saved in zip(model.leaf_layers, states):
        for k in layer.state:
            layer.state[k][...] = saved[k]


def step_on_batch(model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``train_on_batch``: one step (``runner_for`` says by which runner). A step that
    breaks is undone and reported; its loss and metrics are then those its forward pass
    saw."""
    model.optimizer.check_variables(model.weights)  # before anything changes
    saved = snapshot(model)
    runner = runner_for(model, one_step=True)
    try:
        loss_sum, correct, seen, _, fault = runner.run(runner.prepare(x, y), np.arange(len(x)),
                                                       len(x), 0, 1)
    except BaseException:  # (Ctrl-C, or a partner thread's error, part-way through the step)
        restore(model, saved)
        raise
    if not fault:
        return RunningMeans(model.metrics).resume(loss_sum, correct, seen)
    restore(model, saved)
    y_pred = model.forward(x, training=True)  # what the broken step saw
    logs = RunningMeans(model.metrics).add_batch(model.loss_of(y, y_pred), y_pred, y)
    restore(model, saved)  # (the forward pass moved Dropout's counters)
    report_fault(None, 0, Fault(fault), verbose=0)
    return logs


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, float]:
    """The loss (and metrics) of checked x and y: every row at once on the compiled path
    (the same mean as batch by batch), else ``batch_size`` rows at a time."""
    totals = RunningMeans(model.metrics)
    compiled = forward_all(model, x)
    if compiled:
        z, y_pred, _ = compiled
        warn_if_overflowed(model, x, non_finite_rows(y_pred, z), "evaluate")
        per_sample = model.loss.forward(y, y_pred, z)
        return totals.add(float(per_sample.sum()), correct_count(y_pred, y), len(y))
    bad = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        y_pred = model.forward(xb)
        totals.add_batch(model.loss_of(yb, y_pred), y_pred, yb)
        bad.append(non_finite_rows(y_pred, last_logits(model)))
    warn_if_overflowed(model, x, np.concatenate(bad), "evaluate")
    return totals.logs()


def report_fault(epoch: int | None, step: int, fault: Fault, verbose: int) -> dict:
    """Warn that training stopped (Keras's TerminateOnNaN, on by default), and say where."""
    where = f"epoch {epoch + 1}, step {step + 1}" if epoch is not None else "this batch"
    what = {Fault.LOSS: "the loss was not finite (NaN or inf)",
            Fault.WEIGHTS: "the update made some weights or optimizer state non-finite (NaN "
                           "or inf)"}.get(fault, f"it ended with {fault.name}")
    message = (f"training stopped at {where}: {what}. The weights are those from before "
               f"that step. Look for inputs with extreme values, or lower the learning rate.")
    if verbose:
        print(message)
    warnings.warn(message, NonFiniteWarning, stacklevel=3)
    return {"epoch": epoch, "step": step, "reason": fault.name.lower()}


class NonFiniteWarning(RuntimeWarning):
    """Training stopped because a loss or a weight stopped being a finite number, or
    finite inputs gave non-finite outputs (``warn_if_overflowed``)."""


def non_finite_rows(outputs: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
    """Which rows of ``outputs`` (n, …), or of the last layer's ``logits``, hold an inf or
    a NaN, shape (n,): a softmax or sigmoid turns overflowed logits back into finite
    outputs (1 and 0) whose loss is inf."""
    bad = ~np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)
    if logits is not None:
        bad |= ~np.isfinite(logits.reshape(len(logits), -1)).all(axis=1)
    return bad


def last_logits(model) -> np.ndarray | None:
    """The logits the last layer kept in its last forward pass, if it keeps any."""
    return getattr(model.leaf_layers[-1], "logits", None)


def warn_if_overflowed(model, x: np.ndarray, bad: np.ndarray, where: str) -> None:
    """Warn, naming the first layer whose output (or logits) stopped being finite, if
    some outputs of the finite inputs ``x`` are not (``bad``: ``non_finite_rows``).
    float32 overflows past ~3.4e38: x = 3e38 through a Dense layer gives inf. The first
    such row runs again layer by layer to find the layer."""
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    a = x[row : row + 1]
    for layer in model.leaf_layers:
        a = layer.forward(a, training=False)
        logits = getattr(layer, "logits", None)
        if not np.isfinite(a).all() or (logits is not None and not np.isfinite(logits).all()):
            break
    warnings.warn(
        f"{where}: {int(bad.sum())} of {len(bad)} samples give outputs that are not finite "
        f"(inf or NaN) although every input is; the first, sample {row}, stopped being "
        f"finite in layer {layer.name!r} ({type(layer).__name__}): its values overflow "
        f"float32 (beyond ~3.4e38). Scale the inputs (e.g. to [0, 1]) or check the "
        f"weights.", NonFiniteWarning, stacklevel=3)


#: Guards the check-and-set of ``one_at_a_time`` (any model's).
_TRAINING = threading.Lock()


@contextlib.contextmanager
def one_at_a_time(model, method: str):
    """Refuse a second ``fit`` or ``train_on_batch`` of a model while one runs (from
    another thread, or a callback): their steps would interleave on the same weights
    and optimizer state. Nothing is changed by the refusal."""
    with _TRAINING:
        running = getattr(model, "_training_in", None)
        if running:
            raise RuntimeError(f"{method}(): this model is already training ({running}() "
                               f"in another thread or a callback); wait until it returns")
        model._training_in = method
    try:
        yield
    finally:
        model._training_in = None


class NotCompiledError(ValueError):
    """A model was used for training or evaluation before ``compile``."""


class RunningMeans:
    """Keras's per-epoch numbers: sample-weighted means of the batch loss and accuracy."""

    def __init__(self, metrics: list[str]):
        self.metrics = metrics
        self.seen = 0
        self.loss_sum = 0.0
        self.correct = 0

    def add(self, loss_sum: float, correct: int, n: int) -> dict[str, float]:
        """Count n more samples, with their summed loss and how many were right."""
        self.seen += n
        self.loss_sum += loss_sum
        self.correct += correct
        return self.logs()

    def resume(self, loss_sum: float, correct: int, n: int) -> dict[str, float]:
        """Count n more samples and how many were right; the loss sum is now ``loss_sum``
        (a runner continued it step by step, so the sum is the same however the steps
        were split into calls)."""
        self.seen += n
        self.loss_sum = loss_sum
        self.correct += correct
        return self.logs()

    def logs(self) -> dict[str, float]:
        """The means so far ({} before any sample)."""
        if not self.seen:
            return {}
        logs = {"loss": self.loss_sum / self.seen}
        logs.update({m: self.correct / self.seen for m in self.metrics})
        return logs

    def add_batch(self, loss: float, y_pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Count one batch of mean loss ``loss``, outputs ``y_pred`` (n, c) and targets ``y``."""
        return self.add(loss * len(y), correct_count(y_pred, y), len(y))


def correct_count(y_pred: np.ndarray, y: np.ndarray) -> int:
    """How many rows of y_pred have their largest entry at the class of y (labels or rows)."""
    labels = y if y.ndim == 1 else np.argmax(y, axis=1)
    return int(kernels().sparse_categorical_accuracy(y_pred, labels).sum())


def wants_batches(hook: Callback) -> bool:
    """Whether a callback does something after every batch (beyond tinynn's own progress
    bar, and callbacks that say every how many batches: ``Callback.batch_interval``)."""
    if isinstance(hook, ProgbarLogger) or hook.batch_interval is not None:
        return False
    return type(hook).on_train_batch_end is not Callback.on_train_batch_end
