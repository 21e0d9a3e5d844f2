"""Where Keras's MNIST convnet's time goes in tinynn: the first run's compiling, and a step.

    python benchmarks/convnet_costs.py compile   # run with an empty NUMBA_CACHE_DIR
    python benchmarks/convnet_costs.py step      # needs $TINYNN_DATA (real MNIST)

``compile`` trains the convnet for two steps of random images and predicts, summing
numba's compile events by module and by function (each function's time less its
callees'): what the first run after install waits for. ``step`` trains three epochs of
120 steps (batch 128) of real MNIST after a warm-up and prints the milliseconds a step of
each, and their best times 469 steps (one epoch of 60,000 images).
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def convnet(keras):
    layers = keras.layers
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Flatten(), layers.Dropout(0.5), layers.Dense(10, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def compile_times() -> None:
    from numba.core import event

    modules, functions, stack = collections.Counter(), collections.Counter(), []

    class Listener(event.Listener):
        def on_start(self, ev):
            stack.append([time.perf_counter(), 0.0])

        def on_end(self, ev):
            start, callees = stack.pop()
            total = time.perf_counter() - start
            if stack:
                stack[-1][1] += total
            f = getattr(ev.data["dispatcher"], "py_func", None)
            module = getattr(f, "__module__", "?")
            modules[module] += total - callees
            functions[f"{module}.{getattr(f, '__qualname__', '?')}"] += total - callees

    event.register("numba:compile", Listener())
    import numpy as np

    import tinynn as keras

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((256, 28, 28, 1)).astype(np.float32)
    x[x < 0.8] = 0  # mostly zeros, as MNIST
    y = keras.utils.to_categorical(np.arange(256) % 10, 10)
    model = convnet(keras)
    started = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    model.predict(x[:10], verbose=0)
    print(f"first fit and predict: {time.perf_counter() - started:.2f} s")
    for module, seconds in modules.most_common():
        if seconds > 0.05:
            print(f"  {module:40s} {seconds:6.2f} s compiling")
    for function, seconds in functions.most_common(12):
        print(f"    {function:60s} {seconds:6.2f} s")


def step_times() -> None:
    import numpy as np

    import tinynn as keras

    keras.utils.set_random_seed(0)
    (x, y), _ = keras.datasets.mnist.load_data()
    x = np.expand_dims(x[: 128 * 120].astype("float32") / 255, -1)
    y = keras.utils.to_categorical(y[: 128 * 120], 10)
    model = convnet(keras)
    model.fit(x[:256], y[:256], batch_size=128, epochs=1, verbose=0)  # compiles: not timed
    times = []
    for _ in range(3):
        started = time.perf_counter()
        model.fit(x, y, batch_size=128, epochs=1, verbose=0)
        times.append((time.perf_counter() - started) / 120)
    print("ms a step:", ", ".join(f"{t * 1e3:.1f}" for t in times),
          f"→ {min(times) * 469:.2f} s for an epoch of 469 steps at the best")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what not in ("compile", "step"):
        raise SystemExit(__doc__)
    compile_times() if what == "compile" else step_times()
