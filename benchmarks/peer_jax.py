"""A benchmark model in JAX (CPU), as a competent JAX user writes it, to Keras's semantics.

The whole epoch is one jitted call: the sample order is drawn inside it, and
``jax.lax.scan`` runs the steps (unrolled 4 at a time), so Python is not
crossed between steps. The last partial batch is padded and masked: every
epoch has ceil(n / batch) steps of one shape (one compile), and the padded
rows weigh 0 in the loss, whose mean is over the real rows only, so its
gradient is the partial batch's (as in Keras, PyTorch and tinynn).

A model with convolutions jits one step instead, and Python loops over the
steps: XLA's CPU convolutions run far slower inside a loop (jax-ml/jax#12868,
open), the gradient of a kernel 27× slower here. The convnet's step (batch 128,
jax 0.10.2, 2 cores): 585 ms in ``lax.scan`` (708 ms unrolled 4 at a time)
against 162 ms jitted alone.

As Keras: Glorot-uniform kernels and zero biases; the loss is the cross-entropy
on the output layer's logits (Keras's logits rule for a sigmoid or softmax
output, or the logits themselves with from_logits=True); Keras's form of Adam
(lr_t = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ), ε = 1e-7 outside the square root) and of
RMSprop (ε inside it); inverted dropout; a new sample order every epoch.

The convnet in ``jax.lax``: ``conv_general_dilated`` on NHWC images and HWIO
kernels (Keras's layouts, so no transposes), "valid" padding, stride 1; max
pooling by ``reduce_window``; kernels Glorot-uniform with Keras's fans
(kh·kw·in, kh·kw·out).
"""

from __future__ import annotations

import time

import numpy as np
from specs import Spec

UNROLL = 4
#: Rows per jitted call of evaluate: in chunks, as Keras evaluates in batches (the
#: convnet's first layer alone outputs 0.87 GB for all 10,000 test images).
EVALUATE_ROWS = 1000


class Jax:
    """fit / evaluate / predict of one ``Spec`` in JAX.

    Args:
        spec: the model.
        seed: seeds the initial weights, the dropout masks and the sample order.
    """

    def __init__(self, spec: Spec, seed: int):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp, self.spec = jax, jnp, spec
        key, self.key = jax.random.split(jax.random.PRNGKey(seed))
        h, w, c = spec.input_shape if spec.channels else (0, 0, 0)  # an image's size
        params, features = [], 784  # (kernel, bias) of each conv2d and dense; a row's width
        for layer in spec.layers:
            if layer[0] == "conv2d":
                (kh, kw), c_in, c = layer[2], c, layer[1]
                shape, fans = (kh, kw, c_in, c), (kh * kw * c_in, kh * kw * c)
                h, w = h - kh + 1, w - kw + 1
            elif layer[0] == "max_pool2d":
                h, w = h // layer[1][0], w // layer[1][1]  # "valid": the remainder dropped
                continue
            elif layer[0] == "flatten":
                features = h * w * c
                continue
            elif layer[0] == "dense":
                shape, fans = (features, layer[1]), (features, layer[1])
                features = layer[1]
            else:
                continue
            key, sub = jax.random.split(key)
            limit = np.sqrt(6.0 / sum(fans))  # Glorot uniform
            kernel = jax.random.uniform(sub, shape, jnp.float32, -limit, limit)
            params.append((kernel, jnp.zeros(shape[-1], jnp.float32)))
        self.params = params
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        # Adam: (step, m, v); RMSprop: (step, velocity, unused).
        self.state = (jnp.zeros((), jnp.float32), zeros, zeros)
        self._epochs = {}  # compiled epochs, by (n, batch_size)
        # A convolution is slow in XLA's CPU loops: see the module's docstring.
        self.stepwise = any(layer[0] == "conv2d" for layer in spec.layers)
        self._outputs = jax.jit(self.outputs)
        self._evaluate = jax.jit(self._loss_and_accuracy)

    # ------------------------------------------------------------ the model

    def logits(self, params, x, key=None):
        """The output layer's logits; dropout applied when a key is given (training)."""
        jax, jnp, lax = self.jax, self.jnp, self.jax.lax
        if not self.spec.channels:
            x = x.reshape(len(x), -1)
        weights = iter(params)
        last = len(self.spec.layers) - 1
        for i, layer in enumerate(self.spec.layers):
            if layer[0] == "dropout":
                if key is not None:
                    key, sub = jax.random.split(key)
                    keep = jax.random.bernoulli(sub, 1.0 - layer[1], x.shape)
                    x = jnp.where(keep, x / (1.0 - layer[1]), 0.0)
                continue
            if layer[0] == "max_pool2d":
                window = (1, *layer[1], 1)
                x = lax.reduce_window(x, -jnp.inf, lax.max, window, window, "VALID")
                continue
            if layer[0] == "flatten":
                x = x.reshape(len(x), -1)
                continue
            kernel, bias = next(weights)
            if layer[0] == "conv2d":
                x = lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
            else:
                x = x @ kernel + bias
            if i < last and layer[-1] == "relu":  # the activation is the layer's last item
                x = jax.nn.relu(x)
        return x

    def outputs(self, params, x):
        z = self.logits(params, x)
        activation = self.spec.layers[-1][2]
        if activation == "sigmoid":
            return self.jax.nn.sigmoid(z)
        return self.jax.nn.softmax(z) if activation == "softmax" else z

    def per_sample_loss(self, z, y):
        """Cross-entropy of logits z (n, c) against labels (n,) or one-hot rows (n, c)."""
        log_p = self.jax.nn.log_softmax(z)
        if y.ndim == 2:
            return -(y * log_p).sum(axis=1)
        return -self.jnp.take_along_axis(log_p, y[:, None], axis=1)[:, 0]

    def _loss_and_accuracy(self, params, x, y):
        """The sums of the loss and of the correct predictions over the rows x."""
        z = self.logits(params, x)
        labels = y if y.ndim == 1 else y.argmax(axis=1)
        return self.per_sample_loss(z, y).sum(), (z.argmax(axis=1) == labels).sum()

    # ------------------------------------------------------------ training

    def _update(self, params, state, grads):
        """One optimizer step (Keras's Adam or RMSprop, default settings)."""
        jax, jnp = self.jax, self.jnp
        t, s1, s2 = state
        t = t + 1
        if self.spec.optimizer == "adam":
            b1, b2, lr, eps = 0.9, 0.999, 0.001, 1e-7
            lr_t = lr * jnp.sqrt(1 - b2**t) / (1 - b1**t)
            s1 = jax.tree_util.tree_map(lambda m, g: m + (g - m) * (1 - b1), s1, grads)
            s2 = jax.tree_util.tree_map(lambda v, g: v + (g * g - v) * (1 - b2), s2, grads)
            params = jax.tree_util.tree_map(
                lambda w, m, v: w - lr_t * m / (jnp.sqrt(v) + eps), params, s1, s2)
        else:
            lr, rho, eps = 0.001, 0.9, 1e-7
            s1 = jax.tree_util.tree_map(lambda v, g: rho * v + (1 - rho) * g * g, s1, grads)
            params = jax.tree_util.tree_map(
                lambda w, v, g: w - lr * g / jnp.sqrt(v + eps), params, s1, grads)
        return params, (t, s1, s2)

    def _epoch_function(self, n: int, batch_size: int):
        """The epoch for n samples, (params, state, key, x, y) → (params, state, loss):
        one jitted call, or a loop over a jitted step (``stepwise``)."""
        jax, jnp = self.jax, self.jnp
        steps = -(-n // batch_size)

        def batch_loss(params, xb, yb, mask, key):
            per_sample = self.per_sample_loss(self.logits(params, xb, key), yb)
            return (per_sample * mask).sum() / mask.sum()  # the mean over real rows

        def step(params, state, x, y, rows, mask, key):
            """One step on the rows x[rows] (mask: which of them are real)."""
            loss, grads = jax.value_and_grad(batch_loss)(params, x[rows], y[rows], mask, key)
            return (*self._update(params, state, grads), loss)

        def batches(key):
            """The epoch's (steps, batch_size) row indices (the last batch padded), their
            masks, and the key of its dropout masks."""
            order_key, dropout_key = jax.random.split(key)
            order = jax.random.permutation(order_key, n)
            padded = jnp.zeros(steps * batch_size, order.dtype).at[:n].set(order)
            mask = (jnp.arange(steps * batch_size) < n).astype(jnp.float32)
            return (padded.reshape(steps, batch_size), mask.reshape(steps, batch_size),
                    dropout_key)

        if self.stepwise:
            jitted_batches = jax.jit(batches)

            @jax.jit
            def one_step(params, state, x, y, rows, masks, dropout_key, index):
                return step(params, state, x, y, rows[index], masks[index],
                            jax.random.fold_in(dropout_key, index))

            def stepwise(params, state, key, x, y):
                rows, masks, dropout_key = jitted_batches(key)
                losses = []
                for index in range(steps):
                    params, state, loss = one_step(params, state, x, y, rows, masks,
                                                   dropout_key, index)
                    losses.append(loss)
                return params, state, jnp.stack(losses).mean()

            return stepwise

        def epoch(params, state, key, x, y):
            rows, masks, dropout_key = batches(key)

            def scanned(carry, batch):
                rows, mask, index = batch
                params, state, loss = step(*carry, x, y, rows, mask,
                                           jax.random.fold_in(dropout_key, index))
                return (params, state), loss

            (params, state), losses = jax.lax.scan(
                scanned, (params, state), (rows, masks, jnp.arange(steps)), unroll=UNROLL)
            return params, state, losses.mean()

        return jax.jit(epoch)

    def fit(self, x, y, epochs: int, batch_size: int) -> list[float]:
        """Train; returns the seconds of each epoch (the first includes compiling)."""
        jax, jnp = self.jax, self.jnp
        x, y = jnp.asarray(x), jnp.asarray(y)
        shape = (len(x), batch_size)
        if shape not in self._epochs:
            self._epochs[shape] = self._epoch_function(*shape)
        epoch = self._epochs[shape]
        times = []
        for _ in range(epochs):
            start = time.perf_counter()
            self.key, key = jax.random.split(self.key)
            self.params, self.state, loss = epoch(self.params, self.state, key, x, y)
            jax.block_until_ready(self.params)
            times.append(time.perf_counter() - start)
        return times

    def evaluate(self, x, y) -> list[float]:
        loss = correct = 0.0
        for i in range(0, len(x), EVALUATE_ROWS):
            sums = self._evaluate(self.params, self.jnp.asarray(x[i : i + EVALUATE_ROWS]),
                                  self.jnp.asarray(y[i : i + EVALUATE_ROWS]))
            loss, correct = loss + float(sums[0]), correct + float(sums[1])
        return [loss / len(x), correct / len(x)]

    def predict(self, x, batch_size: int):
        out = [self._outputs(self.params, x[i : i + batch_size])
               for i in range(0, len(x), batch_size)]
        return np.concatenate([np.asarray(o) for o in out])
