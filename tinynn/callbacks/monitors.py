"""Callbacks that watch a logged number and steer training: ``EarlyStopping``,
``ModelCheckpoint``, ``ReduceLROnPlateau``; and ``LearningRateScheduler``."""

from __future__ import annotations

from tinynn.callbacks.base import Callback


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

    state_attributes = ("wait", "best", "best_weights", "stopped_epoch")

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

    state_attributes = ("best",)

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

    state_attributes = ("best", "wait", "cooling")

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
