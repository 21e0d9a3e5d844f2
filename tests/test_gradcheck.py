"""Backprop agrees with finite differences on random networks, in every loss mode."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinynn
import tinynn.kernels.reference
from tinynn.activations import NAMES
from tinynn.gradcheck import GradientCheckError, gradcheck

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
    ref = tinynn.kernels.reference
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
        errors = gradcheck(model, x, y)
    assert set(errors) == {f"{layer.name}/{k}" for layer in model.layers for k in layer.params}
    # A real mistake in a derivative shows as errors of 1e-2 to 1. Over 3,000
    # examples the largest error seen was 1.7e-4: float64 rounding in the
    # probability formula's log-sum, in a 4-layer net.
    assert max(errors.values()) < 1e-3, errors


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    model, rng = random_model([4, 3, 2], ["tanh", "softmax"], 0)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = rng.normal(size=(5, 4)), rng.integers(0, 2, size=5)
    reference = tinynn.kernels.reference
    original = reference.ACTIVATIONS["tanh"]
    # A classic student bug: tanh's derivative written as 1 - a instead of 1 - a².
    monkeypatch.setitem(reference.ACTIVATIONS, "tanh", (original[0], lambda da, a: da * (1 - a)))
    with tinynn.backend.using("numpy"), pytest.raises(GradientCheckError, match="dense"):
        gradcheck(model, x, y, tolerance=1e-4)


def test_gradcheck_leaves_the_model_untouched():
    model, rng = random_model([3, 2], ["sigmoid"], 1)
    model.compile("adam", "sparse_categorical_crossentropy")
    before = model.get_weights()
    gradcheck(model, rng.normal(size=(4, 3)), np.array([0, 1, 1, 0]))
    for a, b in zip(before, model.get_weights()):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
