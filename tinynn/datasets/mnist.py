"""MNIST: 70,000 handwritten digits, 28×28 grey levels, as ``keras.datasets.mnist``.

Where the files are looked for, in order:

1. the ``path`` argument (a directory holding the four IDX files);
2. ``$TINYNN_DATA/mnist/``, then ``$TINYNN_DATA/`` itself.

The files keep their standard names, gzipped or not: ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tinynn.datasets.idx import IDXError, read_idx

ENV_VAR = "TINYNN_DATA"
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def candidate_dirs(path: str | os.PathLike | None, name: str = "mnist") -> list[Path]:
    """The directories searched, in order."""
    if path is not None:
        return [Path(path)]
    root = os.environ.get(ENV_VAR)
    return [Path(root) / name, Path(root)] if root else []


def find_file(directory: Path, stem: str) -> Path | None:
    """``stem.gz`` or ``stem`` in ``directory``, whichever exists."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def load_idx_set(dirs: list[Path], name: str, shapes: dict[str, tuple]) -> tuple:
    """Load the four arrays from the first directory that holds all four files."""
    for directory in dirs:
        found = {key: find_file(directory, stem) for key, stem in FILES.items()}
        if all(found.values()):
            arrays = {key: read_idx(p) for key, p in found.items()}
            for key, shape in shapes.items():
                if arrays[key].shape[1:] != shape or arrays[key].dtype != np.uint8:
                    raise IDXError(f"{found[key]}: expected uint8 samples of shape {shape}, "
                                   f"got {arrays[key].dtype} {arrays[key].shape}")
            for split in ("train", "test"):
                nx, ny = len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"])
                if nx != ny:
                    raise IDXError(f"{directory}: {nx} {split} images but {ny} labels")
            return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
    looked = ", ".join(str(d) for d in dirs) or "nowhere (no path given)"
    raise FileNotFoundError(
        f"{name}: the four IDX files ({', '.join(FILES.values())}, optionally .gz) were not "
        f"found; looked in {looked}. Pass path=DIR or set {ENV_VAR}=DIR "
        f"(DIR holding the files or a '{name}' folder with them)."
    )


def load_data(path: str | os.PathLike | None = None):
    """Load MNIST as Keras does.

    Args:
        path: directory holding the four IDX files; default ``$TINYNN_DATA``.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: uint8 arrays of shapes
        (60000, 28, 28), (60000,), (10000, 28, 28), (10000,).
    """
    return load_idx_set(candidate_dirs(path), "mnist", {"x_train": (28, 28), "x_test": (28, 28),
                                                        "y_train": (), "y_test": ()})
