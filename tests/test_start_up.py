"""A process whose kernels are compiled already starts quickly: it reads them without
loading numba's compiler modules or SciPy (``compiled/cache.py``, ``fused._batch_mean``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # fresh processes

ROOT = Path(__file__).resolve().parent.parent

#: fit, predict and evaluate a small model on the compiled path, then say which of the
#: slow modules the process loaded.
SCRIPT = """
import json, sys
import numpy as np
import tinynn
from tinynn.compiled import engine

rng = np.random.default_rng(0)
x = (rng.random((256, 784)) * (rng.random((256, 784)) < 0.2)).astype(np.float32)
y = rng.integers(0, 10, 256)
tinynn.utils.set_random_seed(0)
model = tinynn.Sequential([tinynn.layers.Dense(100, activation="relu"),
                           tinynn.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=1, verbose=0)
compiled = engine.plan(model, training=True) is not None
outputs = model.predict(x, verbose=0)
loss, accuracy = model.evaluate(x, y, verbose=0)
print(json.dumps({
    "compiled": compiled,
    "loaded": sorted(m for m in ("scipy.linalg", "numba.np.arraymath") if m in sys.modules),
    "weights": float(sum(np.abs(w).sum() for w in model.get_weights())),
    "outputs": float(outputs.sum()), "loss": loss, "accuracy": accuracy,
}))
"""


def run() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TINYNN_BACKEND"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing is compiled")
def test_a_process_with_its_kernels_compiled_loads_neither_scipy_nor_numbas_compiler():
    first = run()  # compiles whatever is not on disk yet (which loads both)
    second = run()
    assert first["compiled"] and second["compiled"]
    # Numba loads every typing and lowering module before reading a cached function
    # (and SciPy's linalg with them, ~0.45 s in all), and a kernel that calls one of its
    # array methods (.sum(), .mean()) loads them when it is read: neither may happen.
    assert second["loaded"] == []
    assert second == {**first, "loaded": []}  # the same numbers, read or compiled
