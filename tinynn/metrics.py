"""Metrics computed after the fact on labels and predictions.

>>> confusion_matrix([0, 1, 1], [0, 1, 0])
array([[1, 0],
       [1, 1]])
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels, predictions, num_classes: int | None = None) -> np.ndarray:
    """Counts of (true class, predicted class) pairs, as ``tf.math.confusion_matrix``.

    Args:
        labels: true class indices, shape (n,).
        predictions: predicted class indices, shape (n,).
        num_classes: size of the matrix; default one more than the largest label seen.

    Returns:
        integer array of shape (num_classes, num_classes); row = truth, column = prediction.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(
            f"labels and predictions must be 1-D and of equal length, got shapes "
            f"{labels.shape} and {predictions.shape}"
        )
    for name, a in (("labels", labels), ("predictions", predictions)):
        if a.size and (a.dtype.kind not in "iu" or a.min() < 0):
            raise ValueError(f"{name} must be non-negative integers")
    if num_classes is None:
        num_classes = int(max(labels.max(initial=-1), predictions.max(initial=-1))) + 1
    elif labels.size and max(labels.max(), predictions.max()) >= num_classes:
        raise ValueError(f"labels and predictions must be below num_classes={num_classes}")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts
