"""Figures for looking at what a model learned (needs the ``plots`` extra: matplotlib, seaborn).

Each function draws one figure and returns it; ``save`` writes it to a PNG.
Images are (n, 28, 28) arrays (or anything reshapeable to squares).

>>> import numpy as np
>>> from tinynn import plots
>>> fig = plots.confusion_matrix(np.array([[5, 1], [0, 4]]))
>>> fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()
('Predicted', 'Truth')
>>> plots.save(fig, "confusion.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

MISSING = (
    "tinynn.plots needs matplotlib and seaborn: pip install 'tinynn[plots]' "
    "(or pip install matplotlib seaborn)"
)


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(MISSING) from e
    return plt


def available() -> bool:
    """Whether matplotlib and seaborn can be imported."""
    try:
        import matplotlib  # noqa: F401
        import seaborn  # noqa: F401
    except ImportError:
        return False
    return True


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG and close it."""
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _square(image: np.ndarray) -> np.ndarray:
    side = math.isqrt(image.size)
    return image.reshape(side, side) if image.ndim == 1 else image


def sample(image: np.ndarray, label) -> object:
    """One image with its label as the title (the notebook's first figure)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.2, 3.2))
    ax.imshow(_square(image), cmap="gray")
    ax.set_title(f"Label: {label}")
    ax.axis("off")
    return fig


def confusion_matrix(cm: np.ndarray, title: str = "Confusion Matrix",
                     class_names: Sequence[str] | None = None) -> object:
    """Two heatmaps of counts, truth in rows and prediction in columns.

    Left, the notebook's figure: every count. Its diagonal (~1,000 per class on
    MNIST's test set) sets the colour scale, so every mistake looks alike, pale.
    Right: the mistakes alone, the diagonal hidden, on their own colour scale, so
    the pairs a model confuses most stand out (darker is more).
    """
    plt = _pyplot()
    import seaborn as sn

    cm = np.asarray(cm)
    fig, (ax, mistakes_ax) = plt.subplots(1, 2, figsize=(16, 6.5))
    labels = class_names if class_names is not None else "auto"
    common = {"annot": True, "fmt": "d", "cmap": "rocket_r", "xticklabels": labels,
              "yticklabels": labels, "annot_kws": {"fontsize": 8}}
    sn.heatmap(cm, ax=ax, cbar_kws={"label": "count"}, **common)
    sn.heatmap(cm, ax=mistakes_ax, mask=np.eye(len(cm), dtype=bool), vmin=0,
               cbar_kws={"label": "count of mistakes"}, **common)
    for axis, subtitle in ((ax, "all counts"), (mistakes_ax, "mistakes only (diagonal hidden)")):
        axis.set_xlabel("Predicted")
        axis.set_ylabel("Truth")
        axis.set_title(f"{title}: {subtitle}")
    fig.tight_layout()
    return fig


def predictions(images: np.ndarray, truth: Sequence, predicted: Sequence,
                class_names: Sequence[str] | None = None) -> object:
    """A row of images titled with their true and predicted labels (wrong ones in red)."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.9))
    for ax, image, t, p in zip(np.atleast_1d(axes), images, truth, predicted):
        ax.imshow(_square(image), cmap="gray")
        name = (lambda k: class_names[k]) if class_names else str
        ax.set_title(f"True: {name(t)}\nPredicted: {name(p)}", fontsize=10,
                     color="black" if t == p else "crimson")
        ax.axis("off")
    fig.tight_layout()
    return fig


def learning_curves(histories: Mapping[str, Mapping[str, Sequence[float]]]) -> object:
    """Loss and accuracy per epoch, training and validation, for several models side by side."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (name, history) in zip(colors, histories.items()):
        epochs = np.arange(1, len(history["loss"]) + 1)
        for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.plot(epochs, history[key], "-o", color=color, label=f"{name}: training")
            if f"val_{key}" in history:
                ax.plot(epochs, history[f"val_{key}"], "--s", color=color,
                        label=f"{name}: validation")
    for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{key.capitalize()} per epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def weight_templates(kernel: np.ndarray, class_names: Sequence[str] | None = None) -> object:
    """Each output unit's incoming weights drawn as an image: what a single layer "looks for".

    Args:
        kernel: a Dense kernel of shape (pixels, units), e.g. (784, 10).
    """
    plt = _pyplot()
    units = kernel.shape[1]
    cols = min(units, 5)
    rows = math.ceil(units / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False,
                             layout="constrained")
    # Pixels that are almost never lit (the border) end with the largest weights;
    # scaling colours to the 99th percentile keeps the digits' strokes visible.
    limit = float(np.percentile(np.abs(kernel), 99)) or 1.0
    for k, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if k < units:
            im = ax.imshow(_square(kernel[:, k]), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(class_names[k] if class_names else f"class {k}", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8, extend="both",
                 label="weight (red: for the class, blue: against)")
    return fig


def filters(kernel: np.ndarray) -> object:
    """A first convolution's filters, one small image each: the strokes each one looks for.

    Args:
        kernel: a Conv2D kernel of shape (kh, kw, 1, f), e.g. (3, 3, 1, 32).
    """
    plt = _pyplot()
    count = kernel.shape[3]
    cols = min(count, 8)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.4), squeeze=False,
                             layout="constrained")
    limit = float(np.abs(kernel).max()) or 1.0
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < count:
            im = ax.imshow(kernel[:, :, 0, k], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"filter {k}", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.8, label="weight (red +, blue −)")
    return fig


def feature_maps(image: np.ndarray, maps: np.ndarray) -> object:
    """What a convolution sees in one image: the image, then each filter's map of it.

    Args:
        image: the input, shape (h, w) or (h, w, 1).
        maps: the layer's output for it, shape (oh, ow, f) (after its activation).
    """
    plt = _pyplot()
    count = maps.shape[2]
    cols = min(count + 1, 9)
    rows = math.ceil((count + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.4 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    axes.ravel()[0].imshow(np.squeeze(image), cmap="gray")
    axes.ravel()[0].set_title("input", fontsize=7)
    for k in range(count):
        ax = axes.ravel()[k + 1]
        ax.imshow(maps[:, :, k], cmap="magma")
        ax.set_title(f"map {k}", fontsize=7)
    return fig


def misclassified(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
                  confidence: np.ndarray, n: int = 16,
                  class_names: Sequence[str] | None = None) -> object:
    """The ``n`` wrong predictions made with the highest confidence."""
    plt = _pyplot()
    wrong = np.flatnonzero(truth != predicted)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
    cols = min(max(len(worst), 1), 8)
    rows = max(1, math.ceil(len(worst) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.3 * rows))
    name = (lambda k: class_names[k]) if class_names else str
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), worst):
        ax.imshow(_square(images[i]), cmap="gray")
        ax.set_title(f"true {name(truth[i])}\nsaid {name(predicted[i])} ({confidence[i]:.2f})",
                     fontsize=8)
    fig.tight_layout()
    return fig
