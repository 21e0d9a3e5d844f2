"""Model files that try to cost more than they hold, special files, damaged state, and writing.

Each test is one class of failure from issue 11 §3. The hostile files are made
here by hand, a few kilobytes each: a header or a zip directory *claims*
gigabytes, and the tests check the claim is refused before anything that size
is allocated (measured with tracemalloc, in a child process whose address space
is capped, so that a regression fails the test instead of exhausting the machine).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tinynn
from tinynn import layers
from tinynn.saving import ModelFileError, model_files

X = np.random.default_rng(0).normal(size=(12, 4))
Y = np.arange(12) % 3


def make_model(**dense) -> tinynn.Sequential:
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([layers.Dense(5, "relu", input_shape=(4,), **dense),
                               layers.Dense(3, "sigmoid", **dense)])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(X, Y, epochs=2, batch_size=4, verbose=0)
    return model


@pytest.fixture
def saved(tmp_path) -> tuple[tinynn.Sequential, Path]:
    model = make_model()
    path = tmp_path / "model.tinynn"
    model.save(path)
    return model, path


def members(path: Path) -> tuple[dict, dict[str, bytes]]:
    """The config and the raw ``.npy`` bytes of every member of a model file."""
    with zipfile.ZipFile(path) as z:
        raw = {n.removesuffix(".npy"): z.read(n) for n in z.namelist()}
    config = json.loads(str(np.load(io.BytesIO(raw.pop("config")))))
    return config, raw


def npy(array: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, array)
    return f.getvalue()


def npy_header(shape: tuple[int, ...], dtype=np.float32) -> bytes:
    """Only the header of an .npy file declaring ``shape``: the data is not there."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(
        np.dtype(dtype)), "fortran_order": False, "shape": shape})
    return f.getvalue()


def write_zip(path: Path, config: dict, raw: dict[str, bytes], deflate=()) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.npy", npy(np.array(json.dumps(config))))
        for name, data in raw.items():
            method = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
            z.writestr(f"{name}.npy", data, compress_type=method)


def claim_size(path: Path, member: str, size: int) -> None:
    """Make the zip directory say ``member`` inflates to ``size`` bytes (a lie)."""
    data = bytearray(path.read_bytes())
    at = 0
    while True:
        at = data.index(b"PK\x01\x02", at)
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + name_length].decode() == f"{member}.npy":
            struct.pack_into("<I", data, at + 24, size)
            break
        at += 4
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- memory bombs

BOMB_SCRIPT = r"""
import json, resource, sys, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a regression fails, not swaps
import tinynn
from tinynn.saving import ModelFileError
results = {}
for path in sys.argv[1:]:
    tracemalloc.start()
    try:
        tinynn.models.load_model(path)
        outcome = "loaded"
    except ModelFileError as e:
        outcome = "ModelFileError: " + str(e)
    except BaseException as e:
        outcome = type(e).__name__ + ": " + str(e)
    results[path] = (outcome, tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
print(json.dumps(results))
"""


def bombs(saved, tmp_path) -> dict[str, tuple[Path, str]]:
    """Small files, each claiming gigabytes one way; and the words their error must have."""
    _, path = saved
    config, raw = members(path)
    made = {}

    def variant(name, edit_config=None, edit_raw=None, deflate=(), claims=None):
        c, r = json.loads(json.dumps(config)), dict(raw)
        if edit_config:
            edit_config(c)
        if edit_raw:
            edit_raw(r)
        out = tmp_path / f"{name}.tinynn"
        write_zip(out, c, r, deflate)
        for member, size in (claims or {}).items():
            claim_size(out, member, size)
        return out

    def wide(c):  # Dense(20000, input_shape=(20000,)): 1.6 GB of kernel, 4.6 GB with Adam
        c["layers"][0]["config"].update(units=20000, input_shape=[20000])

    made["a Dense(20000, input_shape=(20000,)) in a small file"] = (
        variant("wide", wide), r"weight 0 must have shape \(20000, 20000\)")
    made["units=10**12"] = (
        variant("units", lambda c: c["layers"][1]["config"].update(units=10**12)),
        r"must have shape \(5, 1000000000000\)")
    made["an .npy header claiming 10**12 floats"] = (
        variant("header", edit_raw=lambda r: r.update({"weights/0": npy_header((10**12,))})),
        "header declares shape")
    # The header and the zip directory agree on 1 GB, and so does the layer: the data
    # is just not there (the zip directory lies), or it would have to inflate 1000-fold.
    big = (4000, 62500)

    def big_layer(c):
        c["layers"][0]["config"].update(units=62500, input_shape=[4000])

    made["a 1 GB member the file does not hold"] = (
        variant("claimed", big_layer, lambda r: r.update({"weights/0": npy_header(big)}),
                claims={"weights/0": len(npy_header(big)) + 4000 * 62500 * 4}),
        "MAX_INFLATION")
    made["an optimizer state member claiming 1 GB"] = (
        variant("state", edit_raw=lambda r: r.update({"optimizer/0/m": npy_header(big)}),
                claims={"optimizer/0/m": len(npy_header(big)) + 4000 * 62500 * 4}),
        "optimizer state 0/m does not match weight 0")
    # A member the format does not name is never read, however big it claims to be.
    made["an unused member claiming 1 GiB"] = (
        variant("unused", edit_raw=lambda r: r.update({"junk": npy(np.zeros(1000))}),
                deflate=("junk",), claims={"junk": 2**30}), "loaded")
    made["10,001 layers"] = (
        variant("many", lambda c: c.update(layers=[{"class": "Flatten", "config": {}}] * 10001)),
        "MAX_LAYERS=10,000")
    return made


def test_memory_bombs_are_refused_before_allocating(saved, tmp_path):
    cases = bombs(saved, tmp_path)
    assert all(p.stat().st_size < 2_000_000 for p, _ in cases.values())  # vs gigabytes
    child = subprocess.run([sys.executable, "-c", BOMB_SCRIPT,
                            *(str(p) for p, _ in cases.values())],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    results = json.loads(child.stdout)
    for what, (path, words) in cases.items():
        outcome, peak = results[str(path)]
        if words == "loaded":
            assert outcome == "loaded", (what, outcome)
        else:
            assert outcome.startswith("ModelFileError") and str(path) in outcome, (what, outcome)
            assert re.search(words, outcome), (what, outcome)
        assert peak < 20 * 2**20, (what, peak)  # a few MB at most, never the claimed GB


def test_the_layer_cap_applies_to_saving_too(monkeypatch, tmp_path):
    monkeypatch.setattr(model_files, "MAX_LAYERS", 1)
    with pytest.raises(ValueError, match="at most MAX_LAYERS=1 layers, the model has 2"):
        make_model().save(tmp_path / "m.tinynn")
    assert not list(tmp_path.iterdir())


def test_a_deflated_file_within_bounds_still_loads(saved, tmp_path):
    model, path = saved
    config, raw = members(path)
    out = tmp_path / "deflated.tinynn"
    write_zip(out, config, raw, deflate=tuple(raw))
    np.testing.assert_array_equal(tinynn.models.load_model(out).predict(X), model.predict(X))


# ---------------------------------------------------------------- special files, permissions


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.tinynn"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock():  # if the loader blocks on the FIFO, give it an EOF so the test fails
        while not done.wait(0.1):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader blocked yet
                continue

    threading.Thread(target=lambda: done.wait(10) or unblock(), daemon=True).start()
    try:
        with pytest.raises(ModelFileError, match="is a FIFO, not a model file"):
            tinynn.models.load_model(fifo)
    finally:
        done.set()


@pytest.mark.parametrize(("path", "kind"), [("/dev/zero", "a device"), (".", "a directory")])
def test_other_special_files_are_refused(path, kind, tmp_path):
    target = tmp_path if path == "." else Path(path)
    with pytest.raises(ModelFileError, match=f"is {kind}"):
        tinynn.models.load_model(target)
    with pytest.raises(ModelFileError, match=f"is {kind}"):
        make_model().load_weights(target)


def test_an_unreadable_file_is_a_permission_error(saved, monkeypatch):
    """Mode 0000 gives PermissionError, as open would. As root (who may read it anyway),
    the refusal of the operating system is simulated at os.open."""
    _, path = saved
    path.chmod(0)
    if os.geteuid() == 0:
        real_open = os.open

        def refuse(p, *args, **kwargs):
            if Path(p) == path:
                raise PermissionError(13, "Permission denied", str(p))
            return real_open(p, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(PermissionError) as info:
        tinynn.models.load_model(path)
    assert not isinstance(info.value, ModelFileError)


# ---------------------------------------------------------------- damaged or foreign state


def rewrite(path: Path, edit) -> None:
    config, raw = members(path)
    arrays = {k: np.load(io.BytesIO(v)) for k, v in raw.items()}
    edit(config, arrays)
    write_zip(path, config, {k: npy(a) for k, a in arrays.items()})


def _negative_v(c, a):
    a["optimizer/0/v"] = -np.abs(a["optimizer/0/v"]) - 1


def _layer(i, **settings):
    return lambda c, a: c["layers"][i]["config"].update(settings)


def _optimizer(**settings):
    return lambda c, a: c["compile"]["optimizer"]["config"].update(settings)


STATE_EDITS = [
    ("Adam's v negative", _negative_v, "optimizer state 0/v must be non-negative"),
    ("iterations 1e30", lambda c, a: c["compile"]["optimizer"].update(iterations=1e30),
     r"iterations must be a count in \[0, 9007199254740992\], got 1e\+30"),
    ("iterations 2**63-1", lambda c, a: c["compile"]["optimizer"].update(iterations=2**63 - 1),
     "iterations must be a count"),
    ("iterations true", lambda c, a: c["compile"]["optimizer"].update(iterations=True),
     "iterations must be a count"),
    ("from_logits 'no'", lambda c, a: c["compile"]["loss"]["config"].update(from_logits="no"),
     "from_logits must be true or false, got 'no'"),
    ("use_bias 'yes'", _layer(0, use_bias="yes"), "use_bias must be true or false"),
    ("learning_rate '0.1'", _optimizer(learning_rate="0.1"), "learning_rate must be a number"),
    ("beta_1 true", _optimizer(beta_1=True), "beta_1 must be a number"),
    ("a setting the class does not take", _layer(1, dropout=0.5),
     "unknown setting 'dropout'"),
    ("a setting that does not read back", _layer(0, input_dim=4), "input_dim=4 does not read"),
    ("a float16 weight", lambda c, a: a.update({"weights/1": a["weights/1"].astype(np.float16)}),
     "weights/1 has dtype float16"),
    ("an integer weight", lambda c, a: a.update({"weights/1": a["weights/1"].astype(int)}),
     "weights/1 has dtype int64"),
    ("state of another dtype",
     lambda c, a: a.update({"optimizer/1/m": a["optimizer/1/m"].astype(np.float64)}),
     "optimizer state 1/m does not match weight 1"),
    ("infinite state",
     lambda c, a: a.update({"optimizer/1/v": np.full_like(a["optimizer/1/v"], np.inf)}),
     "optimizer state 1/v must be finite"),
    ("a gap in the weights", lambda c, a: a.update({"weights/9": a["weights/1"]}),
     "found also"),
    ("a name that is not a string", lambda c, a: c.update(name=3), "name must be a string"),
]


def test_leaky_relu_and_adagrad_round_trip_and_a_negative_accumulator_is_refused(tmp_path):
    """The newest built-ins in a file: the slope, the accumulators and the step count read
    back exactly, training goes on as if never saved; an accumulator below 0 is damage."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)).astype(np.float32), np.arange(40) % 3

    def model():
        tinynn.utils.set_random_seed(0)
        m = tinynn.Sequential([layers.Dense(6, input_shape=(5,)), layers.LeakyReLU(0.2),
                               layers.Dense(3, activation="softmax")])
        m.compile(tinynn.optimizers.Adagrad(0.05, initial_accumulator_value=0.2),
                  "sparse_categorical_crossentropy")
        return m

    straight, first = model(), model()
    straight.fit(x, y, epochs=2, shuffle=False, verbose=0)
    first.fit(x, y, epochs=1, shuffle=False, verbose=0)
    first.save(tmp_path / "m.npz")
    loaded = tinynn.models.load_model(tmp_path / "m.npz")
    assert loaded.layers[1].negative_slope == 0.2
    assert loaded.optimizer.initial_accumulator_value == 0.2
    assert loaded.optimizer.iterations == first.optimizer.iterations
    for a, b in zip(first.optimizer.slots, loaded.optimizer.slots):
        np.testing.assert_array_equal(a["accumulator"], b["accumulator"])
    loaded.fit(x, y, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(straight.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    rewrite(tmp_path / "m.npz", lambda c, a: a.update(
        {"optimizer/0/accumulator": -np.abs(a["optimizer/0/accumulator"]) - 1}))
    with pytest.raises(ModelFileError, match="optimizer state 0/accumulator must be non-negative"):
        tinynn.models.load_model(tmp_path / "m.npz")


@pytest.mark.parametrize(("what", "edit", "message"), STATE_EDITS, ids=[e[0] for e in STATE_EDITS])
def test_damaged_or_foreign_state_is_refused(saved, what, edit, message):
    _, path = saved
    rewrite(path, edit)
    with pytest.raises(ModelFileError, match=message):
        tinynn.models.load_model(path)


def test_a_config_nested_too_deeply_is_refused(saved):
    _, path = saved
    config, raw = members(path)
    text = json.dumps(config).replace('"metrics": ["accuracy"]',
                                      '"metrics": ' + "[" * 100_000 + "]" * 100_000)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.npy", npy(np.array(text)))
        for name, data in raw.items():
            z.writestr(f"{name}.npy", data)
    with pytest.raises(ModelFileError, match="nests too deeply"):
        tinynn.models.load_model(path)


# ---------------------------------------------------------------- round trips


def float64(shape):
    return np.random.default_rng(1).uniform(-0.5, 0.5, shape)  # float64, as NumPy draws


def test_a_float64_model_comes_back_float64_and_predicts_the_same(tmp_path, backend):
    model = make_model(kernel_initializer=float64, bias_initializer=lambda s: np.zeros(s))
    assert {w.dtype for w in model.weights} == {np.dtype(np.float64)}
    model.save(tmp_path / "m.tinynn")
    loaded = tinynn.models.load_model(tmp_path / "m.tinynn")
    assert [w.dtype for w in loaded.weights] == [w.dtype for w in model.weights]
    assert [s["v"].dtype for s in loaded.optimizer.slots] == [np.dtype(np.float64)] * 4
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_loading_draws_nothing_from_the_generator(saved):
    _, path = saved
    tinynn.utils.set_random_seed(3)
    expected = tinynn.utils.generator().random(3)
    tinynn.utils.set_random_seed(3)
    tinynn.models.load_model(path)
    np.testing.assert_array_equal(tinynn.utils.generator().random(3), expected)


def test_a_model_whose_file_could_not_load_is_refused_at_save(tmp_path):
    """A layer added after training is refused at ``add`` (the optimizer's state is made for
    the other weights); NaN weights or state could not be loaded back: each is a ValueError
    at save, and nothing is written."""
    model = make_model()
    with pytest.raises(ValueError, match=r"call compile\(\) again"):
        model.add(layers.Dense(2))
    model.compile("adam", "sparse_categorical_crossentropy")  # a fresh optimizer: adds, saves
    model.add(layers.Dense(2))
    model.save(tmp_path / "m.tinynn")
    assert len(tinynn.models.load_model(tmp_path / "m.tinynn").weights) == 6

    model = make_model()
    model.optimizer.slots[0]["v"][0, 0] = np.inf
    with pytest.raises(ValueError, match="state 0/v must be finite"):
        model.save(tmp_path / "n.tinynn")
    model.weights[1][0] = np.nan
    with pytest.raises(ValueError, match="weight 1 must be finite"):
        model.save_weights(tmp_path / "n.tinynn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tinynn"]


# ---------------------------------------------------------------- how files are written


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path, umask):
    model = make_model()
    model.save(tmp_path / "a.tinynn")
    assert (tmp_path / "a.tinynn").stat().st_mode & 0o777 == 0o644
    umask(0o077)
    model.save(tmp_path / "b.tinynn")
    assert (tmp_path / "b.tinynn").stat().st_mode & 0o777 == 0o600
    (tmp_path / "a.tinynn").chmod(0o640)
    model.save(tmp_path / "a.tinynn")  # replaced: keeps 0640 whatever the umask says
    model.save_weights(tmp_path / "a.tinynn")
    assert (tmp_path / "a.tinynn").stat().st_mode & 0o777 == 0o640


def test_saving_through_a_symlink_writes_its_target(tmp_path):
    model = make_model()
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "real.tinynn"
    target.write_bytes(b"old")
    link = tmp_path / "link.tinynn"
    link.symlink_to(target)
    model.save(link)
    assert link.is_symlink() and link.resolve() == target
    np.testing.assert_array_equal(tinynn.models.load_model(link).predict(X), model.predict(X))
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["real.tinynn"]


def test_stale_temporaries_of_the_target_are_removed(tmp_path):
    """Left by a writer killed mid-save: removed when the writer is gone and the file has
    not changed for a minute; kept while either might still be writing."""
    old = time.time() - 3600
    dead_pid = 2**22 + 1  # above Linux's largest PID
    files = {
        f".m.tinynn.{dead_pid}.0123456789abcdef.tmp": (old, False),       # stale: removed
        ".m.tinynn.ab_cd123.tmp": (old, False),                           # older tinynn's
        f".m.tinynn.{dead_pid}.fedcba9876543210.tmp": (time.time(), True),  # still changing
        f".m.tinynn.{os.getpid()}.0000000000000000.tmp": (old, True),     # writer alive
        f".other.tinynn.{dead_pid}.0123456789abcdef.tmp": (old, True),    # another target's
    }
    for name, (mtime, _) in files.items():
        (tmp_path / name).write_bytes(b"x" * 100)
        os.utime(tmp_path / name, (mtime, mtime))
    make_model().save(tmp_path / "m.tinynn")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"m.tinynn"} | {n for n, (_, kept) in files.items() if kept}


# ---------------------------------------------------------------- metrics and the environment


@pytest.mark.parametrize(("args", "error", "message"), [
    (([0, 1], [1, 0], "10"), TypeError, "num_classes must be a positive integer, got '10'"),
    (([0, 1], [1, 0], 0), ValueError, "num_classes must be a positive integer, got 0"),
    (([0, 1], [1, 0], True), TypeError, "num_classes must be a positive integer"),
    (([0, 5], [1, 0], 3), ValueError, "below num_classes=3, got 5"),
    (([0.0, 1.0], [1, 0], None), TypeError, "labels must be integer class indices"),
    (([0, 1], ["a", "b"], None), TypeError, "predictions must be integer class indices"),
    (([0, -1], [1, 0], None), ValueError, "labels must be non-negative"),
    (([0, 10**9], [1, 0], None), ValueError, "1,000,000,001 classes"),
])
def test_confusion_matrix_refuses_bad_arguments(args, error, message):
    with pytest.raises(error, match=message):
        tinynn.metrics.confusion_matrix(*args)


def run_python(code: str, *options: str, cwd=None, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("TINYNN_BACKEND", "NUMBA_CACHE_DIR")}
    return subprocess.run([sys.executable, *options, "-c", code], capture_output=True,
                          text=True, timeout=300, env={**environment, **env}, cwd=cwd)


def test_a_wrong_tinynn_backend_is_an_error_at_import_naming_the_variable():
    child = run_python("import tinynn", TINYNN_BACKEND="garbage")
    assert child.returncode == 1
    assert "ValueError: $TINYNN_BACKEND='garbage' names no backend" in child.stderr
    child = run_python("import sys, tinynn; print(tinynn.get_backend(), 'numba' in sys.modules)",
                       TINYNN_BACKEND="numpy")
    assert child.stdout.split() == ["numpy", "False"]  # and importing compiled nothing


@pytest.mark.slow
def test_no_writable_numba_cache_runs_uncached_with_one_warning(tmp_path):
    """A copy of tinynn whose kernels' __pycache__ cannot be a directory (a file is in the
    way: root may write anywhere, so permissions could not stop it), and a HOME and
    XDG_CACHE_HOME that cannot hold a cache: numba has no locator for its cache."""
    package = Path(tinynn.__file__).parent
    shutil.copytree(package, tmp_path / "tinynn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tinynn" / "compiled" / "__pycache__").write_bytes(b"")
    (tmp_path / "home").write_bytes(b"")  # a file, so nothing can be made below it
    code = (
        "import warnings, numpy as np, tinynn\n"
        f"assert tinynn.__file__.startswith({str(tmp_path)!r})\n"
        "tinynn.set_backend('numba')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    k = tinynn.backend.kernels()\n"
        "    z, a = k.dense_forward(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32),\n"
        "                           np.zeros(2, np.float32), 'relu')\n"
        "    tinynn.backend.kernels()\n"
        "print(sum('neither the package folder' in str(w.message) for w in caught), a.tolist())\n"
    )
    # -S: no site hooks, so the editable install cannot import tinynn from the worktree.
    site = os.pathsep.join([str(tmp_path), str(Path(np.__file__).parent.parent)])
    child = run_python(code, "-S", cwd=tmp_path, PYTHONPATH=site, HOME=str(tmp_path / "home"),
                       XDG_CACHE_HOME=str(tmp_path / "home" / "cache"),
                       PYTHONDONTWRITEBYTECODE="1")
    assert child.returncode == 0, child.stderr
    assert child.stdout.split(maxsplit=1) == ["1", "[[3.0, 3.0], [3.0, 3.0]]\n"]
