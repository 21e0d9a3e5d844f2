"""Model files: ``model.save(path)``, ``tinynn.models.load_model(path)``, and weights alone.

A model file is a NumPy ``.npz`` archive (a zip): the architecture and compile
settings as JSON text in the array ``config``, the weights as ``weights/<i>``
and the optimizer's state as ``optimizer/<i>/<slot>``. It is read with
``allow_pickle=False``, so loading a file never runs code from it, and every
part is checked before a model is made from it: a damaged, truncated,
hand-edited or foreign file raises ``ModelFileError`` naming the problem.

Files are written to a temporary file in the target's directory, flushed to
disk, then renamed over the target: a crash leaves the old file as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

FORMAT, VERSION = "tinynn", 1


class ModelFileError(ValueError):
    """A file is not a model (or weights) file this version of tinynn can read."""


def _write_atomically(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read(path: str | os.PathLike, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON config and the arrays of a file, or ModelFileError."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        config = json.loads(str(arrays.pop("config")))
    except FileNotFoundError:
        raise
    except KeyError:
        raise ModelFileError(f"{path}: not a tinynn file (no config inside)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError,
            NotImplementedError, RuntimeError) as e:
        # Truncated, corrupted (zipfile calls a damaged method field "not supported", a
        # damaged flag "encrypted"), holding pickles, or not an npz at all.
        raise ModelFileError(f"{path}: not a readable tinynn file: {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a tinynn file (format {config.get('format')!r})"
                             if isinstance(config, dict) else f"{path}: config is not an object")
    if config.get("version") != VERSION:
        raise ModelFileError(f"{path}: file format version {config.get('version')!r}; this "
                             f"tinynn reads version {VERSION}")
    if config.get("kind") != kind:
        raise ModelFileError(f"{path}: holds {config.get('kind')!r}, expected {kind!r}")
    return config, arrays


def _layer_configs(model) -> list[dict]:
    return [{"class": type(layer).__name__, "config": layer.get_config()}
            for layer in model.layers]


def save_model(model, path: str | os.PathLike) -> None:
    """Write the model's layers, compile settings, weights and optimizer state to ``path``."""
    if not model.built:
        raise ValueError("save: the model is not built yet (no weights to save)")
    opt = model.optimizer
    config = {"format": FORMAT, "version": VERSION, "kind": "model", "name": model.name,
              "layers": _layer_configs(model), "compile": None}
    arrays = {f"weights/{i}": w for i, w in enumerate(model.get_weights())}
    if opt is not None:
        config["compile"] = {
            "optimizer": {"class": type(opt).__name__, "config": opt.get_config(),
                          "iterations": opt.iterations,
                          "slots": None if opt.slots is None else list(opt.slot_names)},
            "loss": {"class": type(model.loss).__name__, "config": model.loss.get_config()},
            "metrics": model.metrics,
        }
        for i, slot in enumerate(opt.slots or []):
            arrays.update({f"optimizer/{i}/{k}": a for k, a in slot.items()})
    arrays["config"] = np.array(json.dumps(config))
    _write_atomically(path, arrays)


def load_model(path: str | os.PathLike):
    """A model made from a file written by ``save``: compiled, with weights and optimizer state."""
    from tinynn import layers, losses, optimizers, utils
    from tinynn.models import Sequential

    config, arrays = _read(path, "model")
    classes = {"Dense": layers.Dense, "Flatten": layers.Flatten,
               "Activation": layers.Activation}
    # Making layers draws initial weights from tinynn's generator; put its state
    # back, so that loading a model does not change what the next draws are.
    state = utils.generator().bit_generator.state
    try:
        specs = config["layers"]
        if not isinstance(specs, list) or not specs:
            raise ModelFileError(f"{path}: 'layers' must be a non-empty list")
        model = Sequential(name=str(config.get("name", "sequential")))
        for i, spec in enumerate(specs):
            if spec.get("class") not in classes:
                raise ModelFileError(f"{path}: layer {i} has unknown class {spec.get('class')!r}"
                                     f"; known: {sorted(classes)}")
            model.add(classes[spec["class"]](**spec["config"]))
        if not model.built:
            raise ModelFileError(f"{path}: the first layer has no input_shape")
        weights = [arrays.get(f"weights/{i}") for i in range(len(model.weights))]
        if any(w is None for w in weights) or f"weights/{len(weights)}" in arrays:
            raise ModelFileError(f"{path}: expected {len(model.weights)} weight arrays")
        model.set_weights(weights)
        if config["compile"] is not None:
            _compile_from(model, config["compile"], arrays, path, optimizers, losses)
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelFileError(f"{path}: invalid model description: {e!r}") from None
    finally:
        utils.generator().bit_generator.state = state
    return model


def _compile_from(model, spec: dict, arrays: dict, path, optimizers, losses) -> None:
    opt_spec, loss_spec = spec["optimizer"], spec["loss"]
    optimizer_classes = {"Adam": optimizers.Adam, "SGD": optimizers.SGD}
    if opt_spec["class"] not in optimizer_classes or loss_spec["class"] != (
            losses.SparseCategoricalCrossentropy.__name__):
        raise ModelFileError(f"{path}: unknown optimizer or loss: {opt_spec['class']!r}, "
                             f"{loss_spec['class']!r}")
    optimizer = optimizer_classes[opt_spec["class"]](**opt_spec["config"])
    model.compile(optimizer, losses.SparseCategoricalCrossentropy(**loss_spec["config"]),
                  metrics=spec["metrics"])
    iterations = opt_spec["iterations"]
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ModelFileError(f"{path}: optimizer iterations must be a count, got {iterations!r}")
    optimizer.iterations = iterations
    if opt_spec["slots"] is None:
        return
    if opt_spec["slots"] != list(optimizer.slot_names):
        raise ModelFileError(f"{path}: optimizer slots {opt_spec['slots']} do not match "
                             f"{list(optimizer.slot_names)}")
    slots = []
    for i, w in enumerate(model.weights):
        slot = {}
        for name in optimizer.slot_names:
            a = arrays.get(f"optimizer/{i}/{name}")
            if a is None or a.shape != w.shape or a.dtype.kind != "f" or not np.isfinite(a).all():
                raise ModelFileError(f"{path}: optimizer state {i}/{name} is missing or does not "
                                     f"match weight {i} of shape {w.shape}")
            slot[name] = a.astype(w.dtype)
        slots.append(slot)
    optimizer.slots = slots


def save_weights(model, path: str | os.PathLike) -> None:
    """Write only the weights (and the layer list, to check them against on loading)."""
    if not model.built:
        raise ValueError("save_weights: the model is not built yet (no weights to save)")
    config = {"format": FORMAT, "version": VERSION, "kind": "weights",
              "shapes": [list(w.shape) for w in model.weights]}
    arrays = {f"weights/{i}": w for i, w in enumerate(model.get_weights())}
    arrays["config"] = np.array(json.dumps(config))
    _write_atomically(path, arrays)


def load_weights(model, path: str | os.PathLike) -> None:
    """Set the model's weights from a ``save_weights`` file; nothing changes if it does not fit."""
    _, arrays = _read(path, "weights")
    count = len(model.weights)
    weights = [arrays.get(f"weights/{i}") for i in range(count)]
    if any(w is None for w in weights) or len(arrays) != count:
        raise ModelFileError(f"{path}: holds {len(arrays)} weight arrays, the model has {count}")
    try:
        model.set_weights(weights)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: {e}") from None
