"""Classic Keras MNIST scripts run unchanged on tinynn (``import keras`` gets tinynn), with
Keras's accuracy: TensorFlow's beginner quickstart, the Keras MNIST MLP example and
Keras's "Simple MNIST convnet".

One epoch each here (real Keras 3.15 on this data: ~0.96 after one epoch for the first two);
the full runs (5, 3 and 15 epochs) are ``python tools/as_keras.py examples/keras/<script>.py``.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import as_keras  # noqa: E402


@pytest.fixture
def as_keras_modules(monkeypatch):
    for name in ["keras", *(f"keras.{m}" for m in as_keras.MODULES)]:
        monkeypatch.delitem(sys.modules, name, raising=False)
    as_keras.alias()


def run(script: str) -> tuple[dict, str]:
    path = ROOT / "examples" / "keras" / script
    namespace = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(as_keras.source(path, epochs=1), str(path), "exec"), namespace)
    return namespace, out.getvalue()


@pytest.mark.usefixtures("mnist_data", "as_keras_modules")
def test_tensorflow_quickstart_runs_unchanged():
    ns, printed = run("quickstart.py")
    loss, accuracy = ns["model"].evaluate(ns["x_test"], ns["y_test"], verbose=0)
    assert accuracy > 0.95
    assert "accuracy" in printed and "━" in printed  # Keras's progress bar
    probabilities = ns["probability_model"](ns["x_test"][:5])
    assert probabilities.shape == (5, 10)
    assert abs(probabilities.sum(axis=1) - 1).max() < 1e-5


@pytest.mark.usefixtures("mnist_data", "as_keras_modules")
def test_keras_mnist_mlp_runs_unchanged():
    ns, printed = run("mnist_mlp.py")
    assert ns["score"][1] > 0.95
    assert "Total params: 669,706" in printed
    assert "val_accuracy" in printed


@pytest.mark.usefixtures("mnist_data", "as_keras_modules")
def test_keras_mnist_convnet_runs_unchanged():
    ns, printed = run("mnist_convnet.py")
    assert ns["score"][1] > 0.97  # Keras 3.15 here: 0.978 validation accuracy after 1 epoch
    assert "Total params: 34,826" in printed
    assert "(None, 26, 26, 32)" in printed and "(None, 5, 5, 64)" in printed
    assert "val_accuracy" in printed
