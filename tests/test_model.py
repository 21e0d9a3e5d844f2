"""The Keras API of Sequential: shapes, logs, batching, determinism, printing."""

from __future__ import annotations

import numpy as np
import pytest

import tinynn
from tinynn.callbacks import Callback

pytestmark = pytest.mark.usefixtures("backend")


def make_data(n=100, features=6, classes=3, seed=0):
    """Data a small network can learn: the label is the largest of x's first entries."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    return x, x[:, :classes].argmax(axis=1)


def make_model(features=6, classes=3, metrics=("accuracy",)):
    model = tinynn.Sequential([
        tinynn.layers.Dense(8, activation="relu", input_shape=(features,)),
        tinynn.layers.Dense(classes, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=list(metrics))
    return model


class CountBatches(Callback):
    def on_train_begin(self, logs=None):
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def test_fit_includes_the_last_partial_batch_and_logs_every_epoch():
    x, y = make_data(n=100)
    counter = CountBatches()
    history = make_model().fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[counter])
    assert counter.batches == 3 * 4  # 32 + 32 + 32 + 4
    assert sorted(history.history) == ["accuracy", "loss"]
    assert all(len(v) == 3 for v in history.history.values())
    assert history.epoch == [0, 1, 2]


def test_epoch_logs_are_sample_weighted_means_of_the_batches():
    x, y = make_data(n=40)
    model = make_model()
    start = model.get_weights()
    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    # Replay the same two steps by hand.
    replay = make_model()
    replay.set_weights(start)
    first = replay.train_on_batch(x[:32], y[:32])
    second = replay.train_on_batch(x[32:], y[32:])
    assert history.history["loss"][0] == pytest.approx((32 * first[0] + 8 * second[0]) / 40)
    assert history.history["accuracy"][0] == pytest.approx((32 * first[1] + 8 * second[1]) / 40)
    # With the numba backend fit runs fused steps and train_on_batch layer by
    # layer: the same math, summed in another order.
    for a, b in zip(model.get_weights(), replay.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_validation_split_holds_out_the_last_samples():
    x, y = make_data(n=100)
    model = make_model()
    history = model.fit(x, y, epochs=2, validation_split=0.2, verbose=0)
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    val_loss, val_acc = model.evaluate(x[80:], y[80:], verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(val_loss)
    assert history.history["val_accuracy"][-1] == pytest.approx(val_acc)


def test_validation_data():
    x, y = make_data(n=50)
    xv, yv = make_data(n=20, seed=1)
    history = make_model().fit(x, y, epochs=1, validation_data=(xv, yv), verbose=0)
    assert len(history.history["val_loss"]) == 1


def test_evaluate_returns_loss_alone_without_metrics():
    x, y = make_data()
    model = make_model(metrics=())
    assert isinstance(model.evaluate(x, y, verbose=0), float)
    assert len(make_model().evaluate(x, y, verbose=0)) == 2


def test_evaluate_does_not_depend_on_batch_size():
    x, y = make_data(n=70)
    model = make_model()
    a = model.evaluate(x, y, batch_size=7, verbose=0)
    b = model.evaluate(x, y, batch_size=64, verbose=0)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_predict_shapes_and_batching():
    x, _ = make_data(n=70)
    model = make_model()
    out = model.predict(x, batch_size=16)
    assert out.shape == (70, 3) and out.dtype == np.float32
    assert np.all((out > 0) & (out < 1))  # sigmoid outputs, not softmax
    np.testing.assert_allclose(out, model.predict(x, batch_size=70), rtol=1e-6)


def test_weights_in_keras_order_and_shapes():
    model = make_model()
    assert [w.shape for w in model.get_weights()] == [(6, 8), (8,), (8, 3), (3,)]
    assert model.count_params() == 6 * 8 + 8 + 8 * 3 + 3
    new = [np.full(w.shape, i, np.float32) for i, w in enumerate(model.get_weights())]
    model.set_weights(new)
    for a, b in zip(model.get_weights(), new):
        np.testing.assert_array_equal(a, b)


def test_glorot_uniform_limits_and_zero_bias():
    tinynn.utils.set_random_seed(3)
    layer = tinynn.layers.Dense(300, input_dim=500)
    kernel, bias = layer.get_weights()
    limit = np.sqrt(6 / 800)
    assert kernel.dtype == np.float32
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.99 * limit
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.01 * limit
    assert not bias.any()


def test_lazy_build_from_first_input():
    model = tinynn.Sequential([tinynn.layers.Flatten(), tinynn.layers.Dense(4),
                               tinynn.layers.Activation("softmax")])
    assert not model.built
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(np.zeros((5, 2, 3)), np.zeros(5, int), verbose=0)
    assert model.built and model.input_shape == (None, 2, 3)
    assert model.get_weights()[0].shape == (6, 4)


def test_same_seed_gives_bit_identical_weights():
    def run(seed):
        tinynn.utils.set_random_seed(seed)
        x, y = make_data(n=64)
        model = make_model()
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        return model.get_weights()

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_how_fit_splits_an_epoch_into_calls_does_not_change_the_result(monkeypatch):
    """fit runs steps in calls of about SECONDS_PER_CALL (a step per call when a callback
    wants every batch): one step per call, or ever longer calls, train the same, and log
    the same loss to the last bit (losses spread over a wide range, where adding per-call sums
    would round differently: they did, before the runners continued the sum)."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3000, 12)) * 10).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    took = tinynn.training.Calls.took

    def trained(seconds):
        monkeypatch.setattr(tinynn.training, "SECONDS_PER_CALL", seconds)
        monkeypatch.setattr(tinynn.training, "SNAPSHOTS_PER_CALL", 0 if seconds == 0 else 20)
        steps = []  # of every call

        def recording(calls, n, *seconds):
            steps.append(n)
            took(calls, n, *seconds)

        monkeypatch.setattr(tinynn.training.Calls, "took", recording)
        tinynn.utils.set_random_seed(0)
        model = tinynn.Sequential([tinynn.layers.Dense(2, activation="softmax",
                                                       input_shape=(12,))])
        model.compile(tinynn.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
        history = model.fit(x, y, batch_size=7, epochs=2, verbose=0)
        return model.get_weights(), history.history, steps

    one, every, steps_one = trained(0.0)
    long, logs, steps_long = trained(1e9)
    assert steps_one[0] == tinynn.training.FIRST_CALL and set(steps_one[1:]) == {1}
    assert steps_long[:4] == [16, 64, 256, 93] and steps_long[4:] == [429]  # 429 an epoch
    for a, b in zip(one, long):
        np.testing.assert_array_equal(a, b)
    assert every == logs


def test_training_reduces_the_loss():
    x, y = make_data(n=200)
    tinynn.utils.set_random_seed(0)  # not whatever the tests before left
    model = make_model()
    history = model.fit(x, y, epochs=30, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.8  # chance is 1/3


def test_verbose_output(capsys):
    x, y = make_data(n=50)
    model = make_model()
    model.fit(x, y, epochs=2, verbose=1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert lines[1].startswith("2/2 ━━━━━━━━━━━━━━━━━━━━ ")
    assert "/step - accuracy: " in lines[1] and " - loss: " in lines[1]
    model.fit(x, y, epochs=1, verbose=2)
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("2/2 - ") and "━" not in line
    model.fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_summary(capsys):
    make_model().summary()
    out = capsys.readouterr().out
    assert "dense" in out and "(None, 8)" in out and "(None, 3)" in out
    assert "Total params: 83" in out


def test_activation_functions_are_accepted_like_names():
    layer = tinynn.layers.Dense(2, activation=tinynn.activations.tanh)
    assert layer.activation == "tanh"
    with pytest.raises(ValueError, match="activation must be one of"):
        tinynn.layers.Dense(2, activation="swish")
    with pytest.raises(ValueError, match="activation must be one of"):
        tinynn.layers.Dense(2, activation=np.tanh)


def test_confusion_matrix_of_uint8_labels_and_empty_input():
    cm = tinynn.metrics.confusion_matrix(np.array([3, 0], np.uint8), np.array([3, 1], np.uint8))
    assert cm.shape == (4, 4) and cm[3, 3] == 1 and cm[0, 1] == 1
    assert tinynn.metrics.confusion_matrix([], []).shape == (0, 0)


def test_notebook_style_confusion_matrix():
    cm = tinynn.metrics.confusion_matrix(labels=np.array([0, 1, 2, 2]),
                                         predictions=[np.int64(0), np.int64(2), 2, 2])
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 0, 1], [0, 0, 2]])
