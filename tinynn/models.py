"""``Sequential``: a stack of layers that trains with Keras's API and semantics.

One training step, the whole algorithm (``Sequential.train_step``)::

    y_pred = model.forward(x, training=True)  # every layer's forward, in order
    loss   = loss_fn.forward(y, y_pred, ...)  # per-sample losses
    dy     = loss_fn.backward()               # gradient of the batch mean
    model.backward(dy)                        # every layer's backward, in reverse
    optimizer.apply_gradients(...)            # move each parameter against its gradient

``fit`` repeats it over shuffled mini-batches, epoch after epoch
(``tinynn.training`` runs the steps: one by one, or compiled).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tinynn import data, losses, optimizers, saving, training, validation
from tinynn.callbacks import Callback, CallbackList, History, ProgbarLogger, progress
from tinynn.layers import InputLayer, Layer, call_forward, check_weight, takes, unique_name
from tinynn.training import NonFiniteWarning, NotCompiledError

__all__ = ["NonFiniteWarning", "NotCompiledError", "Sequential", "load_model"]

METRICS = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy")


@saving.register_model
class Sequential:
    """A linear stack of layers (a ``Sequential`` may itself be one of them).

    Args:
        layers: the layers, first to last, optionally after an ``Input``.
        name: shown by ``summary``.

    >>> import numpy as np
    >>> import tinynn
    >>> tinynn.utils.set_random_seed(0)
    >>> model = tinynn.Sequential([tinynn.Input(shape=(3,)),
    ...                            tinynn.layers.Dense(4, activation="relu"),
    ...                            tinynn.layers.Dense(2, activation="sigmoid")])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> x, y = np.random.rand(8, 3), np.array([0, 1] * 4)
    >>> history = model.fit(x, y, epochs=2, verbose=0)
    >>> sorted(history.history), model.predict(x).shape
    (['accuracy', 'loss'], (8, 2))
    """

    def __init__(self, layers: Sequence[Layer] | None = None, name: str | None = None):
        self.name = name or unique_name("sequential")
        self.layers: list[Layer | Sequential] = []
        self.leaf_layers: list[Layer] = []  # nested models opened up: what the steps run
        self._sample_shape: tuple[int, ...] | None = None  # one sample's shape, once known
        self._output: tuple[int, ...] | None = None  # the last layer's, once built
        self.optimizer: optimizers.Optimizer | None = None
        self.loss: losses.Loss | None = None
        self.metrics: list[str] = []
        self.stop_training = False
        self.fit_place: training.Place | None = None  # where the last fit is (or was)
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------ structure

    def add(self, layer: Layer | Sequential | InputLayer) -> None:
        """Append a layer (building it if the model knows its input shape by then)."""
        if isinstance(layer, InputLayer):
            if self.layers or self._sample_shape is not None:
                raise ValueError("an Input can only come first in a Sequential")
            self._sample_shape = layer.shape
            return
        if not isinstance(layer, (Layer, Sequential)):
            raise TypeError(f"layer must be a tinynn.layers.Layer, got {type(layer).__name__}")
        if self.optimizer is not None and self.optimizer.slots is not None:
            raise ValueError("add(): this model's optimizer already holds state for its layers; "
                             "call compile() again (a fresh optimizer) before adding layers")
        leaves = layer.leaf_layers if isinstance(layer, Sequential) else [layer]
        if not self.layers and self._sample_shape is None:
            self._sample_shape = leaves[0].input_shape if leaves else None
        self.layers.append(layer)
        self.leaf_layers.extend(leaves)
        if self._sample_shape is not None:
            self._build_from(len(self.leaf_layers) - len(leaves))

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Create every layer's weights for inputs of ``input_shape`` (batch first: (None, 784))."""
        self._sample_shape = tuple(input_shape)[1:]
        self._build_from(0)

    def _build_from(self, first: int) -> None:
        """Build leaf layers first, first + 1, … in order (the ones before are built)."""
        shape = self._sample_shape if first == 0 else self._output
        for layer in self.leaf_layers[first:]:
            if not layer.built:
                layer.build(shape)
            elif layer.input_shape != shape:
                raise ValueError(f"layer {layer.name!r} was built for inputs of shape "
                                 f"{layer.input_shape}, but the layer before it gives {shape}")
            shape = layer.compute_output_shape(shape)
        self._output = shape

    @property
    def built(self) -> bool:
        return bool(self.leaf_layers) and all(layer.built for layer in self.leaf_layers)

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        return None if self._sample_shape is None else (None, *self._sample_shape)

    @property
    def output_shape(self) -> tuple[int | None, ...] | None:
        return (None, *self._output) if self.built else None

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """One sample's output shape for samples of ``input_shape`` (nothing is built)."""
        shape = tuple(input_shape)
        for layer in self.leaf_layers:
            if layer.built and layer.input_shape != shape:
                raise ValueError(f"layer {layer.name!r} takes samples of shape "
                                 f"{layer.input_shape}, but would get {shape}")
            shape = layer.compute_output_shape(shape)
        return shape

    # ------------------------------------------------------------ weights

    @property
    def weights(self) -> list[np.ndarray]:
        """The parameter arrays themselves (not copies), in ``get_weights`` order."""
        return [p for layer in self.leaf_layers for p in layer.params.values()]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of all parameters, layer by layer, kernel then bias (Keras's order and shapes)."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Replace all parameters, e.g. ``model.set_weights(keras_model.get_weights())``.

        Every count and shape is checked before anything changes.
        """
        if not self.built:
            raise ValueError("set_weights: the model is not built yet; give it an Input or "
                             "an input_shape, or call it on data first")
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"set_weights expects a list of arrays, got {type(weights).__name__}")
        if len(weights) != len(self.weights):
            raise ValueError(f"set_weights expects {len(self.weights)} arrays, got {len(weights)}")
        checked = [check_weight(new, old, f"set_weights: array {i}")
                   for i, (old, new) in enumerate(zip(self.weights, weights))]
        for old, new in zip(self.weights, checked):
            old[...] = new

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.leaf_layers)

    # ------------------------------------------------------------ the algorithm

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Run every layer in order; each keeps what its backward needs. Shape (n, …) → (n, c)."""
        if not self.built:
            self.build((None, *np.shape(x)[1:]))
        for layer in self.leaf_layers:
            x = call_forward(layer, x, training)
        return x

    def backward(self, dy: np.ndarray) -> None:
        """Every layer's backward, last to first, from dL/d(output) (or dL/d(logits), when
        the loss read the last layer's logits); gradients land in each layer's ``grads``."""
        last = len(self.leaf_layers) - 1
        for i in range(last, -1, -1):
            layer = self.leaf_layers[i]
            options = {}
            if i == last and self.loss is not None and self.loss.on_logits:
                options["wrt_logits"] = True
            if i == 0 and takes(type(layer).backward, "need_dx"):
                options["need_dx"] = False  # nobody reads the gradient of the inputs
            dy = layer.backward(dy, **options)

    def compute_loss(self, x: np.ndarray, y: np.ndarray, training: bool = False) -> float:
        """The batch-mean loss of ``x`` (n, …) against targets ``y``, by a forward pass."""
        return self.loss_of(y, self.forward(x, training))

    def loss_of(self, y: np.ndarray, y_pred: np.ndarray) -> float:
        """The batch-mean loss of outputs y_pred against y (the logits rule: see losses)."""
        return float(self.loss.forward(y, y_pred, self.leaf_layers[-1].logits).mean())

    def compute_gradients(self, x: np.ndarray, y: np.ndarray) -> float:
        """Forward, loss and backward on one batch; returns the loss, leaves gradients in layers."""
        loss = self.compute_loss(x, y)
        self.backward(self.loss.backward())
        return loss

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, int]:
        """One optimizer step on a batch; returns (loss, outputs, how it ended: a ``Fault``)."""
        y_pred = self.forward(x, training=True)
        loss = self.loss_of(y, y_pred)
        if not np.isfinite(loss):
            return loss, y_pred, training.Fault.LOSS  # no update from a broken loss
        self.backward(self.loss.backward())
        finite = self.optimizer.checked_step(
            (layer.grads[k], p) for layer in self.leaf_layers for k, p in layer.params.items())
        return loss, y_pred, training.Fault.NONE if finite else training.Fault.WEIGHTS

    # ------------------------------------------------------------ Keras's API

    def compile(self, optimizer="rmsprop", loss=None, metrics: Sequence[str] | None = None,
                ) -> None:
        """Choose how to train.

        Args:
            optimizer: a name (``"adam"``, ``"sgd"``, ``"rmsprop"``, ``"adamw"``) or an
                optimizer object.
            loss: ``"sparse_categorical_crossentropy"``, ``"categorical_crossentropy"``
                or a loss object.
            metrics: None or ``["accuracy"]``.
        """
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise TypeError(f"metrics must be a list such as ['accuracy'], got {metrics!r}")
        metrics = list(metrics or [])
        for m in metrics:
            validation.choice(m, "each of metrics", METRICS)
        optimizer, loss = optimizers.get(optimizer), losses.get(loss)
        self.optimizer, self.loss, self.metrics = optimizer, loss, metrics

    def fit(self, x, y, batch_size: int = 32, epochs: int = 1, verbose: int = 1,
            validation_split: float = 0.0, validation_data=None, shuffle: bool = True,
            callbacks: Sequence[Callback] | None = None) -> History:
        """Train for ``epochs`` passes over ``x`` in mini-batches.

        Args:
            x: inputs, shape (n, …); cast to float32.
            y: integer labels, shape (n,), or one-hot rows (n, c) for a categorical loss.
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
            ``val_loss``, ``val_accuracy`` to one value per epoch: Keras's running
            means over each epoch's batches, as the weights were when each was seen.
        """
        self._check_compiled("fit")
        batch_size = validation.positive_int(batch_size, "batch_size")
        epochs = validation.positive_int(epochs, "epochs")
        validation.choice(verbose, "verbose", (0, 1, 2))
        validation.boolean(shuffle, "shuffle")
        callbacks = validation.callbacks(callbacks, Callback)
        x, y, val = data.training_data(self, x, y, validation_split, validation_data)
        batch_size = min(batch_size, len(x))  # one batch holds all: buffers sized by data
        with training.one_at_a_time(self, "fit"):
            self.optimizer.check_variables(self.weights)  # before any callback runs
            history = History()
            steps = math.ceil(len(x) / batch_size)
            bar = ProgbarLogger(verbose, steps, epochs) if verbose else None
            hooks = CallbackList(training.call_order(history, callbacks, bar), self)
            # Compiled steps run in calls of many, unless a callback wants every batch.
            calls = training.Calls(every_batch=any(map(training.wants_batches, hooks.callbacks)),
                                   period=training.call_period(hooks.callbacks))
            self.fit_place = place = training.Place(
                steps, training.RunningMeans(self.metrics), hooks.callbacks, epochs=epochs,
                samples=len(x), batch_size=batch_size)
            self.stop_training, history.stopped_early = False, None
            hooks.call("on_train_begin")  # (a BackupAndRestore may move ``place`` to its backup's)
            runner = training.runner_for(self)
            prepared = runner.prepare(x, y)
            try:
                # (A backup written as the fit stopped, at an epoch's end: nothing to run.)
                while place.epoch < epochs and not (self.stop_training and place.step == 0):
                    epoch = place.epoch
                    if place.step == 0:
                        hooks.call("on_epoch_begin", epoch)
                    elif bar:  # resumed within the epoch: the rest ran before the backup
                        bar.on_epoch_begin(epoch)
                    order = place.order(len(x), shuffle)
                    logs, history.stopped_early = training.train_epoch(
                        self, runner, prepared, order, batch_size, calls, hooks, place, verbose)
                    if val is not None and logs:  # (after a fault too, as Keras)
                        val_logs = training.evaluate(self, *val, batch_size)
                        logs.update({f"val_{k}": v for k, v in val_logs.items()})
                    place.next_epoch()
                    self.stop_training |= history.stopped_early is not None  # (TerminateOnNaN)
                    if logs:
                        hooks.call("on_epoch_end", epoch, logs)
                    if history.stopped_early or self.stop_training:  # (a callback may unset it)
                        break
            except KeyboardInterrupt:  # the model holds a whole step (train_epoch's rollback)
                if bar:
                    bar.close()
                raise
            hooks.call("on_train_end")
        return history

    def train_on_batch(self, x, y) -> float | list[float]:
        """One optimizer step on one batch; returns its loss (and accuracy, with metrics)."""
        self._check_compiled("train_on_batch")
        x, y = data.inputs_and_targets(self, x, y, "x", "y")
        with training.one_at_a_time(self, "train_on_batch"):
            return self._as_result(training.step_on_batch(self, x, y))

    def evaluate(self, x, y, batch_size: int = 32, verbose: int = 1,
                 return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """Loss (and accuracy, with metrics) on ``x`` (n, …) against targets ``y``.

        Returns:
            ``[loss, accuracy]`` when compiled with ``metrics=["accuracy"]``, else the
            loss; with ``return_dict=True``, ``{"loss": …, "accuracy": …}``.
        """
        self._check_compiled("evaluate")
        batch_size = validation.positive_int(batch_size, "batch_size")
        validation.choice(verbose, "verbose", (0, 1, 2))
        validation.boolean(return_dict, "return_dict")
        x, y = data.inputs_and_targets(self, x, y, "x", "y")
        with progress(verbose, math.ceil(len(x) / batch_size)) as logs:
            logs.update(training.evaluate(self, x, y, batch_size))
        return logs if return_dict else self._as_result(logs)

    def predict(self, x, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
        """The model's outputs for ``x`` (n, …), shape (n, c), computed ``batch_size`` at a time."""
        batch_size = validation.positive_int(batch_size, "batch_size")
        validation.choice(verbose, "verbose", (0, 1, 2))
        if not self.layers:
            raise ValueError("predict(): the model has no layers")
        x = data.inputs(self, x, "x", check_finite=False)
        with progress(verbose, math.ceil(len(x) / batch_size)):
            compiled = training.forward_all(self, x)
            if compiled and compiled[2]:  # (else the check below says which input is bad)
                z, outputs, _ = compiled
                training.warn_if_overflowed(self, x, training.non_finite_rows(outputs, z),
                                            "predict")
                return outputs
            validation.inputs(x, "x", None)  # raises, saying where, if some input is not finite
            outputs, bad = [], []
            for i in range(0, len(x), batch_size):
                outputs.append(self.forward(x[i : i + batch_size]))
                bad.append(training.non_finite_rows(outputs[-1], training.last_logits(self)))
            training.warn_if_overflowed(self, x, np.concatenate(bad), "predict")
            return np.concatenate(outputs)

    def __call__(self, x, training: bool = False) -> np.ndarray:
        """``model(x)``: the outputs for one batch, like ``predict`` without batching."""
        validation.boolean(training, "training")
        return self.forward(data.inputs(self, x, "x"), training)

    def save(self, path, overwrite: bool = True) -> None:
        """Write architecture, compile settings, weights and optimizer state (``tinynn.saving``).

        Args:
            path: the file to write; it appears whole or not at all.
            overwrite: replace an existing file (Keras's default); False refuses one with
                ``FileExistsError``.
        """
        saving.save_model(self, path, overwrite)

    def save_weights(self, path, overwrite: bool = True) -> None:
        """Write the weights alone (``tinynn.saving``); ``overwrite`` as in ``save``."""
        saving.save_weights(self, path, overwrite)

    def load_weights(self, path) -> None:
        """Set the weights from a ``save_weights`` file; nothing changes if it does not fit."""
        saving.load_weights(self, path)

    def summary(self, print_fn=print) -> None:
        """Print each layer's name, type, output shape and parameter count, then the totals."""
        from tinynn.summary import summary

        summary(self, print_fn)

    # ------------------------------------------------------------ helpers

    def _check_compiled(self, method: str) -> None:
        if self.optimizer is None or self.loss is None:
            raise NotCompiledError(f"call compile(optimizer, loss) before {method}()")
        if not self.layers:
            raise ValueError(f"{method}(): the model has no layers")

    def _as_result(self, logs: dict[str, float]) -> float | list[float]:
        return [logs["loss"], *(logs[m] for m in self.metrics)] if self.metrics else logs["loss"]


def load_model(path) -> Sequential:
    """A model from a ``save`` file: compiled, with its weights and optimizer state."""
    return saving.load_model(path)
