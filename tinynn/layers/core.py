"""The core layers: ``Dense``, ``Flatten``, ``Reshape`` and ``Input``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tinynn import activations, initializers, validation
from tinynn.backend import kernels
from tinynn.layers.base import Layer, unique_name


def make_kernel_and_bias(layer: Layer, kernel_shape: tuple[int, ...]) -> None:
    """``layer.params``: a kernel of ``kernel_shape`` and, if ``layer.use_bias``, a bias of
    its last axis's size, each from the layer's initializer and checked; zero ``grads``."""
    shapes = {"kernel": kernel_shape, "bias": kernel_shape[-1:]}
    inits = {"kernel": layer.kernel_initializer, "bias": layer.bias_initializer}
    for key in ("kernel", "bias") if layer.use_bias else ("kernel",):
        layer.params[key] = initializers.checked(inits[key], shapes[key], f"{key}_initializer")
    layer.grads = {k: np.zeros_like(p) for k, p in layer.params.items()}


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
            dim = (validation.positive_int(input_dim, "input_dim"),)
            if input_shape is not None and tuple(input_shape) != dim:
                raise ValueError(f"input_shape={tuple(input_shape)} and input_dim={input_dim} "
                                 f"disagree; give one of them")
            input_shape = dim
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
        make_kernel_and_bias(self, (input_shape[0], self.units))
        super().build(input_shape)

    def check(self) -> None:
        super().check()
        activations.get(self.activation)
        if self.built and self.params["kernel"].shape != (self.input_shape[0], self.units):
            raise ValueError(f"layer {self.name!r}: units is {self.units}, but the kernel "
                             f"has shape {self.params['kernel'].shape}")

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 1:
            raise ValueError(f"layer {self.name!r} (Dense) needs flat samples, but would get "
                             f"shape {tuple(input_shape)}; add a Flatten layer first")
        return (self.units,)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """a = f(x · W + b); keeps x and a for backward, z when the loss may want it."""
        z, a = kernels().dense_forward(
            x, self.params["kernel"], self.params.get("bias"), self.activation
        )
        self._x, self._a = x, a
        self.logits = z if self.activation in activations.KEEPS_LOGITS else None
        return a

    def backward(self, dy: np.ndarray, wrt_logits: bool = False, need_dx: bool = True):
        """dz = f'(z) ⊙ dy,  dW = xᵀ · dz,  db = Σ dz,  dx = dz · Wᵀ

        Args:
            dy: dL/da, shape (n, u); with ``wrt_logits=True``, dL/dz (the loss
                started from the logits, so f' is skipped).
            need_dx: False for the first layer, whose input gradient nobody uses.
        """
        dx, dW, db = kernels().dense_backward(
            self._x, self.params["kernel"], self._a, dy,
            "linear" if wrt_logits else self.activation, need_dx,
        )  # fmt: skip
        self.grads["kernel"] = dW
        if self.use_bias:
            self.grads["bias"] = db
        return dx

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias}


class Flatten(Layer):
    """Reshape each sample to one axis: (n, 28, 28) → (n, 784).

    >>> import numpy as np
    >>> Flatten()(np.zeros((2, 28, 28))).shape
    (2, 784)
    """

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(input_shape)),)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self._shape)


class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (one entry may be -1: whatever is left),
    in C order, as Keras.

    Args:
        target_shape: one sample's new shape, e.g. ``(28, 28, 1)``.

    >>> import numpy as np
    >>> Reshape((28, 28, 1))(np.zeros((2, 784))).shape
    (2, 28, 28, 1)
    """

    def __init__(self, target_shape: Sequence[int], input_shape: Sequence[int] | None = None,
                 name: str | None = None):
        super().__init__(input_shape, name)
        if not isinstance(target_shape, (tuple, list)):
            raise TypeError(f"target_shape must be a tuple of sizes, got {target_shape!r}")
        if sum(d == -1 for d in target_shape) > 1:
            raise ValueError(f"target_shape may have one -1, got {tuple(target_shape)}")
        self.target_shape = tuple(
            -1 if d == -1 else validation.positive_int(d, "target_shape") for d in target_shape)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        size, known = int(np.prod(input_shape)), int(np.prod([d for d in self.target_shape
                                                             if d != -1]))
        if (-1 in self.target_shape and size % known) or (
                -1 not in self.target_shape and size != known):
            raise ValueError(f"layer {self.name!r}: cannot reshape a sample of shape "
                             f"{tuple(input_shape)} ({size} values) to {self.target_shape}")
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(len(x), *self.compute_output_shape(x.shape[1:]))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self._shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "target_shape": self.target_shape}


class InputLayer:
    """What ``Input(shape)`` gives: the shape of one sample, for the first place of a model.

    Args:
        shape: one sample's shape, e.g. ``(28, 28)``.
    """

    def __init__(self, shape: Sequence[int], name: str | None = None):
        if not isinstance(shape, (tuple, list)):
            raise TypeError(f"shape must be a tuple of sizes, got {shape!r}")
        self.shape = tuple(validation.positive_int(d, "shape") for d in shape)
        self.name = name or unique_name("input_layer")

    def __repr__(self) -> str:
        return f"<InputLayer shape=(None, {', '.join(map(str, self.shape))})>"


def Input(shape: Sequence[int], name: str | None = None) -> InputLayer:  # noqa: N802 (Keras's name)
    """``keras.Input(shape=(28, 28))``: the input of a model, placed first in ``Sequential``.

    >>> Input(shape=(28, 28)).shape
    (28, 28)
    """
    return InputLayer(shape, name)
