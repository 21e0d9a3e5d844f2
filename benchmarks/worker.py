"""One benchmark run in its own process: one framework, one model, one seed.

    python benchmarks/worker.py --framework tinynn-numba --model hidden --seed 0

Trains one of the models of ``specs.MODELS`` on MNIST (Keras's semantics) and
prints one JSON object: seconds per epoch, import and set-up time, test loss and
accuracy, predict times, peak memory and the threads used. benchmarks/run.py
starts one of these per framework, model and seed, one at a time.

Frameworks: tinynn-numba, tinynn-numpy, keras (Keras 3 on TensorFlow's CPU
backend), torch (PyTorch on the CPU, ``peer_torch``) and jax (JAX on the CPU,
``peer_jax``); the last two are written to Keras's semantics. MNIST is read with
tinynn's loader from --data-dir or $TINYNN_DATA.

``--threads N`` pins the process to N cores (CPU affinity, before anything is
imported) and sets each framework's own thread count to N where it has one.
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
from specs import (  # noqa: E402
    MODELS,
    TINYNN_ONLY,
    keras_compile_arguments,
    keras_layers,
    load_mnist,
    with_units,
)

FRAMEWORKS = ["tinynn-numba", "tinynn-numpy", "keras", "torch", "jax"]


def limit_threads(threads: int) -> None:
    """Run on ``threads`` cores: CPU affinity, and the thread counts read from the
    environment at import (BLAS, Numba, TensorFlow, XLA)."""
    cores = sorted(os.sched_getaffinity(0))
    if threads > len(cores):
        raise SystemExit(f"--threads {threads}: only {len(cores)} cores available")
    os.sched_setaffinity(0, cores[:threads])
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "NUMBA_NUM_THREADS", "TINYNN_THREADS", "TF_NUM_INTRAOP_THREADS",
                 "TF_NUM_INTEROP_THREADS"):
        os.environ[name] = str(threads)
    if threads == 1:  # XLA's CPU client has no thread count, only this switch
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()


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
    def __init__(self, backend: str, spec, seed: int, threads: int | None = None):
        import tinynn

        tinynn.set_backend(backend)
        tinynn.utils.set_random_seed(seed)
        from user_dense import Scale, UserDense

        self.model = tinynn.Sequential(keras_layers(tinynn, spec, UserDense, Scale))
        self.model.compile(**keras_compile_arguments(tinynn, spec))
        self.callback_base = tinynn.callbacks.Callback
        self.backend = backend

    @property
    def threads(self) -> int:
        """Compiled training: one thread per core of the affinity (engine.training_threads;
        one where BLAS does the products, which then uses the cores itself); the NumPy
        backend trains on one thread (its BLAS on every core). Asked after fit: asking
        imports Numba, which fit's start-up cost must include."""
        from tinynn.compiled import engine

        fused_plan = engine.plan(self.model, training=True) if self.backend == "numba" else None
        return engine.training_threads(fused_plan) if fused_plan else 1


class Keras(KerasStyle):
    def __init__(self, spec, seed: int, threads: int | None = None):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        # 0 means TensorFlow's default: one thread per core.
        self.threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        keras.utils.set_random_seed(seed)
        self.model = keras.Sequential(keras_layers(keras, spec))
        self.model.compile(**keras_compile_arguments(keras, spec))
        self.callback_base = keras.callbacks.Callback


def make(framework: str, spec, seed: int, threads: int | None):
    if framework.startswith("tinynn-"):
        return Tinynn(framework.split("-", 1)[1], spec, seed, threads)
    if spec.user_first:
        raise SystemExit(f"{framework} cannot run a model with a tinynn layer in it")
    if framework == "keras":
        return Keras(spec, seed, threads)
    if framework == "torch":
        from peer_torch import Torch

        return Torch(spec, seed, threads)
    from peer_jax import Jax

    runner = Jax(spec, seed)
    runner.threads = threads or os.cpu_count()  # XLA: all cores, or one (see limit_threads)
    return runner


def version(framework: str) -> str:
    """The version of what ran (already imported)."""
    module = framework if framework in ("keras", "torch", "jax") else "tinynn"
    text = f"{module} {sys.modules[module].__version__}"
    if framework == "keras":
        text += f" (TensorFlow {sys.modules['tensorflow'].__version__})"
    if framework == "tinynn-numba":
        text += f" (Numba {sys.modules['numba'].__version__})"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", required=True, choices=FRAMEWORKS)
    parser.add_argument("--model", default="hidden", choices=sorted(MODELS))
    parser.add_argument("--units", type=int, default=None,
                        help="width of the first Dense layer (the scaling study)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="default: the model's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the model's")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first LIMIT samples only (a quick check)")
    parser.add_argument("--threads", type=int, default=None,
                        help="cores to run on (default: all, each framework's default)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--no-predict", action="store_true")
    parser.add_argument("--first-predict", action="store_true",
                        help="only time predict on the test set, before any fit: the first "
                             "call and the median of three later ones (start-up cost)")
    parser.add_argument("--fit-twice", action="store_true",
                        help="only time two fits in a row, the same each (start-up cost)")
    args = parser.parse_args()
    for name in ("units", "epochs", "batch_size", "limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.model in TINYNN_ONLY and not args.framework.startswith("tinynn-"):
        parser.error(f"--model {args.model} runs on tinynn only")
    if args.threads:
        limit_threads(args.threads)  # before any framework is imported

    spec = with_units(MODELS[args.model], args.units)
    epochs = args.epochs or spec.epochs
    batch_size = args.batch_size or spec.batch_size
    x_train, y_train, x_test, y_test = load_mnist(spec, args.data_dir, args.limit)
    start = time.perf_counter()
    runner = make(args.framework, spec, args.seed, args.threads)
    import_seconds = time.perf_counter() - start
    if args.first_predict:
        start = time.perf_counter()
        runner.predict(x_test, 32)
        first = time.perf_counter() - start
        later = median_seconds(lambda: runner.predict(x_test, 32), 3)
        print(json.dumps({"first_predict_seconds": first, "later_predict_seconds": later}))
        return
    if args.fit_twice:
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            runner.fit(x_train, y_train, epochs, batch_size)
            seconds.append(time.perf_counter() - start)
        runner.evaluate(x_test, y_test)  # (untimed: so that its kernels are on disk too)
        print(json.dumps({"first_fit_seconds": seconds[0], "second_fit_seconds": seconds[1]}))
        return
    start = time.perf_counter()
    epoch_times = runner.fit(x_train, y_train, epochs, batch_size)
    fit_seconds = time.perf_counter() - start
    loss, accuracy = runner.evaluate(x_test, y_test)
    result = {
        "framework": args.framework, "version": version(args.framework),
        "model": args.model, "seed": args.seed,
        "units": next(layer[1] for layer in spec.layers if layer[0] == "dense"),
        "batch_size": batch_size, "train_samples": len(x_train), "epochs": epoch_times,
        "threads": {"requested": args.threads, "cores": len(os.sched_getaffinity(0)),
                    "framework": runner.threads},
        "import_seconds": import_seconds,
        # Everything fit did besides the epochs themselves (data conversion, set-up).
        "fit_overhead_seconds": fit_seconds - sum(epoch_times),
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
