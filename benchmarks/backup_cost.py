"""What ``callbacks.BackupAndRestore`` costs: seconds per epoch of the Keras mnist_mlp model
(examples/keras/mnist_mlp.py: 469 steps an epoch, RMSprop) without backups, with one every
100 batches, and with one an epoch.

    TINYNN_DATA=../shared/datasets .venv/bin/python benchmarks/backup_cost.py [--repeats 3]

One process, the kernels compiled first; the three ways alternate, two epochs a fit; the
medians over the repeats are printed as a table, with each way's ratio to no backup.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tinynn  # noqa: E402
from tinynn import callbacks, layers  # noqa: E402

WAYS = {"no backup": None, "save_freq=100": 100, 'save_freq="epoch"': "epoch"}


def mnist_mlp() -> tinynn.Sequential:
    model = tinynn.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                               layers.Dropout(0.2), layers.Dense(512, activation="relu"),
                               layers.Dropout(0.2), layers.Dense(10, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=tinynn.optimizers.RMSprop(),
                  metrics=["accuracy"])
    return model


def seconds_per_epoch(x, y, save_freq, epochs: int = 2) -> float:
    tinynn.utils.set_random_seed(0)
    model = mnist_mlp()
    with tempfile.TemporaryDirectory() as folder:
        hooks = [] if save_freq is None else [callbacks.BackupAndRestore(folder, save_freq)]
        start = time.perf_counter()
        model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=hooks)
        return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    (x, y), _ = tinynn.datasets.mnist.load_data()
    x = x.reshape(len(x), -1).astype(np.float32) / np.float32(255)
    y = tinynn.utils.to_categorical(y, 10)
    seconds_per_epoch(x[:1024], y[:1024], None, epochs=1)  # compiles (or loads) the kernels
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(args.repeats):
        for way, save_freq in WAYS.items():
            times[way].append(seconds_per_epoch(x, y, save_freq))
    base = statistics.median(times["no backup"])
    print(f"| mnist_mlp, {args.repeats} repeats | s/epoch (median) | × no backup |")
    print("|---|---:|---:|")
    for way, seconds in times.items():
        median = statistics.median(seconds)
        print(f"| {way} | {median:.2f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
