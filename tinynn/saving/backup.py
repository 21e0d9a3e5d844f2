"""Backup files (``callbacks.BackupAndRestore``): a model file with the fit's place in it.

A backup is a model file (``model_files``: layers, weights, Dropout's counters,
the optimizer's settings, step count and state) whose config also holds a
``"training"`` object, JSON text: where the fit was (epoch, step, the
generator's state before that epoch's shuffle, the epoch's running sums) and
the callbacks' state. Arrays among the callbacks' state (EarlyStopping's best
weights) are members ``training/<name>``. It is written atomically, like every
model file, so a kill during a backup leaves the previous backup whole.

A backup is read back *into the model being trained*, not made into a new one:
so a model of a user's own layers or optimizer resumes as well as a built-in
one, and every array is checked against the live model's before it is read.
"""

from __future__ import annotations

import os

import numpy as np

from tinynn.saving import model_files
from tinynn.saving.archive import DTYPES
from tinynn.saving.rebuild import ModelFileError, nonnegative_slots

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


def read_backup(path: str | os.PathLike, model) -> dict:
    """What the backup ``path`` holds for ``model``, checked and read, nothing applied:
    ``config`` (its layers and compile settings, for the caller to compare),
    ``training``, ``fits`` (False, and nothing more, when its weights or optimizer
    slots are not the model's), ``weights``, ``slots`` (None before any step), ``iterations``,
    ``states`` (each layer's), ``arrays`` (the callbacks', by name).

    Raises:
        ModelFileError: the file is not a whole, readable backup, or its arrays do not
            fit ``model``'s; it names ``path``.
    """
    with model_files.reading(path, "model") as (archive, config):
        training, compiled = config.get("training"), config.get("compile")
        if not isinstance(training, dict) or not isinstance(compiled, dict):
            raise ModelFileError("a model file, not a backup (no 'training' object)")
        opt = model.optimizer
        headers = archive.stored_weights()
        if [(h.shape, h.dtype) for h in headers] != [(w.shape, w.dtype) for w in model.weights]:
            return {"config": config, "training": training, "fits": False}  # (read no more)
        names = compiled.get("optimizer", {}).get("slots")
        if names is not None and names != list(opt.slot_names):
            return {"config": config, "training": training, "fits": False}
        slot_headers = [] if names is None else model_files.read_slots(archive, headers, names)
        state_headers = [_state_header(archive, i, key, live)
                         for i, layer in enumerate(model.leaf_layers)
                         for key, live in layer.state.items()]
        array_headers = [archive.header(name) for name in sorted(archive.names)
                         if name.startswith(PREFIX)]
        for h in array_headers:
            if h.dtype not in DTYPES:
                raise ModelFileError(f"{h.member} has dtype {h.dtype}; backups hold "
                                     f"{[str(d) for d in DTYPES]}")
        archive.check_budget()  # before reading anything big
        weights = archive.load(headers)
        model_files.check_arrays(weights, "weight", ModelFileError, "")
        slots = None
        if names is not None:
            slots = [dict(zip(s, archive.load(list(s.values())))) for s in slot_headers]
            model_files.check_slots(slots, weights, names, nonnegative_slots(type(opt)),
                                    ModelFileError, "")
        states = archive.load(state_headers)
        if any((s < 0).any() for s in states):
            raise ModelFileError("a layer's state (Dropout's counter) is negative")
        iterations = model_files.check_iterations(compiled["optimizer"].get("iterations"),
                                                  ModelFileError, "")
        arrays = {h.member.removeprefix(PREFIX): a
                  for h, a in zip(array_headers, archive.load(array_headers))}
    layer_states, states = [], iter(states)
    for layer in model.leaf_layers:
        layer_states.append({key: next(states) for key in layer.state})
    return {"config": config, "training": training, "fits": True, "weights": weights,
            "slots": slots, "iterations": iterations, "states": layer_states, "arrays": arrays}


def _state_header(archive, i: int, key: str, live: np.ndarray):
    header = model_files.state_header(archive, i, key, live)
    if header is None:
        raise ModelFileError(f"state/{i}/{key} (a layer's state) is missing")
    return header
