"""A benchmark model in PyTorch (CPU), written to Keras's semantics so accuracies compare.

As Keras: Glorot-uniform kernels and zero biases; the loss is the cross-entropy
on the output layer's logits (Keras's logits rule for a sigmoid or softmax
output, or the logits themselves with from_logits=True); Keras's form of Adam
(lr_t = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ), ε = 1e-7 outside the square root) and of
RMSprop (ε inside it), written out because torch.optim's differ; a new sample
order every epoch, the last partial batch included.
"""

from __future__ import annotations

import time

from specs import Spec


class Torch:
    """fit / evaluate / predict of one ``Spec`` in PyTorch.

    Args:
        spec: the model.
        seed: seeds the initial weights, the dropout masks and the sample order.
        threads: torch's intra-op threads (None: torch's default, one per core).
    """

    def __init__(self, spec: Spec, seed: int, threads: int | None = None):
        import torch

        self.torch, self.spec = torch, spec
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.linears, fan_in = [], 784
        for layer in spec.layers:
            if layer[0] == "dense":
                linear = torch.nn.Linear(fan_in, layer[1])
                torch.nn.init.xavier_uniform_(linear.weight)  # Glorot uniform, as Keras
                torch.nn.init.zeros_(linear.bias)
                self.linears.append(linear)
                fan_in = layer[1]
        self.params = [p for linear in self.linears for p in linear.parameters()]
        self.slots = [[torch.zeros_like(p) for p in self.params] for _ in range(2)]
        self.t = 0

    def logits(self, x, training: bool = False):
        """The output layer's logits (the input of its sigmoid/softmax, or its output)."""
        torch = self.torch
        x = x.reshape(len(x), -1)
        linears = iter(self.linears)
        for i, layer in enumerate(self.spec.layers):
            if layer[0] == "dropout":
                x = torch.nn.functional.dropout(x, layer[1], training=training)
                continue
            x = next(linears)(x)
            if i < len(self.spec.layers) - 1 and layer[2] == "relu":
                x = torch.relu(x)
        return x

    def outputs(self, x):
        z = self.logits(x)
        activation = self.spec.layers[-1][2]
        if activation == "sigmoid":
            return self.torch.sigmoid(z)
        return self.torch.softmax(z, dim=1) if activation == "softmax" else z

    def loss(self, z, y):
        """Mean cross-entropy of logits z against labels (n,) or one-hot rows (n, c)."""
        log_p = self.torch.log_softmax(z, dim=1)
        if y.ndim == 2:
            return -(y * log_p).sum(dim=1).mean()
        return self.torch.nn.functional.nll_loss(log_p, y)

    def step(self, xb, yb):
        torch = self.torch
        loss = self.loss(self.logits(xb, training=True), yb)
        for p in self.params:
            p.grad = None
        loss.backward()
        self.t += 1
        with torch.no_grad():
            if self.spec.optimizer == "adam":
                b1, b2, lr, eps = 0.9, 0.999, 0.001, 1e-7
                lr_t = lr * (1 - b2**self.t) ** 0.5 / (1 - b1**self.t)
                for p, m, v in zip(self.params, *self.slots):
                    g = p.grad
                    m.add_((g - m) * (1 - b1))
                    v.add_((g * g - v) * (1 - b2))
                    p.sub_(lr_t * m / (v.sqrt() + eps))
            else:  # Keras's RMSprop: ε inside the square root
                lr, rho, eps = 0.001, 0.9, 1e-7
                for p, v in zip(self.params, self.slots[0]):
                    g = p.grad
                    v.mul_(rho).add_((1 - rho) * g * g)
                    p.sub_(lr * g / (v + eps).sqrt())
        return loss.detach()

    def fit(self, x, y, epochs: int, batch_size: int) -> list[float]:
        """Train; returns the seconds of each epoch."""
        torch = self.torch
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        times = []
        for _ in range(epochs):
            start = time.perf_counter()
            order = torch.randperm(len(x), generator=self.generator)
            for i in range(0, len(x), batch_size):  # the last batch may be partial
                idx = order[i : i + batch_size]
                self.step(x[idx], y[idx])
            times.append(time.perf_counter() - start)
        return times

    def evaluate(self, x, y) -> list[float]:
        torch = self.torch
        y = torch.from_numpy(y)
        with torch.no_grad():
            z = self.logits(torch.from_numpy(x))
            labels = y if y.ndim == 1 else y.argmax(1)
            accuracy = (z.argmax(1) == labels).float().mean()
            return [float(self.loss(z, y)), float(accuracy)]

    def predict(self, x, batch_size: int):
        torch = self.torch
        with torch.no_grad():
            xt = torch.from_numpy(x)
            return torch.cat(
                [self.outputs(xt[i : i + batch_size]) for i in range(0, len(x), batch_size)]
            ).numpy()
