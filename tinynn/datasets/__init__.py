"""Datasets, as ``keras.datasets``: ``tinynn.datasets.mnist.load_data()``."""

from tinynn.datasets import fashion_mnist, mnist

__all__ = ["fashion_mnist", "mnist"]
