"""Training on several threads: the same weights whatever the thread count, and no hang.

``fused.train_steps`` splits each step between threads (rows of the batch, rows of
each kernel) so that every number is computed as one thread computes it; these
tests train the same models with 1, 2 and 3 threads (more threads than this
machine's cores still has to work) and compare the weights bit for bit.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import tinynn
from tinynn import layers, optimizers
from tinynn.compiled import engine, fused, sync, workspace

pytestmark = pytest.mark.compiled

L = layers


def mnist_like(n=300, k=64, classes=10, seed=0):
    """Sparse non-negative inputs (mostly zeros, like MNIST's) and labels."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, k), dtype=np.float32)
    x[rng.random((n, k)) < 0.7] = 0
    return x, rng.integers(0, classes, n)


class Gate(layers.Layer):
    """A user's layer, y = x · σ(g) (thread 0 runs it on the whole batch, between meetings)."""

    def build(self, input_shape):
        self.params["g"] = np.linspace(-1, 1, input_shape[0], dtype=np.float32)
        super().build(input_shape)

    def forward(self, x, training=False):
        self.x, self.s = x, 1 / (1 + np.exp(-self.params["g"]))
        return x * self.s

    def backward(self, dy):
        self.grads["g"] = (dy * self.x).sum(axis=0) * self.s * (1 - self.s)
        return dy * self.s


MODELS = {
    "a user's layer between, adam": (
        lambda: [L.Dense(40, activation="relu"), Gate(), L.Dense(10, activation="sigmoid")],
        "adam", "sparse_categorical_crossentropy", 32),
    "hidden, adam": (lambda: [L.Dense(40, activation="relu"), L.Dense(10, activation="sigmoid")],
                     "adam", "sparse_categorical_crossentropy", 32),
    "dropout, rmsprop centred": (
        lambda: [L.Dense(48, activation="relu"), L.Dropout(0.3, seed=3),
                 L.Dense(24, activation="tanh"), L.Dense(10, activation="softmax")],
        lambda: optimizers.RMSprop(0.01, momentum=0.5, centered=True),
        "sparse_categorical_crossentropy", 25),
    "probabilities, nesterov, odd batch": (
        lambda: [L.Dense(30, activation="relu"), L.Dense(10), L.Activation("sigmoid")],
        lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        "sparse_categorical_crossentropy", 33),
    "dropout first, one-hot, adamw": (
        lambda: [L.Dropout(0.2, seed=1), L.Dense(20, activation="relu"),
                 L.Dense(10, activation="softmax")],
        lambda: optimizers.AdamW(0.01), "categorical_crossentropy", 16),
    "one layer, batch 1": (lambda: [L.Dense(10, activation="softmax")], "adam",
                           "sparse_categorical_crossentropy", 1),
    # 64 × 3200 weights: BLAS-sized, but a sparse first layer alone goes by hand, on threads
    "wide sparse first layer": (lambda: [L.Dense(3200, activation="relu"), L.Dense(10)],
                                "adam", "sparse_categorical_crossentropy", 40),
}


def train(name: str, threads: int, monkeypatch) -> tuple[list, dict]:
    make, opt, loss, batch = MODELS[name]
    monkeypatch.setenv(engine.THREADS_VAR, str(threads))
    x, y = mnist_like()
    if loss == "categorical_crossentropy":
        y = tinynn.utils.to_categorical(y, 10)
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([L.Input((x.shape[1],)), *make()])
    model.compile(opt if isinstance(opt, str) else opt(), loss, metrics=["accuracy"])
    plan = engine.plan(model, training=True)
    assert plan is not None and engine.training_threads(plan) == threads
    with tinynn.backend.using("numba"):
        history = model.fit(x, y, epochs=2, batch_size=batch, verbose=0)
    return model.get_weights(), history.history


@pytest.mark.parametrize("name", MODELS)
def test_weights_do_not_depend_on_the_thread_count(name, monkeypatch):
    one_w, one_h = train(name, 1, monkeypatch)
    for threads in (2, 3):
        w, h = train(name, threads, monkeypatch)
        for a, b in zip(one_w, w):
            np.testing.assert_array_equal(a, b, err_msg=f"{threads} threads")
        assert h == one_h


def test_threads_variable_is_checked(monkeypatch):
    model = tinynn.Sequential([L.Input((4,)), L.Dense(3)])
    model.compile("adam", "sparse_categorical_crossentropy")
    plan = engine.plan(model, training=True)
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(engine.THREADS_VAR, bad)
        with pytest.raises(ValueError, match="TINYNN_THREADS"):
            engine.training_threads(plan)
    monkeypatch.delenv(engine.THREADS_VAR)
    assert engine.training_threads(plan) == min(engine._cores(), engine.MAX_TRAINING_THREADS)


def test_a_partner_that_never_comes_is_given_up(monkeypatch):
    """Thread 0 of 2 alone, with the abort flag set: it stops at its first meeting,
    before any update, instead of spinning for ever."""
    x, y = mnist_like()
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([L.Input((x.shape[1],)), L.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:8], y[:8], verbose=0)  # builds the optimizer's slots
    runner = tinynn.training.runner_for(model)
    data = runner.prepare(x, y)
    before = model.get_weights()
    work = workspace.workspace(runner.fused_model, 32)
    shared = sync.new(2)
    sync.abort(shared)
    result = fused.train_steps(
        data, fused.Epoch(np.arange(len(x)), 32, 0, 3, 0.0), runner.fused_model,
        fused.NoDropouts(runner.rates, runner.seeds, np.zeros(0, np.int64)), runner.loss_rule,
        fused.UPDATES[runner.update](runner.update, runner.P, runner.S, np.ones((3, 4))),
        fused.Threads(0, 2, np.array([[0, 32, x.shape[1]]]), shared, work, np.empty(32),
                      runner.G, -1))
    assert result[3:] == (0, fused.ABORTED)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_partner_thread_error_reaches_fit(monkeypatch):
    """If a partner thread fails, fit raises its error (and does not hang); no step is applied."""
    monkeypatch.setenv(engine.THREADS_VAR, "2")
    x, y = mnist_like()
    model = tinynn.Sequential([L.Input((x.shape[1],)), L.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    before = model.get_weights()
    real = engine._fused()

    class Broken:
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def train_steps(*args):
            if args[-1].thread == 1:  # the partner
                raise RuntimeError("partner failed")
            return real.train_steps(*args)

    monkeypatch.setattr(engine, "_fused", lambda: Broken())
    with tinynn.backend.using("numba"), pytest.raises(RuntimeError, match="partner failed"):
        model.fit(x, y, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this system")
def test_a_forked_child_trains_on_its_own_threads(monkeypatch, tmp_path):
    """A child made by fork after the parent trained (its pools made) trains too, on
    threads of its own, and gets the parent's weights; before pools were kept per process
    id, its partner thread never started and the step waited for ever."""
    import time

    _, _ = train("hidden, adam", 2, monkeypatch)  # the parent's pools exist now
    want, _ = train("hidden, adam", 2, monkeypatch)
    out = tmp_path / "child.npz"
    pid = os.fork()
    if pid == 0:  # the child: train, save, leave without running pytest's teardown
        code = 1
        try:
            got, _ = train("hidden, adam", 2, monkeypatch)
            np.savez(out, *got)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's training did not finish in 120 s")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    with np.load(out) as got:
        for i, w in enumerate(want):
            np.testing.assert_array_equal(got[f"arr_{i}"], w)


@pytest.mark.slow
def test_more_threads_than_cores_finish_with_the_same_weights(tmp_path):
    """More threads than cores (and than predict's pool): every partner gets a thread of
    its own at once, and the waiting ones give their cores away; in a process of its own,
    so that a hang fails the test instead of stalling the suite."""
    import subprocess
    import sys

    script = (
        "import numpy as np, tinynn\n"
        "from tinynn import layers as L\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.random((200, 64), dtype=np.float32); x[x < 0.7] = 0\n"
        "y = rng.integers(0, 10, 200)\n"
        "tinynn.utils.set_random_seed(0)\n"
        "m = tinynn.Sequential([L.Input((64,)), L.Dense(40, activation='relu'), L.Dense(10)])\n"
        "m.compile('adam', tinynn.losses.SparseCategoricalCrossentropy(from_logits=True))\n"
        "m.fit(x, y, epochs=2, batch_size=16, verbose=0)\n"
        "np.savez(__import__('sys').argv[1], *m.get_weights())\n")
    results = []
    for threads in (1, (os.cpu_count() or 1) + 2):
        out = tmp_path / f"{threads}.npz"
        env = {**os.environ, engine.THREADS_VAR: str(threads), "TINYNN_BACKEND": "numba"}
        subprocess.run([sys.executable, "-c", script, str(out)], env=env, timeout=300,
                       check=True)
        with np.load(out) as f:
            results.append([f[k] for k in sorted(f.files)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_a_partner_that_cannot_be_started_stops_the_others(monkeypatch):
    """If starting the second partner fails, the first one stops waiting (no thread left
    spinning), the error reaches fit, and the weights are unchanged."""
    from concurrent.futures import wait

    monkeypatch.setenv(engine.THREADS_VAR, "3")
    x, y = mnist_like()
    model = tinynn.Sequential([L.Input((x.shape[1],)), L.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    before = model.get_weights()
    real, started = engine._training_pool(), []

    class Pool:
        def submit(self, fn, *args):
            if started:
                raise RuntimeError("cannot start a thread")
            started.append(real.submit(fn, *args))
            return started[-1]

    monkeypatch.setattr(engine, "_training_pool", lambda: Pool())
    with tinynn.backend.using("numba"), pytest.raises(RuntimeError, match="cannot start"):
        model.fit(x, y, verbose=0)
    assert not wait(started, timeout=30).not_done
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_first_use_of_the_compiled_kernels_from_several_threads_at_once():
    """Threads that first use the Numba backend together wait for the one importing the
    kernel module (which takes a while: it imports Numba) rather than get it half-made."""
    import subprocess
    import sys

    script = (
        "import threading, numpy as np, tinynn\n"
        "tinynn.set_backend('numba')\n"
        "x = np.linspace(-1, 1, 60, dtype=np.float32).reshape(10, 6)\n"
        "models = []\n"
        "for seed in range(4):\n"
        "    tinynn.utils.set_random_seed(seed)\n"
        "    models.append(tinynn.Sequential([L.Dense(3, input_shape=(6,))]))\n"
        "errors = []\n"
        "def work(i):\n"
        "    try:\n"
        "        tinynn.backend.kernels().ACTIVATIONS  # the module, whole\n"
        "        models[i](x)\n"
        "    except Exception as e:\n"
        "        errors.append(repr(e))\n"
        "threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print(errors)\n"
    ).replace("L.Dense", "tinynn.layers.Dense")
    env = {**os.environ, "TINYNN_BACKEND": "numpy"}  # so that import tinynn imports no Numba
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=env, timeout=300)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_threaded_kernels_run_as_python_under_numba_disable_jit():
    """NUMBA_DISABLE_JIT=1 (debugging, coverage) runs the compiled modules as Python; the
    barrier's atomics then are Python too, and two threads train as the compiled code does."""
    import subprocess
    import sys

    script = (
        "import numpy as np, tinynn\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.random((200, 20)).astype(np.float32); y = rng.integers(0, 3, 200)\n"
        "tinynn.utils.set_random_seed(0)\n"
        "m = tinynn.Sequential([tinynn.layers.Dense(8, activation='relu', input_shape=(20,)),\n"
        "                       tinynn.layers.Dropout(0.2), tinynn.layers.Dense(3)])\n"
        "m.compile('adam', 'sparse_categorical_crossentropy')\n"
        "print(*m.fit(x, y, epochs=2, batch_size=16, verbose=0).history['loss'])\n"
    )
    losses = []
    for jit in ("0", "1"):
        env = {**os.environ, "NUMBA_DISABLE_JIT": jit, "TINYNN_THREADS": "2",
               "TINYNN_BACKEND": "numba"}
        child = subprocess.run([sys.executable, "-W", "ignore", "-c", script],
                               capture_output=True, text=True, env=env, timeout=300)
        assert child.returncode == 0, child.stderr
        losses.append([float(v) for v in child.stdout.split()])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
