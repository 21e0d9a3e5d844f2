"""Callbacks: hooks ``fit`` calls as training goes, with Keras's names.

``History`` records the per-epoch logs; ``ProgbarLogger`` prints Keras-like
progress; ``EarlyStopping``, ``ModelCheckpoint``, ``ReduceLROnPlateau`` and
``LearningRateScheduler`` steer training (through ``model.stop_training`` and
``model.optimizer.learning_rate``, which ``fit`` reads as it goes). Subclass
``Callback`` and override any ``on_*`` method to add your own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Callback:
    """Base class; every hook does nothing. ``self.model`` is set by ``fit``."""

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self, logs: dict | None = None) -> None: ...

    def on_train_end(self, logs: dict | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None: ...


class CallbackList:
    """Several callbacks called as one: ``hooks.call("on_epoch_end", epoch, logs)``."""

    def __init__(self, callbacks: list[Callback], model):
        self.callbacks = callbacks
        for hook in callbacks:
            hook.set_model(model)

    def call(self, method: str, *args) -> None:
        for hook in self.callbacks:
            getattr(hook, method)(*args)


class History(Callback):
    """Collects the logs of every epoch: ``history["loss"]`` is a list with one float per epoch.

    >>> h = History()
    >>> h.on_train_begin(); h.on_epoch_end(0, {"loss": 0.5}); h.on_epoch_end(1, {"loss": 0.25})
    >>> h.history, h.epoch
    ({'loss': [0.5, 0.25]}, [0, 1])
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


def format_logs(logs: dict) -> str:
    """`` - accuracy: 0.9000 - loss: 0.3000`` with names sorted, as Keras 3 prints them."""
    return "".join(f" - {k}: {v:.4f}" for k, v in sorted(logs.items()))


def format_duration(seconds: float) -> str:
    """Keras's rounding: whole seconds, or ms / µs for short ones."""
    if seconds >= 1:
        return f"{seconds:.0f}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms"
    return f"{seconds * 1e6:.0f}us"


class ProgbarLogger(Callback):
    """Prints progress like Keras's ``fit``.

    ``verbose=1``: ``Epoch 1/5`` then
    ``1875/1875 ━━━━━━━━━━━━━━━━━━━━ 2s 1ms/step - accuracy: 0.8750 - loss: 0.4694``
    (redrawn in place while the epoch runs, when the output is a terminal);
    ``verbose=2``: one line per epoch, ``1875/1875 - 2s - 1ms/step - …``.

    Args:
        verbose: 1 or 2.
        steps: batches per epoch.
        epochs: number of epochs.
        stream: where to write, default ``sys.stdout``.
    """

    width = 20

    def __init__(self, verbose: int, steps: int, epochs: int, stream=None):
        self.verbose, self.steps, self.epochs = verbose, steps, epochs
        self.stream = stream or sys.stdout
        self.live = verbose == 1 and getattr(self.stream, "isatty", lambda: False)()
        self.open = False  # a redrawn line not yet ended

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.epochs:  # 0 for evaluate and predict, which have no epochs
            self.stream.write(f"Epoch {epoch + 1}/{self.epochs}\n")
        self.start = self.last_draw = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if self.live and now - self.last_draw > 0.1:
            self.last_draw = now
            self.stream.write("\r" + self._line(batch + 1, now - self.start, logs or {}))
            self.stream.flush()
            self.open = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        line = self._line(self.steps, time.perf_counter() - self.start, logs or {})
        self.stream.write(("\r" if self.live else "") + line + "\n")
        self.stream.flush()
        self.open = False

    def close(self) -> None:
        """End a line left half drawn (``fit`` interrupted by Ctrl-C), so that what the
        caller prints next starts on a line of its own."""
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False

    def _line(self, step: int, elapsed: float, logs: dict) -> str:
        counter = f"{step}/{self.steps}"
        per_step = format_duration(elapsed / max(step, 1)) + "/step"
        if self.verbose == 2:
            return f"{counter} - {format_duration(elapsed)} - {per_step}{format_logs(logs)}"
        done = self.width * step // self.steps
        bar = "━" * done + " " * (self.width - done)
        return f"{counter} {bar} {format_duration(elapsed)} {per_step}{format_logs(logs)}"


@contextmanager
def progress(verbose: int, steps: int) -> Iterator[dict]:
    """A progress line for ``evaluate``/``predict`` (none when verbose is 0); fill the logs."""
    bar = ProgbarLogger(verbose, steps, epochs=0) if verbose else None
    logs: dict = {}
    if bar:
        bar.on_epoch_begin(0)
    yield logs
    if bar:
        bar.on_epoch_end(0, logs)


class _Monitor(Callback):
    """Watches one logged number (``monitor``) for improvement, as Keras's callbacks do."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        from tinynn import validation

        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a log name such as 'val_loss', got {monitor!r}")
        validation.choice(mode, "mode", ("auto", "min", "max"))
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.sign = 1.0 if mode == "min" else -1.0

    def value(self, logs: dict | None) -> float:
        if not logs or self.monitor not in logs:
            raise KeyError(f"{type(self).__name__}: monitor {self.monitor!r} is not in the "
                           f"logs; available: {sorted(logs or {})}")
        return float(logs[self.monitor])

    def improved(self, value: float, best: float | None) -> bool:
        return best is None or self.sign * (best - value) > self.min_delta


class EarlyStopping(_Monitor):
    """Stop training when ``monitor`` has stopped improving for ``patience`` epochs.

    Args:
        monitor: the log to watch, default ``"val_loss"``.
        min_delta: smaller changes do not count as improvement.
        patience: epochs without improvement before stopping.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracies).
        restore_best_weights: at the end, put back the weights of the best epoch.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", restore_best_weights: bool = False):
        super().__init__(monitor, mode, min_delta)
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait, self.best, self.best_weights, self.stopped_epoch = 0, None, None, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = self.value(logs)
        if self.improved(value, self.best):
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.restore_best_weights and self.best_weights is not None and self.stopped_epoch:
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Save the model after each epoch (or only when ``monitor`` improved), with ``model.save``.

    Args:
        filepath: where; may hold ``{epoch}`` and log names, e.g. ``"model-{epoch:02d}.npz"``.
        monitor: the log to compare, default ``"val_loss"``.
        save_best_only: save only when the monitored value improved.
        save_weights_only: write ``save_weights`` files instead.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
    """

    def __init__(self, filepath, monitor: str = "val_loss", save_best_only: bool = False,
                 save_weights_only: bool = False, mode: str = "auto"):
        super().__init__(monitor, mode, 0.0)
        self.filepath = str(filepath)
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.save_best_only:
            value = self.value(logs)
            if not self.improved(value, self.best):
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **(logs or {}))
        (self.model.save_weights if self.save_weights_only else self.model.save)(path)


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs.

    Args:
        monitor: default ``"val_loss"``.
        factor: in (0, 1), default 0.1.
        patience: epochs without improvement, default 10.
        min_delta: default 1e-4.
        cooldown: epochs to wait after a reduction.
        min_lr: the rate never goes below this.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        self.factor, self.patience = float(factor), int(patience)
        self.cooldown, self.min_lr = int(cooldown), float(min_lr)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best, self.wait, self.cooling = None, 0, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = self.value(logs)
        if self.cooling:
            self.cooling -= 1
            self.wait = 0
        if self.improved(value, self.best):
            self.best, self.wait = value, 0
        elif not self.cooling:
            self.wait += 1
            if self.wait >= self.patience:
                opt = self.model.optimizer
                opt.learning_rate = max(opt.learning_rate * self.factor, self.min_lr)
                self.cooling, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch from ``schedule(epoch, lr)``.

    Args:
        schedule: a function (epoch index, current rate) → new rate.
    """

    def __init__(self, schedule):
        if not callable(schedule):
            raise TypeError(f"schedule must be a function (epoch, lr) -> lr, got {schedule!r}")
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        from tinynn import validation

        opt = self.model.optimizer
        opt.learning_rate = validation.positive_float(
            self.schedule(epoch, opt.learning_rate), "the schedule's learning rate")
