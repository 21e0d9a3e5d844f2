"""Backprop agrees with finite differences on random networks, in every loss mode; the
report gradcheck gives, its sampling, and the bad inputs it refuses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinynn
import tinynn.reference
from tinynn.activations import NAMES
from tinynn.gradcheck import (
    DEFAULT_THRESHOLD,
    GradcheckReport,
    GradientCheckError,
    _layers,
    gradcheck,
)

BACKENDS = sorted(tinynn.backend.BACKENDS)

LOSS_MODES = {
    # Keras's rule: a sigmoid/softmax output is trained through its logits.
    "output_logits": {},
    # The literal probability formula on the outputs, whatever they are.
    "probabilities": {"use_output_logits": False},
    # The outputs themselves are logits.
    "from_logits": {"from_logits": True, "use_output_logits": False},
}


def distance_to_kinks(model, x, clipped: bool) -> float:
    """How near a forward pass comes to a point where the loss is not differentiable.

    Finite differences straddle such a point when it is within h: relu at 0, and
    the clip of the probability formula at ε and 1 − ε (near ε the loss also
    curves as 1/p², beyond what any finite step resolves).
    """
    ref = tinynn.reference
    distances = [np.inf]
    for layer in model.layers:
        z, x = ref.dense_forward(x, *layer.params.values(), layer.activation)
        if layer.activation == "relu":
            distances.append(np.abs(z).min())
    if clipped:
        distances += [np.abs(x - 1e-7).min(), np.abs(x - (1 - 1e-7)).min()]
    return float(min(distances))


def random_model(widths, activations, seed):
    rng = np.random.default_rng(seed)
    model = tinynn.Sequential(
        [tinynn.layers.Dense(u, activation=a) for u, a in zip(widths[1:], activations)]
    )
    model.build((None, widths[0]))
    # Random biases too: zero biases with zero inputs would sit on relu's kink.
    model.set_weights([rng.normal(0, 0.7, w.shape) for w in model.weights])
    return model, rng


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=300, deadline=None)
@given(
    widths=st.lists(st.integers(1, 16), min_size=2, max_size=5),
    data=st.data(),
    batch=st.integers(1, 8),
    mode=st.sampled_from(sorted(LOSS_MODES)),
    seed=st.integers(0, 2**32 - 1),
)
def test_backprop_matches_finite_differences(widths, data, batch, mode, seed, backend_name):
    activations = data.draw(st.lists(st.sampled_from(NAMES), min_size=len(widths) - 1,
                                     max_size=len(widths) - 1))
    model, rng = random_model(widths, activations, seed)
    model.compile("adam", tinynn.losses.SparseCategoricalCrossentropy(**LOSS_MODES[mode]))
    x = rng.normal(size=(batch, widths[0]))
    y = rng.integers(0, widths[-1], size=batch)
    probability_formula = mode == "probabilities" or (
        mode == "output_logits" and activations[-1] not in ("sigmoid", "softmax")
    )
    assume(distance_to_kinks(model, x, probability_formula) > 1e-3)
    with tinynn.backend.using(backend_name):
        errors = gradcheck(model, x, y, entries=None)
    assert set(errors) == {f"{layer.name}/{k}" for layer in model.layers for k in layer.params}
    # A real mistake in a derivative shows as errors of 1e-2 to 1. Over 3,000
    # examples the largest error seen was 1.7e-4: float64 rounding in the
    # probability formula's log-sum, in a 4-layer net.
    assert max(errors.values()) < 1e-3, errors
    assert errors.ok and errors.threshold == DEFAULT_THRESHOLD == 1e-3


def plant_tanh_bug(monkeypatch):
    """A classic student bug: tanh's derivative written as 1 - a instead of 1 - a²."""
    reference = tinynn.reference
    original = reference.ACTIVATIONS["tanh"]
    monkeypatch.setitem(reference.ACTIVATIONS, "tanh", (original[0], lambda da, a: da * (1 - a)))


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    model, rng = random_model([4, 3, 2], ["tanh", "softmax"], 0)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = rng.normal(size=(5, 4)), rng.integers(0, 2, size=5)
    plant_tanh_bug(monkeypatch)
    with tinynn.backend.using("numpy"):
        report = gradcheck(model, x, y)
    assert not report.ok
    # The first layer's parameters get the wrong dz; the second layer's are right.
    first = model.layers[0].name
    assert set(report.failed) == {f"{first}/kernel", f"{first}/bias"}
    assert all(report[k] > 1e-2 for k in report.failed)
    assert "WRONG" in repr(report) and "backprop disagrees" in repr(report)
    with pytest.raises(GradientCheckError, match=f"{first}/kernel"):
        report.raise_if_failed()


def test_report_reads_as_a_mapping_with_a_verdict():
    report = GradcheckReport({"a/kernel": 1e-9, "a/bias": 2e-3}, {"a/kernel": (64, 100),
                                                                  "a/bias": (4, 4)})
    assert dict(report) == {"a/kernel": 1e-9, "a/bias": 2e-3}
    assert len(report) == 2 and list(report) == ["a/kernel", "a/bias"]
    assert not report.ok and report.failed == {"a/bias": 2e-3}
    assert GradcheckReport(dict(report), report.checked, threshold=1e-2).ok
    table = repr(report).splitlines()
    assert table[1].split() == ["a/kernel", "64/100", "1.0e-09", "ok"]
    assert table[2].split() == ["a/bias", "4/4", "2.0e-03", "WRONG"]
    # A NaN error is a failure, never a pass.
    assert not GradcheckReport({"a/kernel": float("nan")}, {"a/kernel": (1, 1)}).ok


def test_entries_are_a_reproducible_sample_that_leaves_tinynn_generator_alone():
    model, rng = random_model([30, 20, 3], ["relu", "sigmoid"], 3)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = rng.normal(size=(6, 30)), rng.integers(0, 3, size=6)
    tinynn.utils.set_random_seed(5)
    expected_draw = tinynn.utils.generator().random()
    tinynn.utils.set_random_seed(5)
    first = gradcheck(model, x, y, entries=10)
    assert tinynn.utils.generator().random() == expected_draw
    assert list(first.checked.values()) == [(10, 600), (10, 20), (10, 60), (3, 3)]
    assert dict(gradcheck(model, x, y, entries=10)) == dict(first)
    everything = gradcheck(model, x, y, entries=None)
    assert list(everything.checked.values()) == [(600, 600), (20, 20), (60, 60), (3, 3)]
    # The sample's worst error cannot exceed the worst over every entry.
    assert all(first[k] <= everything[k] for k in first)


def test_unbuilt_model_is_refused_and_stays_unbuilt():
    model = tinynn.Sequential([tinynn.layers.Dense(2, "sigmoid")])
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="built model"):
        gradcheck(model, np.ones((2, 3)), np.array([0, 1]))
    assert not model.built


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.array([[0.0, np.nan, 1.0]]), np.array([0]), r"x must be finite"),
        (np.array([[0.0, np.inf, 1.0]]), np.array([0]), r"x must be finite"),
        (np.ones((2, 3)), np.array([0, 2]), r"y must be class labels in \[0, 2\)"),
        (np.ones((2, 3)), np.array([0, -1]), r"y must be class labels"),
        (np.ones((2, 3)), np.array([0]), r"y must be class labels of shape \(2,\)"),
        (np.ones((2, 4)), np.array([0, 1]), r"x has samples of shape \(4,\)"),
    ],
)
def test_bad_inputs_raise_a_clear_error(x, y, match):
    model, _ = random_model([3, 2], ["sigmoid"], 1)
    model.compile("adam", "sparse_categorical_crossentropy")
    before = model.get_weights()
    with pytest.raises(ValueError, match=match):
        gradcheck(model, x, y)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs", [{"entries": 0}, {"threshold": -1.0}, {"entries": 2.5}])
def test_bad_settings_are_refused(kwargs):
    model, rng = random_model([3, 2], ["sigmoid"], 1)
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises((ValueError, TypeError), match=next(iter(kwargs))):
        gradcheck(model, rng.normal(size=(2, 3)), np.array([0, 1]), **kwargs)


def test_progress_goes_to_stderr_when_asked(capsys):
    model, rng = random_model([3, 2], ["sigmoid"], 1)
    model.compile("adam", "sparse_categorical_crossentropy")
    gradcheck(model, rng.normal(size=(2, 3)), np.array([0, 1]), progress=True)
    err = capsys.readouterr().err
    assert "gradcheck: 8/8 entries checked" in err
    gradcheck(model, rng.normal(size=(2, 3)), np.array([0, 1]), progress=False)
    assert capsys.readouterr().err == ""


class Scale(tinynn.layers.Layer):
    """A user layer that is not a Dense: y = x ⊙ s, one learned scale per feature."""

    def build(self, input_shape):
        self.params["scale"] = np.linspace(0.5, 1.5, input_shape[-1]).astype(np.float32)
        super().build(input_shape)

    def forward(self, x, training=False):
        self._x = x
        return x * self.params["scale"]

    def backward(self, dy, *args, **kwargs):
        self.grads["scale"] = (dy * self._x).sum(axis=0)
        return dy * self.params["scale"]


def test_gradcheck_works_on_any_layer_that_keeps_the_contract():
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([tinynn.layers.Dense(4, "tanh", input_shape=(3,)),
                               Scale(), tinynn.layers.Dense(2, "softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(5, 3))
    with tinynn.backend.using("numpy"):
        report = gradcheck(model, x, np.array([0, 1, 1, 0, 1]))
    assert report.ok and f"{model.layers[1].name}/scale" in report


def test_layers_are_found_inside_nested_models():
    class Leaf:
        def __init__(self, name):
            self.name = name

    class Nest:
        def __init__(self, layers):
            self.layers = layers

    a, b, c = Leaf("a"), Leaf("b"), Leaf("c")
    assert _layers(Nest([a, Nest([b, Nest([c])])])) == [a, b, c]


def test_hidden_model_on_mnist_checks_and_catches_a_planted_bug(mnist_data, monkeypatch):
    (x, y), _ = mnist_data
    x = x[:8].reshape(8, -1) / 255
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([tinynn.layers.Dense(100, "relu", input_shape=(784,)),
                               tinynn.layers.Dense(10, "sigmoid")])
    model.compile("adam", "sparse_categorical_crossentropy")
    report = gradcheck(model, x, y[:8])
    assert report.ok, report
    assert list(report.checked.values()) == [(64, 78400), (64, 100), (64, 1000), (10, 10)]
    # relu's derivative taken as 1 everywhere: the first layer's gradients go wrong.
    reference = tinynn.reference
    monkeypatch.setitem(reference.ACTIVATIONS, "relu",
                        (reference.relu, lambda da, a: da))
    with tinynn.backend.using("numpy"):
        assert not gradcheck(model, x, y[:8]).ok


def test_gradcheck_leaves_the_model_untouched():
    model, rng = random_model([3, 2], ["sigmoid"], 1)
    model.compile("adam", "sparse_categorical_crossentropy")
    before = model.get_weights()
    gradcheck(model, rng.normal(size=(4, 3)), np.array([0, 1, 1, 0]))
    for a, b in zip(before, model.get_weights()):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
