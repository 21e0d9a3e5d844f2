"""Metrics computed after the fact on labels and predictions.

>>> confusion_matrix([0, 1, 1], [0, 1, 0])
array([[1, 0],
       [1, 1]])
"""

from __future__ import annotations

import numpy as np

from tinynn import validation

#: The largest confusion matrix made: 2¹⁴ classes, 2 GB of counts.
MAX_CLASSES = 2**14


def confusion_matrix(labels, predictions, num_classes: int | None = None) -> np.ndarray:
    """Counts of (true class, predicted class) pairs, as ``tf.math.confusion_matrix``.

    Args:
        labels: true class indices, shape (n,).
        predictions: predicted class indices, shape (n,).
        num_classes: size of the matrix, a positive integer (at most ``MAX_CLASSES``);
            default one more than the largest label or prediction seen.

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
        if a.size and a.dtype.kind not in "iu":
            raise TypeError(f"{name} must be integer class indices, got dtype {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} must be non-negative class indices, got {a.min()}")
    seen = max((int(a.max()) + 1 for a in (labels, predictions) if a.size), default=0)
    if num_classes is None:
        num_classes = seen
    else:
        num_classes = validation.positive_int(num_classes, "num_classes")
        if seen > num_classes:
            raise ValueError(f"labels and predictions must be below num_classes={num_classes}, "
                             f"got {seen - 1}")
    if num_classes > MAX_CLASSES:
        raise ValueError(f"a confusion matrix of {num_classes:,} classes (more than "
                         f"{MAX_CLASSES:,}) would take {8 * num_classes**2 / 1e9:,.0f} GB; pass "
                         f"labels below {MAX_CLASSES:,}")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels.astype(np.intp), predictions.astype(np.intp)), 1)
    return counts


def precision_recall(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision and recall from a confusion matrix (rows truth, columns prediction).

    precision_k = cm[k, k] / Σ_i cm[i, k],  recall_k = cm[k, k] / Σ_j cm[k, j]
    (0 where a class was never predicted, or never present).

    >>> p, r = precision_recall(np.array([[3, 1], [0, 4]]))
    >>> p.round(2).tolist(), r.round(2).tolist()
    ([1.0, 0.8], [0.75, 1.0])
    """
    cm = np.asarray(cm, dtype=np.float64)
    hits = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    return precision, recall


def most_confused(cm: np.ndarray, k: int = 5) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal counts as (true class, predicted class, count), largest first.

    >>> most_confused(np.array([[5, 2, 0], [0, 5, 7], [1, 0, 5]]), k=2)
    [(1, 2, 7), (0, 1, 2)]
    """
    cm = np.asarray(cm)
    off = [(int(cm[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(i, j, c) for c, i, j in off[:k] if c > 0]
