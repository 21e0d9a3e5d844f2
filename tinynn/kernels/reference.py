"""The textbook path: every piece of math tinynn trains with, in plain NumPy.

Read this file top to bottom and you have read the whole of training a dense
network: activations and their derivatives, the dense layer forward and
backward, the loss and its gradient, and the optimizer updates.

Notation: a batch holds ``n`` samples; a layer maps ``k`` inputs to ``u`` units;
a classifier has ``c`` classes. ``z`` is a pre-activation, ``a = f(z)`` an
activation; ``dX`` is the gradient of the loss with respect to ``X``.

``tinynn.kernels.compiled`` holds Numba twins of these functions under the same
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


# ---------------------------------------------------------------- optimizers
# Updates work in place on one parameter array and the optimizer's state
# arrays for it.


def adam_update(
    w: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr_t: float,
    beta_1: float,
    beta_2: float,
    epsilon: float,
) -> None:
    """One Adam step, in Keras's form (the bias correction folded into lr_t).

    m += (g − m)(1 − β₁),  v += (g² − v)(1 − β₂),  w −= lr_t · m / (√v + ε)

    Args:
        w: parameter, any shape; updated in place.
        g: its gradient, same shape.
        m: first-moment estimate, same shape; updated in place.
        v: second-moment estimate, same shape; updated in place.
        lr_t: lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ) for step t.
        beta_1: decay of m.
        beta_2: decay of v.
        epsilon: keeps the division finite.
    """
    m += (g - m) * (1 - beta_1)
    v += (g * g - v) * (1 - beta_2)
    w -= lr_t * m / (np.sqrt(v) + epsilon)


def sgd_update(
    w: np.ndarray, g: np.ndarray, velocity: np.ndarray, lr: float, momentum: float
) -> None:
    """One SGD step with (optional) momentum, as Keras does it.

    velocity = momentum · velocity − lr · g,  w += velocity

    Args:
        w: parameter, any shape; updated in place.
        g: its gradient, same shape.
        velocity: running update, same shape; updated in place.
        lr: learning rate.
        momentum: 0 gives plain gradient descent.
    """
    velocity *= momentum
    velocity -= lr * g
    w += velocity
