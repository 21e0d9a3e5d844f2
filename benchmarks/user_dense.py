"""A Dense layer, and a Scale layer, as a user would write them from tinynn's public layer
contract alone.

The benchmark's ``hidden-user`` model puts this in place of the hidden model's
first Dense layer, to measure what a user's own part costs: with a part that is
not built-in, ``fit`` runs the model step by step (the built-in parts still on
their compiled kernels), and this layer's math is plain NumPy (BLAS products).
The contract (README, "Add your own layer or optimizer"): ``build``,
``forward(x, training=False)``, ``backward(dy)``, with ``params``/``grads``.
A layer that changes the shape also says so in ``compute_output_shape``.
"""

from __future__ import annotations

import numpy as np

import tinynn


class UserDense(tinynn.layers.Layer):
    """y = f(x · W + b) with f relu or linear, Glorot-uniform W, zero b.

    Args:
        units: output width.
        activation: "relu" or "linear".
    """

    def __init__(self, units: int, activation: str = "linear"):
        super().__init__()
        if activation not in ("relu", "linear"):
            raise ValueError(f"activation must be 'relu' or 'linear', got {activation!r}")
        self.units, self.activation = units, activation

    def build(self, input_shape):
        fan_in = int(np.prod(input_shape))
        limit = np.sqrt(6.0 / (fan_in + self.units))
        rng = tinynn.utils.generator()  # so that set_random_seed repeats it
        self.params["kernel"] = rng.uniform(-limit, limit, (fan_in, self.units)).astype(np.float32)
        self.params["bias"] = np.zeros(self.units, np.float32)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return (self.units,)

    def forward(self, x, training=False):
        self.x = x.reshape(len(x), -1)
        z = self.x @ self.params["kernel"] + self.params["bias"]
        self.y = np.maximum(z, 0) if self.activation == "relu" else z
        return self.y

    def backward(self, dy):
        dz = dy * (self.y > 0) if self.activation == "relu" else dy
        self.grads["kernel"] = self.x.T @ dz
        self.grads["bias"] = dz.sum(axis=0)
        return dz @ self.params["kernel"].T


class Scale(tinynn.layers.Layer):
    """y = x · w, one trainable weight per feature (the benchmark's ``hidden-scale``: a
    user's layer whose own NumPy costs a few µs a step, so that what the epoch costs
    beyond the built-in model is what running around a user's part costs)."""

    def build(self, input_shape):
        self.params["scale"] = np.ones(input_shape, np.float32)
        super().build(input_shape)

    def forward(self, x, training=False):
        self.x = x
        return x * self.params["scale"]

    def backward(self, dy):
        self.grads["scale"] = (dy * self.x).sum(axis=0)
        return dy * self.params["scale"]
