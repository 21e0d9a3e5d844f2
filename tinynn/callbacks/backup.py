"""``BackupAndRestore``: a fit that is killed goes on from its last backup, bit for bit."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from tinynn.callbacks.base import Callback


class BackupAndRestore(Callback):
    """Back the training up now and then, so that a ``fit`` that is killed (Ctrl-C, a
    crash, a power cut) and started again with the same call goes on from the last
    backup, and ends with the weights an uninterrupted fit would have had, bit for bit.

    A backup is one file, ``backup_dir/backup.npz`` (a model file, ``tinynn.saving``),
    written atomically: a kill while writing leaves the previous backup whole. It holds
    the weights, Dropout's counters, the optimizer's settings, step count and state;
    the epoch and the step in it, the generator's state before that epoch's shuffle,
    the epoch's running means; and the callbacks' ``state_attributes`` (the History so
    far, EarlyStopping's wait and best, ReduceLROnPlateau's). A fit resumed within an
    epoch does not call ``on_epoch_begin`` for that epoch again: the backup holds what
    it did (a LearningRateScheduler's rate).

    The call must be the same: the same model, data, batch_size and callbacks, in the
    same order. A backup that does not fit is an error, and nothing changes.

    Args:
        backup_dir: the folder of the backup (made when the first backup is written).
        save_freq: ``"epoch"``: a backup after every epoch; an int k: after every k-th
            batch, counted from the fit's first.
        double_checkpoint: keep the previous backup too (``backup.previous.npz``), to
            resume from if the latest cannot be read.
        delete_checkpoint: delete the backup when the fit ends (not when it is interrupted).

    >>> import numpy as np, tempfile, tinynn
    >>> tinynn.utils.set_random_seed(0)
    >>> model = tinynn.Sequential([tinynn.Input(shape=(3,)), tinynn.layers.Dense(2)])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> backup = BackupAndRestore(tempfile.mkdtemp(), save_freq=2)
    >>> x, y = np.random.rand(8, 3), np.array([0, 1] * 4)
    >>> len(model.fit(x, y, batch_size=2, epochs=2, callbacks=[backup], verbose=0).epoch)
    2
    >>> backup.path.exists()  # deleted at the end of the fit
    False
    """

    NAME, PREVIOUS = "backup.npz", "backup.previous.npz"

    def __init__(self, backup_dir, save_freq: str | int = "epoch",
                 double_checkpoint: bool = False, delete_checkpoint: bool = True):
        from tinynn import validation

        if not isinstance(backup_dir, (str, os.PathLike)) or not os.fspath(backup_dir):
            raise TypeError(f"backup_dir must be a folder's path, got {backup_dir!r}")
        if save_freq != "epoch":
            if isinstance(save_freq, str):
                raise ValueError(f"save_freq must be 'epoch' or a number of batches, got "
                                 f"{save_freq!r}")
            save_freq = validation.positive_int(save_freq, "save_freq")
        self.backup_dir = Path(backup_dir)
        self.save_freq = save_freq
        self.batch_interval = 0 if save_freq == "epoch" else save_freq
        self.double_checkpoint = validation.boolean(double_checkpoint, "double_checkpoint")
        self.delete_checkpoint = validation.boolean(delete_checkpoint, "delete_checkpoint")

    @property
    def path(self) -> Path:
        """The backup file."""
        return self.backup_dir / self.NAME

    @property
    def previous(self) -> Path:
        """The backup before it (with ``double_checkpoint``)."""
        return self.backup_dir / self.PREVIOUS

    # ------------------------------------------------------------ the hooks

    def on_train_begin(self, logs: dict | None = None) -> None:
        found = self._read()
        if found is not None:
            self._restore(*found)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        place = self.model.fit_place
        if self.batch_interval and (place.epoch * place.steps + place.step) \
                % self.batch_interval == 0:
            self._write()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.save_freq == "epoch":
            self._write()

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.delete_checkpoint:
            return
        from tinynn.saving.atomic import remove_stale_temporaries

        for path in (self.path, self.previous):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            remove_stale_temporaries(path, min_age=0.0)  # of writes killed mid-backup
        with contextlib.suppress(OSError):  # (a folder that holds other files stays)
            self.backup_dir.rmdir()

    # ------------------------------------------------------------ writing

    def _write(self) -> None:
        from tinynn.saving.backup import write_backup
        from tinynn.utils import generator

        place = self.model.fit_place
        arrays: dict[str, np.ndarray] = {}
        states = [{"class": type(hook).__name__,
                   "state": {name: _encode(getattr(hook, name), f"{i}/{name}", arrays, hook)
                             for name in hook.state_attributes}}
                  for i, hook in enumerate(_keeping_state(place.callbacks))]
        totals = place.totals
        training = {"epoch": place.epoch, "step": place.step, "steps": place.steps,
                    "rng": place.rng if place.rng is not None else
                    generator().bit_generator.state,
                    "totals": [float(totals.loss_sum), int(totals.correct), int(totals.seen)],
                    "callbacks": states}
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        if self.double_checkpoint and self.path.exists():
            os.replace(self.path, self.previous)  # a kill now: the previous one is read
        write_backup(self.model, self.path, training, arrays)

    # ------------------------------------------------------------ restoring

    def _read(self) -> tuple | None:
        """(the backed-up model, training object, arrays) of the latest readable backup."""
        from tinynn.saving import ModelFileError
        from tinynn.saving.backup import read_backup

        paths = [self.path, self.previous] if self.double_checkpoint else [self.path]
        for path in paths:
            if not path.exists():
                continue
            try:
                return read_backup(path)
            except ModelFileError as e:
                if path == self.path and self.double_checkpoint and self.previous.exists():
                    continue
                raise ModelFileError(f"BackupAndRestore: {e}. Delete it to train from the "
                                     f"start") from None
        return None

    def _restore(self, saved, training: dict, arrays: dict) -> None:
        """Put the model, the generator, the callbacks and fit's place back as ``saved``
        and ``training`` say; everything is checked before anything changes."""
        from tinynn import training as fit_steps
        from tinynn.utils import generator

        model, place = self.model, self.model.fit_place
        _check_same_model(model, saved, self.path)
        where = _checked_place(training, place, self.path)
        rng = _checked_rng(training.get("rng"), self.path)
        hooks = _keeping_state(place.callbacks)
        states = _checked_states(training.get("callbacks"), hooks, arrays, self.path)
        opt = model.optimizer
        if opt.slots is None:
            opt.build(model.weights)  # (as fit would), to be filled in place
        slots = saved.optimizer.slots if saved.optimizer.slots is not None else opt.slots
        fit_steps.restore(model, (saved.weights, slots, saved.optimizer.iterations,
                                  [layer.state for layer in saved.leaf_layers]))
        opt.learning_rate = saved.optimizer.learning_rate
        for layer, theirs in zip(model.leaf_layers, saved.leaf_layers):
            if hasattr(theirs, "seed"):
                layer.seed = theirs.seed
        for hook, state in zip(hooks, states):
            for name, value in state.items():
                setattr(hook, name, value)
        generator().bit_generator.state = rng
        place.epoch, place.step, place.rng = where["epoch"], where["step"], rng
        place.totals.loss_sum, place.totals.correct, place.totals.seen = where["totals"]


def _keeping_state(hooks: list) -> list:
    """The callbacks with a state to back up (others may come and go between runs)."""
    return [hook for hook in hooks if hook.state_attributes]


def _encode(value, name: str, arrays: dict, hook) -> dict:
    """A callback's attribute as JSON: arrays go to ``arrays`` under ``name``."""
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(a, np.ndarray) for a in value):
        names = [f"{name}/{j}" for j in range(len(value))]
        arrays.update(zip(names, value))
        return {"arrays": names}
    try:
        json.dumps(value, default=_plain)
    except (TypeError, ValueError):
        raise TypeError(f"BackupAndRestore: {type(hook).__name__}.{name.split('/')[1]} holds "
                        f"{type(value).__name__}, which a backup cannot hold (None, numbers, "
                        f"strings, lists and dicts of those, or a list of arrays)") from None
    return {"value": json.loads(json.dumps(value, default=_plain))}


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def _problem(path: Path, what: str) -> ValueError:
    return ValueError(f"BackupAndRestore: the backup {os.fspath(path)!r} {what}; resume with "
                      f"the same model, data, batch_size and callbacks, or delete it to train "
                      f"from the start")


def _check_same_model(model, saved, path: Path) -> None:
    def layout(m) -> list:  # not the names (they count the layers made in this process),
        # nor Dropout's seeds (drawn when a layer is made: the backup's are put back)
        return [(type(layer).__name__, {k: v for k, v in layer.get_config().items()
                                        if k not in ("name", "seed")}) for layer in m.leaf_layers]

    if layout(model) != layout(saved):
        raise _problem(path, "holds other layers than this model's")
    if [(w.shape, w.dtype) for w in model.weights] != [(w.shape, w.dtype) for w in saved.weights]:
        raise _problem(path, "holds weights of other shapes or dtypes than this model's")
    for part in ("optimizer", "loss"):
        mine, theirs = getattr(model, part), getattr(saved, part)
        if type(mine) is not type(theirs):
            raise _problem(path, f"was written with the {part} {type(theirs).__name__}, this "
                                 f"model has {type(mine).__name__}")
    if model.loss.get_config() != saved.loss.get_config() or model.metrics != saved.metrics:
        raise _problem(path, "was written with other loss settings or metrics")


def _checked_place(training: dict, place, path: Path) -> dict:
    def count(key: str, high: int | None = None) -> int:
        value = training.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (
                high is not None and value > high):
            raise _problem(path, f"holds {key}={value!r}")
        return value

    if count("steps") != place.steps:
        raise _problem(path, f"was written by a fit of {training['steps']} steps an epoch; "
                             f"this one has {place.steps} (another batch_size or data)")
    totals = training.get("totals")
    if not (isinstance(totals, list) and len(totals) == 3 and isinstance(totals[0], float)
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                    for t in totals[1:])):
        raise _problem(path, f"holds totals={totals!r}")
    return {"epoch": count("epoch"), "step": count("step", place.steps), "totals": totals}


def _checked_rng(state, path: Path) -> dict:
    """The generator state, tried on a generator of its own first."""
    from tinynn.utils import generator

    trial = type(generator().bit_generator)()
    try:
        trial.state = state
    except (TypeError, ValueError, KeyError, OverflowError):
        raise _problem(path, "holds no valid generator state") from None
    return state


def _checked_states(states, hooks: list, arrays: dict, path: Path) -> list[dict]:
    """Each callback's attributes, decoded; the callbacks that keep a state must be those
    of the backup, in the same order."""
    if not isinstance(states, list) or [s.get("class") if isinstance(s, dict) else s
                                        for s in states] != [type(h).__name__ for h in hooks]:
        names = [s.get("class") for s in states if isinstance(s, dict)] \
            if isinstance(states, list) else states
        raise _problem(path, f"was written by a fit with the callbacks {names}, this one has "
                             f"{[type(h).__name__ for h in hooks]} (callbacks with a state)")
    decoded = []
    for hook, state in zip(hooks, states):
        values = state.get("state")
        if not isinstance(values, dict) or sorted(values) != sorted(hook.state_attributes):
            raise _problem(path, f"holds no state for {type(hook).__name__}'s "
                                 f"{list(hook.state_attributes)}")
        decoded.append({name: _decode(v, arrays, path) for name, v in values.items()})
    return decoded


def _decode(encoded, arrays: dict, path: Path):
    if isinstance(encoded, dict) and set(encoded) == {"value"}:
        return encoded["value"]
    if isinstance(encoded, dict) and set(encoded) == {"arrays"} and isinstance(
            encoded["arrays"], list) and all(n in arrays for n in encoded["arrays"]):
        return [arrays[n] for n in encoded["arrays"]]
    raise _problem(path, f"holds a callback state it cannot read: {str(encoded)[:80]}")
