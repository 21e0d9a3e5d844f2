"""One benchmark run in its own process: one framework, one model, one seed.

    python benchmarks/worker.py --framework tinynn-numba --model hidden --seed 0

Trains the notebook's model on MNIST (batch 32, Keras's semantics) and prints
one JSON object: seconds per epoch, import and set-up time, test loss and
accuracy, predict times and peak memory. benchmarks/run.py starts one of these
per framework, model and seed, one at a time.

Frameworks: tinynn-numba, tinynn-numpy, keras (Keras 3 on TensorFlow's CPU
backend) and torch (PyTorch on the CPU, written to Keras's semantics: Glorot
init, the loss on the output layer's logits, Keras's form of Adam with
ε = 1e-7). MNIST is read with tinynn's loader from --data-dir or $TINYNN_DATA.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tinynn's loader, any venv

import numpy as np  # noqa: E402

MODELS = {"simple": [(10, "sigmoid")], "hidden": [(100, "relu"), (10, "sigmoid")]}


def load_mnist(data_dir: str | None):
    from tinynn.datasets import mnist

    (x_train, y_train), (x_test, y_test) = mnist.load_data(data_dir)
    # float32 from the start: the float64 arrays of the notebook's `x / 255`
    # would double the peak memory of every framework alike.
    scale = np.float32(255)
    x_train = x_train.reshape(len(x_train), -1) / scale  # uint8 / float32 → float32
    x_test = x_test.reshape(len(x_test), -1) / scale
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


class KerasStyle:
    """fit / evaluate / predict for the two frameworks with Keras's API (tinynn and Keras)."""

    def fit(self, x, y, epochs, batch_size):
        times = []

        class Timer(self.callback_base):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.start)

        self.model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0,
                       callbacks=[Timer()])
        return times

    def evaluate(self, x, y):
        return self.model.evaluate(x, y, verbose=0)

    def predict(self, x, batch_size):
        return self.model.predict(x, batch_size=batch_size, verbose=0)


class Tinynn(KerasStyle):
    def __init__(self, backend: str, layers, seed: int):
        import tinynn

        tinynn.set_backend(backend)
        tinynn.utils.set_random_seed(seed)
        stack = [tinynn.layers.Dense(units, activation=act) for units, act in layers]
        stack[0] = tinynn.layers.Dense(layers[0][0], activation=layers[0][1], input_shape=(784,))
        self.model = tinynn.Sequential(stack)
        self.model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                           metrics=["accuracy"])
        self.callback_base = tinynn.callbacks.Callback


class Keras(KerasStyle):
    def __init__(self, layers, seed: int):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        keras.utils.set_random_seed(seed)
        self.model = keras.Sequential(
            [keras.Input((784,))] + [keras.layers.Dense(u, activation=a) for u, a in layers]
        )
        self.model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                           metrics=["accuracy"])
        self.callback_base = keras.callbacks.Callback


class Torch:
    """PyTorch written to Keras's semantics, so that accuracies are comparable."""

    def __init__(self, layers, seed: int):
        import torch

        self.torch = torch
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        modules, fan_in = [], 784
        self.activations = []
        for units, act in layers:
            linear = torch.nn.Linear(fan_in, units)
            torch.nn.init.xavier_uniform_(linear.weight)  # Glorot uniform, as Keras
            torch.nn.init.zeros_(linear.bias)
            modules.append(linear)
            self.activations.append(act)
            fan_in = units
        self.linears = torch.nn.ModuleList(modules)
        self.params = list(self.linears.parameters())
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def logits(self, x):
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if i < len(self.linears) - 1 and self.activations[i] == "relu":
                x = self.torch.relu(x)
        return x  # the output layer's logits: Keras's loss works on these

    def outputs(self, x):
        z = self.logits(x)
        return self.torch.sigmoid(z) if self.activations[-1] == "sigmoid" else z

    def step(self, xb, yb):
        torch = self.torch
        z = self.logits(xb)
        loss = torch.nn.functional.cross_entropy(z, yb)
        for p in self.params:
            p.grad = None
        loss.backward()
        self.t += 1
        b1, b2, lr, eps = 0.9, 0.999, 0.001, 1e-7
        lr_t = lr * (1 - b2**self.t) ** 0.5 / (1 - b1**self.t)
        with torch.no_grad():  # Keras's form of Adam
            for p, m, v in zip(self.params, self.m, self.v):
                g = p.grad
                m.add_((g - m) * (1 - b1))
                v.add_((g * g - v) * (1 - b2))
                p.sub_(lr_t * m / (v.sqrt() + eps))
        return loss.detach(), z.detach()

    def fit(self, x, y, epochs, batch_size):
        torch = self.torch
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        times = []
        for _ in range(epochs):
            start = time.perf_counter()
            order = torch.randperm(len(x), generator=self.generator)
            for i in range(0, len(x), batch_size):
                idx = order[i : i + batch_size]
                self.step(x[idx], y[idx])
            times.append(time.perf_counter() - start)
        return times

    def evaluate(self, x, y):
        torch = self.torch
        with torch.no_grad():
            z = self.logits(torch.from_numpy(x))
            loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(y))
            accuracy = (z.argmax(1) == torch.from_numpy(y)).float().mean()
        return [float(loss), float(accuracy)]

    def predict(self, x, batch_size):
        torch = self.torch
        with torch.no_grad():
            xt = torch.from_numpy(x)
            return torch.cat(
                [self.outputs(xt[i : i + batch_size]) for i in range(0, len(x), batch_size)]
            ).numpy()


def make(framework: str, layers, seed: int):
    if framework.startswith("tinynn-"):
        return Tinynn(framework.split("-", 1)[1], layers, seed)
    return {"keras": Keras, "torch": Torch}[framework](layers, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", required=True,
                        choices=["tinynn-numba", "tinynn-numpy", "keras", "torch"])
    parser.add_argument("--model", default="hidden", choices=sorted(MODELS))
    parser.add_argument("--units", type=int, default=None,
                        help="hidden width (replaces 100 in the hidden model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--no-predict", action="store_true")
    args = parser.parse_args()

    layers = list(MODELS[args.model])
    if args.units and args.model == "hidden":
        layers[0] = (args.units, "relu")
    x_train, y_train, x_test, y_test = load_mnist(args.data_dir)
    start = time.perf_counter()
    runner = make(args.framework, layers, args.seed)
    import_seconds = time.perf_counter() - start
    start = time.perf_counter()
    epochs = runner.fit(x_train, y_train, args.epochs, args.batch_size)
    fit_seconds = time.perf_counter() - start
    loss, accuracy = runner.evaluate(x_test, y_test)
    result = {
        "framework": args.framework, "model": args.model, "seed": args.seed,
        "units": layers[0][0] if args.model == "hidden" else None,
        "batch_size": args.batch_size, "epochs": epochs,
        "import_seconds": import_seconds,
        # Everything fit did besides the epochs themselves (data conversion, set-up).
        "fit_overhead_seconds": fit_seconds - sum(epochs),
        "test_loss": float(loss), "test_accuracy": float(accuracy),
    }
    if not args.no_predict:
        result["predict_seconds"] = {
            "1": median_seconds(lambda: runner.predict(x_test[:1], 32), 50),
            "32": median_seconds(lambda: runner.predict(x_test[:32], 32), 50),
            "10000": median_seconds(lambda: runner.predict(x_test, 32), 7),
        }
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["process_seconds"] = time.perf_counter() - START
    print(json.dumps(result))


if __name__ == "__main__":
    main()
