"""Finite inputs whose activations overflow float32: predict and evaluate say so, naming the
layer where the numbers stopped being finite (issue 22), on both backends."""

import warnings

import numpy as np
import pytest

import tinynn
from tinynn.training import NonFiniteWarning


def dense_model() -> tinynn.Sequential:
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([tinynn.layers.Dense(4, activation="relu"),
                               tinynn.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.build((None, 6))
    return model


def conv_model() -> tinynn.Sequential:
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([tinynn.Input(shape=(6, 6, 1)),
                               tinynn.layers.Conv2D(2, 3, activation="relu"),
                               tinynn.layers.Flatten(),
                               tinynn.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def overflowing(model) -> np.ndarray:
    """Five samples: the first ordinary, the others 3e38 everywhere."""
    x = np.full((5, *model.leaf_layers[0].input_shape), 3e38, np.float32)
    x[0] = 0.5
    return x


@pytest.mark.parametrize("make", [dense_model, conv_model])
def test_predict_and_evaluate_name_the_layer_where_numbers_overflowed(backend, make):
    model = make()
    x, y = overflowing(model), np.zeros(5, np.int64)
    before = [w.copy() for w in model.get_weights()]
    with pytest.warns(NonFiniteWarning, match=r"4 of 5 samples .* the first, sample 1, "
                      r"stopped being finite in layer '(dense|conv2d)(_\d+)?'"):
        outputs = model.predict(x, verbose=0)
    assert not np.isfinite(outputs[1:]).all()  # said, not hidden: the outputs are as computed
    with pytest.warns(NonFiniteWarning, match="not finite .* overflow float32"):
        model.evaluate(x, y, verbose=0)
    for b, w in zip(before, model.get_weights()):
        np.testing.assert_array_equal(b, w)


@pytest.mark.parametrize("make", [dense_model, conv_model])
def test_ordinary_inputs_give_no_warning(backend, make):
    model = make()
    x = np.random.default_rng(0).random((7, *model.leaf_layers[0].input_shape))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(model.predict(x.astype(np.float32), verbose=0)).all()
        model.evaluate(x.astype(np.float32), np.zeros(7, np.int64), verbose=0)
