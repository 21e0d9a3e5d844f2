"""The seed notebook's two models learn real MNIST (one epoch here; five in the example)."""

from __future__ import annotations

import numpy as np
import pytest

import tinynn


def flatten(mnist_data):
    (x_train, y_train), (x_test, y_test) = mnist_data
    return (x_train.reshape(len(x_train), -1) / 255, y_train,
            x_test.reshape(len(x_test), -1) / 255, y_test)


def test_load_data_shapes_like_keras(mnist_data):
    (x_train, y_train), (x_test, y_test) = mnist_data
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert x_train.dtype == y_train.dtype == np.uint8
    # Class counts published with the dataset.
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    ("hidden", "minimum"), [(False, 0.90), (True, 0.95)], ids=["simple", "hidden"]
)
def test_seed_models_reach_notebook_accuracy_in_one_epoch(mnist_data, hidden, minimum, backend):
    x_train, y_train, x_test, y_test = flatten(mnist_data)
    tinynn.utils.set_random_seed(0)
    layers = [tinynn.layers.Dense(10, input_shape=(784,), activation="sigmoid")]
    if hidden:
        layers = [tinynn.layers.Dense(100, input_shape=(784,), activation="relu"),
                  tinynn.layers.Dense(10, activation="sigmoid")]
    model = tinynn.Sequential(layers)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=1, verbose=0)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= minimum
    assert 0 < loss < history.history["loss"][0] * 1.5
