"""tinynn: a from-scratch neural-network library with Keras's API and training semantics.

``import tinynn as keras`` runs the classic Keras MNIST notebook::

    model = keras.Sequential([keras.layers.Dense(10, input_shape=(784,), activation="sigmoid")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=5)

Two rooms. The textbook, read in this order: ``reference.py`` (the math),
``layers/``, ``losses.py``, ``optimizers.py``, ``models.py`` (the training loop),
``gradcheck.py``; then ``validation.py``, ``training.py`` and ``saving/`` for what
happens when things go wrong. The compiled room, ``compiled/``, implements the same
contracts with Numba; only ``backend.py`` opens its door, on first use.
"""

from tinynn import (
    activations,
    callbacks,
    datasets,
    initializers,
    layers,
    losses,
    metrics,
    models,
    ops,
    optimizers,
    saving,
    utils,
    validation,
)
from tinynn.backend import get_backend, set_backend
from tinynn.gradcheck import gradcheck
from tinynn.layers import Input
from tinynn.models import Sequential

__version__ = "0.1.0"

__all__ = [
    "Input",
    "Sequential",
    "activations",
    "callbacks",
    "datasets",
    "get_backend",
    "gradcheck",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "models",
    "ops",
    "optimizers",
    "saving",
    "set_backend",
    "utils",
    "validation",
]
