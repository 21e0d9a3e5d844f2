"""The drawing page's models: which it can show, where they come from, what they see.

``examples/draw.py`` serves two kinds of model (``KINDS``), and this module is
everything it knows about them, with no HTTP in sight:

* which models the page can show (``model_kind``): a model that takes 28×28 images and
  gives 10 classes, with Conv2D layers (the page shows their feature maps) or a hidden
  Dense layer (the page shows its units);
* where they come from (``obtain_model``): a file given with ``--model``, else the one a
  previous run saved in tinynn's cache (``default_model_path``), else a new one trained
  on MNIST (``train``, ``train_convnet``) and saved there;
* what a model makes of one image (``Reader``): the digit, its ten probabilities, and
  the feature maps or hidden units, in the JSON the page draws.

Like the other examples it is a script's module, not a package's: it imports its
siblings (``mnist.py``, ``draw_preprocess.py``) by name, with ``examples/`` on
``sys.path`` (``draw.py`` and the tests put it there).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path

import numpy as np
from draw_preprocess import SIZE
from mnist import build

import tinynn
from tinynn.datasets.base import cache_dir
from tinynn.datasets.mnist import MNIST
from tinynn.layers import Conv2D, Dense, Dropout
from tinynn.saving import ModelFileError

PIXELS = SIZE * SIZE
CLASSES = 10
#: The hidden model's epochs over the 60,000 training images.
EPOCHS = 5
#: The convnet's training images (the first ones), seen once.
CONVNET_SAMPLES = 10_000
#: The kinds of model the page shows (``model_kind``): the default first.
KINDS = ("convnet", "hidden")
#: What training a model of each kind means, for the message before it starts.
TRAINING = {"convnet": f"Keras's MNIST convnet on {CONVNET_SAMPLES:,} images for one epoch "
                       f"(a few seconds)",
            "hidden": f"the notebook's hidden model ({EPOCHS} epochs)"}


# ------------------------------------------------------------------ which models the page shows


def _digit_model(model: tinynn.Sequential) -> list:
    """The model's layers (nested models opened up), if it takes 28×28 images and gives
    10 classes from a last Dense layer.

    Raises:
        ValueError: naming which of the two it does not do.
    """
    layers = list(model.leaf_layers)
    first = layers[0] if layers else None
    if first is None or first.input_shape is None or math.prod(first.input_shape) != PIXELS:
        shape = None if first is None else first.input_shape
        raise ValueError(f"the model must take 28×28 images ({PIXELS} pixels), but its input "
                         f"shape is {shape}")
    if not isinstance(layers[-1], Dense) or layers[-1].units != CLASSES:
        raise ValueError(f"the model must end in a Dense layer of {CLASSES} units (one per "
                         f"digit)")
    return layers


def hidden_layer(model: tinynn.Sequential) -> Dense:
    """The layer whose activations the page shows: the first Dense layer, fed the 784 pixels.

    Raises:
        ValueError: the model does not take 28×28 images, does not give 10 classes,
            or has no hidden Dense layer.
    """
    dense = [layer for layer in _digit_model(model) if isinstance(layer, Dense)]
    if len(dense) < 2 or dense[0].input_shape != (PIXELS,):
        raise ValueError("the model has no hidden layer to show: it needs Conv2D layers, or a "
                         f"Dense layer taking the {PIXELS} pixels before its output layer")
    return dense[0]


def conv_layers(model: tinynn.Sequential) -> list[Conv2D]:
    """The layers whose feature maps the page shows: every Conv2D layer, in order.

    Raises:
        ValueError: the model does not take 28×28 images, does not give 10 classes,
            or has no Conv2D layer.
    """
    convs = [layer for layer in _digit_model(model) if isinstance(layer, Conv2D)]
    if not convs:
        raise ValueError("the model has no Conv2D layer: it has no feature maps to show")
    return convs


def model_kind(model: tinynn.Sequential) -> str:
    """``"convnet"`` for a model with Conv2D layers (the page shows their feature maps), else
    ``"hidden"`` (the page shows its hidden Dense layer's units).

    Raises:
        ValueError: the page cannot show the model (see ``conv_layers``, ``hidden_layer``).
    """
    if any(isinstance(layer, Conv2D) for layer in model.leaf_layers):
        conv_layers(model)
        return "convnet"
    hidden_layer(model)
    return "hidden"


# ------------------------------------------------------------------ where they come from


def default_model_path(kind: str = "hidden") -> Path:
    """Where the trained model of ``kind`` (``"convnet"`` or ``"hidden"``) is kept: ``models/``
    beside the datasets in tinynn's cache."""
    return cache_dir(MNIST).parent / "models" / f"mnist_{kind}.npz"


def _mnist() -> tuple:
    try:
        return tinynn.datasets.mnist.load_data()
    except (OSError, ValueError) as e:  # not found, not downloadable, or damaged
        raise SystemExit(f"error: training the model needs MNIST: {e}") from None


def _fit_and_save(model: tinynn.Sequential, path: Path, data: tuple, epochs: int,
                  batch_size: int) -> tinynn.Sequential:
    """Train ``model`` on ``data`` ((x_train, y_train), (x_test, y_test)), report its test
    accuracy and save it at ``path``; a failure to save is reported and the model returned."""
    (x_train, y_train), (x_test, y_test) = data
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"Test accuracy: {accuracy:.4f} (trained in {seconds:.1f} s)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        print(f"Saved the model to {path}")
    except OSError as e:
        print(f"warning: could not save the model ({e}); it will be trained again next time",
              file=sys.stderr)
    return model


def train(path: Path, epochs: int = EPOCHS, seed: int = 0) -> tinynn.Sequential:
    """Train the notebook's hidden model on MNIST, as examples/mnist.py does, and save it.

    Args:
        path: where to save it (its folder is created); a failure to save is reported
            and the model still returned.
        epochs: passes over the 60,000 training images.
        seed: for tinynn.utils.set_random_seed.
    """
    (x_train, y_train), (x_test, y_test) = _mnist()
    tinynn.utils.set_random_seed(seed)
    data = ((x_train.reshape(len(x_train), -1) / 255, y_train),
            (x_test.reshape(len(x_test), -1) / 255, y_test))
    return _fit_and_save(build("hidden"), path, data, epochs, batch_size=32)


def train_convnet(path: Path, samples: int = CONVNET_SAMPLES, epochs: int = 1,
                  seed: int = 0) -> tinynn.Sequential:
    """Train Keras's MNIST convnet (``mnist.build("convnet")``) briefly and save it.

    Keras's example trains it for 15 epochs over 54,000 images (~99 %); the first
    ``samples`` images, once, in batches of 32, take a few seconds and reach ~95 %
    on the 10,000 test images.

    Args:
        path: where to save it (its folder is created); a failure to save is reported
            and the model still returned.
        samples: how many of the training images, from the first.
        epochs: passes over them.
        seed: for tinynn.utils.set_random_seed.
    """
    (x_train, y_train), (x_test, y_test) = _mnist()
    tinynn.utils.set_random_seed(seed)
    data = ((x_train[:samples, :, :, None].astype(np.float32) / 255, y_train[:samples]),
            (x_test[:, :, :, None].astype(np.float32) / 255, y_test))
    return _fit_and_save(build("convnet"), path, data, epochs, batch_size=32)


def obtain_model(path: str | Path | None, kind: str | None = None) -> tinynn.Sequential:
    """``path``'s model; without one, the cached model of ``kind``, else a newly trained one.

    Args:
        path: a saved model, or None.
        kind: with ``path``, the kind (``model_kind``) the model must be, or None for
            either; without, which model: ``"convnet"`` or ``"hidden"`` (None: the hidden
            model; the command obtains both).

    Raises:
        SystemExit: ``path`` is missing, damaged, not a digit model or not of ``kind``
            (the message names it).
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SystemExit(f"error: --model {path}: no such file")
        try:
            model = tinynn.models.load_model(path)
            found = model_kind(model)
        except (OSError, ModelFileError, ValueError) as e:
            reason = str(e).removeprefix(f"{path}: ")
            raise SystemExit(f"error: --model {path}: {reason}") from None
        if kind is not None and kind != found:
            raise SystemExit(f"error: --model {path} holds a {found} model, but --model-kind "
                             f"says {kind}")
        print(f"Loaded the model from {path}")
        return model
    kind = kind or "hidden"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    cached = default_model_path(kind)
    if cached.is_file():
        try:
            model = tinynn.models.load_model(cached)
            if model_kind(model) != kind:
                raise ValueError(f"it is not a {kind} model")
        except (OSError, ModelFileError, ValueError) as e:
            print(f"The saved model {cached} is unusable ({e}); training a new one.")
        else:
            print(f"Loaded the model saved by an earlier run: {cached}")
            return model
    else:
        print(f"No saved model at {cached}: training {TRAINING[kind]}.")
    return train(cached) if kind == "hidden" else train_convnet(cached)


# ------------------------------------------------------------------ what a model sees


def layer_text(layer) -> str:
    """A layer in a few characters: ``Conv2D(32, 3×3, relu)``, ``Dense(10, softmax)``."""
    name = type(layer).__name__
    if isinstance(layer, Dense):
        return f"{name}({layer.units}, {layer.activation})"
    if isinstance(layer, Conv2D):
        return (f"{name}({layer.filters}, {'×'.join(map(str, layer.kernel_size))}, "
                f"{layer.activation})")
    if isinstance(layer, Dropout):
        return f"{name}({layer.rate:g})"
    if hasattr(layer, "pool_size"):
        return f"{name}({'×'.join(map(str, layer.pool_size))})"
    return name


class Reader:
    """The model behind the page: pixels in, prediction, probabilities and what it makes of
    them inside (a convnet's feature maps, or the hidden units) out.

    Args:
        model: takes 28×28 images (flat or not), gives 10 outputs; see ``model_kind``.
    """

    def __init__(self, model: tinynn.Sequential):
        self.model = model
        self.kind = model_kind(model)
        layers = list(model.leaf_layers)
        if self.kind == "convnet":
            self.convs = conv_layers(model)
            # The layers up to the last Conv2D: run one by one, they give its maps.
            self.inner = layers[: layers.index(self.convs[-1]) + 1]
        else:
            self.hidden = hidden_layer(model)
        self.input_shape = tuple(layers[0].input_shape)
        # Layers keep their last input and output for backward: one request at a time.
        self._lock = threading.Lock()
        self.read(np.zeros(PIXELS, np.float32))  # compile now, not on the first request

    def describe(self) -> dict:
        """For ``GET /models``: the kind, the layers, and the feature maps' or hidden units'
        sizes."""
        answer = {"kind": self.kind,
                  "layers": [layer_text(layer) for layer in self.model.leaf_layers]}
        if self.kind == "convnet":
            shape = self.input_shape
            answer["feature_maps"] = []
            for layer in self.inner:
                shape = layer.compute_output_shape(shape)
                if layer in self.convs:
                    answer["feature_maps"].append({"name": layer.name, "shape": list(shape)})
        else:
            answer["hidden"] = self.hidden.units
        return answer

    def read(self, pixels: np.ndarray) -> dict:
        """What the model makes of one image.

        Args:
            pixels: shape (784,), float32 in [0, 1].

        Returns:
            ``prediction`` (the argmax of ``model.predict``), ``probabilities`` (10; see
            ``probabilities``), and ``feature_maps`` (a convnet: each Conv2D layer's output,
            see ``feature_maps``) or ``hidden`` (the first Dense layer's activations).
        """
        x = pixels.reshape(1, *self.input_shape)
        with self._lock:
            outputs = self.model.predict(x)
            if self.kind == "convnet":
                inside = []
                for layer in self.inner:
                    x = layer(x)
                    if layer in self.convs:
                        inside.append(feature_maps(layer.name, x[0]))
            else:
                inside = self.hidden.forward(pixels.reshape(1, PIXELS))[0].astype(float).tolist()
        return {"prediction": int(outputs[0].argmax()),
                "probabilities": probabilities(outputs, self.model.leaf_layers[-1].activation)[0]
                .tolist(),
                "feature_maps" if self.kind == "convnet" else "hidden": inside}


def feature_maps(name: str, maps: np.ndarray) -> dict:
    """One layer's feature maps for the page: each map scaled by itself to integers 0..255.

    Args:
        name: the layer's.
        maps: shape (h, w, maps), one image's output of the layer.

    Returns:
        ``{"name", "shape": [h, w, maps], "maps": [maps lists of h·w integers, row by row],
        "low": [maps], "high": [maps]}``: v is sent as round(255 · (v − low) / (high − low)),
        low = min(0, the map's least value), high = max(0, its greatest); a map that is 0
        everywhere is all 0.

    >>> answer = feature_maps("conv", np.array([[[0.0], [2.0]], [[1.0], [0.5]]]))
    >>> answer["shape"], answer["maps"], answer["low"], answer["high"]
    ([2, 2, 1], [[0, 255, 128, 64]], [0.0], [2.0])
    """
    h, w, count = maps.shape
    v = maps.astype(np.float64).transpose(2, 0, 1).reshape(count, h * w)
    low = np.minimum(v.min(axis=1), 0)
    high = np.maximum(v.max(axis=1), 0)
    span = high - low
    scaled = (v - low[:, None]) / np.where(span > 0, span, 1)[:, None]
    return {"name": name, "shape": [h, w, count],
            "maps": np.rint(255 * scaled).astype(int).tolist(),
            "low": low.tolist(), "high": high.tolist()}


def probabilities(outputs: np.ndarray, activation: str) -> np.ndarray:
    """The probabilities a model's outputs (n, 10) stand for, given its output activation.

    A softmax output is one already. Sigmoid outputs are not (they need not sum to 1):
    Keras and tinynn train them by the softmax of their logits, so that is what they
    mean: the softmax of logit(output), as ``mnist.confidences`` computes it. Any other
    output is taken as logits (``from_logits``).
    """
    if activation == "softmax":
        return outputs.astype(np.float64)
    z = outputs.astype(np.float64)
    if activation == "sigmoid":
        p = np.clip(z, 1e-7, 1 - 1e-7)
        z = np.log(p / (1 - p))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
