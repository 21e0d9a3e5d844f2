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

import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinynn.datasets.fetch import DownloadError, fetch
from tinynn.datasets.idx import MAX_INFLATION, IDXError, read_idx

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
        root = Path(os.environ[DATA_VAR])
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(f"${DATA_VAR}={root} is a file; it must name a directory "
                                     f"holding the {dataset.name} files (or a "
                                     f"'{dataset.name}' folder of them)")
        places += [root / dataset.name, root]
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
        looked = ""
        if os.environ.get(DATA_VAR):
            root = Path(os.environ[DATA_VAR])
            looked = (f"${DATA_VAR}={root} was looked in, and holds no {dataset.name} files"
                      f"{'' if root.exists() else ' (it does not exist)'}.\n")
        raise DownloadError(
            f"{dataset.name} is not on this machine and could not be downloaded.\n{e}\n{looked}"
            f"Put the four files ({_missing(dataset)}) in a directory and name it: "
            f"load_data(path=DIR), or ${DATA_VAR}=DIR (a '{dataset.name}' folder inside it "
            f"works too; e.g. `{DATA_VAR}=DIR make demo` or `{DATA_VAR}=DIR make test`), "
            f"or examples/mnist.py --data-dir DIR; or copy them to tinynn's cache, {directory}."
        ) from None


def read_idx_set(dataset: ImageDataset, files: dict[str, Path]):
    return check(dataset, {key: read_idx(path) for key, path in files.items()},
                 {key: str(path) for key, path in files.items()})


def read_npz(dataset: ImageDataset, path: Path):
    """Keras's ``mnist.npz``: arrays x_train, y_train, x_test, y_test; no pickles allowed.

    Each member's header is read first and checked against the dataset (uint8
    images of the right shape, uint8 labels) and against the member's size in
    the zip directory, at most ``MAX_INFLATION`` times the file's size in all,
    so reading allocates only what the file holds.
    """
    from tinynn.saving.archive import npy_header

    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
            members = set(archive.namelist())
            missing = [k for k in KEYS if f"{k}.npy" not in members]
            if missing:
                raise IDXError(f"{path}: missing arrays {missing}")
            declared = 0
            for key in KEYS:
                shape, dtype, _, _ = npy_header(archive, f"{key}.npy")
                item = dataset.image_shape if key.startswith("x") else ()
                if dtype != np.uint8 or len(shape) != 1 + len(item) or shape[1:] != item:
                    raise IDXError(f"{path}: {key} must be uint8 of shape (n, "
                                   f"{', '.join(map(str, item))}), got {dtype} {shape}")
                declared += math.prod(shape)
            if declared > MAX_INFLATION * max(os.fstat(f.fileno()).st_size, 1 << 16):
                raise IDXError(f"{path}: declares {declared:,} bytes of arrays, more than "
                               f"{MAX_INFLATION}× the file's size")
            arrays = {}
            for key in KEYS:
                with archive.open(f"{key}.npy") as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except IDXError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
            RuntimeError) as e:
        # Truncated or damaged (BadZipFile, CRC errors), not a zip at all (an .npy named
        # .npz), a pickle inside, or a header that disagrees with the zip directory.
        raise IDXError(f"{path}: not a readable .npz file: {e}") from None
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
