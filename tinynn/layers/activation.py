"""Activations as layers: ``Activation``, ``ReLU``, ``Softmax``, ``LeakyReLU``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np

from tinynn import activations, validation
from tinynn.backend import kernels
from tinynn.layers.base import Layer


class Activation(Layer):
    """Apply an activation on its own: ``Activation("softmax")``.

    Args:
        activation: name or ``tinynn.activations`` function.

    >>> import numpy as np
    >>> Activation("relu")(np.array([[-1.0, 3.0]]))
    array([[0., 3.]])
    """

    def __init__(self, activation: str | Callable, input_shape: Sequence[int] | None = None,
                 name: str | None = None):
        super().__init__(input_shape, name)
        self.activation = activations.get(activation)

    def check(self) -> None:
        super().check()
        activations.get(self.activation)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._a = kernels().ACTIVATIONS[self.activation][0](x)
        self.logits = x if self.activation in activations.KEEPS_LOGITS else None
        return self._a

    def backward(self, dy: np.ndarray, wrt_logits: bool = False) -> np.ndarray:
        if wrt_logits:
            return dy
        return kernels().ACTIVATIONS[self.activation][1](dy, self._a)

    def get_config(self) -> dict:
        config = super().get_config()
        if "activation" in inspect.signature(type(self)).parameters:  # not ReLU, Softmax
            config["activation"] = self.activation
        return config


class ReLU(Activation):
    """``max(x, 0)`` as a layer (Keras's ``layers.ReLU()`` with its defaults).

    >>> import numpy as np
    >>> ReLU()(np.array([[-2.0, 2.0]]))
    array([[0., 2.]])
    """

    def __init__(self, input_shape: Sequence[int] | None = None, name: str | None = None):
        super().__init__("relu", input_shape, name)


class Softmax(Activation):
    """Softmax over the last axis as a layer: turns logits into probabilities.

    Args:
        axis: only -1 (the last axis), as for a classifier's outputs.

    >>> import numpy as np
    >>> Softmax()(np.array([[0.0, 0.0]]))
    array([[0.5, 0.5]])
    """

    def __init__(self, axis: int = -1, input_shape: Sequence[int] | None = None,
                 name: str | None = None):
        if axis != -1:
            raise ValueError(f"axis must be -1 (the last axis), got {axis!r}")
        super().__init__("softmax", input_shape, name)


class LeakyReLU(Layer):
    """``x`` where x > 0, else ``negative_slope · x`` (Keras's ``layers.LeakyReLU``).

    Unlike ReLU, a unit below 0 still passes a small gradient, so it cannot die.

    Args:
        negative_slope: the slope below 0, ≥ 0 (default 0.3, Keras's).

    >>> import numpy as np
    >>> LeakyReLU(negative_slope=0.5)(np.array([[-2.0, 2.0]]))
    array([[-1.,  2.]])
    """

    def __init__(self, negative_slope: float = 0.3, input_shape: Sequence[int] | None = None,
                 name: str | None = None):
        super().__init__(input_shape, name)
        self.negative_slope = validation.nonnegative_float(negative_slope, "negative_slope")

    def check(self) -> None:
        super().check()
        validation.nonnegative_float(self.negative_slope, "negative_slope")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._a = kernels().leaky_relu(x, self.negative_slope)
        return self._a

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return kernels().leaky_relu_backward(dy, self._a, self.negative_slope)

    def get_config(self) -> dict:
        return {**super().get_config(), "negative_slope": self.negative_slope}
