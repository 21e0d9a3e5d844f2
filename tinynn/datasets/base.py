"""Where a dataset's files are found, in order, and how they are read.

1. the ``path`` argument: a directory of IDX files, or a Keras ``.npz`` file;
2. ``$TINYNN_DATA/<name>/``, then ``$TINYNN_DATA/`` itself;
3. tinynn's cache, ``$TINYNN_CACHE/<name>/`` (default ``~/.cache/tinynn/<name>/``);
4. Keras's cache (``~/.keras/datasets/…``), which users of the Keras notebook already have;
5. a download from the dataset's mirrors into tinynn's cache (see ``fetch``).

An explicit ``path`` is the only place looked at when given. Every file is
checked as it is read (``idx``), so a damaged file is an error, never a short
or misshapen array.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinynn.datasets.fetch import DownloadError, fetch
from tinynn.datasets.idx import IDXError, read_idx

DATA_VAR = "TINYNN_DATA"
CACHE_VAR = "TINYNN_CACHE"
KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class ImageDataset:
    """A dataset of images and integer labels in four IDX files, as MNIST is distributed.

    Args:
        name: folder name under the data and cache directories.
        files: for each of x_train, y_train, x_test, y_test: the file's name and the
            SHA-256 of its decompressed content.
        mirrors: base URLs to download from, in order.
        image_shape: the shape of one image.
        classes: number of classes; labels must be below it.
        keras_cache: where Keras keeps the dataset, under ``~/.keras/datasets``.
    """

    name: str
    files: dict[str, tuple[str, str]]
    mirrors: tuple[str, ...]
    image_shape: tuple[int, ...] = (28, 28)
    classes: int = 10
    keras_cache: tuple[str, ...] = field(default_factory=tuple)


def cache_dir(dataset: ImageDataset) -> Path:
    root = os.environ.get(CACHE_VAR) or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinynn"
    return Path(root) / dataset.name


def keras_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"


def load(dataset: ImageDataset, path: str | os.PathLike | None = None):
    """``((x_train, y_train), (x_test, y_test))`` from the first place that has the dataset."""
    if path is not None:
        path = Path(path)
        if path.suffix == ".npz":
            return read_npz(dataset, path)
        found = find_idx(dataset, path)
        if found is None:
            raise FileNotFoundError(f"{dataset.name}: {_missing(dataset)} in {path}")
        return read_idx_set(dataset, found)

    places = []
    if os.environ.get(DATA_VAR):
        places += [Path(os.environ[DATA_VAR]) / dataset.name, Path(os.environ[DATA_VAR])]
    places.append(cache_dir(dataset))
    for directory in places:
        found = find_idx(dataset, directory)
        if found:
            return read_idx_set(dataset, found)
    for relative in dataset.keras_cache:
        candidate = keras_dir() / relative
        if candidate.suffix == ".npz" and candidate.is_file():
            return read_npz(dataset, candidate)
        if candidate.is_dir() and (found := find_idx(dataset, candidate)):
            return read_idx_set(dataset, found)
    return read_idx_set(dataset, download(dataset))


def find_idx(dataset: ImageDataset, directory: Path) -> dict[str, Path] | None:
    """The four files in ``directory`` (each gzipped or not), or None if any is missing."""
    found = {}
    for key, (name, _) in dataset.files.items():
        stem = name.removesuffix(".gz")
        hit = next((p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()), None)
        if hit is None:
            return None
        found[key] = hit
    return found


def download(dataset: ImageDataset) -> dict[str, Path]:
    """Fetch the four files into tinynn's cache; explain what to do when that fails."""
    directory = cache_dir(dataset)
    try:
        return {key: fetch(name, sha256, dataset.mirrors, directory)
                for key, (name, sha256) in dataset.files.items()}
    except DownloadError as e:
        raise DownloadError(
            f"{dataset.name} is not on this machine and could not be downloaded.\n{e}\n"
            f"Put the four files ({_missing(dataset)}) in {directory}, or in a directory "
            f"named by ${DATA_VAR} (or a '{dataset.name}' folder inside it), or pass "
            f"path=... to load_data."
        ) from None


def read_idx_set(dataset: ImageDataset, files: dict[str, Path]):
    return check(dataset, {key: read_idx(path) for key, path in files.items()},
                 {key: str(path) for key, path in files.items()})


def read_npz(dataset: ImageDataset, path: Path):
    """Keras's ``mnist.npz``: arrays x_train, y_train, x_test, y_test; no pickles allowed."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in KEYS if k not in data.files]
            if missing:
                raise IDXError(f"{path}: missing arrays {missing}")
            arrays = {k: data[k] for k in KEYS}
    except (OSError, ValueError) as e:
        raise IDXError(f"{path}: not a readable .npz file: {e}") from e
    return check(dataset, arrays, {k: str(path) for k in KEYS})


def check(dataset: ImageDataset, arrays: dict[str, np.ndarray], names: dict[str, str]):
    """Refuse arrays that do not form the dataset: shapes, dtypes, counts, label range."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.shape[1:] != dataset.image_shape:
            raise IDXError(f"{names[f'x_{split}']}: expected uint8 images of shape "
                           f"{dataset.image_shape}, got {x.dtype} {x.shape}")
        if y.dtype != np.uint8 or y.ndim != 1:
            raise IDXError(f"{names[f'y_{split}']}: expected uint8 labels, got {y.dtype} {y.shape}")
        if len(x) != len(y):
            raise IDXError(f"{names[f'x_{split}']}: {len(x)} {split} images but {len(y)} labels")
        if len(y) and y.max() >= dataset.classes:
            raise IDXError(f"{names[f'y_{split}']}: label {y.max()} is not below "
                           f"{dataset.classes}")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _missing(dataset: ImageDataset) -> str:
    return ", ".join(name for name, _ in dataset.files.values())
