"""Where a training step's time goes: each compiled kernel of the notebook's models, timed alone.

    python benchmarks/kernels.py

Trains each model for one epoch (so the weights and Adam's state are realistic),
then times every kernel that one fused step calls, on a batch of 32 real MNIST
rows, as the median of many calls (each includes ~0.3 µs of calling from Python).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tinynn  # noqa: E402
from tinynn import engine  # noqa: E402
from tinynn.kernels import (
    compiled,  # noqa: E402
    fused,  # noqa: E402
)


def median_us(fn, *args, repeat: int = 2000) -> float:
    fn(*args)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def main() -> None:
    tinynn.set_backend("numba")
    (x, y), _ = tinynn.datasets.mnist.load_data()
    x = x.reshape(len(x), -1) / np.float32(255)
    y = y.astype(np.intp)
    for name, widths in (("simple", [(10, "sigmoid")]),
                         ("hidden", [(100, "relu"), (10, "sigmoid")])):
        tinynn.utils.set_random_seed(0)
        model = tinynn.Sequential([tinynn.layers.Dense(u, a) for u, a in widths])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=1, verbose=0)
        trainer = engine.FusedTrainer(model, engine.dense_layers(model))
        sparse = trainer.sparse_inputs(x)
        rows = np.random.default_rng(0).permutation(len(x))[:32]
        Ws, bs, slots = trainer.Ws, trainer.bs, model.optimizer.slots
        z = [np.empty((32, W.shape[1]), np.float32) for W in Ws]
        a = [np.empty_like(zi) for zi in z]
        compiled._sparse_affine(*sparse, rows, Ws[0], bs[0], z[0])
        compiled._activate(z[0], a[0], trainer.codes[0])
        timings = {"layer 1: sparse x · W + b": median_us(
            compiled._sparse_affine, *sparse, rows, Ws[0], bs[0], z[0])}
        for i in range(1, len(Ws)):
            compiled._affine(a[i - 1], np.arange(32), Ws[i], bs[i], z[i])
            timings[f"layer {i + 1}: x · W + b"] = median_us(
                compiled._affine, a[i - 1], np.arange(32), Ws[i], bs[i], z[i])
        dz = np.empty_like(z[-1])
        timings["loss and its gradient"] = median_us(
            compiled._softmax_cross_entropy, z[-1], y, rows, dz)
        for i in range(len(Ws) - 1, 0, -1):
            dW, db = np.empty_like(Ws[i]), np.empty_like(bs[i])
            timings[f"layer {i + 1}: dW, db"] = median_us(
                compiled._weight_grads, a[i - 1], np.arange(32), dz, dW, db)
            timings[f"layer {i + 1}: dx"] = median_us(
                compiled._input_grads, dz, Ws[i], a[i - 1].copy())
            dz = a[i - 1].copy()
        dW0, db0 = np.empty_like(Ws[0]), np.empty_like(bs[0])
        timings["layer 1: sparse dW, db"] = median_us(
            compiled._sparse_weight_grads, *sparse, rows, dz, dW0, db0)
        for i, W in enumerate(Ws):
            w, m, v = W.copy(), slots[2 * i]["m"].copy(), slots[2 * i]["v"].copy()
            grad = np.full_like(W, 1e-3)
            timings[f"layer {i + 1}: Adam on W ({W.size:,} weights)"] = median_us(
                fused._step_update, w, grad, m, v, fused.ADAM, 1e-3, 0.9, 0.999, 1e-7, 2000)
        print(f"\n{name} model, one step of batch 32 (µs, median):\n")
        print("| kernel | µs |\n|---|---:|")
        for kernel, us in timings.items():
            print(f"| {kernel} | {us:.1f} |")
        print(f"| sum | {sum(timings.values()):.1f} |")


if __name__ == "__main__":
    main()
