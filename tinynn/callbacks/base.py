"""The hooks themselves: ``Callback``, and the two every ``fit`` has, ``History`` and
``ProgbarLogger``."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Callback:
    """Base class; every hook does nothing. ``self.model`` is set by ``fit``.

    Attributes:
        state_attributes: names of the attributes that hold what the callback has
            learned during a fit (EarlyStopping's ``wait`` and ``best``): a
            ``BackupAndRestore`` backs them up and puts them back. Their values are
            None, bools, ints, floats, strings, lists and dicts (of string keys) of
            those, or lists of the model's weights; one that is None before the fit
            may become a number or the weights.
        batch_interval: k when the callback acts after every k-th batch only (counted
            from the fit's first), 0 when after none: compiled steps then run many per
            call, the calls ending at those batches. None (the default): after every
            batch if it overrides ``on_train_batch_end`` (one step per call), else none.
    """

    state_attributes: tuple[str, ...] = ()
    batch_interval: int | None = None

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

    state_attributes = ("epoch", "history")

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
