"""A user's layer among built-in ones trains inside the fused compiled step (``USER`` ops,
``compiled/users.py``): the same numbers as step by step, its contract kept (the training
flag, ``need_dx``, shapes), and its failures reported with nothing changed."""

from __future__ import annotations

import numpy as np
import pytest

import tinynn
from tinynn import layers, optimizers, training
from tinynn.compiled import engine, users
from tinynn.models import NonFiniteWarning

pytestmark = pytest.mark.compiled


class Shift(layers.Layer):
    """y = x + b, one trained offset per feature; records the training flags it saw."""

    def build(self, input_shape):
        self.params["b"] = np.linspace(-0.5, 0.5, int(np.prod(input_shape)), dtype=np.float32
                                       ).reshape(input_shape)
        super().build(input_shape)

    def forward(self, x, training=False):
        self.seen = getattr(self, "seen", []) + [training]
        return x + self.params["b"]

    def backward(self, dy):
        self.grads["b"] = dy.sum(axis=0)
        return dy


class FlatDense(layers.Layer):
    """A user's first layer on (4, 3) samples: y = flatten(x) · W (no bias), and backward
    that honours ``need_dx`` (it records what it was asked)."""

    def build(self, input_shape):
        rng = np.random.default_rng(7)
        self.params["kernel"] = rng.normal(0, 0.3, (int(np.prod(input_shape)), 16)
                                           ).astype(np.float32)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return (16,)

    def forward(self, x, training=False):
        self.x = x.reshape(len(x), -1)
        return self.x @ self.params["kernel"]

    def backward(self, dy, need_dx=True):
        self.asked = need_dx
        self.grads["kernel"] = self.x.T @ dy
        return dy @ self.params["kernel"].T if need_dx else None


class Double(layers.Layer):
    """No parameters, no training flag."""

    def forward(self, x):
        return 2 * x

    def backward(self, dy):
        return 2 * dy


def data(n=120, shape=(12,), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32)
    x[rng.random(x.shape) < 0.5] = 0  # mostly zeros, as MNIST: the sparse first layer
    return x, rng.integers(0, classes, n)


MODELS = {
    "scale between dense, adam": (
        lambda: [layers.Dense(10, activation="relu"), Shift(),
                 layers.Dense(4, activation="sigmoid")], "adam", (12,)),
    "user first, dropout, rmsprop": (
        lambda: [FlatDense(), layers.Activation("relu"), layers.Dropout(0.25, seed=2),
                 layers.Dense(4, activation="softmax")], "rmsprop", (4, 3)),
    "two user layers, sgd with momentum": (
        lambda: [Shift(), layers.Dense(8, activation="tanh"), Double(),
                 layers.Dense(4)], lambda: optimizers.SGD(0.05, momentum=0.9), (12,)),
}


def fit(name, compiled: bool, monkeypatch, epochs=2, **options):
    make, opt, shape = MODELS[name]
    x, y = data(shape=shape)
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([tinynn.Input(shape=shape), *make()])
    model.compile(opt if isinstance(opt, str) else opt(), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    with monkeypatch.context() as m, tinynn.backend.using("numba"):
        if not compiled:
            m.setattr(training, "compiled_plan", lambda model, training: None)
        runner = training.runner_for(model)
        assert isinstance(runner, engine.CompiledRunner) == compiled
        history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=True,
                            **options)
    return model, history


@pytest.mark.parametrize("name", MODELS)
def test_a_users_layer_trains_compiled_as_it_does_step_by_step(name, monkeypatch):
    fused, fused_history = fit(name, True, monkeypatch)
    step, step_history = fit(name, False, monkeypatch)
    # (The twins and the fused step sum in different orders, and more so as Python with
    # the JIT off: float32 rounding, which momentum carries from step to step. A formula
    # that differs, or a weight left untrained, moves weights by ~1e-2.)
    for a, b in zip(fused.get_weights(), step.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fused_history.history["loss"], step_history.history["loss"],
                               rtol=1e-5)
    assert fused_history.history["accuracy"] == step_history.history["accuracy"]
    assert fused.optimizer.iterations == 2 * 8


def test_the_users_layer_keeps_its_contract_in_the_compiled_step(monkeypatch):
    model, _ = fit("scale between dense, adam", True, monkeypatch)
    shift = model.layers[1]
    assert shift.seen == [True] * 16  # one forward a step, in training mode
    assert not np.allclose(shift.params["b"], np.linspace(-0.5, 0.5, 10))  # it trained
    model, _ = fit("user first, dropout, rmsprop", True, monkeypatch)
    assert model.layers[0].asked is False  # nobody reads the first layer's dx


class Failing(Shift):
    """Raises in forward or backward at its third call."""

    def __init__(self, where):
        super().__init__()
        self.where, self.calls = where, 0

    def forward(self, x, training=False):
        self.calls += self.where == "forward"
        if self.calls == 3:
            raise RuntimeError("the user's forward broke")
        return super().forward(x, training)

    def backward(self, dy):
        self.calls += self.where == "backward"
        if self.calls == 3:
            raise RuntimeError("the user's backward broke")
        return super().backward(dy)


def model_around(user):
    """The first model's kinds of parts (its fused step is compiled already)."""
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([tinynn.Input(shape=(12,)), layers.Dense(10, activation="relu"),
                               user, layers.Dense(4, activation="sigmoid")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("where", ["forward", "backward"])
def test_an_error_in_a_users_layer_reaches_fit_and_changes_nothing(where, threads,
                                                                   monkeypatch):
    monkeypatch.setenv(engine.THREADS_VAR, threads)
    x, y = data()
    model = model_around(Failing(where))
    model.fit(x[:16], y[:16], batch_size=16, verbose=0)  # slots built, one step taken
    before = model.get_weights()
    iterations = model.optimizer.iterations
    with tinynn.backend.using("numba"), pytest.raises(RuntimeError, match=f"user's {where}"):
        model.fit(x, y, batch_size=16, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == iterations
    assert not users._RUNS  # the fit's layers are not kept alive by the registry


class WrongShape(Shift):
    def forward(self, x, training=False):
        return super().forward(x, training)[:, :3]


class NaNGradient(Shift):
    """Its gradient is NaN from the fourth step on (counted in ``state``, which fit puts
    back with the weights when it undoes a step)."""

    def build(self, input_shape):
        super().build(input_shape)
        self.state["steps"] = np.zeros(1, np.int64)

    def backward(self, dy):
        dx = super().backward(dy)
        self.state["steps"] += 1
        if self.state["steps"][0] >= 4:
            self.grads["b"] = np.full_like(self.grads["b"], np.nan)
        return dx


def test_a_users_nan_gradient_stops_fit_with_the_weights_before_it(monkeypatch):
    x, y = data()
    model = model_around(NaNGradient())
    with tinynn.backend.using("numba"), pytest.warns(NonFiniteWarning, match="training stopped"):
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert history.stopped_early["step"] == 3 and model.optimizer.iterations == 3
    assert all(np.isfinite(w).all() for w in model.get_weights())


class Rebinding(Shift):
    """Replaces its parameter instead of changing it in place (a clipping constraint)."""

    def forward(self, x, training=False):
        self.params["b"] = np.clip(self.params["b"], -0.4, 0.4)
        return super().forward(x, training)


@pytest.mark.parametrize(("layer", "message"), [
    (lambda: WrongShape(name="wrong"), "'wrong'.*shape"),
    (lambda: Rebinding(name="rebinding"), "'rebinding'.*in place")])
def test_a_broken_contract_is_named_and_changes_nothing(layer, message):
    x, y = data()
    model = model_around(layer())
    before = model.get_weights()
    with tinynn.backend.using("numba"), pytest.raises(ValueError, match=message):
        model.fit(x, y, batch_size=16, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


class Keeping(Shift):
    """Keeps every input it is given."""

    def forward(self, x, training=False):
        self.kept = getattr(self, "kept", []) + [x]
        return super().forward(x, training)


def test_a_users_layer_may_keep_its_inputs(monkeypatch):
    x, y = data()
    model = model_around(Keeping())
    with tinynn.backend.using("numba"):
        model.fit(x, y, batch_size=16, verbose=0, shuffle=False)
    kept = model.layers[1].kept
    assert len(kept) == 8 and not any(np.shares_memory(a, b) for a, b in zip(kept, kept[1:]))


class MyDense(layers.Dense):
    """A user's subclass of a built-in: its own class, so its own math as far as tinynn knows."""


@pytest.mark.parametrize("last", [lambda: Shift(), lambda: MyDense(4, activation="softmax")])
def test_a_users_last_layer_or_a_layer_held_twice_trains_step_by_step(last):
    """A user's last layer may keep logits for the loss, which the loss reads as it runs; a
    layer held twice would be updated twice by the fused step."""
    model = tinynn.Sequential([tinynn.Input(shape=(12,)), layers.Dense(4), last()])
    model.compile("adam", "sparse_categorical_crossentropy")
    assert engine.plan(model, training=True) is None
    shift = Shift()
    model = tinynn.Sequential([tinynn.Input(shape=(12,)), layers.Dense(4), shift, shift,
                               layers.Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    assert engine.plan(model, training=True) is None
