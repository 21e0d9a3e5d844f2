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
    spec = SPEC[name]
    layers = [tinynn.layers.Dense(u, activation=a) for u, a in spec["layers"]]
    model = tinynn.Sequential(layers)
    model.build((None, 784))
    model.set_weights([FIXTURE[f"{name}/init/{i}"] for i in range(len(model.weights))])
    opt_name, opt_options = spec["optimizer"]
    model.compile(
        optimizer=tinynn.optimizers.get(opt_name).__class__(**opt_options),
        loss=tinynn.losses.SparseCategoricalCrossentropy(**spec["loss"]),
        metrics=["accuracy"],
    )
    return model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_matches_keras(name, backend):
    model = build(name)
    x, y = FIXTURE["x_train"] / 255, FIXTURE["y_train"]
    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)

    for i, (ours, theirs) in enumerate(zip(model.get_weights(), _trained(name))):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0, err_msg=f"weight {i}")
    assert history.history["loss"][0] == pytest.approx(SPEC[name]["loss_log"], rel=1e-5)
    assert history.history["accuracy"][0] == pytest.approx(SPEC[name]["accuracy_log"], abs=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_evaluate_and_predict_match_keras(name, backend):
    model = build(name)
    model.set_weights(_trained(name))
    xt, yt = FIXTURE["x_test"] / 255, FIXTURE["y_test"]
    loss, accuracy = model.evaluate(xt, yt, verbose=0)
    assert loss == pytest.approx(SPEC[name]["test_loss"], rel=1e-5)
    assert accuracy == pytest.approx(SPEC[name]["test_accuracy"], abs=1e-6)
    np.testing.assert_allclose(model.predict(xt), FIXTURE[f"{name}/predict"], atol=1e-5, rtol=0)


def _trained(name: str) -> list[np.ndarray]:
    count = sum(1 for k in FIXTURE.files if k.startswith(f"{name}/trained/"))
    return [FIXTURE[f"{name}/trained/{i}"] for i in range(count)]
