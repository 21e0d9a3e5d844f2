"""The bookkeeping around training steps: running means, faults, and when to call back.

``Sequential.fit`` runs steps in calls of ``STEPS_PER_CALL``; this module holds
what it needs besides the algorithm itself: Keras's per-epoch means, the
codes for a step that broke (and the warning that reports it), and whether a
callback wants to hear about every batch.
"""

from __future__ import annotations

import enum
import warnings

import numpy as np

from tinynn.backend import kernels
from tinynn.callbacks import Callback, ProgbarLogger

#: Compiled steps per call in fit, between the callbacks' batch hooks and the
#: snapshots a broken step rolls back to.
STEPS_PER_CALL = 64


class Fault(enum.IntEnum):
    """How a run of training steps ended (the codes of ``kernels.fused``)."""

    NONE = 0  # every step ran
    LOSS = 1  # a step's loss was NaN or infinite; it was not applied
    WEIGHTS = 2  # a step's update made a weight NaN or infinite; it is undone


def report_fault(epoch: int | None, step: int, fault: Fault, verbose: int) -> dict:
    """Warn that training stopped (Keras's TerminateOnNaN, on by default), and say where."""
    where = f"epoch {epoch + 1}, step {step + 1}" if epoch is not None else "this batch"
    what = ("the loss was not finite (NaN or inf)" if fault == Fault.LOSS else
            "the update made some weights non-finite (NaN or inf)")
    message = (f"training stopped at {where}: {what}. The weights are those from before "
               f"that step. Look for inputs with extreme values, or lower the learning rate.")
    if verbose:
        print(message)
    warnings.warn(message, NonFiniteWarning, stacklevel=3)
    return {"epoch": epoch, "step": step, "reason": fault.name.lower()}


class NonFiniteWarning(RuntimeWarning):
    """Training stopped because a loss or a weight stopped being a finite number."""


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

    def logs(self) -> dict[str, float]:
        """The means so far ({} before any sample)."""
        if not self.seen:
            return {}
        logs = {"loss": self.loss_sum / self.seen}
        logs.update({m: self.correct / self.seen for m in self.metrics})
        return logs

    def add_batch(self, loss: float, y_pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Count one batch of mean loss ``loss``, outputs ``y_pred`` (n, c) and labels ``y``."""
        return self.add(loss * len(y), correct_count(y_pred, y), len(y))


def correct_count(y_pred: np.ndarray, y: np.ndarray) -> int:
    return int(kernels().sparse_categorical_accuracy(y_pred, y).sum())


def wants_batches(hook: Callback) -> bool:
    """Whether a callback does something per batch (beyond tinynn's own progress bar)."""
    if isinstance(hook, ProgbarLogger):
        return False
    return type(hook).on_train_batch_end is not Callback.on_train_batch_end
