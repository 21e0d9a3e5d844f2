"""The IDX reader and the MNIST loader: good files load, damaged files are refused."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from tinynn.datasets import idx, mnist


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(idx.IDX_TYPES[code]).tobytes()


def write_mnist(directory, n_train=5, n_test=3, gz=True):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)), "y_train": rng.integers(0, 10, n_train),
        "x_test": rng.integers(0, 256, (n_test, 28, 28)), "y_test": rng.integers(0, 10, n_test),
    }
    for key, stem in mnist.FILES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)
    return arrays


def test_round_trip_every_type():
    for code, dtype in idx.IDX_TYPES.items():
        a = np.arange(24).reshape(2, 3, 4).astype(dtype)
        got = idx.parse_idx(idx_bytes(a, code))
        np.testing.assert_array_equal(got, a)
        assert got.dtype.isnative


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:3], "too short"),
        (lambda b: b"\x01" + b[1:], "magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "type code"),
        (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
        (lambda b: b[:10], "truncated header"),
        (lambda b: b[:-1], "payload size mismatch"),
        (lambda b: b + b"\x00", "payload size mismatch"),
    ],
)
def test_damaged_headers_are_refused(mutate, message):
    good = idx_bytes(np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(idx.IDXError, match=message):
        idx.parse_idx(mutate(good), "f")


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 4), np.uint8)))[:-8])
    with pytest.raises(idx.IDXError, match="x.gz"):
        idx.read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_load_data_from_path_and_env(tmp_path, monkeypatch, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    (x_train, y_train), (x_test, y_test) = mnist.load_data(tmp_path)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    assert x_train.dtype == np.uint8 and y_test.shape == (3,)
    (tmp_path / "mnist").mkdir()
    write_mnist(tmp_path / "mnist", n_train=7, gz=gz)
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path))
    assert len(mnist.load_data()[0][0]) == 7  # $TINYNN_DATA/mnist comes first


def test_missing_files_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match="TINYNN_DATA"):
        mnist.load_data(tmp_path)


def test_images_and_labels_must_agree(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(4, np.uint8)))
    )
    with pytest.raises(idx.IDXError, match="5 train images but 4 labels"):
        mnist.load_data(tmp_path)
