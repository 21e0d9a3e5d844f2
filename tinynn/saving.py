"""Model files: ``model.save(path)``, ``tinynn.models.load_model(path)``, and weights alone.

A model file is a NumPy ``.npz`` archive (a zip): the architecture and compile
settings as JSON text in the array ``config``, the weights as ``weights/<i>``
and the optimizer's state as ``optimizer/<i>/<slot>``, each in the dtype it
had (float32 or float64). Reading a file never runs code from it (no pickles),
and costs no more than what the file really holds:

* only a regular file is opened (a FIFO or a device would block or never end);
  a file you may not read raises ``PermissionError``, as ``open`` does;
* only the members the format names are read; each one's ``.npy`` header is read
  first, and its shape × itemsize must equal the member's size in the zip
  directory before a byte of data is inflated;
* the arrays read may total at most ``MAX_BYTES``, and at most ``MAX_INFLATION``
  times the file's size (tinynn writes them uncompressed, so a deflated member
  that inflates a thousandfold is a bomb); the JSON may take at most
  ``MAX_CONFIG_BYTES``; a file may declare at most ``MAX_LAYERS`` layers;
* every layer is checked against the weights the file holds *before* it
  allocates anything: layers are built with initializers that hand over the
  stored arrays and refuse a shape other than the one stored, so a
  ``Dense(10**12)`` in a small file is an error, not a ``MemoryError``;
* every setting must read back unchanged from the object made from it (a
  loss's ``from_logits: "no"`` would become True: refused), the step count
  must be in [0, ``MAX_ITERATIONS``], and the optimizer's state must be
  finite (Adam's ``v`` also non-negative).

Any failure raises ``ModelFileError`` naming the file and the problem.

Writing refuses, with a ``ValueError`` at save time, a model whose file could
not be loaded back (non-finite weights or state, state made for other weights).
It writes a temporary file ``.<name>.<pid>.<random>.tmp`` beside the target
(through a symlink: beside its target), flushes it to disk and renames it over
the target, so a crash leaves the old file intact. The new file gets the mode of
the file it replaces, or the umask's default mode. Temporary files left by a
writer killed mid-save are removed by the next save of the same target (see
``_remove_stale_temporaries``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import secrets
import stat
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

FORMAT, VERSION = "tinynn", 1

#: At most this many layers in a file.
MAX_LAYERS = 10_000
#: At most this many bytes of arrays (weights and optimizer state, as inflated) in a file.
MAX_BYTES = 2**32
#: At most this many times the file's own size in arrays: tinynn writes them uncompressed
#: (1×), and compressed trained weights come to about 1.1×; a deflated bomb is ~1000×.
MAX_INFLATION = 100
#: At most this many bytes for the JSON description (about 300 bytes per layer).
MAX_CONFIG_BYTES = 2**26
#: The largest optimizer step count accepted (counts stay exact in float64 below it).
MAX_ITERATIONS = 2**53
#: The dtypes weights and optimizer state may have.
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: A temporary file this old whose writer is gone is removed by the next save.
STALE_SECONDS = 60.0


class ModelFileError(ValueError):
    """A file is not a model (or weights) file this version of tinynn can read."""


def _class_for(kind: str, name: object) -> type:
    """The class a file names for a ``"layer"``, ``"optimizer"`` or ``"loss"``.

    The one place that maps names in files to classes.
    """
    from tinynn import layers, losses, optimizers

    classes = {"layer": layers.LAYERS, "optimizer": optimizers.OPTIMIZERS,
               "loss": losses.LOSSES}[kind]
    if not isinstance(name, str) or name not in classes:
        raise ModelFileError(f"unknown {kind} (unknown class {name!r}); known {kind} classes: "
                             f"{sorted(classes)}")
    return classes[name]


def _nonnegative_slots(cls: type) -> tuple[str, ...]:
    """Optimizer state that cannot be negative (a class says so in ``nonnegative_slots``)."""
    return tuple(getattr(cls, "nonnegative_slots", ()))


# ---------------------------------------------------------------- writing


def save_model(model, path: str | os.PathLike) -> None:
    """Write the model's layers, compile settings, weights and optimizer state to ``path``.

    Raises:
        ValueError: the model is not built, or its file could not be loaded back.
    """
    if not model.built:
        raise ValueError("save: the model is not built yet (no weights to save)")
    if len(model.leaf_layers) > MAX_LAYERS:
        raise ValueError(f"save: a model file holds at most MAX_LAYERS={MAX_LAYERS} layers, "
                         f"the model has {len(model.leaf_layers)}")
    weights = model.weights
    _check_arrays(weights, "weight", ValueError, "save: ")
    opt = model.optimizer
    config = {"format": FORMAT, "version": VERSION, "kind": "model", "name": model.name,
              # Nested models are written opened up: the same layers, weights and math.
              "layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                         for layer in model.leaf_layers],
              "compile": None}
    arrays = {f"weights/{i}": w for i, w in enumerate(weights)}
    if opt is not None:
        _check_iterations(opt.iterations, ValueError, "save: ")
        if opt.slots is not None:
            _check_slots(opt.slots, weights, opt.slot_names, _nonnegative_slots(type(opt)),
                         ValueError, "save: ")
        config["compile"] = {
            "optimizer": {"class": type(opt).__name__, "config": opt.get_config(),
                          "iterations": int(opt.iterations),
                          "slots": None if opt.slots is None else list(opt.slot_names)},
            "loss": {"class": type(model.loss).__name__, "config": model.loss.get_config()},
            "metrics": model.metrics,
        }
        for i, slot in enumerate(opt.slots or []):
            arrays.update({f"optimizer/{i}/{k}": a for k, a in slot.items()})
    _write(path, config, arrays)


def save_weights(model, path: str | os.PathLike) -> None:
    """Write only the weights (and their shapes, to check them against on loading)."""
    if not model.built:
        raise ValueError("save_weights: the model is not built yet (no weights to save)")
    _check_arrays(model.weights, "weight", ValueError, "save_weights: ")
    config = {"format": FORMAT, "version": VERSION, "kind": "weights",
              "shapes": [list(w.shape) for w in model.weights]}
    _write(path, config, {f"weights/{i}": w for i, w in enumerate(model.weights)})


def _write(path: str | os.PathLike, config: dict, arrays: dict[str, np.ndarray]) -> None:
    size = sum(a.nbytes for a in arrays.values())
    if size > MAX_BYTES:
        raise ValueError(f"save: the model's arrays take {size:,} bytes, more than a file may "
                         f"hold (tinynn.saving.MAX_BYTES = {MAX_BYTES:,})")
    _write_atomically(path, {**arrays, "config": np.array(json.dumps(config))})


def _write_atomically(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an npz to a temporary file beside ``path``, then rename it over it."""
    target = Path(os.path.realpath(path))  # through a symlink: replace its target, not the link
    _remove_stale_temporaries(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)  # keep the replaced file's mode
    except FileNotFoundError:
        mode = None  # a new file: os.open applies the umask to 0o666
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.chmod(tmp, mode)
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_directory(target.parent)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def _temporary_pattern(target: Path) -> re.Pattern:
    """Names of temporaries for ``target``: ours (with the writer's PID) and older tinynn's."""
    name = re.escape(target.name)
    return re.compile(rf"\.{name}\.(?:(?P<pid>\d+)\.[0-9a-f]{{16}}|[a-z0-9_]{{8}})\.tmp")


def _remove_stale_temporaries(target: Path) -> None:
    """Remove temporaries of ``target`` left by writers that were killed mid-save.

    A temporary is stale when its writer's process is gone (no PID in the name:
    written by an older tinynn) *and* it has not been written to for
    ``STALE_SECONDS``. Both, because either alone can be wrong: on a shared
    network directory a live writer on another machine has a PID unknown here
    (but its file keeps changing), and a local writer may pause longer than a
    minute (but its PID is alive).
    """
    pattern = _temporary_pattern(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    now = time.time()
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or (match["pid"] and _process_alive(int(match["pid"]))):
            continue
        candidate = target.parent / name
        with contextlib.suppress(OSError):  # gone already, or not ours to remove
            info = os.lstat(candidate)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > STALE_SECONDS:
                os.remove(candidate)


def _process_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and below address process groups, never one writer
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # PermissionError: it exists, as another user
        return True
    return True


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (where the system allows opening a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- checks shared by both ways


def _check_arrays(arrays, what: str, error: type, prefix: str) -> None:
    """Each array is float32/float64 and finite (what load will demand)."""
    for i, a in enumerate(arrays):
        if a.dtype not in DTYPES:
            raise error(f"{prefix}{what} {i} has dtype {a.dtype}; model files hold "
                        f"{[str(d) for d in DTYPES]}")
        if not np.isfinite(a).all():
            raise error(f"{prefix}{what} {i} must be finite, but holds "
                        f"{a[~np.isfinite(a)].flat[0]}")


def _check_iterations(iterations: object, error: type, prefix: str) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or not (
            0 <= iterations <= MAX_ITERATIONS):
        raise error(f"{prefix}optimizer iterations must be a count in [0, {MAX_ITERATIONS}], "
                    f"got {iterations!r}")
    return int(iterations)


def _check_slots(slots, weights, names, nonnegative, error: type, prefix: str) -> None:
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
    from tinynn import utils
    from tinynn.models import Sequential

    with _reading(path, "model") as (archive, config):
        specs = _model_layout(config)
        headers = archive.stored_weights()
        archive.check_budget()
        weights = archive.load(headers)
        _check_arrays(weights, "weight", ModelFileError, "")
        # Making layers may draw from tinynn's generator; put its state back, so that
        # loading a model does not change what the next draws are.
        state = utils.generator().bit_generator.state
        try:
            feed = _Feed(weights)
            model = Sequential(name=_string(config.get("name", "sequential"), "name"))
            for i, spec in enumerate(specs):
                model.add(_make(spec, "layer", f"layer {i}", feed))
            if not model.built:
                raise ModelFileError("the first layer has no input_shape")
            feed.finish(model.weights)
        finally:
            utils.generator().bit_generator.state = state
        if config.get("compile") is not None:
            _compile_from(model, config["compile"], archive, headers)
    return model


def load_weights(model, path: str | os.PathLike) -> None:
    """Set the model's weights from a ``save_weights`` file; nothing changes if it does not fit."""
    with _reading(path, "weights") as (archive, _):
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
        _check_arrays(weights, "weight", ModelFileError, "")
        try:
            model.set_weights(weights)
        except (TypeError, ValueError) as e:
            raise ModelFileError(str(e)) from None


@contextlib.contextmanager
def _reading(path, kind: str) -> Iterator[tuple[_Archive, dict]]:
    """The open archive and its checked config; every failure inside names ``path``."""
    with _open_regular(path) as file:
        try:
            archive = _Archive(file)
            config = archive.config()
            _check_kind(config, kind)
            yield archive, config
        except ModelFileError as e:
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


def _read_slots(archive: _Archive, weights: list[_Header], names: list[str]) -> list[dict]:
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


def _make(spec: object, kind: str, where: str, feed: _Feed | None = None):
    """An object from ``{"class": …, "config": {…}}``, its settings checked.

    Every setting must be a constructor argument of the class; one whose default
    is a bool or a number must be one; and every setting must read back unchanged
    from ``get_config()`` of the object made (so nothing is silently coerced).
    Constructor arguments named ``*_initializer`` are given ``feed`` (the
    stored weights), so that a layer allocates nothing the file does not hold.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise ModelFileError(f"{where} must be an object with 'class' and 'config'")
    try:
        cls = _class_for(kind, spec.get("class"))
    except ModelFileError as e:
        raise ModelFileError(f"{where}: {e}") from None
    parameters = inspect.signature(cls).parameters
    injected = {p: feed for p in parameters if p.endswith("_initializer")} if feed else {}
    # (An initializer named in the file is moot: the weights come from the file.)
    config = {k: v for k, v in spec["config"].items() if k not in injected}
    for key, value in config.items():
        default = parameters[key].default if key in parameters else None
        if key not in parameters:
            raise ModelFileError(f"{where} ({cls.__name__}) has an unknown setting {key!r}")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ModelFileError(f"{where} ({cls.__name__}): {key} must be true or false, "
                                 f"got {value!r}")
        if (isinstance(default, (int, float)) and not isinstance(default, bool)
                and (isinstance(value, bool) or not isinstance(value, (int, float)))):
            raise ModelFileError(f"{where} ({cls.__name__}): {key} must be a number, "
                                 f"got {value!r}")
    try:
        made = cls(**config, **injected)
    except (TypeError, ValueError) as e:  # (ModelFileError too: a weight the file lacks)
        raise ModelFileError(f"{where} ({cls.__name__}): {e}") from None
    back = json.loads(json.dumps(made.get_config()))
    for key, value in config.items():
        if back.get(key) != value:
            raise ModelFileError(f"{where} ({cls.__name__}): {key}={value!r} does not read back "
                                 f"(it becomes {back.get(key)!r})")
    return made


class _Feed:
    """An initializer that hands each layer the next stored weight, if its shape is the one asked.

    The layer calls it with the shape it is about to allocate: a shape other than
    the stored one is refused before anything that size exists.
    """

    def __init__(self, weights: list[np.ndarray]):
        self.weights, self.used = weights, 0

    def __call__(self, shape) -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        if self.used == len(self.weights):
            raise ModelFileError(f"the file holds {len(self.weights)} weight arrays, but the "
                                 f"layers expected {self.used + 1} weight arrays or more")
        w = self.weights[self.used]
        if w.shape != shape:
            raise ModelFileError(f"weight {self.used} must have shape {shape}, the file holds "
                                 f"shape {w.shape}")
        self.used += 1
        return w

    def finish(self, params: list[np.ndarray]) -> None:
        """Every stored weight was used, in order (or is set in order now)."""
        if len(params) != len(self.weights):
            raise ModelFileError(f"expected {len(params)} weight arrays, the file holds "
                                 f"{len(self.weights)}")
        for i, (p, w) in enumerate(zip(params, self.weights)):
            if p.shape != w.shape:
                raise ModelFileError(f"weight {i} must have shape {p.shape}, the file holds "
                                     f"shape {w.shape}")
        if any(p is not w for p, w in zip(params, self.weights)):
            # A layer made its own parameters: set them from the file, in Keras's order.
            for p, w in zip(params, self.weights):
                p[...] = w


def _compile_from(model, spec: dict, archive: _Archive, headers: list[_Header]) -> None:
    """Compile ``model`` as the file says, with the optimizer's step count and state."""
    opt_spec = spec["optimizer"]
    optimizer = _make(opt_spec, "optimizer", "optimizer")
    loss = _make(spec["loss"], "loss", "loss")
    iterations = _check_iterations(opt_spec.get("iterations"), ModelFileError, "")
    names = opt_spec.get("slots")
    slots = None
    if names is not None:
        if names != list(optimizer.slot_names):
            raise ModelFileError(f"optimizer slots {names} do not match "
                                 f"{list(optimizer.slot_names)}")
        slot_headers = _read_slots(archive, headers, names)
        archive.check_budget()
        slots = [dict(zip(s, archive.load(list(s.values())))) for s in slot_headers]
        _check_slots(slots, model.weights, names, _nonnegative_slots(type(optimizer)),
                     ModelFileError, "")
    model.compile(optimizer, loss, metrics=spec.get("metrics"))
    optimizer.iterations = iterations
    optimizer.slots = slots


def _string(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ModelFileError(f"{name} must be a string, got {value!r}")
    return value


def npy_header(archive: zipfile.ZipFile, member: str) -> tuple[tuple, np.dtype, bool, int]:
    """Shape, dtype, Fortran order and data offset of an ``.npy`` member, from its header alone.

    Reads a few hundred bytes, whatever the member's size, and checks that the
    size the header implies is the size the zip directory gives for the member,
    so that reading it afterwards allocates nothing a damaged or hostile header
    made up. Also used for Keras's ``mnist.npz`` (``tinynn.datasets.base``).

    Raises:
        ValueError: damaged header, Python objects (pickles) inside, or sizes that disagree.
    """
    info = archive.getinfo(member)
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{member}: unsupported .npy version {version}")
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{member} holds Python objects (a pickle), which tinynn never loads")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if info.file_size != offset + nbytes:
        raise ValueError(f"{member}: its header declares shape {shape} of {dtype} "
                         f"({nbytes:,} bytes), but the member holds "
                         f"{info.file_size - offset:,} bytes")
    return shape, dtype, fortran, offset


class _Header:
    """One member's ``.npy`` header: what reading it will cost, known before reading it."""

    def __init__(self, member: str, info: zipfile.ZipInfo, shape, dtype, fortran, offset):
        self.member, self.info, self.shape, self.dtype = member, info, shape, dtype
        self.fortran, self.offset = fortran, offset
        self.nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize


class _Archive:
    """A zip of ``.npy`` members, read only as far as the format names them."""

    def __init__(self, file):
        self.size = os.fstat(file.fileno()).st_size
        self.zip = zipfile.ZipFile(file)
        self.names = {n.removesuffix(".npy") for n in self.zip.namelist() if n.endswith(".npy")}
        self.declared = 0  # bytes of arrays declared by the headers read so far

    def header(self, member: str) -> _Header:
        """Read ``member``'s header only; its data size must be what the zip directory says."""
        try:
            shape, dtype, fortran, offset = npy_header(self.zip, member + ".npy")
        except ValueError as e:
            raise ModelFileError(f"not a readable tinynn file: {e}") from None
        header = _Header(member, self.zip.getinfo(member + ".npy"), shape, dtype, fortran, offset)
        self.declared += header.nbytes
        return header

    def check_budget(self) -> None:
        """Refuse to read arrays totalling more than MAX_BYTES, or MAX_INFLATION × the file."""
        if self.declared > MAX_BYTES:
            raise ModelFileError(f"declares {self.declared:,} bytes of arrays, more than "
                                 f"tinynn.saving.MAX_BYTES = {MAX_BYTES:,}")
        if self.declared > MAX_INFLATION * max(self.size, 1 << 16):
            raise ModelFileError(f"declares {self.declared:,} bytes of arrays in a file of "
                                 f"{self.size:,} bytes: more than MAX_INFLATION = "
                                 f"{MAX_INFLATION}× its size (a compression bomb?)")

    def config(self) -> dict:
        if "config" not in self.names:
            raise ModelFileError("not a tinynn file (no config inside)")
        header = self.header("config")
        if header.dtype.kind != "U" or header.shape != ():
            raise ModelFileError(f"config must be one string, got {header.dtype} {header.shape}")
        if header.nbytes > MAX_CONFIG_BYTES:
            raise ModelFileError(f"config of {header.nbytes:,} bytes is larger than "
                                 f"MAX_CONFIG_BYTES = {MAX_CONFIG_BYTES:,}")
        self.declared -= header.nbytes  # counted against its own limit
        try:
            return json.loads(str(self.load([header])[0]))
        except RecursionError:
            raise ModelFileError("config nests too deeply") from None

    def stored_weights(self) -> list[_Header]:
        """Headers of ``weights/0``, ``weights/1``, …: float32 or float64, none missing."""
        count = 0
        while f"weights/{count}" in self.names:
            count += 1
        others = sorted(n for n in self.names if n.startswith("weights/")
                        and n not in {f"weights/{i}" for i in range(count)})
        if others:
            raise ModelFileError(f"expected weight arrays weights/0 … weights/{count - 1}, "
                                 f"found also {others[:3]}")
        headers = [self.header(f"weights/{i}") for i in range(count)]
        for h in headers:
            if h.dtype not in DTYPES:
                raise ModelFileError(f"{h.member} has dtype {h.dtype}; model files hold "
                                     f"{[str(d) for d in DTYPES]}")
        return headers

    def load(self, headers: list[_Header]) -> list[np.ndarray]:
        """The members' data, each read into an array of its checked size."""
        return [self._load(h) for h in headers]

    def _load(self, h: _Header) -> np.ndarray:
        array = np.empty(h.shape[::-1] if h.fortran else h.shape, h.dtype)
        view = memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(b"")
        with self.zip.open(h.info) as f:
            f.read(h.offset)
            done = 0
            while done < h.nbytes:
                chunk = f.read(min(1 << 20, h.nbytes - done))
                if not chunk:
                    raise ModelFileError(f"{h.member} ends early")
                view[done:done + len(chunk)] = chunk
                done += len(chunk)
            if f.read(1):  # (reading to the end also makes zipfile check the CRC)
                raise ModelFileError(f"{h.member} holds more than its header says")
        return array.T if h.fortran else array
