"""``BackupAndRestore``: a fit that is killed goes on from its last backup, bit for bit."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

from tinynn.callbacks.backup_state import (
    BackupMismatchError,
    check_place,
    check_rng,
    check_same_model,
    decode_states,
    encode,
    keeping_state,
    seeds,
)
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

    The call must be the same: the same model, data, batch_size and callbacks (those
    with a state, in the same order), and no fewer epochs. A backup that does not fit
    is an error, and nothing changes. A backup written as the fit stopped (EarlyStopping)
    says so: the fit started again stops too. Not backed up: draws a callback of yours
    makes from ``tinynn.utils.generator()`` within an epoch.

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
        self._make_folder()
        found = self._read()
        self._latest_whole = found is None or found[0] == self.path
        if found is not None:
            self._restore(*found)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.batch_interval and self.model.fit_place.done() % self.batch_interval == 0:
            self._write()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.save_freq == "epoch":
            self._write()

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.delete_checkpoint:
            return
        from tinynn.saving.atomic import remove_stale_temporaries

        try:
            for path in (self.path, self.previous):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                remove_stale_temporaries(path, min_age=0.0)  # of writes killed mid-backup
        except OSError as e:  # the fit did finish: say so, do not fail it
            warnings.warn(f"BackupAndRestore: could not delete the backup in "
                          f"{os.fspath(self.backup_dir)!r}: {e}", RuntimeWarning, stacklevel=2)
        with contextlib.suppress(OSError):  # (a folder that holds other files stays)
            self.backup_dir.rmdir()

    # ------------------------------------------------------------ writing

    def _make_folder(self) -> None:
        """``backup_dir``, made if missing: a folder that cannot be is an error now, not
        after the first epoch."""
        where = os.fspath(self.backup_dir)
        if self.backup_dir.exists() and not self.backup_dir.is_dir():
            raise NotADirectoryError(f"BackupAndRestore: backup_dir {where!r} is not a folder")
        try:
            self.backup_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(e.errno, f"BackupAndRestore: cannot make backup_dir {where!r}: "
                                   f"{e.strerror}") from e
        if not os.access(self.backup_dir, os.W_OK | os.X_OK):
            raise PermissionError(f"BackupAndRestore: backup_dir {where!r} is not writable")

    def _write(self) -> None:
        from tinynn.saving.backup import write_backup
        from tinynn.utils import generator

        model, place = self.model, self.model.fit_place
        arrays: dict[str, np.ndarray] = {}
        states = [{"class": type(hook).__name__,
                   "state": {name: encode(getattr(hook, name), f"{i}/{name}", arrays, hook)
                             for name in hook.state_attributes}}
                  for i, hook in enumerate(keeping_state(place.callbacks))]
        totals = place.totals
        training = {"epoch": place.epoch, "step": place.step, "steps": place.steps,
                    "rng": place.rng if place.rng is not None else
                    generator().bit_generator.state,
                    "totals": [float(totals.loss_sum), int(totals.correct), int(totals.seen)],
                    "stop_training": bool(model.stop_training), "callbacks": states}
        self._make_folder()
        if self.double_checkpoint and self.path.exists():
            if self._latest_whole:
                os.replace(self.path, self.previous)  # a kill now: the previous one is read
            else:  # the latest could not be read: keep the previous one, which could
                os.remove(self.path)
        write_backup(model, self.path, training, arrays)
        self._latest_whole = True

    # ------------------------------------------------------------ restoring

    def _read(self) -> tuple | None:
        """(its path, what it holds: ``saving.backup.read_backup``) of the latest backup
        that reads, or None when there is none."""
        from tinynn.saving import ModelFileError
        from tinynn.saving.backup import read_backup

        paths = [self.path, self.previous] if self.double_checkpoint else [self.path]
        for path in paths:
            if not path.exists():
                continue
            try:
                return path, read_backup(path, self.model)
            except ModelFileError as e:
                if path == self.path and self.double_checkpoint and self.previous.exists():
                    continue
                raise ModelFileError(f"BackupAndRestore: {e}. Delete it to train from the "
                                     f"start") from None
        return None

    def _restore(self, path: Path, backup: dict) -> None:
        """Put the model, the generator, the callbacks and fit's place back as the backup
        says; everything is checked before anything changes."""
        from tinynn import training as fit_steps
        from tinynn.utils import generator

        model, place, config = self.model, self.model.fit_place, backup["config"]
        check_same_model(model, config, path)
        if not backup["fits"]:
            raise BackupMismatchError(path, "holds weights or optimizer slots of other "
                                            "shapes, dtypes or names than this model's")
        layer_seeds = seeds(config, path)
        where = check_place(backup["training"], place, path)
        rng = check_rng(backup["training"].get("rng"), path)
        hooks = keeping_state(place.callbacks)
        states = decode_states(backup["training"].get("callbacks"), hooks, backup["arrays"],
                               model, path)
        opt = model.optimizer
        if opt.slots is None:
            opt.build(model.weights)  # (as fit would), to be filled in place
        slots = backup["slots"] if backup["slots"] is not None else opt.slots
        fit_steps.restore(model, (backup["weights"], slots, backup["iterations"],
                                  backup["states"]))
        opt.learning_rate = config["compile"]["optimizer"]["config"]["learning_rate"]
        for layer, seed in zip(model.leaf_layers, layer_seeds):
            if seed is not None:
                layer.seed = seed
        for hook, state in zip(hooks, states):
            for name, value in state.items():
                setattr(hook, name, value)
        generator().bit_generator.state = rng
        model.stop_training = where["stop_training"]
        place.epoch, place.step, place.rng = where["epoch"], where["step"], rng
        place.totals.loss_sum, place.totals.correct, place.totals.seen = where["totals"]
