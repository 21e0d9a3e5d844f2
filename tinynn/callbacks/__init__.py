"""Callbacks: hooks ``fit`` calls as training goes, with Keras's names.

``History`` records the per-epoch logs; ``ProgbarLogger`` prints Keras-like
progress (``base``); ``EarlyStopping``, ``ModelCheckpoint``, ``ReduceLROnPlateau``
and ``LearningRateScheduler`` steer training (``monitors``: through
``model.stop_training`` and ``model.optimizer.learning_rate``, which ``fit`` reads
as it goes); ``BackupAndRestore`` lets a killed fit go on where it was (``backup``).
Subclass ``Callback`` and override any ``on_*`` method to add your own.
"""

from tinynn.callbacks.backup import BackupAndRestore
from tinynn.callbacks.base import (
    Callback,
    CallbackList,
    History,
    ProgbarLogger,
    format_duration,
    format_logs,
    progress,
)
from tinynn.callbacks.monitors import (
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
)

__all__ = ["BackupAndRestore", "Callback", "CallbackList", "EarlyStopping", "History",
           "LearningRateScheduler", "ModelCheckpoint", "ProgbarLogger", "ReduceLROnPlateau",
           "format_duration", "format_logs", "progress"]
