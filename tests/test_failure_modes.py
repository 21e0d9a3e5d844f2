"""A catalogue of failure modes: what tinynn does with every kind of bad input.

Read the tables top to bottom: each row is one bad input, the error it must
raise, and words the message must contain. Every row also checks that the
model's weights and optimizer state are exactly as they were before the call.
Below the tables: random bad inputs (hypothesis), numerical faults during
training, damaged model files, and damaged dataset files.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinynn
from tinynn import callbacks, layers, losses, optimizers
from tinynn.datasets import idx
from tinynn.models import NonFiniteWarning, NotCompiledError
from tinynn.saving import ModelFileError

FEATURES, CLASSES = 4, 3


def make_model(compiled: bool = True, optimizer="adam") -> tinynn.Sequential:
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([layers.Dense(5, "relu", input_shape=(FEATURES,)),
                               layers.Dense(CLASSES, "sigmoid")])
    if compiled:
        model.compile(optimizer, "sparse_categorical_crossentropy", ["accuracy"])
        model.train_on_batch(X, Y)  # so that the optimizer has state to protect
    return model


X = np.random.default_rng(0).normal(size=(12, FEATURES))
Y = np.arange(12) % CLASSES
# Where a save refused at the door would have written: a folder that does not exist, so that
# a regression fails there instead of leaving a file behind.
NOWHERE = Path(__file__).parent / "no such folder" / "model.tinynn"


def state(model) -> list[np.ndarray]:
    """Every array a call could change: weights, optimizer state, step count."""
    arrays = model.get_weights()
    if model.optimizer is not None:
        arrays.append(np.array(model.optimizer.iterations))
        for slot in model.optimizer.slots or []:
            arrays += [a.copy() for a in slot.values()]
    return arrays


def assert_unchanged(before, after):
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- bad inputs to a model
# (category, what is wrong, the call, error type, words in the message)
MODEL_CASES = [
    ("shape", "too many features", lambda m: m.fit(np.ones((12, 5)), Y), ValueError,
     r"x has samples of shape \(5,\).*expects \(4,\)"),
    ("shape", "one sample given without its batch axis", lambda m: m.predict(np.ones(4)),
     ValueError, r"x must have shape \(samples, features"),
    ("shape", "images given to a Dense model", lambda m: m.evaluate(np.ones((12, 2, 2)), Y),
     ValueError, "x has samples of shape"),
    ("shape", "x and y of different lengths", lambda m: m.fit(X, Y[:-1]), ValueError,
     r"y must be class labels of shape \(12,\)"),
    ("shape", "y as a matrix", lambda m: m.train_on_batch(X, np.ones((12, 3))), ValueError,
     "y must be class labels of shape"),
    ("empty", "no samples", lambda m: m.fit(np.ones((0, 4)), np.ones(0)), ValueError,
     "at least one sample"),
    ("empty", "no samples to predict", lambda m: m.predict(np.ones((0, 4))), ValueError,
     "at least one sample"),
    ("labels", "fractional labels", lambda m: m.fit(X, Y + 0.5), ValueError,
     r"whole-number class labels, but y\[0\] is 0.5"),
    ("labels", "negative label", lambda m: m.fit(X, Y - 1), ValueError,
     r"in \[0, 3\).*from -1"),
    ("labels", "label beyond the output units", lambda m: m.evaluate(X, Y + 1), ValueError,
     r"in \[0, 3\) for a model with 3 outputs"),
    ("labels", "NaN label", lambda m: m.fit(X, np.where(Y == 0, np.nan, Y)), ValueError,
     "whole-number class labels"),
    ("labels", "labels as strings", lambda m: m.fit(X, Y.astype(str)), TypeError,
     "y must hold integer class labels"),
    ("labels", "labels as booleans", lambda m: m.fit(X, Y > 0), TypeError,
     "y must hold integer class labels"),
    ("values", "NaN in x", lambda m: m.fit(np.where(X > 1, np.nan, X), Y), ValueError,
     r"x must be finite.*is nan"),
    ("values", "inf in x", lambda m: m.predict(np.full((2, 4), np.inf)), ValueError,
     r"x must be finite.*is inf"),
    ("values", "too large for float32", lambda m: m.evaluate(X * 1e300, Y), ValueError,
     "x must be finite"),
    ("dtype", "strings as inputs", lambda m: m.fit(X.astype(str), Y), TypeError,
     "x must hold real numbers, got dtype <U"),
    ("dtype", "objects as inputs", lambda m: m.predict(X.astype(object)), TypeError,
     "x must hold real numbers, got dtype object"),
    ("dtype", "complex inputs", lambda m: m.predict(X + 1j), TypeError,
     "x must hold real numbers, got dtype complex"),
    ("dtype", "ragged rows", lambda m: m.predict([[1, 2, 3, 4], [1, 2]]), ValueError,
     "x must be an array of numbers"),
    ("range", "batch_size 0", lambda m: m.fit(X, Y, batch_size=0), ValueError,
     "batch_size must be a positive integer, got 0"),
    ("range", "fractional batch_size", lambda m: m.fit(X, Y, batch_size=2.5), TypeError,
     "batch_size must be a positive integer"),
    ("range", "batch_size as text", lambda m: m.predict(X, batch_size="32"), TypeError,
     "batch_size must be a positive integer"),
    ("range", "batch_size True", lambda m: m.evaluate(X, Y, batch_size=True), TypeError,
     "batch_size must be a positive integer"),
    ("range", "epochs 0", lambda m: m.fit(X, Y, epochs=0), ValueError,
     "epochs must be a positive integer"),
    ("range", "validation_split 1", lambda m: m.fit(X, Y, validation_split=1.0), ValueError,
     r"validation_split must be in \[0, 1\)"),
    ("range", "validation_split negative", lambda m: m.fit(X, Y, validation_split=-0.1),
     ValueError, "validation_split"),
    ("range", "validation_split leaves nothing", lambda m: m.fit(X, Y, validation_split=0.05),
     ValueError, "leaves no samples for validation"),
    ("range", "verbose 3", lambda m: m.fit(X, Y, verbose=3), ValueError,
     r"verbose must be one of \[0, 1, 2\]"),
    ("range", "shuffle as text", lambda m: m.fit(X, Y, shuffle="yes"), TypeError,
     "shuffle must be True or False"),
    ("other", "validation_data not a pair", lambda m: m.fit(X, Y, validation_data=X),
     ValueError, r"validation_data must be a pair"),
    ("other", "bad validation labels",
     lambda m: m.fit(X, Y, validation_data=(X, Y + 5)), ValueError, r"validation_data\[1\]"),
    ("other", "a callback that is not a Callback", lambda m: m.fit(X, Y, callbacks=[print]),
     TypeError, "callbacks must be tinynn.callbacks.Callback"),
    ("weights", "set_weights: too few arrays", lambda m: m.set_weights(m.get_weights()[:3]),
     ValueError, "set_weights expects 4 arrays, got 3"),
    ("weights", "set_weights: wrong shape",
     lambda m: m.set_weights([w.T for w in m.get_weights()]), ValueError,
     r"array 0 must have shape \(4, 5\), got \(5, 4\)"),
    ("weights", "set_weights: NaN",
     lambda m: m.set_weights([w * np.nan for w in m.get_weights()]), ValueError,
     "must be finite"),
    ("weights", "set_weights: not a list", lambda m: m.set_weights(np.ones(3)), TypeError,
     "set_weights expects a list"),
    ("names", "unknown metric", lambda m: m.compile("adam", "sparse_categorical_crossentropy",
                                                    ["mae"]),
     ValueError, r"each of metrics must be one of \['accuracy'"),
    ("names", "metrics as a string",
     lambda m: m.compile("adam", "sparse_categorical_crossentropy", "accuracy"),
     TypeError, "metrics must be a list"),
    ("names", "unknown optimizer",
     lambda m: m.compile("lion", "sparse_categorical_crossentropy"), ValueError,
     r"optimizer must be one of \['adagrad', 'adam', 'adamw', 'rmsprop', 'sgd'\]"),
    ("names", "unknown loss", lambda m: m.compile("adam", "mse"), ValueError,
     r"loss must be one of \['categorical_crossentropy', 'sparse_categorical_crossentropy'\]"),
    ("saving", "save: overwrite as text", lambda m: m.save(NOWHERE, overwrite="no"), TypeError,
     "overwrite must be True or False, got 'no'"),
    ("saving", "save_weights: overwrite as a number",
     lambda m: m.save_weights(NOWHERE, overwrite=0), TypeError,
     "overwrite must be True or False, got 0"),
]


@pytest.mark.parametrize(("category", "what", "call", "error", "message"), MODEL_CASES,
                         ids=[f"{c[0]}: {c[1]}" for c in MODEL_CASES])
def test_bad_input_is_refused_and_changes_nothing(category, what, call, error, message,
                                                  backend):
    model = make_model()
    before = state(model)
    with pytest.raises(error, match=message):
        call(model)
    assert_unchanged(before, state(model))


# ---------------------------------------------------------------- bad arguments elsewhere
OTHER_CASES = [
    ("order", "fit before compile", lambda: make_model(compiled=False).fit(X, Y),
     NotCompiledError, r"call compile\(optimizer, loss\) before fit\(\)"),
    ("order", "evaluate before compile", lambda: make_model(compiled=False).evaluate(X, Y),
     ValueError, "before evaluate"),
    ("layers", "units 0", lambda: layers.Dense(0), ValueError,
     "units must be a positive integer, got 0"),
    ("layers", "units as text", lambda: layers.Dense("10"), TypeError,
     "units must be a positive integer"),
    ("layers", "fractional units", lambda: layers.Dense(1.5), TypeError, "units"),
    ("layers", "unknown activation", lambda: layers.Dense(3, activation="swish"), ValueError,
     r"activation must be one of \['linear', 'relu', 'sigmoid', 'tanh', 'softmax'\]"),
    ("layers", "use_bias as text", lambda: layers.Dense(3, use_bias="no"), TypeError,
     "use_bias must be True or False"),
    ("layers", "input_shape as a string", lambda: layers.Dense(3, input_shape="784"),
     TypeError, "input_shape must be a tuple"),
    ("layers", "input_shape with 0", lambda: layers.Flatten(input_shape=(28, 0)), ValueError,
     "input_shape must be a positive integer"),
    ("layers", "unknown initializer", lambda: layers.Dense(3, kernel_initializer="random"),
     ValueError, r"initializer must be one of"),
    ("layers", "not a layer", lambda: tinynn.Sequential([np.ones(3)]), TypeError,
     "layer must be a tinynn.layers.Layer"),
    ("optimizer", "learning_rate 0", lambda: optimizers.Adam(learning_rate=0), ValueError,
     "learning_rate must be a positive finite number"),
    ("optimizer", "learning_rate NaN", lambda: optimizers.SGD(learning_rate=float("nan")),
     ValueError, "learning_rate must be a positive finite number"),
    ("optimizer", "learning_rate as text", lambda: optimizers.Adam(learning_rate="fast"),
     TypeError, "learning_rate must be a number"),
    ("optimizer", "beta_1 of 1", lambda: optimizers.Adam(beta_1=1.0), ValueError,
     r"beta_1 must be in \[0, 1\)"),
    ("optimizer", "momentum of 1", lambda: optimizers.SGD(momentum=1), ValueError,
     r"momentum must be in \[0, 1\)"),
    ("layers", "LeakyReLU's negative slope below 0", lambda: layers.LeakyReLU(-0.1),
     ValueError, "negative_slope must be a finite number ≥ 0, got -0.1"),
    ("layers", "LeakyReLU's slope NaN", lambda: layers.LeakyReLU(float("nan")), ValueError,
     "negative_slope must be a finite number"),
    ("layers", "LeakyReLU's slope as text", lambda: layers.LeakyReLU("0.3"), TypeError,
     "negative_slope must be a number"),
    ("optimizer", "Adagrad's accumulator below 0",
     lambda: optimizers.Adagrad(initial_accumulator_value=-1), ValueError,
     "initial_accumulator_value must be a finite number ≥ 0"),
    ("optimizer", "Adagrad's epsilon 0", lambda: optimizers.Adagrad(epsilon=0), ValueError,
     "epsilon must be a positive finite number"),
    ("loss", "epsilon out of range", lambda: losses.SparseCategoricalCrossentropy(epsilon=0.7),
     ValueError, r"epsilon must be in \(0, 0.5\)"),
    ("backend", "unknown backend", lambda: tinynn.set_backend("cuda"), ValueError,
     r"backend must be one of \['numba', 'numpy'\]"),
    ("seed", "negative seed", lambda: tinynn.utils.set_random_seed(-1), ValueError,
     "seed must be a non-negative integer"),
]


@pytest.mark.parametrize(("category", "what", "call", "error", "message"), OTHER_CASES,
                         ids=[f"{c[0]}: {c[1]}" for c in OTHER_CASES])
def test_bad_argument_is_refused(category, what, call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_every_error_is_a_value_or_type_error():
    for *_, error, _ in MODEL_CASES + OTHER_CASES:
        assert issubclass(error, (ValueError, TypeError))


def test_a_failed_fit_does_not_build_an_unbuilt_model():
    model = tinynn.Sequential([layers.Dense(3)])
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError):
        model.fit(X, Y + 7)
    assert not model.built and model.get_weights() == []


# ---------------------------------------------------------------- random bad inputs
any_array = st.one_of(
    hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_,
                                np.complex64, np.dtype("U3"), np.dtype(object)]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
    st.none(), st.text(max_size=3), st.integers(-3, 3),
)
any_scalar = st.one_of(st.integers(-2, 40), st.floats(allow_nan=True), st.none(),
                       st.booleans(), st.text(max_size=2))


@settings(max_examples=150, deadline=None)
@given(method=st.sampled_from(["fit", "evaluate", "predict", "train_on_batch"]),
       x=st.one_of(any_array, hnp.arrays(np.float64, st.tuples(st.integers(1, 5),
                                                                st.just(FEATURES)))),
       y=any_array, batch_size=any_scalar)
def test_random_bad_inputs_raise_clear_errors_or_work(method, x, y, batch_size):
    model = make_model()
    before = state(model)
    call = getattr(model, method)
    kwargs = {} if method == "train_on_batch" else {"batch_size": batch_size}
    args = (x,) if method == "predict" else (x, y)
    if method == "fit":
        kwargs["verbose"] = 0
    if method == "evaluate":
        kwargs["verbose"] = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteWarning)
            result = call(*args, **kwargs)
    except (ValueError, TypeError) as e:
        assert str(e)  # a message, not a bare error
        assert_unchanged(before, state(model))
        return
    if method == "predict":
        assert result.shape == (len(x), CLASSES) and np.isfinite(result).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())


# ---------------------------------------------------------------- numerical faults


BIG = X * 1e4  # large inputs, large gradients: lr · g overflows float32


def fault_model(optimizer) -> tinynn.Sequential:
    tinynn.utils.set_random_seed(1)
    model = tinynn.Sequential([layers.Dense(5, "relu", input_shape=(FEATURES,)),
                               layers.Dense(CLASSES, "sigmoid")])
    model.compile(optimizer, "sparse_categorical_crossentropy", ["accuracy"])
    return model


def test_extreme_learning_rate_stops_fit_and_keeps_finite_weights(backend):
    model = fault_model(optimizers.SGD(learning_rate=1e38))
    start = state(model)
    with pytest.warns(NonFiniteWarning, match=r"training stopped at epoch 1, step \d+"):
        history = model.fit(BIG, Y, batch_size=4, epochs=3, verbose=0)
    assert history.stopped_early["epoch"] == 0
    assert all(np.isfinite(w).all() for w in model.get_weights())
    # Exactly the weights from before the broken step: replay the good steps.
    replay = fault_model(optimizers.SGD(learning_rate=1e38))
    assert_unchanged(start, state(replay))
    for step in range(history.stopped_early["step"]):
        replay.train_on_batch(BIG[4 * step : 4 * step + 4], Y[4 * step : 4 * step + 4])
    np.testing.assert_array_equal(np.concatenate([w.ravel() for w in model.get_weights()]),
                                  np.concatenate([w.ravel() for w in replay.get_weights()]))


def test_a_fault_stops_fit_even_if_a_callback_unsets_stop_training(backend):
    class GoOn(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:  # the third step breaks the weights
                self.model.optimizer.learning_rate = 1e38

        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = False

    model = fault_model(optimizers.SGD(learning_rate=1e-12))
    with pytest.warns(NonFiniteWarning, match="training stopped at epoch 1, step 3"):
        history = model.fit(BIG, Y, batch_size=4, epochs=3, verbose=0, callbacks=[GoOn()])
    assert history.stopped_early["epoch"] == 0 and len(history.history["loss"]) == 1


class Unrepeatable(layers.Layer):
    """The identity, whose third backward on sends NaN down (counted in a plain attribute,
    not ``state``, so that the steps fit runs again after a fault break too)."""

    def forward(self, x, training=False):
        return x

    def backward(self, dy):
        self.calls = getattr(self, "calls", 0) + 1
        return dy * np.float32(np.nan if self.calls >= 3 else 1)


def test_a_step_that_breaks_when_run_again_is_undone_too(backend):
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([layers.Input((X.shape[1],)), layers.Dense(5, activation="relu"),
                               Unrepeatable(), layers.Dense(3, activation="softmax")])
    model.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    start = model.get_weights()
    with pytest.warns(NonFiniteWarning, match="training stopped"):
        history = model.fit(X, Y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    # The third step broke; run again from the call's start, the first step broke: fit
    # stops there, with the weights from before it.
    assert (history.stopped_early["epoch"], history.stopped_early["step"]) == (0, 0)
    assert model.optimizer.iterations == 0
    for a, b in zip(start, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fault_in_a_later_epoch_reports_it(backend):
    model = fault_model(optimizers.SGD(learning_rate=0.1))
    model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
    model.optimizer.learning_rate = 1e38
    with pytest.warns(NonFiniteWarning, match="epoch 1"):
        history = model.fit(BIG, Y, batch_size=4, epochs=2, verbose=0)
    assert history.stopped_early is not None
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_train_on_batch_fault_leaves_weights_unchanged(backend):
    model = fault_model(optimizers.SGD(learning_rate=1e38))
    before = state(model)
    with pytest.warns(NonFiniteWarning, match="this batch"):
        model.train_on_batch(BIG, Y)
    assert_unchanged(before, state(model))


def test_huge_logits_and_saturated_sigmoids_stay_finite(backend):
    model = fault_model("adam")
    model.set_weights([w * 1e4 for w in model.get_weights()])  # logits in the tens of thousands
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWarning)
        history = model.fit(X * 100, Y, batch_size=4, epochs=2, verbose=0)
        saturated = fault_model("adam")
        saturated.compile("adam", losses.SparseCategoricalCrossentropy(use_output_logits=False))
        saturated.set_weights([w * 1e4 for w in saturated.get_weights()])
        saturated_history = saturated.fit(X * 100, Y, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert np.isfinite(saturated_history.history["loss"]).all()
    assert history.stopped_early is None


# ---------------------------------------------------------------- model files


@pytest.fixture
def saved(tmp_path):
    model = make_model()
    model.fit(X, Y, epochs=2, batch_size=4, verbose=0)
    path = tmp_path / "model.tinynn"
    model.save(path)
    return model, path


def test_round_trip_predicts_bit_for_bit(saved, backend):
    model, path = saved
    loaded = tinynn.models.load_model(path)
    np.testing.assert_array_equal(model.predict(X), loaded.predict(X))
    assert loaded.optimizer.iterations == model.optimizer.iterations
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert loaded.metrics == ["accuracy"]


def test_training_resumed_after_load_matches_uninterrupted_training(tmp_path, backend):
    def fresh():
        tinynn.utils.set_random_seed(5)
        model = tinynn.Sequential([layers.Dense(6, "tanh", input_shape=(FEATURES,)),
                                   layers.Dense(CLASSES, "softmax")])
        model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        return model

    straight = fresh()
    straight.fit(X, Y, epochs=4, batch_size=5, verbose=0)
    first = fresh()
    first.fit(X, Y, epochs=2, batch_size=5, verbose=0)
    first.save(tmp_path / "half.tinynn")
    resumed = tinynn.models.load_model(tmp_path / "half.tinynn")
    resumed.fit(X, Y, epochs=2, batch_size=5, verbose=0)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_alone_round_trip_and_refuse_another_model(saved, tmp_path):
    model, _ = saved
    model.save_weights(tmp_path / "w.npz")
    other = make_model()
    other.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(other.predict(X), model.predict(X))
    wider = tinynn.Sequential([layers.Dense(7, input_shape=(FEATURES,)), layers.Dense(3)])
    before = state(wider)
    with pytest.raises(ModelFileError, match=r"must have shape \(4, 7\)"):
        wider.load_weights(tmp_path / "w.npz")
    assert_unchanged(before, state(wider))
    with pytest.raises(ModelFileError, match="holds 'weights', expected 'model'"):
        tinynn.models.load_model(tmp_path / "w.npz")


def test_a_crash_while_saving_leaves_the_old_file(saved, monkeypatch):
    model, path = saved
    old = path.read_bytes()

    def crash(file, **arrays):
        file.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == old
    assert sorted(os.listdir(path.parent)) == ["model.tinynn"]


def rewrite(path: Path, edit) -> None:
    """Rewrite a model file with ``edit(config, arrays)`` applied (a hand edit)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    config = json.loads(str(arrays.pop("config")))
    edit(config, arrays)
    with open(path, "wb") as f:  # (np.savez would add .npz to a bare name)
        np.savez(f, config=np.array(json.dumps(config)), **arrays)


HAND_EDITS = [
    ("wrong version", lambda c, a: c.update(version=2), "version 2; this tinynn reads version 1"),
    ("another format", lambda c, a: c.update(format="keras"), "not a tinynn file"),
    ("unknown activation",
     lambda c, a: c["layers"][0]["config"].update(activation="swish"), "activation must be"),
    ("negative units", lambda c, a: c["layers"][1]["config"].update(units=-3), "units"),
    ("unknown layer class", lambda c, a: c["layers"][0].update({"class": "Conv3D"}),
     "unknown class 'Conv3D'"),
    ("layers not a list", lambda c, a: c.update(layers="dense"), "'layers' must be"),
    ("no layers key", lambda c, a: c.pop("layers"), "invalid model description"),
    ("weights of the wrong shape", lambda c, a: a.update({"weights/0": np.ones((5, 4))}),
     r"must have shape \(4, 5\)"),
    ("a weight array missing", lambda c, a: a.pop("weights/3"), "expected 4 weight arrays"),
    ("NaN weights", lambda c, a: a.update({"weights/1": np.full(5, np.nan)}), "finite"),
    ("optimizer state of the wrong shape",
     lambda c, a: a.update({"optimizer/0/m": np.ones(3)}), "optimizer state 0/m"),
    ("negative iterations",
     lambda c, a: c["compile"]["optimizer"].update(iterations=-1), "iterations"),
    ("unknown optimizer", lambda c, a: c["compile"]["optimizer"].update({"class": "Lion"}),
     "unknown optimizer"),
]


@pytest.mark.parametrize(("what", "edit", "message"), HAND_EDITS,
                         ids=[h[0] for h in HAND_EDITS])
def test_hand_edited_model_files_are_refused(saved, what, edit, message):
    _, path = saved
    rewrite(path, edit)
    with pytest.raises(ModelFileError, match=message):
        tinynn.models.load_model(path)


class Trap:
    """Unpickling this would create a file: proof that loading ran code."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["TINYNN_TRAP"]),))


def test_a_smuggled_pickle_is_never_run(saved, tmp_path, monkeypatch):
    _, path = saved
    marker = tmp_path / "pwned"
    monkeypatch.setenv("TINYNN_TRAP", str(marker))
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["weights/0"] = np.array([Trap()], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # object arrays are stored as pickles
    assert b"pwned" in path.read_bytes()  # the trap is in the file
    with pytest.raises(ModelFileError, match="not a readable tinynn file"):
        tinynn.models.load_model(path)
    assert not marker.exists()
    assert pickle.loads(pickle.dumps(1)) == 1  # (pickle itself works; tinynn just never calls it)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.5, 0.9, 0.999])
def test_truncated_model_files_are_refused(saved, fraction):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError):
        tinynn.models.load_model(path)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> tuple[tinynn.Sequential, bytes]:
    model = make_model()
    path = tmp_path_factory.mktemp("flip") / "m.tinynn"
    model.save(path)
    return model, path.read_bytes()


@settings(max_examples=300, deadline=None)
@given(positions=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=3),
       flip=st.integers(1, 255))
def test_flipped_bytes_are_refused_or_harmless(model_file, tmp_path_factory, positions, flip):
    model, original = model_file
    path = tmp_path_factory.mktemp("flip") / "m.tinynn"
    data = bytearray(original)
    for p in positions:
        data[int(p * len(data))] ^= flip
    path.write_bytes(bytes(data))
    try:
        loaded = tinynn.models.load_model(path)
    except ModelFileError:
        return
    # A flip that zip's checksums cannot see (in padding or metadata) changed nothing that matters.
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.parametrize("content", [b"", b"not a zip at all", gzip.compress(b"x" * 100)])
def test_files_that_are_not_models(tmp_path, content):
    path = tmp_path / "m.tinynn"
    path.write_bytes(content)
    with pytest.raises(ModelFileError):
        tinynn.models.load_model(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        tinynn.models.load_model(tmp_path / "nothing.tinynn")


# ---------------------------------------------------------------- damaged dataset files


@pytest.fixture(scope="module")
def real_idx_headers(mnist_data) -> list[bytes]:
    """Real MNIST headers: the test labels' with 50 labels, the test images' with 2 images."""
    from tinynn.datasets import base, mnist

    root = next(d for d in base_dirs(base) if (d / "t10k-labels-idx1-ubyte.gz").exists())
    labels = gzip.open(root / "t10k-labels-idx1-ubyte.gz").read()[:8 + 50]
    labels = labels[:4] + (50).to_bytes(4, "big") + labels[8:]
    images = gzip.open(root / "t10k-images-idx3-ubyte.gz").read()[:16 + 2 * 784]
    images = images[:4] + (2).to_bytes(4, "big") + images[8:]
    assert mnist.MNIST.name == "mnist"
    return [labels, images]


def base_dirs(base):
    root = os.environ.get(base.DATA_VAR)
    return [Path(root) / "mnist", Path(root)] if root else []


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, 1), cut=st.integers(0, 2000),
       flips=st.lists(st.tuples(st.integers(0, 20), st.integers(1, 255)), max_size=3))
def test_fuzzed_idx_headers_never_give_a_misshapen_array(real_idx_headers, which, cut, flips):
    data = bytearray(real_idx_headers[which][:cut])
    for position, bits in flips:
        if position < len(data):
            data[position] ^= bits
    try:
        array = idx.parse_idx(bytes(data), "fuzzed")
    except idx.IDXError:
        return
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    assert array.shape == shape
    assert len(data) == 4 + 4 * ndim + array.nbytes


def test_a_fault_with_validation_still_logs_it_for_the_callbacks(backend):
    """After a broken step the epoch ends as Keras's does: its validation is computed (on
    the weights from before that step), so a callback that monitors it reads it."""
    model = fault_model(optimizers.SGD(learning_rate=0.1))
    huge = np.clip(X[:4], -1, 1) * 3e38  # finite, but the loss overflows: the 3rd step breaks
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=5)
    with pytest.warns(NonFiniteWarning, match="epoch 1, step 3"):
        history = model.fit(np.concatenate([X[:8], huge]), Y, batch_size=4, epochs=2,
                            shuffle=False, verbose=0, validation_data=(X, Y), callbacks=[stop])
    assert history.stopped_early is not None and model.stop_training
    assert np.isfinite(history.history["val_loss"][0]) and stop.best is not None
