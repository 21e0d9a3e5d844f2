"""Loss values and optimizer steps checked against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinynn
from tinynn import reference as ref
from tinynn.losses import SparseCategoricalCrossentropy


def test_softmax_cross_entropy_by_hand():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = np.array([2, 0])
    log_sum = math.log(math.e + math.e**2 + math.e**3)
    expected = [log_sum - 3.0, math.log(3.0)]
    np.testing.assert_allclose(ref.sparse_softmax_cross_entropy(logits, labels), expected)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    losses = ref.sparse_softmax_cross_entropy(np.array([[1000.0, 0.0], [0.0, 1000.0]]),
                                              np.array([0, 0]))
    np.testing.assert_allclose(losses, [0.0, 1000.0])


def test_probability_formula_by_hand():
    # Rows that do not sum to 1 are renormalised; 0 and 1 are clipped by 1e-7.
    probs = np.array([[0.2, 0.6], [0.0, 1.0]])
    expected = [-math.log(0.2) + math.log(0.8), -math.log(1e-7) + math.log(1.0)]
    got = ref.sparse_probability_cross_entropy(probs, np.array([0, 0]))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


LN3 = math.log(3.0)


def _one_step_loss(activation: str, logits=(0.0, LN3), **loss_options) -> float:
    """The loss for label 1 of a model whose output layer has fixed logits."""
    model = tinynn.Sequential([tinynn.layers.Dense(2, activation=activation, input_dim=1)])
    model.set_weights([np.zeros((1, 2)), np.array(logits)])
    model.compile("sgd", SparseCategoricalCrossentropy(**loss_options))
    return model.compute_loss(np.zeros((1, 1), np.float32), np.array([1]))


def test_sigmoid_output_is_trained_through_its_logits_like_keras():
    # softmax([0, ln 3]) = [1/4, 3/4]: loss −ln(3/4), whatever the activation.
    assert _one_step_loss("sigmoid") == pytest.approx(-math.log(0.75), rel=1e-6)
    assert _one_step_loss("softmax") == pytest.approx(-math.log(0.75), rel=1e-6)
    # Keras uses the logits even when told from_logits=True.
    assert _one_step_loss("sigmoid", from_logits=True) == pytest.approx(-math.log(0.75), rel=1e-6)


def test_literal_probability_option_on_sigmoid_outputs():
    # sigmoid([0, ln 3]) = [1/2, 3/4]: loss −ln(3/4) + ln(5/4).
    expected = -math.log(0.75) + math.log(1.25)
    assert _one_step_loss("sigmoid", use_output_logits=False) == pytest.approx(expected, rel=1e-6)


def test_linear_output_uses_probability_formula_or_logits():
    # Outputs [0.5, 0.25] read as probabilities: −ln 0.25 + ln 0.75.
    expected = -math.log(0.25) + math.log(0.75)
    assert _one_step_loss(None, logits=(0.5, 0.25)) == pytest.approx(expected, rel=1e-6)
    # Outputs [-1, 0.25]: −1 is clipped to 1e-7.
    expected = -math.log(0.25) + math.log(0.25 + 1e-7)
    assert _one_step_loss(None, logits=(-1.0, 0.25)) == pytest.approx(expected, abs=1e-7)
    assert _one_step_loss(None, from_logits=True) == pytest.approx(-math.log(0.75), rel=1e-6)


def test_loss_object_called_like_keras():
    loss = SparseCategoricalCrossentropy()
    assert loss([0, 1], [[0.9, 0.1], [0.2, 0.8]]) == pytest.approx(
        -(math.log(0.9) + math.log(0.8)) / 2
    )


def test_adam_two_steps_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-7
    w = np.array([1.0], np.float32)
    opt = tinynn.optimizers.Adam(learning_rate=lr)
    expected, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate([0.5, -2.0], start=1):
        opt.apply_gradients([(np.array([g], np.float32), w)])
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        expected -= lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (math.sqrt(v) + eps)
        assert w[0] == pytest.approx(expected, rel=1e-6)
    assert opt.iterations == 2
    np.testing.assert_allclose(opt.slots[0]["m"], [m], rtol=1e-6)
    np.testing.assert_allclose(opt.slots[0]["v"], [v], rtol=1e-6)


def test_sgd_momentum_by_hand():
    w = np.array([0.0], np.float32)
    opt = tinynn.optimizers.SGD(learning_rate=0.1, momentum=0.5)
    opt.apply_gradients([(np.array([1.0], np.float32), w)])  # v = -0.1
    opt.apply_gradients([(np.array([1.0], np.float32), w)])  # v = -0.05 - 0.1
    assert w[0] == pytest.approx(-0.25)


def test_optimizer_state_lives_in_the_optimizer_not_in_layers():
    model = tinynn.Sequential([tinynn.layers.Dense(3, input_dim=2)])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.train_on_batch(np.ones((2, 2)), np.array([0, 1]))
    layer = model.layers[0]
    assert set(vars(layer)) & {"m", "v", "slots"} == set()
    assert [s["m"].shape for s in model.optimizer.slots] == [(2, 3), (3,)]


@pytest.mark.parametrize("name", tinynn.activations.NAMES)
def test_activation_backward_matches_finite_differences(name):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 5))
    da = rng.normal(size=(4, 5))
    forward, backward = ref.ACTIVATIONS[name]
    h = 1e-6
    numeric = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[i] += h
        zm[i] -= h
        numeric[i] = ((forward(zp) - forward(zm)) * da).sum() / (2 * h)
    np.testing.assert_allclose(backward(da, forward(z)), numeric, rtol=1e-5, atol=1e-8)


def test_sigmoid_does_not_overflow():
    with np.errstate(over="raise"):
        np.testing.assert_allclose(ref.sigmoid(np.array([-1000.0, 0.0, 1000.0])), [0, 0.5, 1])
