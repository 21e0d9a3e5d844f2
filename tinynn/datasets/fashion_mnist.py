"""Fashion-MNIST: 70,000 28×28 images of clothes in 10 classes, as Keras's ``fashion_mnist``.

The same format and shapes as MNIST, and found (or fetched) the same way
(``tinynn.datasets.base``), under the name ``fashion_mnist``; Keras keeps it in
``~/.keras/datasets/fashion-mnist/``. Debian ships it as the package
``dataset-fashion-mnist`` (in /usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import os

from tinynn.datasets.base import ImageDataset, load

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")

FASHION_MNIST = ImageDataset(
    name="fashion_mnist",
    files={
        "x_train": ("train-images-idx3-ubyte.gz",
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "y_train": ("train-labels-idx1-ubyte.gz",
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "x_test": ("t10k-images-idx3-ubyte.gz",
                   "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "y_test": ("t10k-labels-idx1-ubyte.gz",
                   "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
    mirrors=(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    keras_cache=("fashion-mnist",),
)


def load_data(path: str | os.PathLike | None = None):
    """Load Fashion-MNIST as Keras does; see ``tinynn.datasets.mnist.load_data``."""
    return load(FASHION_MNIST, path)
