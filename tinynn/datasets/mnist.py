"""MNIST: 70,000 handwritten digits, 28×28 grey levels, as ``keras.datasets.mnist``.

Found (or fetched) as ``tinynn.datasets.base`` describes: ``path``, then
``$TINYNN_DATA/mnist/``, tinynn's cache, Keras's ``~/.keras/datasets/mnist.npz``,
then a download from the public mirrors.
"""

from __future__ import annotations

import os

from tinynn.datasets.base import ImageDataset, load

#: The standard files, with the SHA-256 of their decompressed content (the
#: check that holds whichever way a mirror compressed them).
MNIST = ImageDataset(
    name="mnist",
    files={
        "x_train": ("train-images-idx3-ubyte.gz",
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "y_train": ("train-labels-idx1-ubyte.gz",
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "x_test": ("t10k-images-idx3-ubyte.gz",
                   "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "y_test": ("t10k-labels-idx1-ubyte.gz",
                   "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    mirrors=(
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    keras_cache=("mnist.npz",),
)


def load_data(path: str | os.PathLike | None = None):
    """Load MNIST as Keras does.

    Args:
        path: a directory holding the four IDX files (gzipped or not), or a Keras
            ``mnist.npz``; default: look in the usual places, then download.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: uint8 arrays of shapes
        (60000, 28, 28), (60000,), (10000, 28, 28), (10000,).
    """
    return load(MNIST, path)
