"""Datasets, as ``keras.datasets``: ``tinynn.datasets.mnist.load_data()``."""

from tinynn.datasets import mnist

__all__ = ["mnist"]
