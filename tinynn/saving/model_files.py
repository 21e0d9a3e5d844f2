"""Model files: ``model.save(path)``, ``tinynn.models.load_model(path)``, and weights alone.

A model file is a NumPy ``.npz`` archive (a zip): the architecture and compile
settings as JSON text in the array ``config``, the weights as ``weights/<i>``
and the optimizer's state as ``optimizer/<i>/<slot>``, each in the dtype it
had (float32 or float64). Reading a file never runs code from it (no pickles),
and costs no more than what the file really holds (``tinynn.saving.archive``): only a
regular file is opened (a FIFO would block), only the members the format names
are read, each after its header; a file may declare at most ``MAX_LAYERS``
layers; every layer is checked against the weights the file holds *before* it
allocates anything (layers are built with initializers that hand over the
stored arrays), so a ``Dense(10**12)`` in a small file is an error, not a
``MemoryError``; every setting must read back unchanged from the object made
from it; the step count must be in [0, ``MAX_ITERATIONS``]; the optimizer's
state must be finite (and non-negative where the optimizer says so). Any
failure raises ``ModelFileError`` naming the file and the problem; a file you
may not read raises ``PermissionError``, as ``open`` does.

Writing refuses, with a ``ValueError``, a model whose file could not be loaded
back, and goes through ``tinynn.saving.atomic`` (a crash leaves the old file intact;
a full disk is an ``OSError`` naming the file; ``overwrite=False`` refuses an existing
file with ``FileExistsError``).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np

from tinynn import utils, validation
from tinynn.saving.archive import DTYPES, MAX_BYTES, Archive, ArchiveError, Header
from tinynn.saving.atomic import write_atomically
from tinynn.saving.rebuild import Feed, ModelFileError, class_for, make, nonnegative_slots

FORMAT, VERSION = "tinynn", 1

#: At most this many layers in a file.
MAX_LAYERS = 10_000
#: The largest optimizer step count accepted (counts stay exact in float64 below it).
MAX_ITERATIONS = 2**53


# ---------------------------------------------------------------- writing


def save_model(model, path: str | os.PathLike, overwrite: bool = True) -> None:
    """Write the model's layers, compile settings, weights and optimizer state to ``path``.

    Args:
        model: a built model.
        path: the file to write.
        overwrite: replace an existing file (Keras's default); False refuses one.

    Raises:
        TypeError: ``overwrite`` is not a bool.
        ValueError: the model is not built, or its file could not be loaded back.
        FileExistsError: ``overwrite`` is False and ``path`` exists.
        OSError: the disk is full (ENOSPC, EDQUOT) or the file too large (EFBIG), naming
            ``path``; the previous file is unchanged.
    """
    overwrite = validation.boolean(overwrite, "overwrite")
    config, arrays = model_content(model, "save")
    write(path, config, arrays, overwrite, "save")


def model_content(model, caller: str) -> tuple[dict, dict[str, np.ndarray]]:
    """What a model file holds: its config (JSON-able) and its arrays by member name.

    Raises:
        ValueError: the model is not built, or its file could not be loaded back;
            the message starts with ``caller``.
    """
    prefix = f"{caller}: "
    if not model.built:
        raise ValueError(f"{prefix}the model is not built yet (no weights to save)")
    if len(model.leaf_layers) > MAX_LAYERS:
        raise ValueError(f"{prefix}a model file holds at most MAX_LAYERS={MAX_LAYERS} layers, "
                         f"the model has {len(model.leaf_layers)}")
    weights = model.weights
    check_arrays(weights, "weight", ValueError, prefix)
    opt = model.optimizer
    config = {"format": FORMAT, "version": VERSION, "kind": "model", "name": model.name,
              # Nested models are written opened up: the same layers, weights and math.
              "layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                         for layer in model.leaf_layers],
              "compile": None}
    arrays = {f"weights/{i}": w for i, w in enumerate(weights)}
    # Layers' state (Dropout's mask counters), so that resumed training goes on exactly.
    arrays.update({f"state/{i}/{k}": a for i, layer in enumerate(model.leaf_layers)
                   for k, a in layer.state.items()})
    if opt is not None:
        check_iterations(opt.iterations, ValueError, prefix)
        if opt.slots is not None:
            check_slots(opt.slots, weights, opt.slot_names, nonnegative_slots(type(opt)),
                         ValueError, prefix)
        config["compile"] = {
            "optimizer": {"class": type(opt).__name__, "config": opt.get_config(),
                          "iterations": int(opt.iterations),
                          "slots": None if opt.slots is None else list(opt.slot_names)},
            "loss": {"class": type(model.loss).__name__, "config": model.loss.get_config()},
            "metrics": model.metrics,
        }
        for i, slot in enumerate(opt.slots or []):
            arrays.update({f"optimizer/{i}/{k}": a for k, a in slot.items()})
    return config, arrays


def save_weights(model, path: str | os.PathLike, overwrite: bool = True) -> None:
    """Write only the weights (and their shapes, to check them against on loading).

    Args and errors as ``save_model``'s.
    """
    overwrite = validation.boolean(overwrite, "overwrite")
    if not model.built:
        raise ValueError("save_weights: the model is not built yet (no weights to save)")
    check_arrays(model.weights, "weight", ValueError, "save_weights: ")
    config = {"format": FORMAT, "version": VERSION, "kind": "weights",
              "shapes": [list(w.shape) for w in model.weights]}
    write(path, config, {f"weights/{i}": w for i, w in enumerate(model.weights)}, overwrite,
           "save_weights")


def write(path: str | os.PathLike, config: dict, arrays: dict[str, np.ndarray],
          overwrite: bool, caller: str) -> None:
    """``config`` and ``arrays`` into the ``.npz`` file ``path``, atomically."""
    size = sum(a.nbytes for a in arrays.values())
    if size > MAX_BYTES:
        raise ValueError(f"{caller}: the model's arrays take {size:,} bytes, more than a file may "
                         f"hold (tinynn.saving.MAX_BYTES = {MAX_BYTES:,})")
    arrays = {**arrays, "config": np.array(json.dumps(config))}
    write_atomically(path, lambda f: np.savez(f, **arrays), overwrite, caller)


# ---------------------------------------------------------------- checks shared by both ways


def check_arrays(arrays, what: str, error: type, prefix: str) -> None:
    """Each array is float32/float64 and finite (what load will demand)."""
    for i, a in enumerate(arrays):
        if a.dtype not in DTYPES:
            raise error(f"{prefix}{what} {i} has dtype {a.dtype}; model files hold "
                        f"{[str(d) for d in DTYPES]}")
        if not np.isfinite(a).all():
            raise error(f"{prefix}{what} {i} must be finite, but holds "
                        f"{a[~np.isfinite(a)].flat[0]}")


def check_iterations(iterations: object, error: type, prefix: str) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or not (
            0 <= iterations <= MAX_ITERATIONS):
        raise error(f"{prefix}optimizer iterations must be a count in [0, {MAX_ITERATIONS}], "
                    f"got {iterations!r}")
    return int(iterations)


def check_slots(slots, weights, names, nonnegative, error: type, prefix: str) -> None:
    """The optimizer's state fits the weights: one slot set per weight, same shape and dtype."""
    if len(slots) != len(weights):
        raise error(f"{prefix}the optimizer's state was made for {len(slots)} weight arrays, "
                    f"the model has {len(weights)} (a layer added after training?); compile "
                    f"with a new optimizer first")
    for i, (slot, w) in enumerate(zip(slots, weights)):
        for name in names:
            a = slot.get(name)
            if a is None or a.shape != w.shape or a.dtype != w.dtype:
                raise error(f"{prefix}optimizer state {i}/{name} is missing or does not match "
                            f"weight {i} of shape {w.shape} and dtype {w.dtype}")
            if not np.isfinite(a).all():
                raise error(f"{prefix}optimizer state {i}/{name} must be finite")
            if name in nonnegative and (a < 0).any():
                raise error(f"{prefix}optimizer state {i}/{name} must be non-negative, "
                            f"holds {a.min()}")


# ---------------------------------------------------------------- reading


def load_model(path: str | os.PathLike):
    """A model made from a file written by ``save``: compiled, with weights and optimizer state.

    Raises:
        FileNotFoundError, PermissionError: as ``open`` would.
        ModelFileError: anything else wrong with the file.
    """
    with reading(path, "model") as (archive, config):
        specs = _model_layout(config)
        headers = archive.stored_weights()
        archive.check_budget()
        weights = archive.load(headers)
        check_arrays(weights, "weight", ModelFileError, "")
        # Making layers may draw from tinynn's generator; put its state back, so that
        # loading a model does not change what the next draws are.
        state = utils.generator().bit_generator.state
        try:
            feed = Feed(weights)
            name = _string(config.get("name", "sequential"), "name")
            model = class_for("model", "Sequential")(name=name)
            for i, spec in enumerate(specs):
                model.add(make(spec, "layer", f"layer {i}", feed))
            if not model.built:
                raise ModelFileError("the first layer has no input_shape")
            feed.finish(model.weights)
            _read_layer_state(model, archive)
        finally:
            utils.generator().bit_generator.state = state
        if config.get("compile") is not None:
            _compile_from(model, config["compile"], archive, headers)
    return model


def load_weights(model, path: str | os.PathLike) -> None:
    """Set the model's weights from a ``save_weights`` file; nothing changes if it does not fit."""
    with reading(path, "weights") as (archive, _):
        mine = model.weights
        stored = archive.stored_weights()
        if len(stored) != len(mine):
            raise ModelFileError(f"holds {len(stored)} weight arrays, the model has {len(mine)}")
        for i, (header, w) in enumerate(zip(stored, mine)):
            if header.shape != w.shape:
                raise ModelFileError(f"weight {i} must have shape {w.shape} for this model, "
                                     f"the file holds shape {header.shape}")
        archive.check_budget()
        weights = archive.load(stored)
        check_arrays(weights, "weight", ModelFileError, "")
        try:
            model.set_weights(weights)
        except (TypeError, ValueError) as e:
            raise ModelFileError(str(e)) from None


@contextlib.contextmanager
def reading(path, kind: str) -> Iterator[tuple[Archive, dict]]:
    """The open archive and its checked config; every failure inside names ``path``."""
    with _open_regular(path) as file:
        try:
            archive = Archive(file)
            config = archive.config()
            _check_kind(config, kind)
            yield archive, config
        except (ModelFileError, ArchiveError) as e:
            raise ModelFileError(f"{path}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise ModelFileError(f"{path}: invalid model description: {e!r}") from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                RuntimeError) as e:
            # Truncated, corrupted (zipfile calls a damaged method field "not supported", a
            # damaged flag "encrypted"), or not a zip at all.
            raise ModelFileError(f"{path}: not a readable tinynn file: {e}") from None


def _open_regular(path):
    """``path`` opened for reading, if it is a regular file; never blocks on a FIFO.

    FileNotFoundError and PermissionError propagate as ``open`` raises them.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise ModelFileError(f"{path}: is {kind}, not a model file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_kind(config: object, kind: str) -> None:
    if not isinstance(config, dict):
        raise ModelFileError("config is not an object")
    if config.get("format") != FORMAT:
        raise ModelFileError(f"not a tinynn file (format {config.get('format')!r})")
    if config.get("version") != VERSION:
        raise ModelFileError(f"file format version {config.get('version')!r}; this tinynn "
                             f"reads version {VERSION}")
    if config.get("kind") != kind:
        raise ModelFileError(f"holds {config.get('kind')!r}, expected {kind!r}")


def _model_layout(config: dict) -> list[dict]:
    """The layer specs, checked for form (not yet for content)."""
    if "layers" not in config:
        raise ModelFileError("invalid model description: no 'layers'")
    specs = config["layers"]
    if not isinstance(specs, list) or not specs:
        raise ModelFileError("'layers' must be a non-empty list")
    if len(specs) > MAX_LAYERS:
        raise ModelFileError(f"declares {len(specs):,} layers; a model file may hold at most "
                             f"MAX_LAYERS={MAX_LAYERS:,}")
    compile_spec = config.get("compile")
    if compile_spec is not None:
        if not isinstance(compile_spec, dict):
            raise ModelFileError("'compile' must be an object or null")
        for key in ("optimizer", "loss"):
            if not isinstance(compile_spec.get(key), dict):
                raise ModelFileError(f"compile: '{key}' must be an object")
        names = compile_spec["optimizer"].get("slots")
        if names is not None and not (isinstance(names, list)
                                      and all(isinstance(n, str) for n in names)):
            raise ModelFileError(f"optimizer slots must be a list of names, got {names!r}")
    return specs


def read_slots(archive: Archive, weights: list[Header], names: list[str]) -> list[dict]:
    """Headers of the optimizer's state, checked against the weights' headers."""
    slots = []
    for i, w in enumerate(weights):
        slot = {}
        for name in names:
            member = f"optimizer/{i}/{name}"
            if member not in archive.names:
                raise ModelFileError(f"optimizer state {i}/{name} is missing")
            header = archive.header(member)
            if header.shape != w.shape or header.dtype != w.dtype:
                raise ModelFileError(f"optimizer state {i}/{name} does not match weight {i} "
                                     f"of shape {w.shape} and dtype {w.dtype}")
            slot[name] = header
        slots.append(slot)
    return slots


def _read_layer_state(model, archive: Archive) -> None:
    """Each layer's state arrays (Dropout's counters) from ``state/<layer>/<key>``, if the
    file has them (older files do not: the layers keep their fresh state)."""
    for i, layer in enumerate(model.leaf_layers):
        for key, live in layer.state.items():
            header = state_header(archive, i, key, live)
            if header is None:
                continue
            archive.check_budget()
            stored = archive.load([header])[0]
            if (stored < 0).any():
                raise ModelFileError(f"state/{i}/{key} must not be negative")
            live[...] = stored


def state_header(archive: Archive, i: int, key: str, live: np.ndarray) -> Header | None:
    """The header of layer i's state array ``key`` (None if the file has none), which must
    be of the live array's shape and dtype."""
    member = f"state/{i}/{key}"
    if member not in archive.names:
        return None
    header = archive.header(member)
    if header.shape != live.shape or header.dtype != live.dtype:
        raise ModelFileError(f"{member} must be {live.dtype} of shape {live.shape}, the file "
                             f"holds {header.dtype} {header.shape}")
    return header


def _compile_from(model, spec: dict, archive: Archive, headers: list[Header]) -> None:
    """Compile ``model`` as the file says, with the optimizer's step count and state."""
    opt_spec = spec["optimizer"]
    optimizer = make(opt_spec, "optimizer", "optimizer")
    loss = make(spec["loss"], "loss", "loss")
    iterations = check_iterations(opt_spec.get("iterations"), ModelFileError, "")
    names = opt_spec.get("slots")
    slots = None
    if names is not None:
        if names != list(optimizer.slot_names):
            raise ModelFileError(f"optimizer slots {names} do not match "
                                 f"{list(optimizer.slot_names)}")
        slot_headers = read_slots(archive, headers, names)
        archive.check_budget()
        slots = [dict(zip(s, archive.load(list(s.values())))) for s in slot_headers]
        check_slots(slots, model.weights, names, nonnegative_slots(type(optimizer)),
                     ModelFileError, "")
    model.compile(optimizer, loss, metrics=spec.get("metrics"))
    optimizer.iterations = iterations
    optimizer.slots = slots
    optimizer.check_variables(model.weights)  # its state now belongs to these arrays


def _string(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ModelFileError(f"{name} must be a string, got {value!r}")
    return value
