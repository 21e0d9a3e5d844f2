"""What a backup holds besides the weights: the fit's place and the callbacks' state, as
JSON; and the checks a backup passes before anything is put back (``BackupAndRestore``).

Every check raises ``BackupMismatchError`` (a ``ValueError``) naming the backup file and what
does not fit, so that a backup of another model, fit or callback is refused before the
model, the generator or a callback changes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np


class BackupMismatchError(ValueError):
    """A backup that is whole but does not belong to this fit."""

    def __init__(self, path: Path, what: str):
        super().__init__(f"BackupAndRestore: the backup {os.fspath(path)!r} {what}; resume "
                         f"with the same model, data, batch_size and callbacks, or delete it "
                         f"to train from the start")


def keeping_state(hooks: list) -> list:
    """The callbacks with a state to back up (others may come and go between runs)."""
    return [hook for hook in hooks if hook.state_attributes]


# ---------------------------------------------------------------- the callbacks' state


def encode(value, name: str, arrays: dict, hook) -> dict:
    """A callback's attribute as JSON that reads back the same; a list of arrays (the
    model's weights) goes to ``arrays`` under ``name``.

    Raises:
        TypeError: the value would not read back the same (a tuple, a float32, a dict
            with keys that are not strings, an object), naming the callback.
    """
    where = f"{type(hook).__name__}.{name.split('/', 1)[1]}"
    if isinstance(value, list) and value and all(isinstance(a, np.ndarray) for a in value):
        if any(a.dtype not in (np.float32, np.float64) for a in value):
            raise TypeError(f"BackupAndRestore: {where} holds arrays that are not float32 or "
                            f"float64; a backup holds lists of the model's weights")
        names = [f"{name}/{j}" for j in range(len(value))]
        arrays.update(zip(names, value))
        return {"arrays": names}
    if not _json_exact(value):
        raise TypeError(f"BackupAndRestore: {where} holds {str(value)[:60]!r} "
                        f"({type(value).__name__}), which a backup cannot give back as it "
                        f"was: None, bool, int, float, str, and lists and dicts (of string "
                        f"keys) of those, or a list of the model's weights")
    return {"value": json.loads(json.dumps(value, default=_plain))}


def _plain(value):
    return value.item()  # (only numpy ints and float64, which _json_exact let through)


def _json_exact(value) -> bool:
    """Whether JSON gives ``value`` back equal, and of the same kind."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return True
    if isinstance(value, float):  # (numpy's float64 too; not float32, which would widen)
        return True
    if isinstance(value, list):
        return all(_json_exact(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_exact(v) for k, v in value.items())
    return False


def decode_states(states, hooks: list, arrays: dict, model, path: Path) -> list[dict]:
    """Each callback's attributes as the backup holds them, checked against what the
    callback holds now (a number for a number, a list for a list; where it holds None,
    None, a number or the model's weights)."""
    names = [s.get("class") if isinstance(s, dict) else s for s in states] \
        if isinstance(states, list) else states
    if names != [type(h).__name__ for h in hooks]:
        raise BackupMismatchError(path, f"was written by a fit with the callbacks {names}, this "
                                   f"one has {[type(h).__name__ for h in hooks]} (those with "
                                   f"a state)")
    decoded = []
    for hook, state in zip(hooks, states):
        values = state.get("state")
        if not isinstance(values, dict) or sorted(values) != sorted(hook.state_attributes):
            raise BackupMismatchError(path, f"holds no state for {type(hook).__name__}'s "
                                       f"{list(hook.state_attributes)}")
        decoded.append({name: _decode(encoded, arrays, model, path,
                                      f"{type(hook).__name__}.{name}", getattr(hook, name))
                        for name, encoded in values.items()})
    return decoded


def _decode(encoded, arrays: dict, model, path: Path, where: str, live):
    if isinstance(encoded, dict) and list(encoded) == ["arrays"] and isinstance(
            encoded["arrays"], list) and all(isinstance(n, str) and n in arrays
                                             for n in encoded["arrays"]):
        value = [arrays[n] for n in encoded["arrays"]]
        mine = [(w.shape, w.dtype) for w in model.weights]
        if [(a.shape, a.dtype) for a in value] != mine or not isinstance(live, (list, type(None))):
            raise BackupMismatchError(path, f"holds arrays for {where} that are not this model's "
                                       f"weights")
        return value
    if not (isinstance(encoded, dict) and list(encoded) == ["value"]):
        raise BackupMismatchError(path, f"holds a state for {where} it cannot read: "
                                   f"{str(encoded)[:60]}")
    value = encoded["value"]
    if not _same_kind(live, value):
        raise BackupMismatchError(path, f"holds {where} = {str(value)[:40]!r}, where the "
                                   f"callback holds a {type(live).__name__}")
    return value


def _same_kind(live, value) -> bool:
    number = (int, float)
    if live is None:
        return value is None or (isinstance(value, number) and not isinstance(value, bool))
    if isinstance(live, bool):
        return isinstance(value, bool)
    if isinstance(live, (*number, np.integer, np.floating)):
        return isinstance(value, number) and not isinstance(value, bool)
    for kind in (str, list, dict):
        if isinstance(live, kind):
            return isinstance(value, kind)
    return False


# ---------------------------------------------------------------- the model and the place


def check_same_model(model, config: dict, path: Path) -> None:
    """The backup's layers and compile settings are the model's (names aside, and
    Dropout's seeds, which the backup's replace)."""
    def plain(spec) -> tuple:
        if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
            raise BackupMismatchError(path, "holds a layer it cannot read")
        return spec.get("class"), {k: v for k, v in spec["config"].items()
                                   if k not in ("name", "seed")}

    specs = config.get("layers")
    mine = [{"class": type(layer).__name__, "config": _as_json(layer.get_config())}
            for layer in model.leaf_layers]
    if not isinstance(specs, list) or list(map(plain, specs)) != list(map(plain, mine)):
        raise BackupMismatchError(path, "holds other layers than this model's")
    compiled = config["compile"]
    opt, spec = model.optimizer, compiled.get("optimizer")
    if not isinstance(spec, dict) or spec.get("class") != type(opt).__name__:
        theirs = spec.get("class") if isinstance(spec, dict) else spec
        raise BackupMismatchError(path, f"was written with the optimizer {theirs}, this model has "
                                   f"{type(opt).__name__}")
    settings = dict(spec.get("config") or {})
    rate = settings.pop("learning_rate", None)
    if settings != {k: v for k, v in _as_json(opt.get_config()).items()
                    if k != "learning_rate"}:
        raise BackupMismatchError(path, f"was written with the optimizer settings {settings}, "
                                   f"this one has {opt.get_config()}")
    if not isinstance(rate, float) or not math.isfinite(rate) or rate <= 0:
        raise BackupMismatchError(path, f"holds the learning rate {rate!r}")
    loss = {"class": type(model.loss).__name__, "config": _as_json(model.loss.get_config())}
    if compiled.get("loss") != loss or compiled.get("metrics") != model.metrics:
        raise BackupMismatchError(path, "was written with other loss settings or metrics")


def _as_json(config: dict) -> dict:
    """A config as it reads back from a file (tuples become lists)."""
    return json.loads(json.dumps(config))


def seeds(config: dict, path: Path) -> list:
    """Each layer's seed as the backup holds it (None for a layer without one)."""
    found = [spec["config"].get("seed") for spec in config["layers"]]
    for seed in found:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or not 0 <= seed < 2**63):
            raise BackupMismatchError(path, f"holds the seed {seed!r}")
    return found


def check_place(training: dict, place, path: Path) -> dict:
    """The epoch, step, running sums and stop of the backup, which must be possible in
    this fit: its steps an epoch, epochs and samples."""
    def count(key: str, high: int) -> int:
        value = training.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            raise BackupMismatchError(path, f"holds {key}={str(value)[:30]}, not a count in "
                                       f"[0, {high}]")
        return value

    if training.get("steps") != place.steps:
        raise BackupMismatchError(path, f"was written by a fit of {training.get('steps')} steps an "
                                   f"epoch; this one has {place.steps} (another batch_size "
                                   f"or data)")
    epoch, step = count("epoch", 2**53), count("step", place.steps)
    if epoch > place.epochs or (epoch == place.epochs and step):
        raise BackupMismatchError(path, f"was written in epoch {epoch + 1}, after step {step}; "
                                        f"this fit has {place.epochs} epochs")
    totals, seen = training.get("totals"), min(step * place.batch_size, place.samples)
    if not (isinstance(totals, list) and len(totals) == 3 and isinstance(totals[0], float)
            and math.isfinite(totals[0]) and totals[0] >= 0 and totals[2] == seen
            and isinstance(totals[1], int) and not isinstance(totals[1], bool)
            and 0 <= totals[1] <= seen):
        raise BackupMismatchError(path, f"holds the running sums {str(totals)[:60]}, not those of "
                                   f"{seen} samples")
    stop = training.get("stop_training")
    if not isinstance(stop, bool):
        raise BackupMismatchError(path, f"holds stop_training={stop!r}")
    return {"epoch": epoch, "step": step, "totals": totals, "stop_training": stop}


def check_rng(state, path: Path) -> dict:
    """The generator's state, tried on a generator of its own first."""
    from tinynn.utils import generator

    trial = type(generator().bit_generator)()
    try:
        trial.state = state
    except (TypeError, ValueError, KeyError, OverflowError):
        raise BackupMismatchError(path, "holds no valid generator state") from None
    return state
