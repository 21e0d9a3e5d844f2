"""``Sequential``: a stack of layers that trains with Keras's API and semantics.

One training step, the whole algorithm::

    y_pred = model.forward(x)                 # every layer's forward, in order
    loss   = loss_fn.forward(y, y_pred, ...)  # per-sample losses
    dy     = loss_fn.backward()               # gradient of the batch mean
    model.backward(dy)                        # every layer's backward, in reverse
    optimizer.apply_gradients(...)            # move each parameter against its gradient
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tinynn import engine, losses, optimizers, saving, validation
from tinynn.activations import KEEPS_LOGITS
from tinynn.callbacks import Callback, History, ProgbarLogger
from tinynn.layers import Dense, Layer, _unique_name, check_weight
from tinynn.training import (
    STEPS_PER_CALL,
    Fault,
    NonFiniteWarning,
    NotCompiledError,
    RunningMeans,
    correct_count,
    report_fault,
    wants_batches,
)
from tinynn.utils import generator

__all__ = ["NonFiniteWarning", "NotCompiledError", "Sequential", "load_model"]

METRICS = ("accuracy", "acc", "sparse_categorical_accuracy")


class Sequential:
    """A linear stack of layers.

    Args:
        layers: the layers, first to last (more can be ``add``-ed).
        name: shown by ``summary``.

    >>> import numpy as np
    >>> import tinynn
    >>> tinynn.utils.set_random_seed(0)
    >>> model = tinynn.Sequential([tinynn.layers.Dense(4, activation="relu", input_shape=(3,)),
    ...                            tinynn.layers.Dense(2, activation="sigmoid")])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> x, y = np.random.rand(8, 3), np.array([0, 1] * 4)
    >>> history = model.fit(x, y, epochs=2, verbose=0)
    >>> sorted(history.history), model.predict(x).shape
    (['accuracy', 'loss'], (8, 2))
    """

    def __init__(self, layers: Sequence[Layer] | None = None, name: str | None = None):
        self.name = name or _unique_name("sequential")
        self.layers: list[Layer] = []
        self.optimizer: optimizers.Optimizer | None = None
        self.loss: losses.SparseCategoricalCrossentropy | None = None
        self.metrics: list[str] = []
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------ structure

    def add(self, layer: Layer) -> None:
        """Append a layer; builds the model once the first layer knows its input shape."""
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must be a tinynn.layers.Layer, got {type(layer).__name__}")
        self.layers.append(layer)
        first = self.layers[0]
        if first.input_shape is not None:
            self.build((None, *first.input_shape))

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Create every layer's weights for inputs of ``input_shape`` (batch first: (None, 784))."""
        shape = tuple(input_shape)[1:]
        for layer in self.layers:
            if not layer.built:
                layer.build(shape)
            elif layer.input_shape != shape:
                raise ValueError(
                    f"layer {layer.name!r} was built for inputs of shape {layer.input_shape}, "
                    f"but the layer before it gives {shape}"
                )
            shape = layer.compute_output_shape(shape)

    @property
    def built(self) -> bool:
        return bool(self.layers) and all(layer.built for layer in self.layers)

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        first = self.layers[0].input_shape if self.layers else None
        return None if first is None else (None, *first)

    @property
    def output_shape(self) -> tuple[int | None, ...] | None:
        if not self.built:
            return None
        shape = self.layers[0].input_shape
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
        return (None, *shape)

    # ------------------------------------------------------------ weights

    @property
    def weights(self) -> list[np.ndarray]:
        """The parameter arrays themselves (not copies), in ``get_weights`` order."""
        return [p for layer in self.layers for p in layer.params.values()]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of all parameters, layer by layer, kernel then bias (Keras's order and shapes)."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Replace all parameters, e.g. ``model.set_weights(keras_model.get_weights())``.

        Every count and shape is checked before anything changes.
        """
        if not self.built:
            raise ValueError("set_weights: the model is not built yet; give the first layer an "
                             "input_shape or call the model on data first")
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"set_weights expects a list of arrays, got {type(weights).__name__}")
        if len(weights) != len(self.weights):
            raise ValueError(f"set_weights expects {len(self.weights)} arrays, got {len(weights)}")
        checked = [check_weight(new, old, f"set_weights: array {i}")
                   for i, (old, new) in enumerate(zip(self.weights, weights))]
        for old, new in zip(self.weights, checked):
            old[...] = new

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    # ------------------------------------------------------------ the algorithm

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run every layer in order; each keeps what its backward needs. Shape (n, …) → (n, c)."""
        if not self.built:
            self.build((None, *np.shape(x)[1:]))
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: np.ndarray, dy_wrt_logits: bool = False) -> None:
        """Run every layer's backward in reverse, leaving gradients in each layer's ``grads``.

        Args:
            dy: gradient of the loss with respect to the model's output (or, with
                ``dy_wrt_logits=True``, to the last layer's logits), shape (n, c).
            dy_wrt_logits: passed to the last layer.
        """
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            layer = self.layers[i]
            dy = layer.backward(dy, dy_wrt_logits=dy_wrt_logits and i == last, need_dx=i > 0)

    def compute_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """The batch-mean loss of ``x`` (n, …) against labels ``y`` (n,), by a forward pass."""
        y_pred = self.forward(x)
        return float(self.loss.forward(y, y_pred, self.layers[-1].logits).mean())

    def compute_gradients(self, x: np.ndarray, y: np.ndarray) -> float:
        """Forward, loss and backward on one batch; returns the loss, leaves gradients in layers."""
        loss = self.compute_loss(x, y)
        self.backward(self.loss.backward(), dy_wrt_logits=self.loss.used_output_logits)
        return loss

    def _train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, int]:
        """One step; returns (loss, outputs, how it ended: see ``Fault``)."""
        y_pred = self.forward(x)
        loss = float(self.loss.forward(y, y_pred, self.layers[-1].logits).mean())
        if not np.isfinite(loss):
            return loss, y_pred, Fault.LOSS  # no update from a broken loss
        self.backward(self.loss.backward(), dy_wrt_logits=self.loss.used_output_logits)
        self.optimizer.apply_gradients(
            (layer.grads[k], p) for layer in self.layers for k, p in layer.params.items()
        )
        finite = all(np.isfinite(w).all() for w in self.weights)
        return loss, y_pred, Fault.NONE if finite else Fault.WEIGHTS

    def _run_steps(self, trainer, x, y, order, batch_size: int, first: int, last: int,
                   totals: RunningMeans) -> tuple[int, int]:
        """Steps first … last − 1 of an epoch, counted into ``totals``.

        Returns (the step it stopped at, how: a ``Fault``); at a fault, the steps
        before it are counted and the faulty step is not.
        """
        if trainer is not None:
            loss_sum, correct, seen, stop, fault = trainer.run(x, y, order, batch_size,
                                                               first, last)
            if seen:
                totals.add(loss_sum, correct, seen)
            return stop, Fault(fault)
        for step in range(first, last):
            idx = order[step * batch_size : (step + 1) * batch_size]
            loss, y_pred, fault = self._train_step(x[idx], y[idx])
            if fault:
                return step, fault
            totals.add_batch(loss, y_pred, y[idx])
        return last, Fault.NONE

    def _state(self) -> tuple:
        """Copies of everything a step changes: weights, optimizer state and step count."""
        opt = self.optimizer
        slots = None if opt.slots is None else [
            {k: a.copy() for k, a in s.items()} for s in opt.slots]
        return self.get_weights(), slots, opt.iterations

    def _restore(self, state: tuple) -> None:
        weights, slots, iterations = state
        for w, saved in zip(self.weights, weights):
            w[...] = saved
        opt = self.optimizer
        if slots is None:
            opt.slots = None
        else:
            for live, saved in zip(opt.slots, slots):
                for k in live:
                    live[k][...] = saved[k]
        opt.iterations = iterations

    # ------------------------------------------------------------ Keras's API

    def compile(self, optimizer, loss, metrics: Sequence[str] | None = None) -> None:
        """Choose how to train.

        Args:
            optimizer: ``"adam"``, ``"sgd"`` or an optimizer object.
            loss: ``"sparse_categorical_crossentropy"`` or a loss object.
            metrics: None or ``["accuracy"]``.
        """
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise TypeError(f"metrics must be a list such as ['accuracy'], got {metrics!r}")
        metrics = list(metrics or [])
        for m in metrics:
            validation.choice(m, "each of metrics", METRICS)
        optimizer, loss = optimizers.get(optimizer), losses.get(loss)
        self.optimizer, self.loss, self.metrics = optimizer, loss, metrics

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 32,
        epochs: int = 1,
        verbose: int = 1,
        validation_split: float = 0.0,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        shuffle: bool = True,
        callbacks: Sequence[Callback] | None = None,
    ) -> History:
        """Train for ``epochs`` passes over ``x`` in mini-batches.

        Args:
            x: inputs, shape (n, …); cast to float32.
            y: integer labels, shape (n,).
            batch_size: samples per step; the last batch of an epoch may be smaller.
            epochs: passes over the data.
            verbose: 0 silent, 1 progress bar, 2 one line per epoch.
            validation_split: fraction in [0, 1) of the data, taken from the end
                before shuffling, held out to compute ``val_*`` after each epoch.
            validation_data: ``(x_val, y_val)``; overrides ``validation_split``.
            shuffle: reshuffle the training samples every epoch.
            callbacks: extra ``Callback`` objects.

        Returns:
            A ``History``; ``history.history`` maps ``loss``, ``accuracy``,
            ``val_loss``, ``val_accuracy`` to one value per epoch. ``loss`` is
            the mean of the batch losses over the epoch's samples, ``accuracy``
            the fraction of the epoch's samples classified right, both as the
            weights were when each batch was seen (Keras's running means).
        """
        self._check_compiled("fit")
        batch_size = validation.positive_int(batch_size, "batch_size")
        epochs = validation.positive_int(epochs, "epochs")
        validation.choice(verbose, "verbose", (0, 1, 2))
        validation.fraction(validation_split, "validation_split")
        validation.boolean(shuffle, "shuffle")
        callbacks = list(callbacks or [])
        for hook in callbacks:
            if not isinstance(hook, Callback):
                raise TypeError(f"callbacks must be tinynn.callbacks.Callback objects, "
                                f"got {type(hook).__name__}")
        x, y = self._prepare(x, y, "x", "y")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
            x_val, y_val = self._prepare(
                *validation_data, "validation_data[0]", "validation_data[1]"
            )
        elif validation_split > 0:
            # Keras takes the *last* samples, before any shuffling.
            cut = math.ceil(len(x) * (1 - validation_split))
            if cut == 0 or cut == len(x):
                raise ValueError(
                    f"validation_split={validation_split} leaves no samples for "
                    f"{'training' if cut == 0 else 'validation'} out of {len(x)}"
                )
            x, x_val, y, y_val = x[:cut], x[cut:], y[:cut], y[cut:]
        else:
            x_val = y_val = None

        n = len(x)
        steps = math.ceil(n / batch_size)
        history = History()
        hooks: list[Callback] = [history, *callbacks]
        if verbose:
            hooks.append(ProgbarLogger(verbose, steps, epochs))
        for hook in hooks:
            hook.set_model(self)
            hook.on_train_begin()

        # With the numba backend a stack of Dense layers trains in compiled
        # calls of many steps each; the hooks then see every call's last step
        # (as Keras's steps_per_execution does), or every step when a callback
        # of the user's asks for batches.
        fused_layers = engine.dense_layers(self)
        trainer = engine.FusedTrainer(self, fused_layers) if fused_layers else None
        x_run = trainer.sparse_inputs(x) if trainer else x
        per_call = 1 if any(wants_batches(hook) for hook in hooks) else STEPS_PER_CALL
        history.stopped_early = None
        for epoch in range(epochs):
            for hook in hooks:
                hook.on_epoch_begin(epoch)
            order = generator().permutation(n) if shuffle else np.arange(n)
            totals = RunningMeans(self.metrics)
            for first in range(0, steps, per_call):
                last = min(first + per_call, steps)
                # Kept so that a step that breaks the weights can be undone.
                saved = self._state()
                stop, fault = self._run_steps(trainer, x_run, y, order, batch_size, first, last,
                                              totals)
                if fault:
                    if fault == Fault.WEIGHTS:
                        # Back to the start of this call, then the good steps again
                        # (they compute the same thing twice, bit for bit).
                        self._restore(saved)
                        self._run_steps(trainer, x_run, y, order, batch_size, first, stop,
                                        RunningMeans(self.metrics))
                    history.stopped_early = report_fault(epoch, stop, fault, verbose)
                    break
                for hook in hooks:
                    hook.on_train_batch_end(last - 1, totals.logs())
            logs = totals.logs()
            if history.stopped_early:
                if logs:
                    for hook in hooks:
                        hook.on_epoch_end(epoch, logs)
                break
            if x_val is not None:
                val = self._evaluate(x_val, y_val, batch_size)
                logs.update({f"val_{k}": v for k, v in val.items()})
            for hook in hooks:
                hook.on_epoch_end(epoch, logs)
        for hook in hooks:
            hook.on_train_end()
        return history

    def train_on_batch(self, x: np.ndarray, y: np.ndarray) -> float | list[float]:
        """One optimizer step on one batch; returns its loss (and accuracy, with metrics)."""
        self._check_compiled("train_on_batch")
        x, y = self._prepare(x, y, "x", "y")
        saved = self._state()
        loss, y_pred, fault = self._train_step(x, y)
        if fault == Fault.WEIGHTS:
            self._restore(saved)
        if fault:
            report_fault(None, 0, fault, verbose=0)
        return self._as_result(RunningMeans(self.metrics).add_batch(loss, y_pred, y))

    def evaluate(
        self, x: np.ndarray, y: np.ndarray, batch_size: int = 32, verbose: int = 1
    ) -> float | list[float]:
        """Loss (and accuracy, with metrics) on ``x`` (n, …) and labels ``y`` (n,).

        Returns:
            ``[loss, accuracy]`` when compiled with ``metrics=["accuracy"]``, else the loss.
        """
        self._check_compiled("evaluate")
        batch_size = validation.positive_int(batch_size, "batch_size")
        validation.choice(verbose, "verbose", (0, 1, 2))
        x, y = self._prepare(x, y, "x", "y")
        bar = ProgbarLogger(verbose, math.ceil(len(x) / batch_size), epochs=0) if verbose else None
        if bar:
            bar.on_epoch_begin(0)
        logs = self._evaluate(x, y, batch_size)
        if bar:
            bar.on_epoch_end(0, logs)
        return self._as_result(logs)

    def _evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, float]:
        totals = RunningMeans(self.metrics)
        fused_layers = engine.dense_layers(self)
        if fused_layers:
            # Every row's loss at once: the same mean as batch by batch.
            z, y_pred, _ = engine.forward_all(fused_layers, x)  # x is checked already
            logits = z if fused_layers[-1].activation in KEEPS_LOGITS else None
            losses = self.loss.forward(y, y_pred, logits)
            return totals.add(float(losses.sum()), correct_count(y_pred, y), len(y))
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            y_pred = self.forward(xb)
            loss = self.loss.forward(yb, y_pred, self.layers[-1].logits).mean()
            logs = totals.add_batch(float(loss), y_pred, yb)
        return logs

    def predict(self, x: np.ndarray, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
        """The model's outputs for ``x`` (n, …), shape (n, c), computed ``batch_size`` at a time."""
        batch_size = validation.positive_int(batch_size, "batch_size")
        validation.choice(verbose, "verbose", (0, 1, 2))
        if not self.layers:
            raise ValueError("predict(): the model has no layers")
        fused_layers = engine.dense_layers(self)
        x = self._prepare_x(x, "x", check_finite=not fused_layers)
        bar = ProgbarLogger(verbose, math.ceil(len(x) / batch_size), epochs=0) if verbose else None
        if bar:
            bar.on_epoch_begin(0)
        if fused_layers:
            _, outputs, finite = engine.forward_all(fused_layers, x)
            if not finite:
                validation.inputs(x, "x", None)  # raises, saying where
            out = [outputs]
        else:
            out = [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        if bar:
            bar.on_epoch_end(0, {})
        return np.concatenate(out)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``model(x)``: the outputs for one batch, like ``predict`` without batching."""
        return self.forward(self._prepare_x(x, "x"))

    def save(self, path) -> None:
        """Write architecture, compile settings, weights and optimizer state (``tinynn.saving``)."""
        saving.save_model(self, path)

    def save_weights(self, path) -> None:
        """Write the weights alone (``tinynn.saving``)."""
        saving.save_weights(self, path)

    def load_weights(self, path) -> None:
        """Set the weights from a ``save_weights`` file; nothing changes if it does not fit."""
        saving.load_weights(self, path)

    def summary(self, print_fn=print) -> None:
        """Print each layer's name, type, output shape and parameter count, then the totals."""
        rows = [("Layer (type)", "Output Shape", "Param #")]
        shape = self.layers[0].input_shape if self.layers else None
        for layer in self.layers:
            shape = layer.compute_output_shape(shape) if shape is not None else None
            out = "?" if shape is None else str((None, *shape))
            count = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
            rows.append((f"{layer.name} ({type(layer).__name__})", out, count))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]

        def line(left, mid, right, fill):
            return left + mid.join(fill * w for w in widths) + right

        def row(cells):
            a, b, c = cells
            return f"│ {a:<{widths[0] - 2}} │ {b:<{widths[1] - 2}} │ {c:>{widths[2] - 2}} │"

        total = self.count_params()
        print_fn(f'Model: "{self.name}"')
        print_fn(line("┌", "┬", "┐", "─"))
        print_fn(row(rows[0]))
        print_fn(line("├", "┼", "┤", "─"))
        for r in rows[1:]:
            print_fn(row(r))
        print_fn(line("└", "┴", "┘", "─"))
        size = sum(w.nbytes for w in self.weights)
        print_fn(f" Total params: {total:,} ({_bytes(size)})")
        print_fn(f" Trainable params: {total:,} ({_bytes(size)})")
        print_fn(" Non-trainable params: 0 (0.00 B)")

    # ------------------------------------------------------------ helpers

    def _check_compiled(self, method: str) -> None:
        if self.optimizer is None or self.loss is None:
            raise NotCompiledError(f"call compile(optimizer, loss) before {method}()")
        if not self.layers:
            raise ValueError(f"{method}(): the model has no layers")

    def _prepare_x(self, x, name: str, check_finite: bool = True) -> np.ndarray:
        """Checked float32 inputs; a model built by them is built only once all checks pass."""
        sample = self.layers[0].input_shape if self.layers else None
        x = validation.inputs(x, name, sample, check_finite)
        if sample is None:
            self._output_shape_for(x.shape[1:])  # raises if the layers cannot take x
        return x

    def _prepare(self, x, y, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
        x = self._prepare_x(x, x_name)
        classes = self._output_shape_for(x.shape[1:])[-1]
        y = validation.labels(y, y_name, len(x), classes)
        if not self.built:
            self.build((None, *x.shape[1:]))
        return x, y

    def _output_shape_for(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one output for samples of ``sample_shape``, without building anything."""
        shape = tuple(sample_shape)
        for layer in self.layers:
            if layer.built and layer.input_shape != shape:
                raise ValueError(f"layer {layer.name!r} takes samples of shape "
                                 f"{layer.input_shape}, but would get {shape}")
            if isinstance(layer, Dense) and len(shape) != 1:
                raise ValueError(f"layer {layer.name!r} (Dense) needs flat samples, but would "
                                 f"get shape {shape}; add a Flatten layer first")
            shape = layer.compute_output_shape(shape)
        return shape

    def _as_result(self, logs: dict[str, float]) -> float | list[float]:
        return [logs["loss"], *(logs[m] for m in self.metrics)] if self.metrics else logs["loss"]


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024
    return ""


def load_model(path) -> Sequential:
    """A model from a ``save`` file: compiled, with its weights and optimizer state."""
    return saving.load_model(path)
