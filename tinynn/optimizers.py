"""Optimizers: ``Adam`` and ``SGD``, in Keras's exact form.

An optimizer owns its state (Adam's moments, SGD's velocity): one slot array
per parameter, created the first time it sees the parameters. Layers hold only
parameters and gradients.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from tinynn import validation
from tinynn.backend import kernels


class Optimizer:
    """Base class: counts steps and keeps one set of slot arrays per parameter.

    Args:
        learning_rate: step size, > 0.
    """

    #: Names of the per-parameter state arrays, e.g. ("m", "v") for Adam.
    slot_names: tuple[str, ...] = ()

    def __init__(self, learning_rate: float):
        self.learning_rate = validation.positive_float(learning_rate, "learning_rate")
        self.iterations = 0
        self.slots: list[dict[str, np.ndarray]] | None = None

    def build(self, variables: list[np.ndarray]) -> None:
        """Create zeroed state for each parameter array."""
        self.slots = [{s: np.zeros_like(w) for s in self.slot_names} for w in variables]

    def apply_gradients(self, grads_and_vars: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Take one step: update every parameter in place from its gradient.

        Args:
            grads_and_vars: ``(gradient, parameter)`` pairs, same shapes, always
                in the same order.
        """
        pairs = list(grads_and_vars)
        if self.slots is None:
            self.build([w for _, w in pairs])
        if len(pairs) != len(self.slots):
            raise ValueError(
                f"optimizer was built for {len(self.slots)} parameters, got {len(pairs)}"
            )
        self.iterations += 1
        self._update(pairs)

    def _update(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) as Keras writes it.

    t += 1,  lr_t = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ)
    m += (g − m)(1 − β₁),  v += (g² − v)(1 − β₂),  w −= lr_t · m / (√v + ε)

    Args:
        learning_rate: lr, default 0.001.
        beta_1: decay of the first moment m, default 0.9.
        beta_2: decay of the second moment v, default 0.999.
        epsilon: ε, default 1e-7 (Keras's; PyTorch uses 1e-8).

    >>> import numpy as np
    >>> w, g = np.ones(2, np.float32), np.array([1.0, -1.0], np.float32)
    >>> Adam(learning_rate=0.1).apply_gradients([(g, w)])
    >>> w.round(4)  # the first Adam step moves every weight by lr (ε aside)
    array([0.9, 1.1], dtype=float32)
    """

    slot_names = ("m", "v")

    def __init__(
        self,
        learning_rate: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
    ):
        super().__init__(learning_rate)
        self.beta_1 = validation.fraction(beta_1, "beta_1")
        self.beta_2 = validation.fraction(beta_2, "beta_2")
        self.epsilon = validation.positive_float(epsilon, "epsilon")

    def _update(self, pairs):
        # float32 throughout, as Keras computes lr_t.
        f32 = np.float32
        t = f32(self.iterations)
        lr_t = (
            f32(self.learning_rate)
            * np.sqrt(f32(1) - f32(self.beta_2) ** t)
            / (f32(1) - f32(self.beta_1) ** t)
        )
        update = kernels().adam_update
        for (g, w), slot in zip(pairs, self.slots):
            update(w, g, slot["m"], slot["v"], lr_t, self.beta_1, self.beta_2, self.epsilon)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
        }


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, as Keras writes it.

    velocity = momentum · velocity − lr · g,  w += velocity

    Args:
        learning_rate: lr, default 0.01.
        momentum: in [0, 1), default 0 (plain gradient descent).

    >>> import numpy as np
    >>> w = np.ones(2, np.float32)
    >>> SGD(learning_rate=0.5).apply_gradients([(np.array([1, 2], np.float32), w)])
    >>> w
    array([0.5, 0. ], dtype=float32)
    """

    slot_names = ("velocity",)

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0):
        super().__init__(learning_rate)
        self.momentum = validation.fraction(momentum, "momentum")

    def _update(self, pairs):
        update = kernels().sgd_update
        for (g, w), slot in zip(pairs, self.slots):
            update(w, g, slot["velocity"], self.learning_rate, self.momentum)

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum}


OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def get(identifier: str | Optimizer) -> Optimizer:
    """An optimizer object from its Keras name (with default settings), or the object itself."""
    if isinstance(identifier, Optimizer):
        return identifier
    if not isinstance(identifier, str) or identifier.lower() not in OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {sorted(OPTIMIZERS)} or an Optimizer, got {identifier!r}"
        )
    return OPTIMIZERS[identifier.lower()]()
