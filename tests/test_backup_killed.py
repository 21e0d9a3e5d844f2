"""``BackupAndRestore`` against real kills (issue 22's test of done): the Keras mnist_mlp
model, 4 epochs, a backup every 100 batches, SIGKILLed twice and once more while writing a
backup, then restarted: its weights and History are an uninterrupted run's, bit for bit,
and no backup is left. And a backup that meets a full disk fails cleanly."""

import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

# One run of the mnist_mlp example's model (examples/keras/mnist_mlp.py), 4 epochs of 469
# steps, as a fresh process would run it. argv: mode, backup folder, output file, seed.
MNIST_MLP = """
import json, os, signal, sys
import numpy as np
import tinynn
from tinynn import callbacks, layers
from tinynn.datasets import mnist
from tinynn.saving import model_files

mode, folder, out, seed = sys.argv[1:5]
(x, y), _ = mnist.load_data()
x = x.reshape(60000, 784).astype("float32") / 255
y = tinynn.utils.to_categorical(y, 10)
if seed != "none":  # (a restart need not seed: the backup holds the generator's state)
    tinynn.utils.set_random_seed(int(seed))
model = tinynn.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                           layers.Dropout(0.2), layers.Dense(512, activation="relu"),
                           layers.Dropout(0.2), layers.Dense(10, activation="softmax")])
model.compile(loss="categorical_crossentropy", optimizer=tinynn.optimizers.RMSprop(),
              metrics=["accuracy"])


class SigkillAt(callbacks.Callback):
    '''SIGKILL (no clean-up runs) after the fit's ``at``-th step, before its backup.'''

    batch_interval = 50

    def __init__(self, at):
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        place = self.model.fit_place
        if place.epoch * place.steps + place.step == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


class DiesMidWrite:
    '''The backup's file, but its writer is SIGKILLed after 1 MB of it.'''

    def __init__(self, file):
        self.file, self.written = file, 0

    def write(self, data):
        if self.written > 2**20:
            self.file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        self.written += len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


extra = []
if mode == "compile":  # loads or compiles the kernels, before any compared run
    model.fit(x[:256], y[:256], batch_size=128, verbose=0)
    sys.exit(0)
if mode.startswith("kill:"):
    extra = [SigkillAt(int(mode[5:]))]
if mode == "die-writing":
    write_atomically = model_files.write_atomically
    model_files.write_atomically = lambda path, write, *args: write_atomically(
        path, lambda file: write(DiesMidWrite(file)), *args)
history = model.fit(x, y, batch_size=128, epochs=4, verbose=0,
                    callbacks=[*extra, callbacks.BackupAndRestore(folder, save_freq=100)])
np.savez(out, *model.get_weights())
print(json.dumps({"history": history.history, "epoch": history.epoch,
                  "iterations": model.optimizer.iterations}))
"""


def run(mode: str, folder, out, seed="0") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", MNIST_MLP, mode, str(folder), str(out), seed],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})


def place_of(backup) -> tuple[int, int]:
    """(epoch, step) a backup file was written at."""
    with np.load(backup) as stored:
        training = json.loads(str(stored["config"]))["training"]
    return training["epoch"], training["step"]


def weights(path) -> list[np.ndarray]:
    with np.load(path) as stored:
        return [stored[f"arr_{i}"] for i in range(len(stored.files))]


@pytest.mark.slow
def test_mnist_mlp_killed_three_times_ends_as_if_never_interrupted(mnist_data, tmp_path):
    assert run("compile", tmp_path / "none", tmp_path / "none.npz").returncode == 0
    reference = run("reference", tmp_path / "reference", tmp_path / "reference.npz")
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = json.loads(reference.stdout)
    assert expected["iterations"] == 4 * 469

    folder = tmp_path / "backup"
    backup = folder / "backup.npz"
    first = run("kill:350", folder, tmp_path / "x.npz")  # a fresh start, killed
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert place_of(backup) == (0, 300)
    second = run("kill:1250", folder, tmp_path / "x.npz", seed="none")  # resumed, killed
    assert second.returncode == -signal.SIGKILL, second.stderr[-3000:]
    assert place_of(backup) == (2, 262)
    third = run("die-writing", folder, tmp_path / "x.npz", seed="none")  # killed mid-backup
    assert third.returncode == -signal.SIGKILL, third.stderr[-3000:]
    assert place_of(backup) == (2, 262)  # the previous backup, whole
    [temporary] = [p for p in folder.iterdir() if p != backup]
    assert temporary.name.startswith(".backup.npz.") and temporary.stat().st_size > 2**20

    last = run("resume", folder, tmp_path / "resumed.npz", seed="none")
    assert last.returncode == 0, last.stderr[-3000:]
    assert json.loads(last.stdout) == expected  # the History of all 4 epochs, the steps
    for mine, theirs in zip(weights(tmp_path / "resumed.npz"),
                            weights(tmp_path / "reference.npz"), strict=True):
        np.testing.assert_array_equal(mine, theirs)  # bit for bit
    assert not folder.exists()  # no backup, no temporary: the folder is gone too


FULL_DISK = """
import json, resource, signal, sys
import numpy as np
import tinynn
from tinynn import callbacks, layers

folder, limit = sys.argv[1], int(sys.argv[2])
tinynn.utils.set_random_seed(1)
model = tinynn.Sequential([layers.Dense(50, "relu", input_shape=(4,)),
                           layers.Dense(3, "softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
x, y = np.random.default_rng(0).normal(size=(12, 4)), np.arange(12) % 3


class Stop(callbacks.Callback):  # Ctrl-C at the end of epoch 2, before its backup
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1 and not limit:
            raise KeyboardInterrupt


if limit:  # past the limit a write fails with EFBIG (SIGXFSZ ignored), as with ENOSPC
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    model.fit(x, y, epochs=4, verbose=0, callbacks=[Stop(), callbacks.BackupAndRestore(folder)])
except KeyboardInterrupt:
    print(json.dumps({"stopped": model.optimizer.iterations}))
except OSError as e:
    print(json.dumps({"errno": e.errno, "message": str(e), "at": model.optimizer.iterations}))
"""


@pytest.mark.slow
def test_a_backup_that_meets_a_full_disk_fails_cleanly(tmp_path):
    folder = tmp_path / "backup"

    def child(limit: int) -> dict:
        done = subprocess.run([sys.executable, "-c", FULL_DISK, str(folder), str(limit)],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "TINYNN_BACKEND": "numpy"})
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    assert child(0) == {"stopped": 2}  # epochs of one step; a backup after the first
    before = (folder / "backup.npz").read_bytes()
    assert len(before) > 3000
    report = child(3000)  # resumes from it, then cannot write the next one
    path = folder / "backup.npz"
    assert report == {
        "errno": errno.EFBIG, "at": 2,
        "message": f"[Errno {errno.EFBIG}] BackupAndRestore: could not write '{path}': the "
                   f"file would be larger than the file system or the process's file-size "
                   f"limit (ulimit -f) allows (File too large); the previous file is "
                   f"unchanged"}
    assert os.listdir(folder) == ["backup.npz"]  # no temporary
    assert (folder / "backup.npz").read_bytes() == before
