"""A drawing made into a 28×28 MNIST input, the way MNIST's digits were made.

MNIST's digits were written on paper, scanned, then (LeCun et al.):

1. cropped to the ink's bounding box;
2. scaled to fit a 20×20 box, keeping the aspect ratio, with anti-aliasing;
3. placed in a 28×28 field so that the ink's centre of mass is at the centre.

A network trained on MNIST only knows digits of that size and position, so a
digit drawn small in a corner of the page must go through the same steps
before the network sees it. ``preprocess`` is the one implementation: the
page sends its raw canvas to the server (``examples/draw.py``), which runs it.

>>> import numpy as np
>>> canvas = np.zeros((100, 60))
>>> canvas[10:90, 20:32] = 1.0          # a thick vertical bar: a "1"
>>> image = preprocess(canvas)
>>> image.shape, image.dtype
((28, 28), dtype('float32'))
>>> rows, cols = np.nonzero(image)
>>> int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)  # 80×12 → 20×3
(20, 3)
"""

from __future__ import annotations

import numpy as np

#: The output's side, and the side of the box the ink is scaled to fit.
SIZE, BOX = 28, 20


def preprocess(ink: np.ndarray) -> np.ndarray:
    """Crop, scale into 20×20 and centre by mass: MNIST's preprocessing of a drawn digit.

    Args:
        ink: shape (height, width), ink per pixel in [0, 1] (0 is blank paper),
            at any resolution.

    Returns:
        shape (28, 28) float32 in [0, 1]: the model's input, white ink on black.

    Raises:
        ValueError: ``ink`` is not a 2-D array of finite values in [0, 1], or has no ink.
    """
    ink = np.asarray(ink, dtype=np.float64)
    if ink.ndim != 2 or 0 in ink.shape:
        raise ValueError(f"ink must be a non-empty 2-D array (height, width), got shape "
                         f"{ink.shape}")
    if not np.isfinite(ink).all() or ink.min() < 0 or ink.max() > 1:
        raise ValueError("ink must hold finite values in [0, 1]")
    rows, cols = np.nonzero(ink)
    if len(rows) == 0:
        raise ValueError("the drawing is empty: there is no ink to read")

    # 1. Crop to the ink's bounding box: where it was drawn stops mattering.
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]

    # 2. Fit the longer side to 20 pixels; the shorter keeps the aspect ratio.
    height, width = crop.shape
    scale = BOX / max(height, width)
    out_h = max(1, min(BOX, round(height * scale)))
    out_w = max(1, min(BOX, round(width * scale)))
    small = area_weights(height, out_h) @ crop @ area_weights(width, out_w).T

    # 3. Move the centre of mass to pixel (14, 14) by whole pixels, as MNIST did (its
    #    digits' centres of mass, in pixel indices, all lie within half a pixel of 14),
    #    without pushing any ink off the field.
    mass = small.sum()
    cy = (np.arange(out_h) @ small.sum(axis=1)) / mass
    cx = (np.arange(out_w) @ small.sum(axis=0)) / mass
    top = int(np.clip(np.floor(SIZE / 2 - cy + 0.5), 0, SIZE - out_h))
    left = int(np.clip(np.floor(SIZE / 2 - cx + 0.5), 0, SIZE - out_w))
    image = np.zeros((SIZE, SIZE), np.float32)
    image[top : top + out_h, left : left + out_w] = np.clip(small, 0, 1)
    return image


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """The matrix that resamples an axis of ``n_in`` pixels to ``n_out`` by area.

    Output pixel i covers the input interval [i·r, (i+1)·r) with r = n_in / n_out,
    and takes the average of the input over it, each input pixel weighted by how
    much of it lies inside. Averaging over the whole footprint (a box filter) is
    the anti-aliasing: no stroke can fall between two samples and vanish.

    Args:
        n_in: input length.
        n_out: output length.

    Returns:
        shape (n_out, n_in); every row sums to 1.

    >>> area_weights(4, 2)
    array([[0.5, 0.5, 0. , 0. ],
           [0. , 0. , 0.5, 0.5]])
    """
    ratio = n_in / n_out
    lo = np.arange(n_out)[:, None] * ratio
    hi = lo + ratio
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None)
    return overlap / ratio
