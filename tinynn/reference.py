"""The textbook path: every piece of math tinynn trains with, in plain NumPy.

Read this file top to bottom and you have read the whole of training a dense
network: activations and their derivatives, the dense layer forward and
backward, the loss and its gradient; then the optimizer updates, in
``tinynn/updates.py``.

Notation: a batch holds ``n`` samples; a layer maps ``k`` inputs to ``u`` units;
a classifier has ``c`` classes. ``z`` is a pre-activation, ``a = f(z)`` an
activation; ``dX`` is the gradient of the loss with respect to ``X``.

``tinynn.compiled.kernels`` holds Numba twins of these functions under the same
names; the layers call whichever module the backend selects.
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------- activations
# Each activation sits right above its backward. A backward takes the
# upstream gradient ``da`` and the activation's own output ``a`` (every
# derivative here can be written in terms of the output, so only ``a`` needs
# to be kept) and returns ``dz``.


def linear(z: np.ndarray) -> np.ndarray:
    """a = z"""
    return z


def linear_backward(da: np.ndarray, a: np.ndarray) -> np.ndarray:
    """dz = da"""
    return da


def relu(z: np.ndarray) -> np.ndarray:
    """a = max(z, 0)"""
    return np.maximum(z, 0)


def relu_backward(da: np.ndarray, a: np.ndarray) -> np.ndarray:
    """dz = da where a > 0, else 0 (the kink at 0 gets slope 0, as in TensorFlow)."""
    return da * (a > 0)


def leaky_relu(z: np.ndarray, negative_slope: float) -> np.ndarray:
    """a = z where z > 0, else negative_slope · z"""
    return np.where(z > 0, z, z * z.dtype.type(negative_slope))


def leaky_relu_backward(da: np.ndarray, a: np.ndarray, negative_slope: float) -> np.ndarray:
    """dz = da where a > 0, else negative_slope · da (a > 0 exactly where z > 0, for a slope
    ≥ 0; the kink at 0 gets the slope, as in TensorFlow)."""
    return np.where(a > 0, da, da * da.dtype.type(negative_slope))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """a = 1 / (1 + e^(-z)), written so that no exponent overflows."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)


def sigmoid_backward(da: np.ndarray, a: np.ndarray) -> np.ndarray:
    """dz = da · a · (1 − a)"""
    return da * a * (1 - a)


def tanh(z: np.ndarray) -> np.ndarray:
    """a = tanh(z)"""
    return np.tanh(z)


def tanh_backward(da: np.ndarray, a: np.ndarray) -> np.ndarray:
    """dz = da · (1 − a²)"""
    return da * (1 - a * a)


def softmax(z: np.ndarray) -> np.ndarray:
    """a_j = e^(z_j) / Σ_k e^(z_k) over the last axis (shifted by max z for safety)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(da: np.ndarray, a: np.ndarray) -> np.ndarray:
    """dz = a · (da − Σ_j da_j · a_j)   (the Jacobian of softmax applied to da)"""
    return a * (da - (da * a).sum(axis=-1, keepdims=True))


#: The activations a layer may name (``Dense(activation=...)``); ``leaky_relu`` has a
#: parameter, so it is a layer of its own (``layers.LeakyReLU``).
ACTIVATIONS = {
    "linear": (linear, linear_backward),
    "relu": (relu, relu_backward),
    "sigmoid": (sigmoid, sigmoid_backward),
    "tanh": (tanh, tanh_backward),
    "softmax": (softmax, softmax_backward),
}


# ---------------------------------------------------------------- dense layer


def dense_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray | None, activation: str
) -> tuple[np.ndarray, np.ndarray]:
    """One dense layer: an affine map followed by an activation.

    z = x · W + b,  a = f(z)

    Args:
        x: inputs, shape (n, k).
        W: kernel, shape (k, u).
        b: bias, shape (u,), or None for a layer without bias.
        activation: a key of ``ACTIVATIONS``.

    Returns:
        ``(z, a)``, both shape (n, u).
    """
    z = x @ W
    if b is not None:
        z = z + b
    return z, ACTIVATIONS[activation][0](z)


def dense_backward(
    x: np.ndarray,
    W: np.ndarray,
    a: np.ndarray,
    da: np.ndarray,
    activation: str,
    need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of one dense layer, from the values its forward pass kept.

    dz = f'(z) ⊙ da,  dW = xᵀ · dz,  db = Σ_n dz,  dx = dz · Wᵀ

    Args:
        x: the layer's inputs, shape (n, k).
        W: kernel, shape (k, u).
        a: the layer's outputs f(z), shape (n, u).
        da: gradient of the loss with respect to ``a``, shape (n, u). Pass the
            gradient with respect to ``z`` and ``activation="linear"`` to skip
            the activation's derivative.
        activation: a key of ``ACTIVATIONS``.
        need_dx: the first layer has no use for ``dx``; skipping it saves a
            matrix product.

    Returns:
        ``(dx, dW, db)`` with shapes (n, k) (or None), (k, u) and (u,).
    """
    dz = ACTIVATIONS[activation][1](da, a)
    dW = x.T @ dz
    db = dz.sum(axis=0)
    dx = dz @ W.T if need_dx else None
    return dx, dW, db


# ---------------------------------------------------------------- losses
# Sparse categorical cross-entropy: labels are class indices, shape (n,).
# Each loss returns the per-sample losses; its backward returns the gradient
# of the *mean* over the batch, which is what training minimises.


def sparse_softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of softmax(logits) against integer labels.

    loss_i = −z_{i,y_i} + log Σ_j e^(z_ij)

    Args:
        logits: shape (n, c).
        labels: integer class indices, shape (n,).

    Returns:
        per-sample losses, shape (n,).
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    return log_sum - shifted[np.arange(len(labels)), labels]


def sparse_softmax_cross_entropy_backward(
    logits: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """Gradient of the batch-mean softmax cross-entropy with respect to the logits.

    dz = (softmax(z) − onehot(y)) / n

    Args:
        logits: shape (n, c).
        labels: integer class indices, shape (n,).

    Returns:
        shape (n, c).
    """
    dz = softmax(logits)
    dz[np.arange(len(labels)), labels] -= 1
    return dz / len(labels)


def sparse_probability_cross_entropy(
    probs: np.ndarray, labels: np.ndarray, epsilon: float = 1e-7
) -> np.ndarray:
    """Cross-entropy of outputs read as probabilities, as Keras computes it.

    p = clip(probs, ε, 1 − ε),  loss_i = −log p_{i,y_i} + log Σ_j p_ij

    (Keras renormalises: it is the softmax cross-entropy of log p.)

    Args:
        probs: model outputs, shape (n, c).
        labels: integer class indices, shape (n,).
        epsilon: clipping bound.

    Returns:
        per-sample losses, shape (n,).
    """
    return sparse_softmax_cross_entropy(np.log(np.clip(probs, epsilon, 1 - epsilon)), labels)


def sparse_probability_cross_entropy_backward(
    probs: np.ndarray, labels: np.ndarray, epsilon: float = 1e-7
) -> np.ndarray:
    """Gradient of the batch-mean probability cross-entropy with respect to the outputs.

    dp = (p / Σ_j p_j − onehot(y)) / (n · p)  where ε < p < 1 − ε, else 0

    Args:
        probs: model outputs, shape (n, c).
        labels: integer class indices, shape (n,).
        epsilon: clipping bound.

    Returns:
        shape (n, c).
    """
    p = np.clip(probs, epsilon, 1 - epsilon)
    dlogp = sparse_softmax_cross_entropy_backward(np.log(p), labels)
    inside = (probs >= epsilon) & (probs <= 1 - epsilon)
    return dlogp / p * inside


# Categorical cross-entropy: targets are rows of class probabilities (one-hot
# labels from ``tinynn.utils.to_categorical``), shape (n, c).


def categorical_softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Cross-entropy of softmax(logits) against target distributions.

    loss_i = Σ_j t_ij · (log Σ_k e^(z_ik) − z_ij)

    Args:
        logits: shape (n, c).
        targets: shape (n, c), each row summing to 1 (one-hot for plain labels).

    Returns:
        per-sample losses, shape (n,).
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return (targets * (log_sum - shifted)).sum(axis=1)


def categorical_softmax_cross_entropy_backward(
    logits: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Gradient of the batch-mean softmax cross-entropy with respect to the logits.

    dz = (softmax(z) · Σ_j t_j − t) / n

    Args:
        logits: shape (n, c).
        targets: shape (n, c).

    Returns:
        shape (n, c).
    """
    return (softmax(logits) * targets.sum(axis=1, keepdims=True) - targets) / len(targets)


def categorical_probability_cross_entropy(
    probs: np.ndarray, targets: np.ndarray, epsilon: float = 1e-7
) -> np.ndarray:
    """Cross-entropy of outputs read as probabilities, as Keras computes it.

    q = probs / Σ_j probs_j,  p = clip(q, ε, 1 − ε),  loss_i = −Σ_j t_ij · log p_ij

    (Keras normalises first, then clips: the other order from the sparse loss.)

    Args:
        probs: model outputs, shape (n, c).
        targets: shape (n, c).
        epsilon: clipping bound.

    Returns:
        per-sample losses, shape (n,).
    """
    q = probs / probs.sum(axis=1, keepdims=True)
    return -(targets * np.log(np.clip(q, epsilon, 1 - epsilon))).sum(axis=1)


def categorical_probability_cross_entropy_backward(
    probs: np.ndarray, targets: np.ndarray, epsilon: float = 1e-7
) -> np.ndarray:
    """Gradient of the batch-mean probability cross-entropy with respect to the outputs.

    g = −t / p where ε < q < 1 − ε (else 0),  dprobs_j = (g_j − Σ_k g_k · q_k) / (n · Σ probs)

    Args:
        probs: model outputs, shape (n, c).
        targets: shape (n, c).
        epsilon: clipping bound.

    Returns:
        shape (n, c).
    """
    total = probs.sum(axis=1, keepdims=True)
    q = probs / total
    inside = (q >= epsilon) & (q <= 1 - epsilon)
    g = np.where(inside, -targets / np.clip(q, epsilon, 1 - epsilon), 0)
    return (g - (g * q).sum(axis=1, keepdims=True)) / (total * len(targets))


# ---------------------------------------------------------------- dropout
# Inverted dropout: in training, each unit is kept with probability 1 − rate
# and scaled by 1 / (1 − rate), so that its expected value is unchanged.
# The random numbers come from a counter-based generator: the number for
# unit i of training step ``step`` is a hash of (seed, step, i). So the same
# seed gives the same masks on every backend, in any order of computation.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: scrambles the bits of uint64 z (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(seed: int, step: int, size: int) -> np.ndarray:
    """``size`` numbers in [0, 1), a pure function of (seed, step): 24 random bits each.

    Args:
        seed: the generator's key, in [0, 2⁶³).
        step: a counter, in [0, 2⁶³).
        size: how many numbers.

    Returns:
        float32 array of shape (size,).
    """
    key = _mix(np.array([seed], np.uint64) ^ _mix(np.array([step], np.uint64)))
    z = _mix(key + (np.arange(size, dtype=np.uint64) + np.uint64(1)) * _GOLDEN)
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def dropout_forward(
    x: np.ndarray, rate: float, seed: int, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Drop each entry of x with probability ``rate``; scale the rest by 1 / (1 − rate).

    y = x · s,  s = 1 / (1 − rate) where u ≥ rate else 0,  u = uniform(seed, step)

    Args:
        x: inputs, shape (n, u).
        rate: fraction dropped, in [0, 1).
        seed, step: the random numbers' key and counter (see ``uniform``).

    Returns:
        ``(y, s)``, both shape (n, u): the output and the scale per entry, kept for backward.
    """
    # Compared in float64, as the compiled twin does.
    keep = uniform(seed, step, x.size).reshape(x.shape).astype(np.float64) >= rate
    s = np.where(keep, x.dtype.type(1 / (1 - rate)), x.dtype.type(0))
    return x * s, s


def dropout_backward(dy: np.ndarray, s: np.ndarray) -> np.ndarray:
    """dx = dy · s"""
    return dy * s


# ---------------------------------------------------------------- checks


def all_finite(*arrays: np.ndarray) -> bool:
    """No NaN and no ±inf in any of the arrays (any shapes): training stops at a step that
    made one."""
    return all(bool(np.isfinite(a).all()) for a in arrays)


# ---------------------------------------------------------------- metrics


def sparse_categorical_accuracy(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the largest output is the label's, else 0.0.

    Args:
        outputs: shape (n, c).
        labels: integer class indices, shape (n,).

    Returns:
        shape (n,).
    """
    return (outputs.argmax(axis=1) == labels).astype(outputs.dtype)


# ---------------------------------------------------------------- optimizers, convolution
# The optimizers' updates are a page of their own, ``tinynn/updates.py``; convolution and
# pooling a chapter, ``tinynn/convolution.py``. Here they are under the same names as
# every other kernel, for the optimizers and layers to find.
from tinynn.convolution import (  # noqa: E402, F401 (re-exported)
    average_pool2d_backward,
    average_pool2d_forward,
    conv2d_backward,
    conv2d_forward,
    global_average_pool2d_backward,
    global_average_pool2d_forward,
    global_max_pool2d_backward,
    global_max_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from tinynn.updates import (  # noqa: E402, F401 (re-exported)
    adagrad_update,
    adam_update,
    adamw_update,
    rmsprop_update,
    sgd_update,
)

