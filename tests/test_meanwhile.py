"""While the fused step compiles, a fit trains with the step's own code run as Python over
its compiled loops (``compiled/meanwhile.py``): the same weights, bit for bit, as the
compiled step; and a first run hands the compile to another process, whose result the
next run uses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import tinynn
from tinynn import layers, optimizers
from tinynn.compiled import meanwhile
from tinynn.models import NonFiniteWarning

pytestmark = pytest.mark.compiled

ROOT = Path(__file__).resolve().parent.parent


class Shift(layers.Layer):
    """y = x + b, one trained offset per feature (a user's layer inside the fused step)."""

    def build(self, input_shape):
        self.params["b"] = np.linspace(-0.5, 0.5, int(np.prod(input_shape)), dtype=np.float32)
        super().build(input_shape)

    def forward(self, x, training=False):
        return x + self.params["b"]

    def backward(self, dy):
        self.grads["b"] = dy.sum(axis=0)
        return dy


MODELS = {
    "relu, softmax, Adam": (
        lambda: [layers.Dense(32, activation="relu"), layers.Dense(10, activation="softmax")],
        optimizers.Adam, "sparse_categorical_crossentropy"),
    "dropout first and after, sigmoid, categorical, RMSprop": (
        lambda: [layers.Dropout(0.2, seed=1), layers.Dense(24, activation="sigmoid"),
                 layers.Dropout(0.3, seed=3),
                 layers.Dense(10, activation="softmax")],
        lambda: optimizers.RMSprop(momentum=0.5, centered=True), "categorical_crossentropy"),
    "LeakyReLU, tanh, Adagrad": (
        lambda: [layers.Dense(20), layers.LeakyReLU(), layers.Dense(16, activation="tanh"),
                 layers.Dense(10, activation="sigmoid")],
        optimizers.Adagrad, "sparse_categorical_crossentropy"),
    "a user's layer, SGD with momentum": (
        lambda: [layers.Dense(16, activation="relu"), Shift(), layers.Dense(10)],
        lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        "sparse_categorical_crossentropy"),
    "a step that breaks (SGD at 1e30)": (
        lambda: [layers.Dense(16, activation="relu"), layers.Dense(10, activation="softmax")],
        lambda: optimizers.SGD(1e30), "sparse_categorical_crossentropy"),
}


def _build(name: str):
    """The model ``name`` (its initial weights drawn now, from seed 5) and its data."""
    make_layers, make_optimizer, loss = MODELS[name]
    rng = np.random.default_rng(0)
    x = rng.random((150, 6, 6)).astype(np.float32)
    x[x < 0.6] = 0  # mostly zeros, as MNIST: the first layer's sparse loops
    y = rng.integers(0, 10, 150)
    if loss == "categorical_crossentropy":
        y = np.eye(10, dtype=np.float32)[y]
    tinynn.utils.set_random_seed(5)
    model = tinynn.Sequential([tinynn.Input(shape=(6, 6)), layers.Flatten(), *make_layers()])
    model.compile(optimizer=make_optimizer(), loss=loss)
    return model, x, y


def _fit(model, x, y) -> tuple[list, list, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # (no shuffle: the order would come from the global generator, shared by threads)
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    # (only tinynn's own: NumPy's, with the JIT off, also come from partner threads)
    return model.get_weights(), history.history["loss"], [
        str(w.message) for w in caught if issubclass(w.category, NonFiniteWarning)]


def _train(name: str, python: bool, monkeypatch) -> tuple[list, list, list]:
    """Two epochs of model ``name``: with the step run as Python (``python``), or compiled."""
    jobs = []
    with monkeypatch.context() as m:
        m.setattr(meanwhile, "background", lambda: python)
        m.setattr(meanwhile, "ready", lambda kernel, sig: not python)
        m.setattr(meanwhile, "compile_elsewhere", lambda j: jobs.append(j) or True)
        result = _fit(*_build(name))
    assert bool(jobs) == python
    return result


@pytest.mark.parametrize("name", MODELS)
def test_the_step_run_as_python_gives_the_compiled_steps_weights(name, monkeypatch):
    python_weights, python_losses, python_warned = _train(name, True, monkeypatch)
    weights, losses, warned = _train(name, False, monkeypatch)
    for a, b in zip(python_weights, weights, strict=True):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()  # (the broken step is undone on both)
    assert python_losses == losses
    assert python_warned == warned
    assert bool(warned) == ("breaks" in name)


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("NUMBA_DISABLE_JIT")), reason="nothing compiles")
def test_a_first_fit_hands_the_compile_on_and_the_next_finds_it(tmp_path):
    """A fresh kernel cache: the first process trains meanwhile and starts the compiling
    process; once that has written the step, a second process uses it, with the same
    weights."""
    script = textwrap.dedent("""
        import sys, numpy as np, tinynn
        from tinynn import layers
        rng = np.random.default_rng(0)
        x = rng.random((64, 12)).astype(np.float32)
        y = rng.integers(0, 3, 64)
        tinynn.utils.set_random_seed(1)
        model = tinynn.Sequential([tinynn.Input(shape=(12,)),
                                   layers.Dense(8, activation="relu"),
                                   layers.Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        np.save(sys.argv[1], np.concatenate([w.ravel() for w in model.get_weights()]))
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "TINYNN_COMPILE": "",
           "PYTHONPATH": str(ROOT)}

    def run(out: str) -> str:
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / out)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "in the background" in run("first.npy")
    deadline = time.monotonic() + 600
    while not list((tmp_path / "cache").rglob("fused.train_steps-*.nbi")):
        assert time.monotonic() < deadline, "the compiling process wrote no step"
        time.sleep(1)
    time.sleep(2)  # (the index is written last; let the process exit)
    assert "in the background" not in run("second.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "first.npy"),
                                  np.load(tmp_path / "second.npy"))


def test_two_fits_on_two_threads_make_their_twins_at_once(monkeypatch):
    """The twins are made once per process, under a lock: two first fits at the same time
    on two threads (each model its own) give the weights each gives alone."""
    names = ["relu, softmax, Adam", "LeakyReLU, tanh, Adagrad"]
    alone = {name: _train(name, True, monkeypatch)[0] for name in names}
    monkeypatch.setattr(meanwhile, "_REBUILT", {})  # (made afresh by both at once)
    monkeypatch.setattr(meanwhile, "_GLOBALS", {})
    meanwhile._chosen.cache_clear()
    monkeypatch.setattr(meanwhile, "background", lambda: True)
    monkeypatch.setattr(meanwhile, "ready", lambda kernel, sig: False)
    monkeypatch.setattr(meanwhile, "compile_elsewhere", lambda jobs: True)
    built = {name: _build(name) for name in names}  # (seeded one after the other)
    results, errors = {}, []

    def fit(name):
        try:
            results[name] = _fit(*built[name])[0]
        except BaseException as e:  # (re-raised below, in the test's thread)
            errors.append(e)

    threads = [threading.Thread(target=fit, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for name in names:
        for a, b in zip(results[name], alone[name], strict=True):
            np.testing.assert_array_equal(a, b)
