"""tinynn trains exactly as Keras does: same start, same batches, same weights after 20 steps.

The fixture was recorded with Keras 3 / TensorFlow by tools/make_keras_parity.py;
Keras is not needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tinynn

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "keras_parity.npz")
SPEC = json.loads(str(FIXTURE["spec"]))
MODEL_NAMES = [k for k in SPEC if k != "keras"]


def build(name: str) -> tinynn.Sequential:
    """The model as recorded: layers, loss and optimizer by their (shared) class names."""
    spec = SPEC[name]
    layers = [getattr(tinynn.layers, cls)(**options) for cls, options in spec["layers"]]
    model = tinynn.Sequential([tinynn.Input(shape=shape_of(name)), *layers])
    model.set_weights([FIXTURE[f"{name}/init/{i}"] for i in range(len(model.weights))])
    (opt_class, opt_options), (loss_class, loss_options) = spec["optimizer"], spec["loss"]
    model.compile(
        optimizer=getattr(tinynn.optimizers, opt_class)(**opt_options),
        loss=getattr(tinynn.losses, loss_class)(**loss_options),
        metrics=["accuracy"],
    )
    return model


def shape_of(name: str) -> tuple[int, ...]:
    """One sample's shape as recorded: rows of 784, or (28, 28, 1) images for a convnet."""
    return tuple(SPEC[name].get("input_shape", (784,)))


def inputs(name: str, key: str) -> np.ndarray:
    return FIXTURE[key].reshape(-1, *shape_of(name)) / 255


def targets(name: str, labels: np.ndarray) -> np.ndarray:
    """Integer labels, or one-hot rows for a categorical loss (as the recording used)."""
    if SPEC[name]["loss"][0] == "CategoricalCrossentropy":
        return tinynn.utils.to_categorical(labels, 10)
    return labels


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_matches_keras(name, backend):
    model = build(name)
    x, y = inputs(name, "x_train"), targets(name, FIXTURE["y_train"])
    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)

    for i, (ours, theirs) in enumerate(zip(model.get_weights(), _trained(name))):
        np.testing.assert_allclose(ours, theirs, atol=SPEC[name].get("tolerance", 1e-5), rtol=0,
                                   err_msg=f"weight {i}")
    assert history.history["loss"][0] == pytest.approx(SPEC[name]["loss_log"], rel=1e-5)
    assert history.history["accuracy"][0] == pytest.approx(SPEC[name]["accuracy_log"], abs=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_evaluate_and_predict_match_keras(name, backend):
    model = build(name)
    model.set_weights(_trained(name))
    xt, yt = inputs(name, "x_test"), targets(name, FIXTURE["y_test"])
    loss, accuracy = model.evaluate(xt, yt, verbose=0)
    assert loss == pytest.approx(SPEC[name]["test_loss"], rel=1e-5)
    assert accuracy == pytest.approx(SPEC[name]["test_accuracy"], abs=1e-6)
    np.testing.assert_allclose(model.predict(xt), FIXTURE[f"{name}/predict"], atol=1e-5, rtol=0)


def _trained(name: str) -> list[np.ndarray]:
    count = sum(1 for k in FIXTURE.files if k.startswith(f"{name}/trained/"))
    return [FIXTURE[f"{name}/trained/{i}"] for i in range(count)]
