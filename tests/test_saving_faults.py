"""Faults while writing a model file: refusing to overwrite, a full disk, a killed save.

Each case checks what the user is left with: the message names the file and says
what happened, the previous file is byte for byte what it was, and no temporary
is left beside it (or, after a SIGKILL, the next save of the file removes it).
The full disk is real: a child process lowers its file-size limit
(``RLIMIT_FSIZE``), so the kernel refuses the write with EFBIG, exactly as
``write(2)`` fails when the disk fills up; the killed save is a child that
SIGKILLs itself half-way through the file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinynn
from tinynn import layers
from tinynn.saving import atomic

X = np.random.default_rng(0).normal(size=(12, 4))
Y = np.arange(12) % 3
SAVES = ["save", "save_weights"]


def make_model(seed: int = 0) -> tinynn.Sequential:
    tinynn.utils.set_random_seed(seed)
    model = tinynn.Sequential([layers.Dense(5, "relu", input_shape=(4,)),
                               layers.Dense(3, "softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(X, Y, epochs=1, batch_size=4, verbose=0)
    return model


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` (hidden temporaries too) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def run_child(code: str, *args: str, wait: bool = True):
    """A fresh Python running ``code`` with the NumPy backend (nothing to compile)."""
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**environment, "TINYNN_BACKEND": "numpy"})
    out, err = child.communicate(timeout=300)
    return child, out, err


# ---------------------------------------------------------------- overwrite


def read_back(method: str, path: Path) -> np.ndarray:
    """Predictions of the model a ``save`` or ``save_weights`` file holds."""
    if method == "save":
        return tinynn.models.load_model(path).predict(X)
    model = make_model(2)
    model.load_weights(path)
    return model.predict(X)


@pytest.mark.parametrize("method", SAVES)
def test_overwrite_is_true_by_default_as_in_keras(method, tmp_path):
    path = tmp_path / "model.tinynn"
    first, second = make_model(0), make_model(1)
    getattr(first, method)(path)
    getattr(second, method)(path)
    np.testing.assert_array_equal(read_back(method, path), second.predict(X))
    getattr(first, method)(path, overwrite=True)
    np.testing.assert_array_equal(read_back(method, path), first.predict(X))
    assert [p.name for p in tmp_path.iterdir()] == ["model.tinynn"]


@pytest.mark.parametrize("method", SAVES)
def test_overwrite_false_refuses_an_existing_file_and_touches_nothing(method, tmp_path):
    path = tmp_path / "model.tinynn"
    getattr(make_model(0), method)(path)
    # A stale temporary too: a refused save must not even tidy the folder.
    stale = tmp_path / ".model.tinynn.4194305.0123456789abcdef.tmp"
    stale.write_bytes(b"left by a killed save")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=rf"{method}: '{re.escape(str(path))}' exists "
                                              r"already; pass overwrite=True to replace it"):
        getattr(make_model(1), method)(path, overwrite=False)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("method", SAVES)
def test_overwrite_false_writes_a_new_file(method, tmp_path):
    model = make_model()
    getattr(model, method)(tmp_path / "new.tinynn", overwrite=False)
    np.testing.assert_array_equal(read_back(method, tmp_path / "new.tinynn"), model.predict(X))


@pytest.mark.parametrize("method", SAVES)
@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_overwrite_must_be_a_bool_and_nothing_is_written(method, value, tmp_path):
    message = f"overwrite must be True or False, got {value!r}"
    with pytest.raises(TypeError, match=re.escape(message)):
        getattr(make_model(), method)(tmp_path / "model.tinynn", overwrite=value)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- a full disk, in this process


def filling(code: int):
    """A ``write`` for ``write_atomically`` that writes some bytes, then meets ``code``."""
    def write(file):
        file.write(b"x" * 10_000)
        file.flush()
        raise OSError(code, os.strerror(code))
    return write


@pytest.mark.parametrize(("code", "what"), [
    (errno.ENOSPC, "the disk is full"),
    (errno.EDQUOT, "the disk quota is used up"),
    (errno.EFBIG, "the file would be larger than the file system or the process's file-size "
                  "limit (ulimit -f) allows"),
])
def test_no_room_names_the_file_keeps_the_errno_and_the_previous_file(code, what, tmp_path):
    path = tmp_path / "model.tinynn"
    path.write_bytes(b"the previous model")
    with pytest.raises(OSError) as caught:
        atomic.write_atomically(path, filling(code))
    error = caught.value
    assert error.errno == code and isinstance(error.__cause__, OSError)
    assert error.__cause__.errno == code
    assert str(error) == (f"[Errno {code}] save: could not write '{path}': {what} "
                          f"({os.strerror(code)}); the previous file is unchanged")
    assert snapshot(tmp_path) == {"model.tinynn": b"the previous model"}


def test_no_room_for_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(OSError, match=r"could not write '.*new\.tinynn': the disk is full "
                                      r".*; no file was made") as caught:
        atomic.write_atomically(tmp_path / "new.tinynn", filling(errno.ENOSPC),
                                caller="save_weights")
    assert str(caught.value).startswith(f"[Errno {errno.ENOSPC}] save_weights: ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method", SAVES)
def test_a_full_disk_seen_only_at_fsync_is_reported_the_same(method, tmp_path, monkeypatch):
    """Some file systems (NFS, delayed allocation) accept the bytes and fail on flushing."""
    path = tmp_path / "model.tinynn"
    model = make_model()
    getattr(model, method)(path)
    before = snapshot(tmp_path)

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(OSError, match=rf"{method}: could not write '.*model\.tinynn': the "
                                      r"disk is full \(No space left on device\); the "
                                      r"previous file is unchanged") as caught:
        getattr(make_model(1), method)(path)
    assert caught.value.errno == errno.ENOSPC
    assert snapshot(tmp_path) == before


def test_other_write_errors_pass_through_as_they_were(tmp_path):
    path = tmp_path / "model.tinynn"
    path.write_bytes(b"old")
    original = OSError(errno.EIO, "Input/output error")

    def write(file):
        raise original

    with pytest.raises(OSError) as caught:
        atomic.write_atomically(path, write)
    assert caught.value is original
    assert snapshot(tmp_path) == {"model.tinynn": b"old"}


# ---------------------------------------------------------------- a full disk, for real

FULL_DISK = """
import json, resource, signal, sys
import numpy as np
import tinynn
from tinynn import callbacks, layers

path, method = sys.argv[1:]
tinynn.utils.set_random_seed(1)
model = tinynn.Sequential([layers.Dense(5, "relu", input_shape=(4,)),
                           layers.Dense(3, "softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
x, y = np.random.default_rng(0).normal(size=(12, 4)), np.arange(12) % 3
# Past the limit the kernel sends SIGXFSZ (which kills by default); ignored, the write fails
# with EFBIG instead, as a write to a full disk fails with ENOSPC.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    if method == "ModelCheckpoint":
        model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.ModelCheckpoint(path)])
    else:
        getattr(model, method)(path)
except OSError as e:
    print(json.dumps({"errno": e.errno, "message": str(e),
                      "cause": getattr(e.__cause__, "errno", None)}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", [*SAVES, "ModelCheckpoint"])
def test_a_file_size_limit_fails_the_write_cleanly(method, tmp_path):
    path = tmp_path / "model.tinynn"
    previous = make_model()
    (previous.save_weights if method == "save_weights" else previous.save)(path)
    assert path.stat().st_size > 1000  # so that the child's new file cannot fit
    before = snapshot(tmp_path)
    child, out, err = run_child(FULL_DISK, str(path), method)
    assert child.returncode == 0, err
    report = json.loads(out)
    caller = "save_weights" if method == "save_weights" else "save"
    assert report == {
        "errno": errno.EFBIG, "cause": errno.EFBIG,
        "message": f"[Errno {errno.EFBIG}] {caller}: could not write '{path}': the file would "
                   f"be larger than the file system or the process's file-size limit (ulimit "
                   f"-f) allows (File too large); the previous file is unchanged"}
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- a killed save

KILLED_SAVE = """
import os, signal, sys
import tinynn
from tinynn import layers
from tinynn.saving import model_files


class DiesMidWrite:
    '''The model file, but its writer is SIGKILLed (no clean-up runs) after 1 MB.'''

    def __init__(self, file):
        self.file, self.written = file, 0

    def write(self, data):
        if self.written > 2**20:
            self.file.flush()  # what was written is on disk, as after a real kill
            os.kill(os.getpid(), signal.SIGKILL)
        self.written += len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


write_atomically = model_files.write_atomically
model_files.write_atomically = lambda path, write, *args: write_atomically(
    path, lambda file: write(DiesMidWrite(file)), *args)
model = tinynn.Sequential([layers.Dense(1000, input_shape=(1000,)), layers.Dense(1000)])
model.compile("adam", "sparse_categorical_crossentropy")
model.save(sys.argv[1])  # 8 MB of weights
print("the save finished")
"""


@pytest.mark.slow
def test_a_killed_save_leaves_a_temporary_that_loading_ignores_and_the_next_save_removes(
        tmp_path):
    path = tmp_path / "model.tinynn"
    previous = make_model()
    previous.save(path)
    before = path.read_bytes()

    child, out, err = run_child(KILLED_SAVE, str(path))
    assert child.returncode == -signal.SIGKILL, err
    assert "the save finished" not in out
    assert path.read_bytes() == before
    [leftover] = [p for p in tmp_path.iterdir() if p != path]
    assert re.fullmatch(rf"\.model\.tinynn\.{child.pid}\.[0-9a-f]{{16}}\.tmp", leftover.name)
    assert leftover.stat().st_size > 2**20  # half a file, really written

    # Loading and listing see the previous file only: the temporary is hidden and not *.tinynn.
    assert list(tmp_path.glob("*.tinynn")) == [path]
    np.testing.assert_array_equal(tinynn.models.load_model(path).predict(X),
                                  previous.predict(X))

    # Its writer is dead, but a temporary that changed within the minute may be a live writer's
    # on another machine sharing the folder: kept. A minute later, the next save removes it.
    newer = make_model(1)
    newer.save(path)
    assert leftover.exists()
    aged = time.time() - atomic.STALE_SECONDS - 1
    os.utime(leftover, (aged, aged))
    newer.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.tinynn"]
    np.testing.assert_array_equal(tinynn.models.load_model(path).predict(X),
                                  newer.predict(X))
