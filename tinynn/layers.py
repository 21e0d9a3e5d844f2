"""Layers, with Keras's names and defaults: the contract, then the built-in layers.

**The contract.** A layer is three methods around two dicts:

* ``build(input_shape)`` creates ``self.params[...]`` for samples of that
  shape, then calls ``super().build(input_shape)``;
* ``forward(x, training=False)`` returns the output and keeps what backward needs;
* ``backward(dy)`` turns dL/d(output) into dL/d(input), and leaves dL/d(param)
  in ``self.grads`` under the keys of ``self.params``.

A subclass that keeps to it trains with ``fit`` on every backend. The math of
the built-in layers lives in the kernels (``tinynn.kernels``).

The *logits rule* (see ``tinynn.losses``): a layer whose output is a sigmoid or
softmax keeps that activation's input in ``self.logits``; a cross-entropy loss
may then start backprop from there, and calls ``backward(dy, wrt_logits=True)``.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from tinynn import activations, initializers, utils, validation
from tinynn.backend import kernels

_name_counters: defaultdict[str, itertools.count] = defaultdict(itertools.count)


def unique_name(base: str) -> str:
    """``dense``, ``dense_1``, ``dense_2``… as Keras names layers."""
    n = next(_name_counters[base])
    return base if n == 0 else f"{base}_{n}"


def _snake_case(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class Layer:
    """The base class: a name, parameters and gradients, and lazy building.

    Args:
        input_shape: shape of one sample (without the batch axis), or None to
            build from the first input seen.
        name: defaults to the class name in snake case, numbered.

    >>> import numpy as np
    >>> class Scale(Layer):  # y = x · w, one trainable weight per feature
    ...     def build(self, input_shape):
    ...         self.params["w"] = np.ones(input_shape, np.float32)
    ...         super().build(input_shape)
    ...     def forward(self, x, training=False):
    ...         self.x = x
    ...         return x * self.params["w"]
    ...     def backward(self, dy):
    ...         self.grads["w"] = (dy * self.x).sum(axis=0)
    ...         return dy * self.params["w"]
    >>> layer = Scale()
    >>> layer(np.array([[1.0, 2.0]]))
    array([[1., 2.]])
    >>> layer.backward(np.array([[1.0, 1.0]])), layer.grads["w"]
    (array([[1., 1.]]), array([1., 2.]))
    """

    def __init__(self, input_shape: Sequence[int] | None = None, name: str | None = None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, got {name!r}")
        self.name = name or unique_name(_snake_case(type(self).__name__))
        if input_shape is not None:
            if not isinstance(input_shape, (tuple, list)):
                raise TypeError(f"input_shape must be a tuple of sizes, got {input_shape!r}")
            input_shape = tuple(validation.positive_int(d, "input_shape") for d in input_shape)
        self.input_shape = input_shape
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        #: Arrays that training changes but gradients do not (Dropout's step counter).
        self.state: dict[str, np.ndarray] = {}
        #: The input of a sigmoid or softmax output, kept for the loss (see tinynn.losses).
        self.logits: np.ndarray | None = None
        self.built = False

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create the parameters for inputs of ``input_shape`` (one sample's shape)."""
        self.input_shape = tuple(input_shape)
        #: What build made: the kernels may rely on it (see ``check``).
        self._built_shapes = {k: np.shape(p) for k, p in self.params.items()}
        self.built = True

    def check(self) -> None:
        """Refuse a layer changed by hand since ``build``: each parameter must still be a
        C-contiguous float array of the shape it was built with (the compiled kernels
        index by those shapes)."""
        if not self.built:
            return
        shapes = getattr(self, "_built_shapes", {})
        for key, p in self.params.items():
            if (not isinstance(p, np.ndarray) or p.dtype.kind != "f"
                    or not p.flags.c_contiguous or p.shape != shapes.get(key, p.shape)):
                raise ValueError(
                    f"layer {self.name!r}: params[{key!r}] must be a C-contiguous float "
                    f"array of shape {shapes.get(key)}, as built; got "
                    f"{type(p).__name__} {getattr(p, 'dtype', '')} {np.shape(p)}")

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one sample's output (the identity unless a layer says otherwise)."""
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The output for a batch x of shape (n, *input_shape); keep what backward needs."""
        raise NotImplementedError(f"{type(self).__name__} must define forward(x, training=False)")

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dL/dx from dL/dy (shape (n, *output_shape)); fill ``grads`` like ``params``."""
        raise NotImplementedError(f"{type(self).__name__} must define backward(dy)")

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Build on first use, then run ``forward``."""
        if not self.built:
            self.build(tuple(np.shape(x)[1:]))
        return call_forward(self, x, training)

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the parameters, in Keras's order (kernel, then bias)."""
        return [p.copy() for p in self.params.values()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Replace the parameters; counts and shapes must match ``get_weights()``."""
        if len(weights) != len(self.params):
            raise ValueError(
                f"layer {self.name!r} expects {len(self.params)} weight arrays, got {len(weights)}"
            )
        new = [check_weight(w, old, f"layer {self.name!r}: weight {key!r}")
               for (key, old), w in zip(self.params.items(), weights)]
        for old, w in zip(self.params.values(), new):
            old[...] = w

    def count_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def get_config(self) -> dict:
        return {"name": self.name, "input_shape": self.input_shape}


@functools.cache
def _takes_training(forward: Callable) -> bool:
    return "training" in inspect.signature(forward).parameters


def call_forward(layer: Layer, x: np.ndarray, training: bool) -> np.ndarray:
    """``layer.forward(x, training=…)``, or ``forward(x)`` for a layer written without the flag."""
    if _takes_training(type(layer).forward):
        return layer.forward(x, training=training)
    return layer.forward(x)


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
        shapes = {"kernel": (input_shape[0], self.units), "bias": (self.units,)}
        inits = {"kernel": self.kernel_initializer, "bias": self.bias_initializer}
        for key in ("kernel", "bias") if self.use_bias else ("kernel",):
            self.params[key] = initializers.checked(inits[key], shapes[key], f"{key}_initializer")
        self.grads = {k: np.zeros_like(p) for k, p in self.params.items()}
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


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale
    the rest by 1 / (1 − rate); at inference, the identity.

    Args:
        rate: fraction of the inputs to drop, in [0, 1).
        seed: key of the random masks (a non-negative integer); None draws one
            from ``tinynn.utils.generator()``, so ``set_random_seed`` repeats them.

    >>> import numpy as np
    >>> layer = Dropout(0.5, seed=0)
    >>> x = np.ones((1, 8), np.float32)
    >>> layer(x).tolist() == x.tolist()  # not training: nothing dropped
    True
    >>> sorted(set(layer(x, training=True).ravel().tolist()))  # dropped, or doubled
    [0.0, 2.0]
    """

    def __init__(self, rate: float, seed: int | None = None,
                 input_shape: Sequence[int] | None = None, name: str | None = None):
        super().__init__(input_shape, name)
        self.rate = rate
        self.seed = int(utils.generator().integers(2**63)) if seed is None else seed
        self.check()
        #: Training steps taken: the counter of the random masks.
        self.state["step"] = np.zeros(1, np.int64)
        self._scale: np.ndarray | None = None

    def check(self) -> None:
        super().check()
        validation.fraction(self.rate, "rate")
        seed = self.seed
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
                or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63) or None, got {seed!r}")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._scale = None
        if not training or self.rate == 0:
            return x
        step = int(self.state["step"][0])
        y, self._scale = kernels().dropout_forward(x, self.rate, self.seed, step)
        self.state["step"][0] = step + 1
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dx = dy · s, with the scales s of the last forward (1 at inference)."""
        return dy if self._scale is None else kernels().dropout_backward(dy, self._scale)

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


#: The built-in layers by class name (model files name them so).
LAYERS = utils.registry(Layer, __name__)
