"""A benchmark model in PyTorch (CPU), written to Keras's semantics so accuracies compare.

As Keras: Glorot-uniform kernels and zero biases; the loss is the cross-entropy
on the output layer's logits (Keras's logits rule for a sigmoid or softmax
output, or the logits themselves with from_logits=True); Keras's form of Adam
(lr_t = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ), ε = 1e-7 outside the square root) and of
RMSprop (ε inside it), written out because torch.optim's differ; a new sample
order every epoch, the last partial batch included.

The convnet as a PyTorch user writes it: nn.Conv2d, F.max_pool2d, flatten,
F.dropout (inverted), nn.Linear; its kernels Glorot-uniform too (torch's fans of a
conv weight, in·kh·kw and out·kh·kw, are Keras's), its biases zero. Its Flatten
reads (c, h, w) where Keras reads (h, w, c): a different order of the same
randomly initialized weights, the same model.
"""

from __future__ import annotations

import time

from specs import Spec

#: The convnet's memory format: NCHW (torch's default) or channels_last (NHWC).
#: Measured on the 2-core Zen 3 VM, torch 2.13, 2 threads, batch 128, 3 epochs, s/epoch
#: as the median of epochs 2–3, two runs of each, alternating: 6,000 samples NCHW 1.281
#: and 1.242, channels_last 1.231 and 1.427; 2,000 samples NCHW 0.495 and 0.393,
#: channels_last 0.406 and 0.411. No faster within the noise, so torch's default is kept.
CHANNELS_LAST = False
#: Rows per forward pass in evaluate: in chunks, as Keras evaluates in batches (the
#: convnet's first layer alone outputs 0.87 GB for all 10,000 test images).
EVALUATE_ROWS = 1000


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
        h, w, c = spec.input_shape if spec.channels else (0, 0, 0)  # an image's size
        features = 784  # a row's width
        self.modules = []  # per layer of the spec: its nn.Conv2d or nn.Linear, else None
        for layer in spec.layers:
            module = None
            if layer[0] == "conv2d":
                (kh, kw), c_in, c = layer[2], c, layer[1]
                module = torch.nn.Conv2d(c_in, c, (kh, kw))  # stride 1, no padding: "valid"
                h, w = h - kh + 1, w - kw + 1
                if CHANNELS_LAST:
                    module.to(memory_format=torch.channels_last)
            elif layer[0] == "max_pool2d":
                h, w = h // layer[1][0], w // layer[1][1]  # "valid": the remainder dropped
            elif layer[0] == "flatten":
                features = c * h * w
            elif layer[0] == "dense":
                module = torch.nn.Linear(features, layer[1])
                features = layer[1]
            if module is not None:
                torch.nn.init.xavier_uniform_(module.weight)  # Glorot uniform, as Keras
                torch.nn.init.zeros_(module.bias)
            self.modules.append(module)
        self.params = [p for m in self.modules if m is not None for p in m.parameters()]
        self.slots = [[torch.zeros_like(p) for p in self.params] for _ in range(2)]
        self.t = 0

    def inputs(self, x):
        """The torch tensor of numpy samples: rows, or NHWC images as NCHW (one channel:
        the same memory, either format)."""
        x = self.torch.from_numpy(x)
        if not self.spec.channels:
            return x
        x = x.permute(0, 3, 1, 2)
        if CHANNELS_LAST:
            return x.contiguous(memory_format=self.torch.channels_last)
        return x.contiguous()

    def logits(self, x, training: bool = False):
        """The output layer's logits (the input of its sigmoid/softmax, or its output)."""
        torch, F = self.torch, self.torch.nn.functional
        if not self.spec.channels:
            x = x.reshape(len(x), -1)
        last = len(self.spec.layers) - 1
        for i, (layer, module) in enumerate(zip(self.spec.layers, self.modules)):
            if layer[0] == "dropout":
                x = F.dropout(x, layer[1], training=training)
            elif layer[0] == "max_pool2d":
                x = F.max_pool2d(x, layer[1])
            elif layer[0] == "flatten":
                x = x.flatten(1)
            else:  # conv2d or dense: the activation is the layer's last item
                x = module(x)
                if i < last and layer[-1] == "relu":
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
        x, y = self.inputs(x), torch.from_numpy(y)
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
        x, y = self.inputs(x), torch.from_numpy(y)
        loss = correct = 0.0
        with torch.no_grad():
            for i in range(0, len(x), EVALUATE_ROWS):
                z, yb = self.logits(x[i : i + EVALUATE_ROWS]), y[i : i + EVALUATE_ROWS]
                labels = yb if yb.ndim == 1 else yb.argmax(1)
                loss += float(self.loss(z, yb)) * len(z)
                correct += float((z.argmax(1) == labels).sum())
        return [loss / len(x), correct / len(x)]

    def predict(self, x, batch_size: int):
        torch = self.torch
        with torch.no_grad():
            xt = self.inputs(x)
            return torch.cat(
                [self.outputs(xt[i : i + batch_size]) for i in range(0, len(x), batch_size)]
            ).numpy()
