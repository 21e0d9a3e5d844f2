"""The layer contract: ``Layer``, and the helpers every layer and model shares."""

from __future__ import annotations

import functools
import inspect
import itertools
import re
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from tinynn import validation

_name_counters: defaultdict[str, itertools.count] = defaultdict(itertools.count)


def unique_name(base: str) -> str:
    """``dense``, ``dense_1``, ``dense_2``… as Keras names layers."""
    n = next(_name_counters[base])
    return base if n == 0 else f"{base}_{n}"


def _snake_case(name: str) -> str:
    """Keras's default layer names: ``Dense`` → dense, ``Conv2D`` → conv2d,
    ``MaxPooling2D`` → max_pooling2d, ``ReLU`` → re_lu."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


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
        """Build on first use, then run ``forward`` (integer or boolean input as float32,
        as ``Sequential`` reads it)."""
        x = np.asarray(x)
        if x.dtype.kind in "biu":
            x = x.astype(np.float32)
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
def takes(method: Callable, argument: str) -> bool:
    """Whether a layer's method (its class's function) has a parameter ``argument``."""
    return argument in inspect.signature(method).parameters


def call_forward(layer: Layer, x: np.ndarray, training: bool) -> np.ndarray:
    """``layer.forward(x, training=…)``, or ``forward(x)`` for a layer written without the flag."""
    if takes(type(layer).forward, "training"):
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
