"""Seconds per epoch of the notebook's two models when fit's compiled calls hold 64 steps,
256, or as many as ``training.Calls`` gives them (about 50 ms each): what a call's own
cost (~1 ms: Python, waking the partner thread) adds up to.

    TINYNN_DATA=../shared/datasets .venv/bin/python benchmarks/calls.py

One process; the three ways alternate, five epochs each, medians printed as a table.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tinynn  # noqa: E402
from tinynn import training  # noqa: E402
from tinynn.callbacks import CallbackList  # noqa: E402


def epoch(model, runner, data, order, size: int | None) -> float:
    """One epoch through ``training.train_epoch``, its calls fixed at ``size`` steps (or
    sized by ``training.Calls`` when None); seconds."""
    calls = training.Calls(every_batch=False)
    if size:
        calls.took = lambda *_: None  # keep the size
        calls.size = size
    place = training.Place(-(-len(order) // 32), training.RunningMeans([]))
    start = time.perf_counter()
    training.train_epoch(model, runner, data, order, 32, calls, CallbackList([], model), place, 0)
    return time.perf_counter() - start


def main() -> None:
    (x, y), _ = tinynn.datasets.mnist.load_data()
    x = x.reshape(len(x), -1).astype(np.float32) / np.float32(255)
    print("| model | 64 steps a call | 256 | training.Calls |\n|---|---:|---:|---:|")
    for name, units in (("simple", [(10, "sigmoid")]),
                        ("hidden", [(100, "relu"), (10, "sigmoid")])):
        tinynn.utils.set_random_seed(0)
        model = tinynn.Sequential([tinynn.Input((784,))] +
                                  [tinynn.layers.Dense(u, activation=a) for u, a in units])
        model.compile("adam", "sparse_categorical_crossentropy")
        runner = training.runner_for(model)
        data = runner.prepare(x, y)
        times = {64: [], 256: [], None: []}
        for repeat in range(6):
            order = np.random.default_rng(repeat).permutation(len(x))
            for size in times:
                times[size].append(epoch(model, runner, data, order, size))
        medians = [np.median(t[1:]) for t in times.values()]  # the first repeat warms up
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in medians) + " |")


if __name__ == "__main__":
    main()
