"""The textbook's optimizer updates: how each built-in optimizer moves one parameter array
against its gradient, in plain NumPy (the rest of the reference kernels are in
``tinynn.reference``, which re-exports these; their compiled twins are in
``tinynn.compiled.updates``).

Each works in place on one parameter array ``w``, its gradient ``g`` and the optimizer's
state arrays for it (Adam's moments ``m`` and ``v``, RMSprop's average of g², …), all of
one shape; the optimizer objects in ``tinynn/optimizers.py`` keep that state and the step
count, and call these once per parameter array per step.
"""

from __future__ import annotations

import numpy as np


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


def adamw_update(
    w: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr_t: float,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    decay: float,
) -> None:
    """AdamW: decoupled weight decay, then the Adam step (Loshchilov & Hutter, 2019).

    w −= w · decay  (decay = weight_decay · lr),  then ``adam_update``

    Args:
        w, g, m, v, lr_t, beta_1, beta_2, epsilon: as in ``adam_update``.
        decay: weight_decay · learning_rate, as Keras applies it.
    """
    w -= w * w.dtype.type(decay)
    adam_update(w, g, m, v, lr_t, beta_1, beta_2, epsilon)


def sgd_update(
    w: np.ndarray,
    g: np.ndarray,
    velocity: np.ndarray,
    lr: float,
    momentum: float,
    nesterov: float,
) -> None:
    """One SGD step with (optional) momentum, as Keras does it.

    velocity = momentum · velocity − lr · g,  w += velocity
    (Nesterov: w += momentum · velocity − lr · g, with the new velocity)

    Args:
        w: parameter, any shape; updated in place.
        g: its gradient, same shape.
        velocity: running update, same shape; updated in place.
        lr: learning rate.
        momentum: 0 gives plain gradient descent.
        nesterov: 1.0 for Nesterov momentum, 0.0 for the classical form.
    """
    f = w.dtype.type
    velocity *= f(momentum)
    velocity -= f(lr) * g
    if nesterov:
        w += f(momentum) * velocity - f(lr) * g
    else:
        w += velocity


def rmsprop_update(
    w: np.ndarray,
    g: np.ndarray,
    velocity: np.ndarray,
    momentum_slot: np.ndarray,
    average_gradient: np.ndarray,
    lr: float,
    rho: float,
    momentum: float,
    epsilon: float,
    centered: float,
) -> None:
    """One RMSprop step (Hinton's lecture 6e), as Keras writes it.

    velocity = ρ · velocity + (1 − ρ) · g²,  w −= lr · g / √(velocity + ε)
    (centered: subtract the square of the running mean gradient inside the root;
    momentum > 0: the step goes through a momentum buffer)

    Args:
        w: parameter, any shape; updated in place.
        g: its gradient, same shape.
        velocity: running mean of g², same shape; updated in place.
        momentum_slot: momentum buffer (used when momentum > 0); updated in place.
        average_gradient: running mean of g (used when centered); updated in place.
        lr: learning rate.
        rho: decay of the running means.
        momentum: momentum of the step, 0 for none.
        epsilon: keeps the root positive.
        centered: 1.0 for the centered form, 0.0 for the plain one.
    """
    f = w.dtype.type
    velocity[...] = f(rho) * velocity + f(1 - rho) * (g * g)
    denominator = velocity + f(epsilon)
    if centered:
        average_gradient[...] = f(rho) * average_gradient + f(1 - rho) * g
        denominator = velocity - average_gradient * average_gradient + f(epsilon)
    increment = f(lr) * g / np.sqrt(denominator)
    if momentum > 0:
        momentum_slot[...] = f(momentum) * momentum_slot + increment
        w -= momentum_slot
    else:
        w -= increment


def adagrad_update(
    w: np.ndarray,
    g: np.ndarray,
    accumulator: np.ndarray,
    lr: float,
    epsilon: float,
) -> None:
    """One Adagrad step (Duchi, Hazan & Singer, 2011), as Keras writes it.

    accumulator += g²,  w −= lr · g / √(accumulator + ε)

    Args:
        w: parameter, any shape; updated in place.
        g: its gradient, same shape.
        accumulator: running sum of g², same shape, starting at the optimizer's
            ``initial_accumulator_value``; updated in place.
        lr: learning rate.
        epsilon: keeps the root positive.
    """
    f = w.dtype.type
    accumulator += g * g
    w -= f(lr) * g / np.sqrt(accumulator + f(epsilon))
