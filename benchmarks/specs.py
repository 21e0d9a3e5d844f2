"""The benchmark's models, described once, and the MNIST data each one trains on.

A model is a ``Spec``: its layers, optimizer, loss, batch size and epochs.
tinynn and Keras build it from the same description (``keras_layers``, one API);
the PyTorch and JAX workers (``peer_torch``, ``peer_jax``) read it to write the
same network by hand.

* ``simple``, ``hidden``: the notebook's models (Adam, sparse cross-entropy on a
  sigmoid output, which Keras computes from the output layer's logits).
* ``quickstart``: TensorFlow's beginner quickstart (28 × 28 inputs, Flatten,
  Dense(128, relu), Dropout(0.2), Dense(10) logits, from_logits=True, Adam).
* ``mnist_mlp``: Keras's MNIST MLP example (Dense(512, relu) and Dropout(0.2)
  twice, Dense(10, softmax), categorical cross-entropy on one-hot labels,
  RMSprop(), batch 128).
* ``convnet``: Keras's "Simple MNIST convnet" example (Conv2D(32, 3×3, relu),
  MaxPooling2D(2×2), Conv2D(64, 3×3, relu), MaxPooling2D(2×2), Flatten,
  Dropout(0.5), Dense(10, softmax); 34,826 parameters) on 28 × 28 × 1 images,
  categorical cross-entropy, Adam, batch 128. The example trains 15 epochs on 90%
  of the training set (validation_split=0.1); here 3 epochs on all of it, without
  a validation pass, as the other models: the same samples per epoch, and no
  evaluation inside the timed epochs that only Keras and tinynn would run.
* ``hidden-user``: ``hidden`` with its first Dense replaced by a user's layer
  (``user_dense.UserDense``); tinynn only.
* ``hidden-scale``: ``hidden`` with a user's ``Scale`` layer (``user_dense.Scale``, one
  weight per feature) after its first Dense; tinynn only (the layer contract: an epoch
  ≤ 3× the hidden model's).
* ``hidden-leaky-adagrad``: ``hidden`` built from the newest built-ins, its relu a
  ``LeakyReLU()`` layer and Adam replaced by ``Adagrad()``; tinynn only (the
  built-in contract: an epoch ≤ 1.5× the hidden model's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Spec:
    """One benchmark model.

    Attributes:
        layers: ("dense", units, activation), ("dropout", rate), ("leaky_relu", slope),
            ("conv2d", filters, (kh, kw), activation) (stride 1, "valid" padding),
            ("max_pool2d", (ph, pw)) (strides = pool size, "valid"), ("flatten",) or
            ("user_scale",) (a user's Scale layer, tinynn only), in order.
        optimizer: "adam", "rmsprop" or "adagrad" (Keras's defaults).
        loss: "sparse" (integer labels; Keras's logits rule on a sigmoid or
            softmax output), "sparse_logits" (integer labels, the output is the
            logits: from_logits=True) or "categorical" (one-hot rows).
        batch_size: samples per step.
        epochs: epochs of a full benchmark run.
        images: the input is 28 × 28 images, flattened by a first Flatten layer
            (else rows of 784).
        channels: the input is 28 × 28 × 1 images, channels last (NHWC, Keras's
            default), given to the first layer as they are: a convnet, whose own
            ("flatten",) layer flattens them (``images`` then plays no part).
        user_first: the first Dense is the user's layer (tinynn only).
        title: a short description, for the chart.
    """

    layers: tuple
    optimizer: str
    loss: str
    batch_size: int
    epochs: int
    images: bool = False
    channels: bool = False
    user_first: bool = False
    title: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape, as the first layer reads it."""
        if self.channels:
            return (28, 28, 1)
        return (28, 28) if self.images else (784,)


_HIDDEN = Spec((("dense", 100, "relu"), ("dense", 10, "sigmoid")), "adam", "sparse", 32, 5,
               title="hidden: Dense(100, relu) → Dense(10, sigmoid)")

MODELS = {
    "simple": Spec((("dense", 10, "sigmoid"),), "adam", "sparse", 32, 5,
                   title="simple: Dense(10, sigmoid)"),
    "hidden": _HIDDEN,
    "hidden-user": replace(_HIDDEN, user_first=True,
                           title="hidden-user: hidden with a user's first layer (tinynn only)"),
    "quickstart": Spec((("dense", 128, "relu"), ("dropout", 0.2), ("dense", 10, "linear")),
                       "adam", "sparse_logits", 32, 5, images=True,
                       title="quickstart: 128 relu, dropout, logits; Adam, batch 32"),
    "mnist_mlp": Spec((("dense", 512, "relu"), ("dropout", 0.2), ("dense", 512, "relu"),
                       ("dropout", 0.2), ("dense", 10, "softmax")),
                      "rmsprop", "categorical", 128, 3,
                      title="mnist_mlp: 512 relu ×2, dropout; RMSprop, batch 128"),
    "convnet": Spec((("conv2d", 32, (3, 3), "relu"), ("max_pool2d", (2, 2)),
                     ("conv2d", 64, (3, 3), "relu"), ("max_pool2d", (2, 2)), ("flatten",),
                     ("dropout", 0.5), ("dense", 10, "softmax")),
                    "adam", "categorical", 128, 3, channels=True,
                    title="convnet: Conv2D 32, 64 (3×3, relu), max-pool, dropout; Adam, "
                          "batch 128"),
}
MODELS["hidden-scale"] = replace(
    _HIDDEN, layers=(_HIDDEN.layers[0], ("user_scale",), _HIDDEN.layers[1]),
    title="hidden-scale: hidden with a user's Scale layer (tinynn only)")
MODELS["hidden-leaky-adagrad"] = Spec(
    (("dense", 100, "linear"), ("leaky_relu", 0.3), ("dense", 10, "sigmoid")), "adagrad",
    "sparse", 32, 5, title="hidden-leaky-adagrad: hidden with LeakyReLU and Adagrad")
#: Models only tinynn runs here (a tinynn layer class, or parts the peers' workers lack).
TINYNN_ONLY = {"hidden-user", "hidden-scale", "hidden-leaky-adagrad"}


def with_units(spec: Spec, units: int | None) -> Spec:
    """The spec with its first Dense layer ``units`` wide (for the scaling study)."""
    if units is None:
        return spec
    layers = list(spec.layers)
    first = next(i for i, layer in enumerate(layers) if layer[0] == "dense")
    layers[first] = ("dense", units, layers[first][2])
    return replace(spec, layers=tuple(layers))


def load_mnist(spec: Spec, data_dir: str | None, limit: int | None = None):
    """MNIST as the spec's model reads it: x float32 in [0, 1], y labels or one-hot rows.

    Args:
        spec: the model (images or rows; labels or one-hot).
        data_dir: where tinynn's loader looks (None: $TINYNN_DATA and the usual places).
        limit: train on the first ``limit`` samples only (a quick check); the
            test set stays whole.

    Returns:
        x_train (n, *spec.input_shape), y_train (n,) int64 or (n, 10) float32,
        and the same for the test set.
    """
    from tinynn.datasets import mnist
    from tinynn.utils import to_categorical

    (x_train, y_train), (x_test, y_test) = mnist.load_data(data_dir)
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    # float32 from the start: the float64 arrays of `x / 255.0` would double
    # the peak memory of every framework alike.
    scale, shape = np.float32(255), spec.input_shape
    x_train = x_train.reshape(len(x_train), *shape) / scale  # uint8 / float32 → float32
    x_test = x_test.reshape(len(x_test), *shape) / scale
    if spec.loss == "categorical":
        return x_train, to_categorical(y_train, 10), x_test, to_categorical(y_test, 10)
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def keras_layers(lib, spec: Spec, user_layer=None, user_scale=None) -> list:
    """The spec's layers in Keras's API, for ``lib`` = tinynn or keras.

    Args:
        lib: the module (``tinynn`` or ``keras``).
        spec: the model.
        user_layer: a class taking (units, activation), used for the first Dense
            when ``spec.user_first``.
        user_scale: the user's Scale layer class, for ("user_scale",).
    """
    stack = [lib.Input(shape=spec.input_shape)]
    if spec.images and not spec.channels:
        stack.append(lib.layers.Flatten())
    for i, layer in enumerate(spec.layers):
        if layer[0] == "dropout":
            stack.append(lib.layers.Dropout(layer[1]))
        elif layer[0] == "conv2d":
            stack.append(lib.layers.Conv2D(layer[1], kernel_size=layer[2], activation=layer[3]))
        elif layer[0] == "max_pool2d":
            stack.append(lib.layers.MaxPooling2D(pool_size=layer[1]))
        elif layer[0] == "flatten":
            stack.append(lib.layers.Flatten())
        elif layer[0] == "user_scale":
            stack.append(user_scale())
        elif layer[0] == "leaky_relu":
            stack.append(lib.layers.LeakyReLU(negative_slope=layer[1]))
        elif i == 0 and spec.user_first:
            stack.append(user_layer(layer[1], layer[2]))
        else:
            stack.append(lib.layers.Dense(layer[1], activation=layer[2]))
    return stack


def keras_compile_arguments(lib, spec: Spec) -> dict:
    """optimizer, loss and metrics for ``model.compile``, for ``lib`` = tinynn or keras."""
    optimizer = {"adam": lib.optimizers.Adam, "rmsprop": lib.optimizers.RMSprop,
                 "adagrad": lib.optimizers.Adagrad}[spec.optimizer]
    loss = {"sparse": "sparse_categorical_crossentropy",
            "categorical": "categorical_crossentropy",
            "sparse_logits": lib.losses.SparseCategoricalCrossentropy(from_logits=True)}
    return {"optimizer": optimizer(), "loss": loss[spec.loss], "metrics": ["accuracy"]}


def dense_layers(spec: Spec) -> list[tuple[int, str]]:
    """(units, activation) of each Dense layer, in order."""
    return [(layer[1], layer[2]) for layer in spec.layers if layer[0] == "dense"]
