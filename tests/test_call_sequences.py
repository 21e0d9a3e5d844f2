"""Random sequences of public calls on both backends (issue 11, "the rule").

Every shape, dtype and index range a compiled kernel relies on must be checked in
Python before the call. Hypothesis drives two twin models, one per backend, built
the same way with the same seed, through the same random sequence of public calls:
build, compile (every optimizer, both losses), fit / evaluate / predict /
train_on_batch on valid and invalid data, add (also after training), set_weights
(good and bad), save / load_model / save_weights / load_weights, a shared
optimizer, and callbacks that stop training or change the learning rate. After
every call:

* the interpreter is still alive (everything runs in-process);
* any exception is one of the documented ones (``TypeError``, ``ValueError`` and
  its subclasses, ``FileNotFoundError``, ``PermissionError``), and a refused call
  changed nothing (weights, optimizer slots and iterations, Dropout's counters);
* both backends did the same thing (both refused with the same error, or both
  ran, with the same numbers up to float32 rounding), and valid inputs gave
  finite results.

The second half is the adversarial review: what a user can do to a model's
insides through public attributes (replace ``layer.params[...]``, swap an
optimizer's slots, change ``units`` or ``Dropout.rate``). Cases that corrupt
memory on the numba backend today run in a subprocess, so that the suite survives
them; cases with a clear expected behaviour that tinynn does not give yet are
``xfail(strict=True)``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import tinynn
from tinynn import callbacks, layers, losses, optimizers
from tinynn.models import NonFiniteWarning

BACKENDS = ("numpy", "numba")
#: The exceptions a public call may raise (ModelFileError and NotCompiledError are ValueErrors).
DOCUMENTED = (TypeError, ValueError, FileNotFoundError, PermissionError)
#: Fused and step-by-step float32 arithmetic sum in different orders, and Adam or
#: RMSprop move a weight by ~lr whatever the size of its gradient, so a gradient
#: that is ±1e-9 on the two backends moves it ±lr: the twins drift apart by a few
#: learning rates over a sequence. (A formula that differs moves losses by ~0.1.)
RTOL, ATOL = 1e-2, 2e-3
WEIGHT_ATOL = 2e-2
#: The fused kernels compile once per number of Dense layers: few, for CI's cold start.
MAX_DENSE = 2


# ---------------------------------------------------------------- state, and comparing twins


def snapshot(model) -> tuple:
    """Copies of everything a call may change."""
    opt = model.optimizer
    slots = None if opt is None or opt.slots is None else [
        {k: a.copy() for k, a in s.items()} for s in opt.slots]
    states = [{k: a.copy() for k, a in layer.state.items()} for layer in model.leaf_layers]
    return (model.get_weights(), slots, None if opt is None else opt.iterations, states,
            model.built, len(model.leaf_layers),
            None if opt is None else opt.learning_rate)


def assert_unchanged(before: tuple, after: tuple, what: str) -> None:
    weights, slots, iterations, states, built, count, lr = before
    assert (built, count, iterations, lr) == (after[4], after[5], after[2], after[6]), \
        f"{what}: the model's structure, step count or learning rate changed"
    assert len(weights) == len(after[0]), what
    for a, b in zip(weights, after[0]):
        np.testing.assert_array_equal(a, b, err_msg=f"{what}: weights changed")
    assert (slots is None) == (after[1] is None), f"{what}: optimizer slots appeared or vanished"
    for s, t in zip(slots or [], after[1] or []):
        for k in s:
            np.testing.assert_array_equal(s[k], t[k], err_msg=f"{what}: slot {k} changed")
    for s, t in zip(states, after[3]):
        for k in s:
            np.testing.assert_array_equal(s[k], t[k], err_msg=f"{what}: layer state changed")


def assert_close(a, b, what: str, samples: int | None = None, atol: float = ATOL) -> None:
    """The results of the numpy and numba twins agree (recursively, up to float32 rounding).

    An accuracy may differ by one sample in ``samples``: where two outputs tie up to
    rounding (saturated tanh or sigmoid units), the backends' last bits pick the argmax.
    """
    if isinstance(a, tinynn.callbacks.History):
        assert a.stopped_early == b.stopped_early, what
        a, b = a.history, b.history
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), what
        for k in a:
            if "accuracy" in k and samples:
                assert abs(np.subtract(a[k], b[k])).max() <= 1 / samples + 1e-9, (what, k)
            else:
                assert_close(a[k], b[k], f"{what}[{k}]", atol=atol)
    elif isinstance(a, list) and samples and len(a) == 2:  # [loss, accuracy]
        assert_close(a[0], b[0], f"{what}[loss]")
        assert abs(a[1] - b[1]) <= 1 / samples + 1e-9, (what, "accuracy")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (p, q) in enumerate(zip(a, b)):
            assert_close(p, q, f"{what}[{i}]", atol=atol)
    elif a is None:
        assert b is None, what
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, f"{what}: shapes {a.shape} and {b.shape}"
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=atol, err_msg=what)


def all_finite(result) -> bool:
    if isinstance(result, tinynn.callbacks.History):
        result = result.history
    if isinstance(result, dict):
        return all(all_finite(v) for v in result.values())
    if isinstance(result, (list, tuple)):
        return all(all_finite(v) for v in result)
    return result is None or bool(np.isfinite(np.asarray(result, dtype=np.float64)).all())


def run_on_both(models: dict, call, *, expect_error: bool | None = None,
                check_finite: bool = False, seed: int = 0,
                samples: int | None = None) -> dict:
    """``call(model)`` on each twin under its backend; checks the rule; returns the results.

    The global seed is set before each twin's call, so that both shuffle (and a
    model built by its first call initialises) alike.
    """
    outcomes = {}
    for backend in BACKENDS:
        model = models[backend]
        before = snapshot(model)
        tinynn.utils.set_random_seed(seed)
        with tinynn.backend.using(backend), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result, error = call(model), None
            except DOCUMENTED as e:
                result, error = None, e
                assert_unchanged(before, snapshot(model), f"{backend}: {type(e).__name__}: {e}")
            except Exception as e:  # noqa: BLE001 (the point: nothing else may escape)
                raise AssertionError(f"{backend}: undocumented {type(e).__name__}: {e}") from e
        faults = [str(w.message) for w in caught if issubclass(w.category, NonFiniteWarning)]
        outcomes[backend] = (result, error, faults)
    (r0, e0, f0), (r1, e1, f1) = outcomes.values()
    assert type(e0) is type(e1), f"backends disagree: numpy {e0!r}, numba {e1!r}"
    assert len(f0) == len(f1), f"backends disagree on faults: numpy {f0}, numba {f1}"
    if expect_error is not None:
        wanted = "an error" if expect_error else "success"
        assert (e0 is not None) == expect_error, f"expected {wanted}, got {e0!r}"
    if e0 is None:
        assert_close(r0, r1, "numpy vs numba", samples)
        if check_finite:
            assert not f0, f"valid inputs stopped training: {f0}"
            assert all_finite(r0) and all_finite(r1), f"non-finite results: {r0!r} {r1!r}"
    return {**{b: o[0] for b, o in outcomes.items()}, "faults": f0}


# ---------------------------------------------------------------- building twins


def make_layer(spec: tuple):
    kind = spec[0]
    if kind == "dense":
        return layers.Dense(spec[1], activation=spec[2], use_bias=spec[3])
    if kind == "relu":
        return layers.ReLU()
    if kind == "activation":
        return layers.Activation(spec[1])
    if kind == "softmax":
        return layers.Softmax()
    if kind == "dropout":
        return layers.Dropout(spec[1], seed=spec[2])
    if kind == "flatten":
        return layers.Flatten()
    if kind == "nested":
        return tinynn.Sequential([make_layer(s) for s in spec[1]])
    raise AssertionError(spec)


def make_optimizer(spec: tuple) -> optimizers.Optimizer:
    kind, lr = spec[0], spec[1]
    if kind == "adam":
        return optimizers.Adam(lr)
    if kind == "adamw":
        return optimizers.AdamW(lr, weight_decay=spec[2])
    if kind == "rmsprop":
        return optimizers.RMSprop(lr, rho=spec[2], momentum=spec[3], centered=spec[4])
    return optimizers.SGD(lr, momentum=spec[2], nesterov=spec[3])


def make_loss(spec: tuple) -> losses.Loss:
    cls = losses.SparseCategoricalCrossentropy if spec[0] == "sparse" \
        else losses.CategoricalCrossentropy
    return cls(from_logits=spec[1], use_output_logits=spec[2])


ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
dense = st.tuples(st.just("dense"), st.integers(1, 5), st.sampled_from(ACTIVATIONS), st.booleans())
simple = st.one_of(
    st.tuples(st.just("relu")), st.tuples(st.just("activation"), st.sampled_from(ACTIVATIONS)),
    st.tuples(st.just("dropout"), st.sampled_from([0.0, 0.1, 0.5, 0.9]), st.integers(0, 99)))
hidden = st.one_of(simple, st.tuples(st.just("nested"), st.lists(st.one_of(simple, dense),
                                                                     max_size=1).map(tuple)))
optimizer_specs = st.one_of(
    st.tuples(st.just("adam"), st.sampled_from([1e-3, 1e-2])),
    st.tuples(st.just("adamw"), st.sampled_from([1e-3, 1e-2]), st.sampled_from([0.0, 0.004])),
    st.tuples(st.just("rmsprop"), st.sampled_from([1e-3, 1e-2]), st.sampled_from([0.5, 0.9]),
              st.sampled_from([0.0, 0.5]), st.booleans()),
    st.tuples(st.just("sgd"), st.sampled_from([1e-2, 0.1]), st.sampled_from([0.0, 0.9]),
              st.booleans()))
loss_specs = st.tuples(st.sampled_from(["sparse", "categorical"]), st.booleans(), st.booleans())


def dense_count(spec) -> int:
    if spec[0] == "dense":
        return 1
    return sum(dense_count(s) for s in spec[1]) if spec[0] == "nested" else 0


def after_logits(specs, spec: tuple) -> tuple:
    """``spec``, unless it is a Dropout or a linear Activation after a sigmoid or softmax
    output: the backends disagree on that today (see the xfail test below), so the machine
    adds a ReLU instead."""
    last = specs[-1] if specs else ("flatten",)
    ends_in_logits = (last[0] == "dense" and last[2] in ("sigmoid", "softmax")) or (
        last[0] == "activation" and last[1] in ("sigmoid", "softmax")) or last[0] == "softmax"
    identity = spec[0] == "dropout" or spec == ("activation", "linear")
    return ("relu",) if identity and ends_in_logits else spec


@st.composite
def architectures(draw):
    """(sample shape, whether an Input comes first, layer specs), at most MAX_DENSE Dense."""
    shape = draw(st.sampled_from([(6,), (2, 3)]))
    specs = [("flatten",)] if len(shape) > 1 else []
    specs += draw(st.lists(hidden, max_size=3))
    while sum(map(dense_count, specs)) >= MAX_DENSE:
        specs.pop()
    specs.append(draw(dense))
    if draw(st.booleans()):
        specs.append(after_logits(specs, draw(simple)))
    return shape, draw(st.booleans()), tuple(specs)


def twins(shape, with_input, specs, opt, loss, seed, optimizer=None) -> dict:
    models = {}
    for backend in BACKENDS:
        tinynn.utils.set_random_seed(seed)
        first = [tinynn.Input(shape=shape)] if with_input else []
        model = tinynn.Sequential(first + [make_layer(s) for s in specs])
        model.compile(optimizer[backend] if optimizer else make_optimizer(opt), make_loss(loss),
                      metrics=["accuracy"])
        models[backend] = model
    return models


# ---------------------------------------------------------------- data, valid and not


def targets(rng, n: int, classes: int, loss: losses.Loss, soft: bool) -> np.ndarray:
    labels = rng.integers(0, classes, n)
    if isinstance(loss, losses.SparseCategoricalCrossentropy):
        return labels
    if soft:  # class weights that are not one-hot: allowed (finite, non-negative)
        return rng.uniform(0, 2, size=(n, classes))
    return np.eye(classes)[labels]


#: name → (methods it applies to, what it does to {"x", "y", "kw"}).
def _more_features(d):
    d["x"] = np.concatenate([d["x"], d["x"][..., :1]], axis=-1)


def _wrong_kind_of_targets(d):
    y = d["y"]
    d["y"] = np.argmax(y, axis=1) if y.ndim == 2 else np.eye(int(y.max()) + 2)[y]


def _label_too_large(d):
    y = d["y"].copy()
    if y.ndim == 1:
        y[-1] = d["classes"]
    else:
        y[-1, 0] = -1.0  # categorical: a negative class weight
    d["y"] = y


def _non_whole_label(d):
    y = d["y"].astype(np.float64)
    y.flat[0] = 0.5 if y.ndim == 1 else np.nan
    d["y"] = y


def _nan_x(d):
    d["x"] = d["x"].copy()
    d["x"].flat[-1] = np.nan


FIT, EVAL, TOB, PRED = "fit", "evaluate", "train_on_batch", "predict"
ALL, LABELLED = (FIT, EVAL, TOB, PRED), (FIT, EVAL, TOB)
CORRUPTIONS = {
    "more features": (ALL, _more_features),
    "1-D x": (ALL, lambda d: d.update(x=d["x"].reshape(-1))),
    "no samples": (ALL, lambda d: d.update(x=d["x"][:0], y=d["y"][:0])),
    "string x": (ALL, lambda d: d.update(x=d["x"].astype(str))),
    "complex x": (ALL, lambda d: d.update(x=d["x"] + 1j)),
    "object x": (ALL, lambda d: d.update(x=d["x"].astype(object))),
    "NaN in x": (ALL, _nan_x),
    "x beyond float32": (ALL, lambda d: d.update(x=d["x"].astype(np.float64) * 1e300)),
    "one label short": (LABELLED, lambda d: d.update(y=d["y"][:-1])),
    "label out of range": (LABELLED, _label_too_large),
    "fractional or NaN label": (LABELLED, _non_whole_label),
    "one-hot vs integer": (LABELLED, _wrong_kind_of_targets),
    "string labels": (LABELLED, lambda d: d.update(y=d["y"].astype(str))),
    "batch_size 0": ((FIT, EVAL, PRED), lambda d: d["kw"].update(batch_size=0)),
    "batch_size 2.5": ((FIT, EVAL, PRED), lambda d: d["kw"].update(batch_size=2.5)),
    "batch_size True": ((FIT, EVAL, PRED), lambda d: d["kw"].update(batch_size=True)),
    "batch_size '32'": ((FIT, EVAL, PRED), lambda d: d["kw"].update(batch_size="32")),
    "verbose 3": ((FIT, EVAL, PRED), lambda d: d["kw"].update(verbose=3)),
    "epochs 0": ((FIT,), lambda d: d["kw"].update(epochs=0)),
    "validation_split 1": ((FIT,), lambda d: d["kw"].update(validation_split=1.0)),
    "validation_split '0.2'": ((FIT,), lambda d: d["kw"].update(validation_split="0.2")),
    "validation_data misshapen": (
        (FIT,), lambda d: d["kw"].update(validation_data=(d["x"][..., :-1], d["y"]))),
    "callbacks not a list": ((FIT,), lambda d: d["kw"].update(callbacks=callbacks.History())),
    "callback not a Callback": ((FIT,), lambda d: d["kw"].update(callbacks=[print])),
}


#: Wrong only once the model knows its input shape. (A misshapen validation_data
#: given to an unbuilt model also builds it: see the xfail test below.)
NEEDS_A_BUILT_MODEL = {"more features", "validation_data misshapen"}


class StopAfter(callbacks.Callback):
    """Sets ``model.stop_training`` after batch ``batch``."""

    def __init__(self, batch: int):
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch >= self.batch:
            self.model.stop_training = True


class HalveRate(callbacks.Callback):
    """Halves the learning rate at the start of every epoch after the first."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch:
            self.model.optimizer.learning_rate *= 0.5


BATCH_SIZES = st.one_of(st.integers(1, 9), st.sampled_from([32, 10**9]))


# ---------------------------------------------------------------- the state machine


class TwinModels(RuleBasedStateMachine):
    """A numpy model and its numba twin, driven through the same public calls."""

    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="tinynn-seq-"))
        self.models: dict = {}
        self.files = 0
        #: A loaded optimizer adopts the first model it meets (xfail test below).
        self.fresh_from_file = False

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(arch=architectures(), opt=optimizer_specs, loss=loss_specs,
                seed=st.integers(0, 2**16))
    def build(self, arch, opt, loss, seed):
        self.shape, with_input, self.specs = arch
        self.opt, self.loss, self.seed = opt, loss, seed
        self.models = twins(self.shape, with_input, self.specs, opt, loss, seed)

    # ------------------------------------------------------------ helpers

    @property
    def model(self):
        return self.models["numpy"]

    def data(self, n: int, seed: int, soft: bool = False) -> dict:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, *self.shape)).astype(np.float32)
        classes = self.model.compute_output_shape(self.shape)[-1]
        return {"x": x, "y": targets(rng, n, classes, self.model.loss, soft), "kw": {},
                "classes": classes}

    def finite_expected(self) -> bool:
        """Whether valid inputs must give finite losses.

        The categorical probability formula divides by the sum of the outputs
        (as Keras does), so a last layer that can output all zeros (relu, linear,
        tanh, or a Dropout in training) may give NaN on valid inputs, on both
        backends alike; every other formula is finite.
        """
        loss, last = self.model.loss, self.model.leaf_layers[-1]
        has_logits = getattr(last, "activation", None) in ("sigmoid", "softmax") \
            and not isinstance(last, layers.Dropout)
        return not (isinstance(loss, losses.CategoricalCrossentropy)
                    and loss.formula(has_logits) == "probabilities")

    def path(self) -> Path:
        self.files += 1
        return self.tmp / f"model_{self.files}.npz"

    # ------------------------------------------------------------ valid calls

    @rule(n=st.integers(1, 24), seed=st.integers(0, 99), soft=st.booleans(),
          batch_size=BATCH_SIZES, epochs=st.integers(1, 2), shuffle=st.booleans(),
          split=st.sampled_from([0.0, 0.25]), hooks=st.sampled_from(["none", "stop", "rate"]))
    def fit(self, n, seed, soft, batch_size, epochs, shuffle, split, hooks):
        d = self.data(n, seed, soft)
        if split and n < 4:
            split = 0.0
        extra = {"none": [], "stop": [StopAfter(1)], "rate": [HalveRate()]}[hooks]
        out = run_on_both(self.models, lambda m: m.fit(
            d["x"], d["y"], batch_size=batch_size, epochs=epochs, shuffle=shuffle, verbose=0,
            validation_split=split, callbacks=list(extra)),
            expect_error=False, check_finite=self.finite_expected(),
            samples=min(n - int(n * split), int(n * split)) or n)
        self.after_training(out)

    @rule(n=st.integers(1, 9), seed=st.integers(0, 99))
    def train_on_batch(self, n, seed):
        d = self.data(n, seed)
        out = run_on_both(self.models, lambda m: m.train_on_batch(d["x"], d["y"]),
                          expect_error=False, check_finite=self.finite_expected(), samples=n)
        self.after_training(out)

    def after_training(self, out: dict) -> None:
        self.fresh_from_file = False
        if out["faults"]:
            # A step whose loss was NaN: numpy's Dropout counters moved, numba's did not
            # (xfail test below). Carry on from the same counters.
            for a, b in zip(self.models["numpy"].leaf_layers, self.models["numba"].leaf_layers):
                for k in a.state:
                    a.state[k][...] = b.state[k]

    @rule(n=st.integers(1, 40), seed=st.integers(0, 99), batch_size=BATCH_SIZES,
          as_dict=st.booleans())
    def evaluate(self, n, seed, batch_size, as_dict):
        d = self.data(n, seed)
        run_on_both(self.models, lambda m: m.evaluate(
            d["x"], d["y"], batch_size=batch_size, verbose=0, return_dict=as_dict),
            expect_error=False, check_finite=self.finite_expected(), samples=n)

    @rule(n=st.integers(1, 40), seed=st.integers(0, 99), batch_size=BATCH_SIZES)
    def predict(self, n, seed, batch_size):
        d = self.data(n, seed)
        out = run_on_both(self.models, lambda m: (m.predict(d["x"], batch_size=batch_size),
                                                  m(d["x"])),
                          expect_error=False, check_finite=self.finite_expected())
        classes = d["classes"]
        assert out["numpy"][0].shape == (n, classes)

    # ------------------------------------------------------------ invalid calls

    @rule(method=st.sampled_from(ALL), corruption=st.sampled_from(sorted(CORRUPTIONS)),
          n=st.integers(1, 9), seed=st.integers(0, 99))
    def invalid_call(self, method, corruption, n, seed):
        if not self.model.built and corruption in NEEDS_A_BUILT_MODEL:
            corruption = "NaN in x"  # an unbuilt model takes samples of any shape
        methods, corrupt = CORRUPTIONS[corruption]
        if method not in methods:
            method = methods[0]
        d = self.data(n, seed)
        corrupt(d)

        def call(m):
            if method == PRED:
                return m.predict(d["x"], **d["kw"])
            if method == TOB:
                return m.train_on_batch(d["x"], d["y"])
            kw = {"verbose": 0, **d["kw"]}
            return getattr(m, method)(d["x"], d["y"], **kw)

        run_on_both(self.models, call, expect_error=True)

    # ------------------------------------------------------------ changing the model

    @rule(spec=st.one_of(simple, dense), seed=st.integers(0, 99))
    def add(self, spec, seed):
        if dense_count(spec) + sum(map(dense_count, self.specs)) > MAX_DENSE:
            spec = ("relu",)
        spec = after_logits(self.specs, spec)
        trained = self.model.optimizer.slots is not None
        if trained != (self.models["numba"].optimizer.slots is not None):
            return  # a fit that took no step: the backends disagree (xfail test below)

        def call(m):
            tinynn.utils.set_random_seed(seed)
            m.add(make_layer(spec))

        run_on_both(self.models, call, expect_error=trained)
        if not trained:
            self.specs += (spec,)

    @rule(opt=optimizer_specs, loss=loss_specs)
    def recompile(self, opt, loss):
        run_on_both(self.models, lambda m: m.compile(make_optimizer(opt), make_loss(loss),
                                                     metrics=["accuracy"]), expect_error=False)
        self.opt, self.loss = opt, loss
        self.fresh_from_file = False

    @precondition(lambda self: self.model.built)
    @rule(scale=st.floats(0.5, 1.5), seed=st.integers(0, 99))
    def set_weights(self, scale, seed):
        rng = np.random.default_rng(seed)
        new = [rng.normal(size=w.shape) * scale for w in self.model.get_weights()]
        run_on_both(self.models, lambda m: m.set_weights(new), expect_error=False)
        for m in self.models.values():
            for w, v in zip(m.get_weights(), new):
                np.testing.assert_array_equal(w, v.astype(np.float32))

    @rule(kind=st.sampled_from(["one too few", "one too many", "transposed", "NaN", "strings",
                                "not a list", "unbuilt model"]))
    def set_bad_weights(self, kind):
        weights = self.model.get_weights() if self.model.built else []
        if kind != "unbuilt model" and not weights:
            kind = "unbuilt model"
        bad = {"one too few": lambda: weights[:-1],
               "one too many": lambda: weights + [weights[-1]],
               "transposed": lambda: [w.T if w.ndim == 2 and w.shape[0] != w.shape[1]
                                      else w[..., None] for w in weights],
               "NaN": lambda: [np.full_like(w, np.nan) for w in weights],
               "strings": lambda: [w.astype(str) for w in weights],
               "not a list": lambda: np.concatenate([w.ravel() for w in weights]),
               "unbuilt model": lambda: weights}[kind]()
        if kind == "unbuilt model" and self.model.built:
            return
        run_on_both(self.models, lambda m: m.set_weights(bad), expect_error=True)

    # ------------------------------------------------------------ files

    @rule(n=st.integers(1, 9), seed=st.integers(0, 99))
    def save_and_load_model(self, n, seed):
        path = {b: self.path() for b in BACKENDS}
        d = self.data(n, seed)
        saved = run_on_both(self.models, lambda m: m.save(
            path[tinynn.backend.get_backend()]) or True)
        if saved["numpy"] is None:  # refused (an unbuilt model): nothing to load
            assert not self.model.built
            return
        loaded = {}
        for backend in BACKENDS:
            with tinynn.backend.using(backend):
                old, new = self.models[backend], tinynn.models.load_model(path[backend])
                a, b = snapshot(old), snapshot(new)
                # Dropout's mask counters are not in the file (xfail test below).
                assert_unchanged(a, b[:3] + (a[3],) + b[4:], f"{backend}: load_model")
                np.testing.assert_array_equal(old.predict(d["x"]), new.predict(d["x"]))
                loaded[backend] = new
        self.models = loaded
        self.fresh_from_file = True


    @precondition(lambda self: self.model.built)
    @rule(kind=st.sampled_from(["round trip", "missing file", "another model's weights"]))
    def weights_file(self, kind):
        path = {b: self.path() for b in BACKENDS}
        if kind == "round trip":
            before = {b: m.get_weights() for b, m in self.models.items()}
            run_on_both(self.models, lambda m: m.save_weights(path[tinynn.backend.get_backend()]),
                        expect_error=False)
            run_on_both(self.models, lambda m: m.load_weights(path[tinynn.backend.get_backend()]),
                        expect_error=False)
            for b, m in self.models.items():
                for w, v in zip(before[b], m.get_weights()):
                    np.testing.assert_array_equal(w, v)
            return
        if kind == "another model's weights":
            other = tinynn.Sequential([tinynn.Input(shape=(7,)), layers.Dense(2)])
            for p in path.values():
                other.save_weights(p)
        run_on_both(self.models, lambda m: m.load_weights(path[tinynn.backend.get_backend()]),
                    expect_error=True)

    # ------------------------------------------------------------ a shared optimizer

    @precondition(lambda self: self.model.optimizer.slots is not None
                  and not self.fresh_from_file)
    @rule(n=st.integers(2, 9), seed=st.integers(0, 99))
    def shared_optimizer(self, n, seed):
        """A second model compiled with this model's optimizer is refused; neither changes."""
        shared = {b: m.optimizer for b, m in self.models.items()}
        others = twins(self.shape, True, self.specs, self.opt, self.loss, seed + 1, shared)
        d = self.data(n, seed)
        before = {b: snapshot(m) for b, m in self.models.items()}
        run_on_both(others, lambda m: m.fit(d["x"], d["y"], verbose=0), expect_error=True)
        run_on_both(others, lambda m: m.train_on_batch(d["x"], d["y"]), expect_error=True)
        for b, m in self.models.items():
            assert_unchanged(before[b], snapshot(m), f"{b}: the optimizer's own model")

    # ------------------------------------------------------------ always

    @invariant()
    def twins_agree(self):
        if not self.models:
            return
        a, b = (snapshot(self.models[x]) for x in BACKENDS)
        assert a[2] == b[2] and a[4:] == b[4:], "structure, step count or learning rate differ"
        assert_close(a[0], b[0], "weights", atol=WEIGHT_ATOL)
        assert all(np.isfinite(w).all() for w in a[0] + b[0]), "non-finite weights"
        assert_close(a[3], b[3], "layer states")
        if (a[1] is None) != (b[1] is None):
            # Only after a fit that stopped before its first update (xfail test below).
            assert a[2] == 0 and not self.finite_expected(), "optimizer slots on one backend only"
        elif a[1] is not None:
            assert_close(a[1], b[1], "optimizer slots", atol=WEIGHT_ATOL)


TwinModels.TestCase.settings = settings(
    max_examples=25, stateful_step_count=12, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# (~60 s of whole fits on both backends: in `make test`, not in `make check`'s fast tier.)
test_random_call_sequences_keep_the_rule = pytest.mark.slow(TwinModels.TestCase)


# ---------------------------------------------------------------- found by the machine


def test_issue_11_huge_inputs_stop_at_the_same_step_with_the_same_state():
    """Inputs × 1e30: numba once kept one wrecking step (|w| ≈ 8e31) and an infinite v.

    Now both backends stop at the same step, with the same finite weights and state,
    for every optimizer.
    """
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(64, 6)) * 1e30).astype(np.float32)
    y = rng.integers(0, 3, 64)
    for name in ("adam", "adamw", "rmsprop", "sgd"):
        def fit(m, name=name):
            m.compile(name, "sparse_categorical_crossentropy")
            return m.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)

        models = twins((6,), True, (("dense", 4, "relu", True), ("dense", 3, "sigmoid", True)),
                       ("adam", 1e-3), ("sparse", False, True), 0)
        start = models["numpy"].get_weights()
        histories = run_on_both(models, fit, expect_error=False)
        assert histories["numpy"].stopped_early is not None, name
        slots = {}
        for backend, m in models.items():
            assert max(np.abs(w).max() for w in m.get_weights()) < 1e30, (name, backend)
            # No slots, or slots made before the first step (numba: see the xfail test below).
            slots[backend] = [a for s in m.optimizer.slots or [] for a in s.values()] or [
                np.zeros_like(w) for w in m.weights for _ in m.optimizer.slot_names]
            assert all(np.isfinite(a).all() for a in slots[backend]), (name, backend)
            if name != "sgd":  # the first update already breaks: nothing was applied
                assert m.optimizer.iterations == 0
                assert not any(a.any() for a in slots[backend])
                for a, b in zip(start, m.get_weights()):
                    np.testing.assert_array_equal(a, b)
        assert_close(slots["numpy"], slots["numba"], f"{name}: slots")


def _lazy_model():
    model = tinynn.Sequential([layers.Dense(3)])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("bad", [{"validation_data": (np.zeros((4, 5)), np.zeros(4, int))},
                                 {"validation_split": 0.5}])
def test_a_fit_refused_for_its_validation_data_leaves_the_model_unbuilt(bad):
    model = _lazy_model()
    n = 1 if "validation_split" in bad else 4
    with pytest.raises(ValueError, match="validation"):
        model.fit(np.zeros((n, 6)), np.zeros(n, int), verbose=0, **bad)
    assert not model.built


@pytest.mark.parametrize("after", [("dropout", 0.0, 1), ("dropout", 0.5, 1),
                                   ("activation", "linear"), ("flatten",)])
@pytest.mark.parametrize("from_logits", [False, True])
def test_an_identity_layer_after_a_sigmoid_output_gives_the_same_loss_on_both_backends(
        after, from_logits):
    x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    y = np.arange(8) % 2
    models = twins((6,), True, (("dense", 2, "sigmoid", True), after),
                   ("adam", 1e-3), ("sparse", from_logits, True), 0)
    run_on_both(models, lambda m: m.evaluate(x, y, verbose=0), expect_error=False)
    run_on_both(models, lambda m: m.fit(x, y, verbose=0, shuffle=False), expect_error=False)


def test_a_fit_that_stops_before_any_update_leaves_the_same_optimizer_on_both_backends():
    # Categorical probabilities of a relu output that is all 0: the first loss is NaN.
    models = twins((6,), True, (("dense", 1, "linear", False), ("relu",)), ("adam", 1e-3),
                   ("categorical", False, False), 0)
    x, y = -np.ones((2, 6), np.float32), np.ones((2, 1))
    models["numpy"].set_weights([np.ones((6, 1))])
    models["numba"].set_weights([np.ones((6, 1))])
    run_on_both(models, lambda m: m.fit(x, y, verbose=0), expect_error=False)
    for m in models.values():  # the same state on both: slots made for fit, nothing applied
        assert m.optimizer.iterations == 0
        assert not any(a.any() for s in m.optimizer.slots for a in s.values())
    # ... and so add() is refused on both (the optimizer holds state for these layers).
    run_on_both(models, lambda m: m.add(layers.Activation("softmax")), expect_error=True)


def test_a_loaded_optimizer_belongs_to_the_loaded_model(tmp_path, backend):
    x, y = np.ones((4, 6), np.float32), np.arange(4) % 3
    model = twins((6,), True, (("dense", 3, "softmax", True),), ("adam", 1e-3),
                  ("sparse", False, True), 0)["numpy"]
    model.fit(x, y, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = tinynn.models.load_model(tmp_path / "m.npz")
    other = tinynn.Sequential([tinynn.Input((6,)), layers.Dense(3, activation="softmax")])
    other.compile(loaded.optimizer, "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="an optimizer belongs to one model"):
        other.fit(x, y, verbose=0)


def test_training_resumed_after_load_with_dropout_matches_uninterrupted(tmp_path, backend):
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    y = np.arange(16) % 3

    def fresh():
        return twins((6,), True, (("dense", 5, "relu", True), ("dropout", 0.5, 7),
                                  ("dense", 3, "softmax", True)),
                     ("adam", 1e-2), ("sparse", False, True), 0)["numpy"]

    straight = fresh()
    straight.fit(x, y, epochs=2, verbose=0, shuffle=False)
    first = fresh()
    first.fit(x, y, epochs=1, verbose=0, shuffle=False)
    first.save(tmp_path / "m.npz")
    resumed = tinynn.models.load_model(tmp_path / "m.npz")
    resumed.fit(x, y, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.xfail(strict=True, reason="numba contracts velocity − avg² into an FMA: with "
                   "rho=0 the centred variance is a rounding residue instead of 0")
def test_centred_rmsprop_with_rho_0_agrees_on_both_backends():
    models = twins((6,), True, (("dense", 2, "linear", False),),
                   ("rmsprop", 1e-3, 0.0, 0.0, True), ("sparse", False, False), 0)
    x = np.random.default_rng(0).normal(size=(1, 6)).astype(np.float32)
    run_on_both(models, lambda m: m.train_on_batch(x, np.array([1])), expect_error=False,
                check_finite=True)
    assert_close(models["numpy"].get_weights(), models["numba"].get_weights(), "weights")


# ---------------------------------------------------------------- a user inside the model


SUBPROCESS = textwrap.dedent('''
    import json, sys, warnings
    import numpy as np
    import tinynn
    from tinynn import layers
    warnings.simplefilter("ignore")
    case = sys.argv[1]
    for backend in ("numpy", "numba"):
        tinynn.set_backend(backend)
        tinynn.utils.set_random_seed(0)
        x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
        y = np.arange(40) % 3
        model = tinynn.Sequential([tinynn.Input((4,)), layers.Dense(5, activation="relu"),
                                   layers.Dense(3, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, verbose=0)
        first, last = model.leaf_layers
        if case == "kernel too large":
            first.params["kernel"] = np.ones((400, 500), np.float32)
        elif case == "kernel too narrow":
            last.params["kernel"] = np.ones((5, 1), np.float32)
        elif case == "bias too short":
            last.params["bias"] = np.ones(1, np.float32)
        elif case == "units changed":
            last.units = 7
        elif case == "slot too short":
            model.optimizer.slots[0]["m"] = np.zeros(3, np.float32)
        params = [dict(layer.params) for layer in model.leaf_layers]
        for call in ("predict", "evaluate", "fit"):
            before = [w.copy() for w in model.weights]
            try:
                {"predict": lambda: model.predict(x),
                 "evaluate": lambda: model.evaluate(x, y, verbose=0),
                 "fit": lambda: model.fit(x, y, verbose=0)}[call]()
                outcome = "ran"
            except (TypeError, ValueError) as e:
                outcome = "refused"
            except Exception as e:
                outcome = "undocumented " + type(e).__name__
            same = all(np.array_equal(a, b) for a, b in zip(before, model.weights))
            print(json.dumps([backend, call, outcome, same]), flush=True)
''')


@pytest.mark.parametrize("case", ["kernel too large", "kernel too narrow", "bias too short",
                                  "units changed", "slot too short"])
def test_misshapen_insides_are_refused_on_both_backends(case):
    """Replaced with a wrong-shaped array by the user: every call must be refused with a
    ValueError naming the layer, and change nothing. Run in a subprocess: today numba can
    corrupt the heap."""
    done = subprocess.run([sys.executable, "-c", SUBPROCESS, case], capture_output=True,
                          text=True, timeout=300)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
    assert done.returncode == 0, f"the interpreter died: {done.stderr[-500:]}"
    assert len(lines) == 6, done.stderr[-500:]
    for backend, call, outcome, unchanged in lines:
        # (predict and evaluate do not use the optimizer's slots: they may run.)
        ran_without_slots = case == "slot too short" and call != "fit" and outcome == "ran"
        assert (outcome == "refused" or ran_without_slots) and unchanged, (
            backend, call, outcome, unchanged)


def _changed(mutate, train_first: bool):
    """The twins, after one fit if ``train_first``, then changed by ``mutate(model)``.

    (A parameter replaced after training is refused by fit, as "an optimizer belongs
    to one model": the optimizer holds state for the old array.)
    """
    models = twins((4,), True, (("dense", 5, "relu", True), ("dropout", 0.5, 3),
                                ("dense", 3, "softmax", True)), ("adam", 1e-3),
                   ("sparse", False, True), 0)
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = np.arange(40) % 3
    if train_first:
        run_on_both(models, lambda m: m.fit(x, y, verbose=0), expect_error=False)
    for m in models.values():
        mutate(m)
    return models, x, y


def _set(attribute, value, layer=0):
    return lambda m: setattr(m.leaf_layers[layer], attribute, value)


def _param(key, change, layer=0):
    def mutate(m):
        m.leaf_layers[layer].params[key] = change(m.leaf_layers[layer].params[key])
    return mutate


def _slot(key, change):
    def mutate(m):
        m.optimizer.slots[0][key] = change(m.optimizer.slots[0][key])
    return mutate


AGREE = [
    ("float64 kernel", _param("kernel", lambda w: w.astype(np.float64)), False),
    ("Fortran-ordered kernel", _param("kernel", np.asfortranarray), False),
    ("integer kernel", _param("kernel", lambda w: np.ones(w.shape, np.int64)), False),
    ("float64 Adam slot", _slot("v", lambda v: v.astype(np.float64)), False),
    ("Dropout rate 1", _set("rate", 1.0, 1), False),
    ("Dropout rate −0.5", _set("rate", -0.5, 1), False),
    ("Dropout seed −1", _set("seed", -1, 1), False),
    ("activation 'foo'", _set("activation", "foo"), False),
]


@pytest.mark.parametrize(
    "what, mutate", [pytest.param(w, m, marks=pytest.mark.xfail(
        strict=True, reason="the backends disagree, or raise an undocumented error "
        "(numba TypingError / NotImplementedError, ZeroDivisionError, OverflowError, "
        "KeyError), or numba computes garbage")) if bug else (w, m) for w, m, bug in AGREE])
def test_a_model_changed_by_hand_behaves_alike_on_both_backends(what, mutate):
    """Both backends refuse it with a documented error, or both run it to the same numbers."""
    models, x, y = _changed(mutate, train_first="slot" in what or "Dropout" in what)
    run_on_both(models, lambda m: m.predict(x))
    run_on_both(models, lambda m: m.evaluate(x, y, verbose=0))
    run_on_both(models, lambda m: m.fit(x, y, verbose=0))


def test_a_step_with_a_nan_loss_leaves_dropout_counters_alike_on_both_backends():
    models = twins((6,), True, (("dropout", 0.1, 0), ("dense", 1, "relu", False)),
                   ("adam", 1e-3), ("categorical", False, False), 0)
    for m in models.values():
        m.set_weights([-np.ones((6, 1))])  # relu output 0: the categorical loss is NaN
    x, y = np.ones((1, 6), np.float32), np.ones((1, 1))
    run_on_both(models, lambda m: m.fit(x, y, verbose=0), expect_error=False)
    run_on_both(models, lambda m: m.train_on_batch(x, y), expect_error=False)
    for m in models.values():
        assert m.leaf_layers[0].state["step"][0] == 0, tinynn.backend.get_backend()
