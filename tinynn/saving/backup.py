"""Backup files (``callbacks.BackupAndRestore``): a model file with the fit's place in it.

A backup is a model file (``model_files``: layers, weights, Dropout's counters,
the optimizer's settings, step count and state) whose config also holds a
``"training"`` object, JSON text: where the fit was (epoch, step, the
generator's state before that epoch's shuffle, the epoch's running sums) and
the callbacks' state. Arrays among the callbacks' state (EarlyStopping's best
weights) are members ``training/<name>``. It is written atomically, like every
model file, so a kill during a backup leaves the previous backup whole.
"""

from __future__ import annotations

import os

import numpy as np

from tinynn.saving import model_files
from tinynn.saving.archive import DTYPES
from tinynn.saving.rebuild import ModelFileError

#: Members holding the callbacks' arrays start with this.
PREFIX = "training/"


def write_backup(model, path: str | os.PathLike, training: dict,
                 arrays: dict[str, np.ndarray]) -> None:
    """The model and ``training`` (JSON-able) into the backup file ``path``, atomically.

    Args:
        model: the model being trained.
        path: the backup file.
        training: where the fit is (``BackupAndRestore`` says what).
        arrays: the callbacks' arrays, by name (stored as ``training/<name>``).

    Raises:
        OSError: the disk is full or the file too large, naming ``path``; the previous
            backup is unchanged.
    """
    config, content = model_files.model_content(model, "BackupAndRestore")
    config["training"] = training
    content.update({PREFIX + name: a for name, a in arrays.items()})
    model_files.write(path, config, content, True, "BackupAndRestore")


def read_backup(path: str | os.PathLike) -> tuple[object, dict, dict[str, np.ndarray]]:
    """(the model as the backup holds it, the ``training`` object, the callbacks' arrays).

    Raises:
        ModelFileError: the file is not a whole, readable backup; it names ``path``.
    """
    model = model_files.load_model(path)
    with model_files.reading(path, "model") as (archive, config):
        training = config.get("training")
        if not isinstance(training, dict):
            raise ModelFileError("a model file, not a backup (no 'training' object)")
        headers = [archive.header(name) for name in sorted(archive.names)
                   if name.startswith(PREFIX)]
        for h in headers:
            if h.dtype not in DTYPES:
                raise ModelFileError(f"{h.member} has dtype {h.dtype}; backups hold "
                                     f"{[str(d) for d in DTYPES]}")
        archive.check_budget()
        arrays = {h.member.removeprefix(PREFIX): a for h, a in zip(headers, archive.load(headers))}
    return model, training, arrays
