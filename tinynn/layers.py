"""Layers: ``Dense``, ``Flatten`` and ``Activation``, with Keras's names and defaults.

Every layer pairs ``forward(x)`` with ``backward(dy)``. ``forward`` keeps what
``backward`` will need; ``backward`` turns the gradient of the loss with respect
to the layer's output into the gradient with respect to its input, and leaves
the gradients of its parameters in ``grads``, beside ``params`` under the same
keys. The math itself lives in the kernels (``tinynn.kernels``).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from tinynn import activations, initializers, validation
from tinynn.backend import kernels

_name_counters: defaultdict[str, itertools.count] = defaultdict(itertools.count)


def _unique_name(base: str) -> str:
    """``dense``, ``dense_1``, ``dense_2``… as Keras names layers."""
    n = next(_name_counters[base])
    return base if n == 0 else f"{base}_{n}"


class Layer:
    """The base class: a name, parameters and gradients, and lazy building.

    Args:
        input_shape: shape of one sample (without the batch axis), or None to
            build from the first input seen.
        name: defaults to the class name in snake case, numbered.
    """

    def __init__(self, input_shape: Sequence[int] | None = None, name: str | None = None):
        self.name = name or _unique_name(_snake_case(type(self).__name__))
        if input_shape is not None:
            if not isinstance(input_shape, (tuple, list)):
                raise TypeError(f"input_shape must be a tuple of sizes, got {input_shape!r}")
            input_shape = tuple(validation.positive_int(d, "input_shape") for d in input_shape)
        self.input_shape = input_shape
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        #: The input of a sigmoid or softmax output, kept for the loss (see tinynn.losses).
        self.logits: np.ndarray | None = None
        self.built = False

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create the parameters for inputs of ``input_shape`` (one sample's shape)."""
        self.input_shape = tuple(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one sample's output."""
        return tuple(input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, dy_wrt_logits: bool = False, need_dx: bool = True):
        """Gradient with respect to the input; parameter gradients go to ``grads``.

        Args:
            dy: gradient of the loss with respect to this layer's output, shape
                (n, *output_shape). With ``dy_wrt_logits=True``, with respect to
                ``self.logits`` instead (the loss worked from the logits).
            dy_wrt_logits: skip the activation's derivative.
            need_dx: False for the first layer, whose input gradient nobody uses.
        """
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Build on first use, then run ``forward``."""
        if not self.built:
            self.build(np.shape(x)[1:])
        return self.forward(x)

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the parameters, in Keras's order (kernel, then bias)."""
        return [p.copy() for p in self.params.values()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Replace the parameters; counts and shapes must match ``get_weights()``."""
        if len(weights) != len(self.params):
            raise ValueError(
                f"layer {self.name!r} expects {len(self.params)} weight arrays, got {len(weights)}"
            )
        new = {}
        for (key, old), w in zip(self.params.items(), weights):
            new[key] = check_weight(w, old, f"layer {self.name!r}: weight {key!r}")
        for key, w in new.items():
            self.params[key][...] = w

    def count_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def get_config(self) -> dict:
        return {"name": self.name, "input_shape": self.input_shape}


def check_weight(w: object, old: np.ndarray, name: str) -> np.ndarray:
    """``w`` as a replacement for the parameter ``old``: same shape, real and finite."""
    w = np.asarray(w)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {w.dtype}")
    if w.shape != old.shape:
        raise ValueError(f"{name} must have shape {old.shape}, got {w.shape}")
    w = w.astype(old.dtype)
    if not np.isfinite(w).all():
        raise ValueError(f"{name} must be finite, got {w[~np.isfinite(w)][0]}")
    return w


def _snake_case(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class Dense(Layer):
    """A fully connected layer: ``activation(x · kernel + bias)``.

    Args:
        units: number of outputs u.
        activation: name or ``tinynn.activations`` function; None means linear.
        use_bias: whether to add a bias.
        kernel_initializer: name or callable for the (k, u) kernel.
        bias_initializer: name or callable for the (u,) bias.
        input_shape: ``(k,)``, or None to build from the first input.
        input_dim: ``k``, another way to say ``input_shape=(k,)``.

    >>> import numpy as np
    >>> layer = Dense(3, activation="relu", input_dim=2)
    >>> layer.forward(np.ones((4, 2), dtype=np.float32)).shape
    (4, 3)
    >>> [w.shape for w in layer.get_weights()]
    [(2, 3), (3,)]
    """

    def __init__(
        self,
        units: int,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable = "glorot_uniform",
        bias_initializer: str | Callable = "zeros",
        input_shape: Sequence[int] | None = None,
        input_dim: int | None = None,
        name: str | None = None,
    ):
        if input_dim is not None:
            input_shape = (input_dim,)
        super().__init__(input_shape, name)
        self.units = validation.positive_int(units, "units")
        self.activation = activations.get(activation)
        self.use_bias = validation.boolean(use_bias, "use_bias")
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def build(self, input_shape: tuple[int, ...]) -> None:
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense expects inputs of shape (batch, features), got one sample of shape "
                f"{tuple(input_shape)}; add a Flatten layer first"
            )
        self.params["kernel"] = self.kernel_initializer((input_shape[0], self.units))
        if self.use_bias:
            self.params["bias"] = self.bias_initializer((self.units,))
        self.grads = {k: np.zeros_like(p) for k, p in self.params.items()}
        super().build(input_shape)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.units,)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """a = f(x · W + b); keeps x and a for backward, z when the loss may want it."""
        z, a = kernels().dense_forward(
            x, self.params["kernel"], self.params.get("bias"), self.activation
        )
        self._x, self._a = x, a
        self.logits = z if self.activation in activations.KEEPS_LOGITS else None
        return a

    def backward(self, dy: np.ndarray, dy_wrt_logits: bool = False, need_dx: bool = True):
        """dz = f'(z) ⊙ dy,  dW = xᵀ · dz,  db = Σ dz,  dx = dz · Wᵀ"""
        dx, dW, db = kernels().dense_backward(
            self._x,
            self.params["kernel"],
            self._a,
            dy,
            "linear" if dy_wrt_logits else self.activation,
            need_dx,
        )
        self.grads["kernel"] = dW
        if self.use_bias:
            self.grads["bias"] = db
        return dx

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
        }


class Flatten(Layer):
    """Reshape each sample to one axis: (n, 28, 28) → (n, 784).

    >>> import numpy as np
    >>> Flatten()(np.zeros((2, 28, 28))).shape
    (2, 784)
    """

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(input_shape)),)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dy: np.ndarray, dy_wrt_logits: bool = False, need_dx: bool = True):
        return dy.reshape(self._shape)


class Activation(Layer):
    """Apply an activation on its own: ``Activation("softmax")``.

    Args:
        activation: name or ``tinynn.activations`` function.

    >>> import numpy as np
    >>> Activation("relu")(np.array([[-1.0, 3.0]]))
    array([[0., 3.]])
    """

    def __init__(
        self,
        activation: str | Callable,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ):
        super().__init__(input_shape, name)
        self.activation = activations.get(activation)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._a = kernels().ACTIVATIONS[self.activation][0](x)
        self.logits = x if self.activation in activations.KEEPS_LOGITS else None
        return self._a

    def backward(self, dy: np.ndarray, dy_wrt_logits: bool = False, need_dx: bool = True):
        if dy_wrt_logits:
            return dy
        return kernels().ACTIVATIONS[self.activation][1](dy, self._a)

    def get_config(self) -> dict:
        return {**super().get_config(), "activation": self.activation}
