"""Ctrl-C during fit, and two fits of one model at once (issue 22): the model is left as it
was after a whole step, the progress line is closed, and a second fit just works."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import tinynn

# A child process: a model trained without shuffling, interrupted by SIGINT from a timer at
# a moment that lands anywhere (inside a compiled call, a layer's kernel, a callback). It
# prints how many steps the model holds, then continues with a second fit.
ROWS = 32768  # 4096 steps an epoch

_INTERRUPTED = f"ROWS = {ROWS}\n" + textwrap.dedent("""
    import io, signal, sys
    import numpy as np
    import tinynn

    class Terminal(io.StringIO):  # the progress bar redraws its line on a terminal only
        def isatty(self):
            return True

    def model_and_data():
        tinynn.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        x = rng.random((ROWS, 20)).astype(np.float32)
        y = rng.integers(0, 3, ROWS)
        model = tinynn.Sequential([tinynn.layers.Dense(64, activation="relu"),
                                   tinynn.layers.Dense(3, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        return model, x, y

    tinynn.set_backend(sys.argv[1])
    model, x, y = model_and_data()
    model.fit(x[:64], y[:64], batch_size=8, verbose=0)  # compiles (or loads) first: not timed
    model, x, y = model_and_data()
    if sys.argv[2] == "steps":  # exactly this many steps, uninterrupted (0: only compile)
        if sys.argv[3] == "0":
            sys.exit(0)
        epochs, rest = divmod(int(sys.argv[3]), ROWS // 8)
        if epochs:
            model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)
        if rest:
            model.fit(x[: 8 * rest], y[: 8 * rest], batch_size=8, shuffle=False, verbose=0)
        np.save(sys.argv[4], np.concatenate([w.ravel() for w in model.get_weights()]))
        sys.exit(0)
    signal.setitimer(signal.ITIMER_REAL, float(sys.argv[3]))
    signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGINT))
    sys.stdout, out = Terminal(), sys.stdout
    try:
        model.fit(x, y, batch_size=8, epochs=1000, shuffle=False, verbose=1)
    except KeyboardInterrupt:
        shown, sys.stdout = sys.stdout.getvalue(), out
        print("INTERRUPTED", model.optimizer.iterations, shown.endswith("\\n"), "\\r" in shown)
    np.save(sys.argv[4], np.concatenate([w.ravel() for w in model.get_weights()]))
    model.fit(x[:64], y[:64], batch_size=8, epochs=1, shuffle=False, verbose=0)
    print("SECOND FIT", model.optimizer.iterations, flush=True)
""")


def child(backend: str, *args) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-c", _INTERRUPTED, backend, *map(str, args)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert run.returncode == 0, run.stderr[-2000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(tinynn.backend.BACKENDS))
@pytest.mark.parametrize("after", [1.3, 2.7])
def test_ctrl_c_during_fit_leaves_the_weights_of_a_whole_step(backend, after, tmp_path):
    saved, reference = tmp_path / "interrupted.npy", tmp_path / "reference.npy"
    # Every process below loads the kernels that this one compiled: numba's freshly compiled
    # code and its cached code can differ in the last bits when NUMBA_CPU_FEATURES narrows
    # the CPU (make test-other-cpu), never natively.
    child(backend, "steps", 0, reference)
    run = child(backend, "interrupt", after, saved)
    lines = run.stdout.splitlines()
    interrupted = [line for line in lines if line.startswith("INTERRUPTED")]
    assert interrupted, f"the timer did not interrupt fit: {run.stdout[-500:]}"
    _, steps, closed, redrawn = interrupted[0].split()
    assert redrawn == "True"  # (else the line was never open)
    assert closed == "True"  # the progress bar's line was closed before the caller printed
    steps = int(steps)
    assert steps > 0
    # The weights are those after `steps` whole steps: the same bits as a fit of that many.
    child(backend, "steps", steps, reference)
    np.testing.assert_array_equal(np.load(saved), np.load(reference))
    second = [line for line in lines if line.startswith("SECOND FIT")]
    assert second and int(second[0].split()[2]) == steps + 8


def test_a_second_fit_of_one_model_from_another_thread_is_refused_clearly():
    tinynn.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((2048, 10)).astype(np.float32)
    y = np.zeros(2048, np.int64)
    model = tinynn.Sequential([tinynn.layers.Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    inside, release = threading.Event(), threading.Event()

    class Hold(tinynn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            inside.set()
            release.wait(60)

    first = threading.Thread(target=model.fit, args=(x, y),
                             kwargs={"epochs": 1, "verbose": 0, "callbacks": [Hold()]})
    first.start()
    try:
        assert inside.wait(60)
        before = [w.copy() for w in model.get_weights()]
        with pytest.raises(RuntimeError, match="already training"):
            model.fit(x, y, epochs=1, verbose=0)
        for b, w in zip(before, model.get_weights()):
            np.testing.assert_array_equal(b, w)  # the refused fit changed nothing
    finally:
        release.set()
        first.join(60)
    model.fit(x[:64], y[:64], epochs=1, verbose=0)  # and once the first is done, fit works
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
