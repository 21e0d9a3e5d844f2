"""Optimizers, in Keras's exact forms: ``SGD`` (with momentum, Nesterov), ``Adam``,
``AdamW``, ``RMSprop`` and ``Adagrad``.

**The contract.** An optimizer names its per-parameter state in ``slot_names``
and moves one parameter in ``update_step(gradient, variable, slots)``, in
place. ``apply_gradients`` creates the slots (zeros) on first use and calls
``update_step`` for every parameter; ``self.learning_rate`` and
``self.iterations`` (the steps done before this one) are read at every step,
so a callback may change the rate. A subclass that keeps to it trains with
``fit`` on every backend.

The built-in optimizers name an update kernel (``tinynn.reference`` and its twin) and the
scalar arguments it takes at step t (``update_arguments``): the same numbers
drive the step-by-step path and the compiled one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from tinynn import utils, validation
from tinynn.backend import kernels


class Optimizer:
    """Base class: counts steps and keeps one dict of slot arrays per parameter.

    Args:
        learning_rate: step size, > 0.

    >>> import numpy as np
    >>> class SignDescent(Optimizer):  # w -= lr · sign(g), with no state
    ...     def update_step(self, gradient, variable, slots):
    ...         variable -= self.learning_rate * np.sign(gradient)
    >>> w = np.zeros(2, np.float32)
    >>> SignDescent(learning_rate=0.5).apply_gradients([(np.array([3.0, -1.0]), w)])
    >>> w
    array([-0.5,  0.5], dtype=float32)
    """

    #: Names of the per-parameter state arrays, e.g. ("m", "v") for Adam.
    slot_names: tuple[str, ...] = ()
    #: Slots that can never be negative (checked when a model file is read).
    nonnegative_slots: tuple[str, ...] = ()

    def __init__(self, learning_rate: float = 0.001):
        self.learning_rate = validation.positive_float(learning_rate, "learning_rate")
        self.iterations = 0
        self.slots: list[dict[str, np.ndarray]] | None = None
        self._variables: list[np.ndarray] | None = None

    def build(self, variables: list[np.ndarray]) -> None:
        """Create the state of each parameter array (``initial_slot``: zeros unless said)."""
        self.slots = [{s: self.initial_slot(s, w) for s in self.slot_names} for w in variables]
        self._variables = list(variables)

    def initial_slot(self, name: str, variable: np.ndarray) -> np.ndarray:
        """The slot ``name`` of a parameter before the first step: zeros like it."""
        return np.zeros_like(variable)

    def check_variables(self, variables: list[np.ndarray]) -> None:
        """Refuse parameters other than the ones this optimizer was built for, as Keras does.

        An optimizer's state belongs to the arrays it was built for (or, after
        loading a model file, to arrays of the same shapes, which it then adopts).
        """
        if self.slots is None:
            return
        for i, (slot, w) in enumerate(zip(self.slots, variables)):
            for name in self.slot_names:
                a = slot.get(name)
                if not isinstance(a, np.ndarray) or a.shape != np.shape(w) \
                        or a.dtype != getattr(w, "dtype", None) or not a.flags.c_contiguous:
                    raise ValueError(f"optimizer slot {name!r} of parameter {i} must be a "
                                     f"C-contiguous array like the parameter "
                                     f"({getattr(w, 'dtype', '?')} {np.shape(w)})")
        if self._variables is not None:
            same = len(variables) == len(self._variables) and all(
                a is b for a, b in zip(variables, self._variables))
        else:
            same = len(variables) == len(self.slots) and all(
                s[k].shape == w.shape for s, w in zip(self.slots, variables) for k in s)
        if not same:
            raise ValueError(
                f"this optimizer holds state for {len(self.slots)} other parameter arrays: an "
                f"optimizer belongs to one model (give each model its own, or compile again)"
            )
        self._variables = list(variables)

    def apply_gradients(self, grads_and_vars: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Take one step: update every parameter in place from its gradient.

        Args:
            grads_and_vars: ``(gradient, parameter)`` pairs, same shapes, always
                in the same order.
        """
        self._step(grads_and_vars)

    def checked_step(self, grads_and_vars: Iterable[tuple[np.ndarray, np.ndarray]]) -> bool:
        """``apply_gradients``, then whether every parameter and state value is finite (a
        step that broke them is undone: ``training.Fault.WEIGHTS``). An ``update_step`` may
        say so itself, as the compiled twins do while they write; the rest are checked
        with ``all_finite``."""
        unchecked = self._step(grads_and_vars)
        return unchecked is not None and kernels().all_finite(*unchecked)

    def _step(self, grads_and_vars) -> list[np.ndarray] | None:
        """One step; returns the arrays no ``update_step`` vouched for, or None if one
        reported a value that is not finite."""
        pairs = list(grads_and_vars)
        self._ready([w for _, w in pairs])
        finite, unchecked = True, []
        for (g, w), slots in zip(pairs, self.slots):
            said = self.update_step(g, w, slots)
            if isinstance(said, (bool, np.bool_)):
                finite = finite and bool(said)
            else:
                unchecked += [w, *slots.values()]
        self.iterations += 1
        return unchecked if finite else None

    def _ready(self, variables: list[np.ndarray]) -> None:
        """Check the parameters (fully, when the arrays are new) and make the slots on the
        first step."""
        known = self._variables
        if known is None or len(known) != len(variables) or any(
                a is not b for a, b in zip(known, variables)):
            self.check_variables(variables)
        if self.slots is None:
            self.build(variables)

    def update_step(self, gradient: np.ndarray, variable: np.ndarray,
                    slots: dict[str, np.ndarray]) -> bool | None:
        """Move ``variable`` (any shape) against ``gradient`` (same shape), in place; may
        return whether every value it wrote is finite (None: ``checked_step`` checks)."""
        raise NotImplementedError(f"{type(self).__name__} must define update_step")

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate}


class KernelOptimizer(Optimizer):
    """A built-in optimizer: ``kernels.<kernel>(variable, gradient, *slots, *arguments)``."""

    #: The name of the update function in the kernel modules (``tinynn.reference``).
    kernel = ""

    def update_arguments(self, step):
        """The kernel's scalar arguments for step ``step`` (1 for the first); given an array
        of steps, arrays (or scalars that hold for every step)."""
        raise NotImplementedError

    def update_step(self, gradient, variable, slots) -> bool | None:
        update = getattr(kernels(), self.kernel)
        key = (self.iterations + 1, self.learning_rate)
        if getattr(self, "_arguments", (None,))[0] != key:  # once per step, not per variable
            self._arguments = key, self.update_arguments(key[0])
        return update(variable, gradient, *(slots[s] for s in self.slot_names),
                      *self._arguments[1])


class SGD(KernelOptimizer):
    """Stochastic gradient descent with optional momentum, as Keras writes it.

    velocity = momentum · velocity − lr · g,  w += velocity
    (Nesterov: w += momentum · velocity − lr · g)

    Args:
        learning_rate: lr, default 0.01.
        momentum: in [0, 1), default 0 (plain gradient descent).
        nesterov: use Nesterov momentum.

    >>> import numpy as np
    >>> w = np.ones(2, np.float32)
    >>> SGD(learning_rate=0.5).apply_gradients([(np.array([1, 2], np.float32), w)])
    >>> w
    array([0.5, 0. ], dtype=float32)
    """

    slot_names = ("velocity",)
    kernel = "sgd_update"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False):
        super().__init__(learning_rate)
        self.momentum = validation.fraction(momentum, "momentum")
        self.nesterov = validation.boolean(nesterov, "nesterov")

    def update_arguments(self, step: int) -> tuple[float, ...]:
        return (self.learning_rate, self.momentum, float(self.nesterov))

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(KernelOptimizer):
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
    nonnegative_slots = ("v",)  # a running mean of g²: a file with v < 0 is damaged
    kernel = "adam_update"

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.beta_1 = validation.fraction(beta_1, "beta_1")
        self.beta_2 = validation.fraction(beta_2, "beta_2")
        self.epsilon = validation.positive_float(epsilon, "epsilon")

    def lr_t(self, step):
        """lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ), in float32 as Keras computes it (t: a step or an array)."""
        f, t = np.float32, np.asarray(step, np.float32)
        return (f(self.learning_rate) * np.sqrt(f(1) - f(self.beta_2) ** t)
                / (f(1) - f(self.beta_1) ** t))

    def update_arguments(self, step):
        return (self.lr_t(step), self.beta_1, self.beta_2, self.epsilon)

    def get_config(self) -> dict:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as Keras writes it.

    w −= w · weight_decay · lr, then the Adam step.

    Args:
        learning_rate, beta_1, beta_2, epsilon: as ``Adam``.
        weight_decay: default 0.004 (Keras's).

    >>> import numpy as np
    >>> w = np.ones(1, np.float32)
    >>> AdamW(learning_rate=0.1, weight_decay=0.5).apply_gradients([(np.zeros(1), w)])
    >>> w  # decayed by 0.5 · 0.1; a zero gradient moves it no further
    array([0.95], dtype=float32)
    """

    kernel = "adamw_update"

    def __init__(self, learning_rate: float = 0.001, weight_decay: float = 0.004,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7):
        super().__init__(learning_rate, beta_1, beta_2, epsilon)
        self.weight_decay = validation.fraction(weight_decay, "weight_decay")

    def update_arguments(self, step: int) -> tuple[float, ...]:
        return (*super().update_arguments(step), self.weight_decay * self.learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "weight_decay": self.weight_decay}


class RMSprop(KernelOptimizer):
    """RMSprop (Hinton's lecture 6e), as Keras writes it.

    velocity = ρ · velocity + (1 − ρ) · g²,  w −= lr · g / √(velocity + ε)

    Args:
        learning_rate: lr, default 0.001.
        rho: decay of the running mean of g², default 0.9.
        momentum: momentum of the step, default 0.
        epsilon: ε, default 1e-7.
        centered: divide by an estimate of the gradient's variance instead.

    >>> import numpy as np
    >>> w = np.zeros(1, np.float32)
    >>> RMSprop(learning_rate=0.01).apply_gradients([(np.ones(1, np.float32), w)])
    >>> w.round(4)  # lr / √(1 − ρ): the first step is large
    array([-0.0316], dtype=float32)
    """

    slot_names = ("velocity", "momentum", "average_gradient")
    nonnegative_slots = ("velocity",)
    kernel = "rmsprop_update"

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False):
        super().__init__(learning_rate)
        self.rho = validation.fraction(rho, "rho")
        self.momentum = validation.fraction(momentum, "momentum")
        self.epsilon = validation.positive_float(epsilon, "epsilon")
        self.centered = validation.boolean(centered, "centered")

    def update_arguments(self, step: int) -> tuple[float, ...]:
        return (self.learning_rate, self.rho, self.momentum, self.epsilon, float(self.centered))

    def get_config(self) -> dict:
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


class Adagrad(KernelOptimizer):
    """Adagrad (Duchi, Hazan & Singer, 2011) as Keras writes it: each weight's step shrinks
    with the sum of its past squared gradients.

    accumulator += g²,  w −= lr · g / √(accumulator + ε)

    Args:
        learning_rate: lr, default 0.001.
        initial_accumulator_value: the accumulator's start, ≥ 0, default 0.1.
        epsilon: ε, default 1e-7.

    >>> import numpy as np
    >>> w = np.zeros(1, np.float32)
    >>> Adagrad(learning_rate=0.1).apply_gradients([(np.ones(1, np.float32), w)])
    >>> w.round(4)  # lr · 1 / √(0.1 + 1)
    array([-0.0953], dtype=float32)
    """

    slot_names = ("accumulator",)
    nonnegative_slots = ("accumulator",)
    kernel = "adagrad_update"

    def __init__(self, learning_rate: float = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.initial_accumulator_value = validation.nonnegative_float(
            initial_accumulator_value, "initial_accumulator_value")
        self.epsilon = validation.positive_float(epsilon, "epsilon")

    def initial_slot(self, name: str, variable: np.ndarray) -> np.ndarray:
        return np.full_like(variable, self.initial_accumulator_value)

    def update_arguments(self, step: int) -> tuple[float, ...]:
        return (self.learning_rate, self.epsilon)

    def get_config(self) -> dict:
        return {**super().get_config(),
                "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


#: The built-in optimizers by class name, and by Keras's string names.
OPTIMIZERS = utils.registry(KernelOptimizer, __name__)
NAMES = {name.lower(): cls for name, cls in OPTIMIZERS.items()}


def get(identifier: str | Optimizer) -> Optimizer:
    """An optimizer object from its Keras name (with default settings), or the object itself."""
    if isinstance(identifier, Optimizer):
        return identifier
    if not isinstance(identifier, str) or identifier.lower() not in NAMES:
        raise ValueError(
            f"optimizer must be one of {sorted(NAMES)} or an Optimizer, got {identifier!r}"
        )
    return NAMES[identifier.lower()]()
