"""Activation functions, by name or as functions, as in ``keras.activations``.

A layer stores only the activation's *name*; the math is the pair
``name`` / ``name_backward`` in the kernel modules.

>>> import numpy as np
>>> from tinynn import activations
>>> activations.relu(np.array([-1.0, 2.0]))
array([0., 2.])
>>> activations.get(activations.sigmoid), activations.get(None)
('sigmoid', 'linear')
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinynn import reference

NAMES = tuple(reference.ACTIVATIONS)

#: Activations whose input Keras keeps beside the output, so that a
#: cross-entropy loss can work from the logits (see ``tinynn.losses``).
KEEPS_LOGITS = ("sigmoid", "softmax")


def linear(x: np.ndarray) -> np.ndarray:
    """Identity: ``x``."""
    return reference.linear(np.asarray(x))


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)`` element-wise."""
    return reference.relu(np.asarray(x))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` element-wise."""
    return reference.sigmoid(np.asarray(x))


def tanh(x: np.ndarray) -> np.ndarray:
    """``tanh(x)`` element-wise."""
    return reference.tanh(np.asarray(x))


def softmax(x: np.ndarray) -> np.ndarray:
    """``exp(x) / sum(exp(x))`` over the last axis."""
    return reference.softmax(np.asarray(x))


def get(identifier: str | Callable | None) -> str:
    """The canonical name of an activation given as a name, one of these functions, or None.

    Args:
        identifier: ``"relu"``, ``tinynn.activations.relu``, or None (meaning linear).

    Returns:
        One of ``NAMES``.
    """
    if identifier is None:
        return "linear"
    name = identifier if isinstance(identifier, str) else getattr(identifier, "__name__", None)
    if name not in NAMES or (callable(identifier) and globals().get(name) is not identifier):
        raise ValueError(
            f"activation must be one of {list(NAMES)} (a name or a tinynn.activations "
            f"function) or None, got {identifier!r}"
        )
    return name
