"""The public contracts: a user's own Layer and Optimizer, written only from the README's
contract, train on every backend; ``training`` is seen correctly; Dropout; callbacks steer."""

from __future__ import annotations

import numpy as np
import pytest

import tinynn
from tinynn import callbacks, layers, losses, optimizers
from tinynn.models import NonFiniteWarning

pytestmark = pytest.mark.usefixtures("backend")


# ---------------------------------------------------------------- a user's parts, from the README


class Scale(tinynn.layers.Layer):
    """y = x · w: one trainable weight per feature. Records the training flags it saw."""

    def build(self, input_shape):
        self.params["w"] = np.ones(input_shape, np.float32)
        super().build(input_shape)

    def forward(self, x, training=False):
        self.seen = getattr(self, "seen", []) + [training]
        self.x = x
        return x * self.params["w"]

    def backward(self, dy):
        self.grads["w"] = (dy * self.x).sum(axis=0)
        return dy * self.params["w"]


class Momentum(tinynn.optimizers.Optimizer):
    """Heavy-ball momentum, the classical way round."""

    slot_names = ("velocity",)

    def update_step(self, gradient, variable, slots):
        slots["velocity"][...] = 0.9 * slots["velocity"] + gradient
        variable -= self.learning_rate * slots["velocity"]


class Breaking(Momentum):
    """Momentum whose third step makes a weight infinite, returning neither True nor False."""

    def update_step(self, gradient, variable, slots):
        super().update_step(gradient, variable, slots)
        if self.iterations == 2:
            variable.flat[0] = np.inf
        return variable  # not a bool: fit checks the arrays itself


def data(n=96, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    return x, x[:, :classes].argmax(axis=1)


def model_with(first, optimizer):
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([tinynn.Input(shape=(6,)), first,
                               layers.Dense(8, activation="relu"),
                               layers.Dense(3, activation="softmax")])
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_user_layer_and_optimizer_train_and_see_the_training_flag():
    x, y = data()
    model = model_with(Scale(), Momentum(learning_rate=0.05))
    before = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, batch_size=16, epochs=15, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert after[0] < before[0] and after[1] > 0.8
    assert history.history["loss"][-1] < history.history["loss"][0]
    scale = model.layers[0]
    assert not np.allclose(scale.params["w"], 1)  # the user's parameter trained
    assert model.optimizer.iterations == 15 * 6
    scale.seen = []
    model.predict(x)
    model(x)
    model.evaluate(x, y, verbose=0)
    model.train_on_batch(x[:8], y[:8])
    assert scale.seen == [False] * (len(scale.seen) - 1) + [True]


def test_a_users_update_that_breaks_a_weight_is_caught_and_undone():
    x, y = data()
    model = model_with(Scale(), Breaking(learning_rate=0.05))
    with pytest.warns(NonFiniteWarning, match="training stopped"):
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert history.stopped_early["step"] == 2 and model.optimizer.iterations == 2
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_user_parts_match_the_same_math_in_numpy():
    """The user's layer on the numba backend (built-in parts compiled) ends where NumPy ends."""
    x, y = data()
    results = []
    for backend in ("numba", "numpy"):
        with tinynn.backend.using(backend):
            model = model_with(Scale(), Momentum(learning_rate=0.05))
            model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
            results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_user_layer_passes_gradcheck():
    x, y = data(n=8)
    model = model_with(Scale(), "adam")
    model.layers[0].params["w"][...] = np.linspace(0.5, 1.5, 6)
    errors = tinynn.gradcheck(model, x, y)
    assert max(errors.values()) < 1e-3
    assert any(k.endswith("/w") for k in errors)


def test_a_layer_without_the_training_flag_still_runs():
    class Double(tinynn.layers.Layer):
        def forward(self, x):
            return 2 * x

        def backward(self, dy):
            return 2 * dy

    x, y = data()
    model = model_with(Double(), "sgd")
    model.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_allclose(model.layers[0](x), 2 * x)


@pytest.mark.parametrize("part", ["layer", "optimizer"])
def test_missing_methods_say_what_to_define(part):
    x, y = data()
    if part == "layer":
        model = model_with(tinynn.layers.Layer(), "adam")
        match = "must define forward"
    else:
        model = model_with(layers.Flatten(), tinynn.optimizers.Optimizer())
        match = "must define update_step"
    with pytest.raises(NotImplementedError, match=match):
        model.fit(x, y, epochs=1, verbose=0)


# ---------------------------------------------------------------- new layers and losses


@pytest.mark.parametrize("make", [
    lambda: [layers.Dense(5, "tanh"), layers.ReLU(), layers.Dense(3), layers.Softmax()],
    lambda: [layers.Dense(5, "sigmoid"), layers.Dropout(0.3), layers.Dense(3, "tanh")],
], ids=["relu-softmax-layers", "dropout-at-inference"])
@pytest.mark.parametrize("loss", [losses.SparseCategoricalCrossentropy(),
                                  losses.SparseCategoricalCrossentropy(use_output_logits=False),
                                  losses.CategoricalCrossentropy(),
                                  losses.CategoricalCrossentropy(from_logits=True,
                                                                 use_output_logits=False)],
                         ids=["sparse", "sparse-probabilities", "categorical",
                              "categorical-from-logits"])
def test_new_layers_and_losses_pass_gradcheck(make, loss):
    x, y = data(n=6)
    tinynn.utils.set_random_seed(1)
    model = tinynn.Sequential([tinynn.Input(shape=(6,)), *make()])
    model.compile("adam", loss)
    if isinstance(loss, losses.CategoricalCrossentropy):
        y = tinynn.utils.to_categorical(y, 3)
    assert max(tinynn.gradcheck(model, x, y).values()) < 1e-3


def test_dropout_backward_matches_finite_differences_with_its_mask_fixed():
    k = tinynn.backend.kernels()
    x = np.random.default_rng(0).normal(size=(4, 5))
    y, s = k.dropout_forward(x, 0.4, 7, 3)
    dy = np.random.default_rng(1).normal(size=y.shape)
    h, numeric = 1e-6, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        up, down = k.dropout_forward(x + e, 0.4, 7, 3)[0], k.dropout_forward(x - e, 0.4, 7, 3)[0]
        numeric[i] = ((up - down) * dy).sum() / (2 * h)
    np.testing.assert_allclose(k.dropout_backward(dy, s), numeric, atol=1e-6)


def test_dropout_keeps_its_fraction_scales_and_is_off_at_inference():
    rate = 0.3
    layer = layers.Dropout(rate, seed=11)
    x = np.ones((200, 500), np.float32)
    y = layer(x, training=True)
    kept = y != 0
    assert abs(kept.mean() - (1 - rate)) < 0.005  # 100,000 draws: 5 standard deviations
    np.testing.assert_allclose(y[kept], np.float32(1 / (1 - rate)))
    assert not np.array_equal(kept, layer(x, training=True) != 0)  # a new mask each step
    np.testing.assert_array_equal(layer(x), x)  # inference: the identity
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_dropout_is_reproducible_under_set_random_seed():
    def run():
        tinynn.utils.set_random_seed(5)
        model = tinynn.Sequential([tinynn.Input(shape=(6,)), layers.Dense(16, "relu"),
                                   layers.Dropout(0.5), layers.Dense(3)])
        model.compile("adam", losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(*data(), epochs=2, verbose=0)
        return model.get_weights()

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- Keras's API around them


def test_keras_calling_conventions():
    x, y = data()
    model = tinynn.Sequential([tinynn.Input(shape=(6,)), layers.Dense(8, "relu"),
                               layers.Dropout(0.2), layers.Dense(3)])
    logits = tinynn.ops.convert_to_numpy(model(x[:1]))
    np.testing.assert_array_equal(logits, model(x[:1], training=False))
    probs = tinynn.activations.softmax(logits)
    assert probs.sum() == pytest.approx(1)
    loss_fn = losses.SparseCategoricalCrossentropy(from_logits=True)
    assert loss_fn(y[:1], logits) == pytest.approx(-np.log(probs[0, y[0]]), rel=1e-5)
    model.compile("adam", loss_fn, metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    assert sorted(result) == ["accuracy", "loss"]
    assert [result["loss"], result["accuracy"]] == model.evaluate(x, y, verbose=0)
    probability_model = tinynn.Sequential([model, layers.Softmax()])
    np.testing.assert_allclose(probability_model(x), tinynn.activations.softmax(model(x)),
                               rtol=1e-6)
    assert probability_model.count_params() == model.count_params()


def test_categorical_labels_train_and_count_accuracy():
    x, y = data()
    model = model_with(layers.Flatten(), optimizers.RMSprop())
    model.compile(optimizers.RMSprop(0.01), "categorical_crossentropy", metrics=["accuracy"])
    onehot = tinynn.utils.to_categorical(y, 3)
    history = model.fit(x, onehot, epochs=20, verbose=0)
    assert history.history["accuracy"][-1] > 0.8
    assert model.evaluate(x, onehot, verbose=0)[1] == pytest.approx(
        np.mean(model.predict(x).argmax(axis=1) == y))
    with pytest.raises(ValueError, match=r"y must have shape \(96, 3\).*to_categorical"):
        model.fit(x, y, epochs=1, verbose=0)


# ---------------------------------------------------------------- callbacks steer training


class StopAfter(callbacks.Callback):
    def __init__(self, batches):
        self.batches = batches

    def on_train_batch_end(self, batch, logs=None):
        self.batches -= 1
        if self.batches == 0:
            self.model.stop_training = True


def test_stop_training_is_honoured():
    x, y = data()
    model = model_with(layers.Flatten(), "adam")
    history = model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[StopAfter(8)])
    assert model.optimizer.iterations == 8
    assert len(history.epoch) == 2


def test_a_learning_rate_changed_by_a_callback_is_used_at_the_next_step():
    x, y = data()
    runs = []
    for schedule in (lambda epoch, lr: 0.01 if epoch else 0.001, lambda epoch, lr: 0.001):
        model = model_with(layers.Flatten(), optimizers.SGD())
        model.fit(x, y, epochs=2, verbose=0, shuffle=False,
                  callbacks=[callbacks.LearningRateScheduler(schedule)])
        runs.append(model.get_weights())
    replay = model_with(layers.Flatten(), optimizers.SGD(0.001))
    replay.fit(x, y, epochs=1, verbose=0, shuffle=False)
    replay.optimizer.learning_rate = 0.01
    replay.fit(x, y, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(runs[0], replay.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not all(np.allclose(a, b) for a, b in zip(runs[0], runs[1]))


def test_early_stopping_restores_the_best_weights_and_checkpoints_keep_the_best(tmp_path):
    x, y = data()
    xv, yv = data(seed=1)
    model = model_with(layers.Flatten(), optimizers.Adam(0.05))
    seen = []

    class Record(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["val_loss"], self.model.get_weights()))

    stop = callbacks.EarlyStopping(patience=1, min_delta=10.0, restore_best_weights=True)
    path = tmp_path / "best.npz"
    history = model.fit(x, y, epochs=10, verbose=0, validation_data=(xv, yv), callbacks=[
        Record(), stop, callbacks.ModelCheckpoint(path, save_best_only=True)])
    assert len(history.epoch) == 2  # no improvement of 10 after the first: stop at the second
    for a, b in zip(model.get_weights(), seen[0][1]):
        np.testing.assert_array_equal(a, b)
    best = min(seen, key=lambda s: s[0])[1]  # the checkpoint keeps any improvement
    saved = tinynn.models.load_model(path)
    for a, b in zip(saved.get_weights(), best):
        np.testing.assert_array_equal(a, b)


def test_reduce_lr_on_plateau():
    x, y = data()
    model = model_with(layers.Flatten(), optimizers.Adam(0.01))
    model.fit(x, y, epochs=3, verbose=0, validation_data=(x, y), callbacks=[
        callbacks.ReduceLROnPlateau(factor=0.5, patience=1, min_delta=100.0)])
    assert model.optimizer.learning_rate == pytest.approx(0.01 * 0.5 ** 2)


def test_a_shared_optimizer_is_refused_and_changes_nothing():
    x, y = data()
    opt = optimizers.Adam()
    first, second = model_with(layers.Flatten(), opt), model_with(layers.Flatten(), opt)
    first.fit(x, y, epochs=1, verbose=0)
    before = second.get_weights(), opt.iterations
    with pytest.raises(ValueError, match="an optimizer belongs to one model"):
        second.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(before[0], second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert opt.iterations == before[1]
