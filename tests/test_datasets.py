"""The dataset layer: IDX files are checked, the search order holds, downloads are safe.

Downloads are tested for real against an HTTP server on 127.0.0.1 that the
tests start, serving small IDX files made here.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import socket
import struct
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest

from tinynn.datasets import base, fashion_mnist, idx, mnist
from tinynn.datasets.fetch import DownloadError


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(idx.IDX_TYPES[code]).tobytes()


def make_arrays(n_train=5, n_test=3, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }


def write_idx_files(directory, arrays, gz=True, dataset=mnist.MNIST):
    directory.mkdir(parents=True, exist_ok=True)
    for key, (name, _) in dataset.files.items():
        data = idx_bytes(arrays[key])
        stem = name.removesuffix(".gz")
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No TINYNN_DATA, and empty tinynn and Keras caches under tmp_path."""
    monkeypatch.delenv(base.DATA_VAR, raising=False)
    monkeypatch.setenv(base.CACHE_VAR, str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path


# ---------------------------------------------------------------- IDX files


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


def test_truncated_idx_file_in_a_data_directory_is_an_error(isolated):
    write_idx_files(isolated / "d", make_arrays(), gz=False)
    images = isolated / "d" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(idx.IDXError, match="train-images-idx3-ubyte.*payload size mismatch"):
        mnist.load_data(isolated / "d")


# ---------------------------------------------------------------- where data is found


@pytest.mark.parametrize("gz", [True, False])
def test_load_from_a_path(isolated, gz):
    arrays = make_arrays()
    write_idx_files(isolated / "d", arrays, gz=gz)
    (x_train, y_train), (x_test, y_test) = mnist.load_data(isolated / "d")
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    assert x_train.dtype == np.uint8


def test_search_order(isolated, monkeypatch):
    """$TINYNN_DATA/mnist, then $TINYNN_DATA, then tinynn's cache, then Keras's cache."""
    keras_file = isolated / "keras" / "datasets" / "mnist.npz"
    keras_file.parent.mkdir(parents=True)
    np.savez(keras_file, **make_arrays(n_train=4))
    assert len(mnist.load_data()[0][0]) == 4

    write_idx_files(isolated / "cache" / "mnist", make_arrays(n_train=5))
    assert len(mnist.load_data()[0][0]) == 5

    monkeypatch.setenv(base.DATA_VAR, str(isolated / "data"))
    write_idx_files(isolated / "data", make_arrays(n_train=6))
    assert len(mnist.load_data()[0][0]) == 6
    write_idx_files(isolated / "data" / "mnist", make_arrays(n_train=7))
    assert len(mnist.load_data()[0][0]) == 7

    write_idx_files(isolated / "explicit", make_arrays(n_train=8))
    assert len(mnist.load_data(isolated / "explicit")[0][0]) == 8


def test_explicit_path_is_the_only_place_looked_at(isolated):
    write_idx_files(isolated / "cache" / "mnist", make_arrays())
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        mnist.load_data(isolated / "empty")


def test_keras_npz_is_read_without_pickles(isolated):
    good = isolated / "good.npz"
    np.savez(good, **make_arrays())
    assert mnist.load_data(good)[1][0].shape == (3, 28, 28)
    smuggled = isolated / "bad.npz"
    np.savez(smuggled, **{**make_arrays(), "y_test": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(idx.IDXError, match="bad.npz"):
        mnist.load_data(smuggled)


def _damaged_npz(good: bytes, how: str) -> bytes:
    if how == "truncated":
        return good[: len(good) // 2]
    if how == "CRC-damaged":  # one byte of x_train's pixels flipped: only the CRC can tell
        data = bytearray(good)
        data[good.index(b"x_train.npy") + 400] ^= 0xFF
        return bytes(data)
    return good  # "npy bytes": replaced below


@pytest.mark.parametrize("how", ["truncated", "CRC-damaged", "npy bytes"])
def test_damaged_npz_is_an_idx_error_naming_the_file(isolated, how):
    good = isolated / "good.npz"
    np.savez(good, **make_arrays())
    bad = isolated / "mnist.npz"
    if how == "npy bytes":
        np.save(isolated / "x.npy", make_arrays()["x_train"])
        bad.write_bytes((isolated / "x.npy").read_bytes())
    else:
        bad.write_bytes(_damaged_npz(good.read_bytes(), how))
    with pytest.raises(idx.IDXError, match=r"mnist\.npz: not a readable \.npz file"):
        mnist.load_data(bad)


def _npy(a: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


def _peak_bytes(call) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        call()
        error = None
    except Exception as e:  # noqa: BLE001 (the caller asserts which)
        error = e
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, peak


def test_npz_headers_claiming_gigabytes_are_refused_before_reading(isolated):
    """Keras's npz is compressed, so a member may inflate: each header is checked against
    the dataset and the zip directory, and the total against the file's size, first."""
    arrays = make_arrays()
    path = isolated / "mnist.npz"
    np.savez(path, **arrays)
    data = bytearray(path.read_bytes())
    at = data.index(b"'shape': (5, 28, 28)")  # x_train's header, in place: same length
    data[at : at + 20] = b"'shape': (9999999,28"[:20]
    path.write_bytes(bytes(data))
    error, peak = _peak_bytes(lambda: mnist.load_data(path))
    assert isinstance(error, idx.IDXError) and "mnist.npz" in str(error), error
    assert peak < 5 * 2**20
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:  # 39 MB of zeros, deflated
        for key, a in {**arrays, "x_train": np.zeros((50_000, 28, 28), np.uint8)}.items():
            z.writestr(f"{key}.npy", _npy(a))
    error, peak = _peak_bytes(lambda: mnist.load_data(path))
    assert isinstance(error, idx.IDXError) and "more than 100× the file's size" in str(error)
    assert peak < 5 * 2**20


def test_gzip_bombs_are_refused_or_cut_off(tmp_path):
    """A header declaring 10⁹ labels in a small .gz is refused unread; a stream that
    inflates past what its header declares is read one byte past it, no further."""
    declared = tmp_path / "declared-labels.gz"
    declared.write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 10**9) + bytes(100)))
    error, peak = _peak_bytes(lambda: idx.read_idx(declared))
    assert isinstance(error, idx.IDXError) and "gzip bomb" in str(error), error
    assert "declared-labels.gz" in str(error) and peak < 2**20

    inflating = tmp_path / "inflating-labels.gz"
    with gzip.open(inflating, "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 10))
        for _ in range(64):
            f.write(bytes(2**20))  # 64 MB of zeros behind a header that declares 10 labels
    error, peak = _peak_bytes(lambda: idx.read_idx(inflating))
    assert isinstance(error, idx.IDXError) and "payload size mismatch" in str(error), error
    assert "file has 19 bytes" in str(error) and peak < 2**20


def test_tinynn_data_naming_a_file_says_so(isolated, monkeypatch):
    (isolated / "datasets.tar").write_bytes(b"x")
    monkeypatch.setenv(base.DATA_VAR, str(isolated / "datasets.tar"))
    with pytest.raises(NotADirectoryError, match=r"\$TINYNN_DATA=.*datasets\.tar is a file"):
        mnist.load_data()


def test_fashion_mnist_in_the_keras_cache_layout(isolated):
    write_idx_files(isolated / "keras" / "datasets" / "fashion-mnist", make_arrays(n_train=9),
                    dataset=fashion_mnist.FASHION_MNIST)
    assert len(fashion_mnist.load_data()[0][0]) == 9


def test_images_and_labels_must_agree(isolated):
    arrays = make_arrays()
    arrays["y_train"] = arrays["y_train"][:4]
    write_idx_files(isolated / "d", arrays)
    with pytest.raises(idx.IDXError, match="5 train images but 4 labels"):
        mnist.load_data(isolated / "d")


def test_labels_must_be_classes(isolated):
    arrays = make_arrays()
    arrays["y_test"][0] = 10
    write_idx_files(isolated / "d", arrays)
    with pytest.raises(idx.IDXError, match="label 10 is not below 10"):
        mnist.load_data(isolated / "d")


# ---------------------------------------------------------------- downloads


class Mirror:
    """An HTTP server on 127.0.0.1 serving {path: bytes}, counting requests."""

    def __init__(self, files: dict[str, bytes], lie_about_length: bool = False,
                 break_mid_transfer: bool = False):
        self.files, self.requests = files, []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the stdlib's name)
                mirror.requests.append(self.path)
                body = mirror.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                if break_mid_transfer:  # a chunk that promises 1000 bytes, then hangs up
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"3e8\r\n" + body[:10])
                    self.close_connection = True
                    return
                length = len(body) + (1000 if lie_about_length else 0)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def tiny_dataset(arrays, mirrors) -> tuple[base.ImageDataset, dict[str, bytes]]:
    """A dataset spec for ``arrays`` whose digests are those of the files served."""
    files, served = {}, {}
    for key, (name, _) in mnist.MNIST.files.items():
        data = idx_bytes(arrays[key])
        files[key] = (name, hashlib.sha256(data).hexdigest())
        served[name] = gzip.compress(data)
    return base.ImageDataset(name="tiny", files=files, mirrors=tuple(mirrors)), served


def cached_files(isolated) -> list[str]:
    directory = isolated / "cache" / "tiny"
    return sorted(os.listdir(directory)) if directory.exists() else []


def test_download_good_files_then_use_the_cache(isolated):
    arrays = make_arrays()
    _, served = tiny_dataset(arrays, [])
    mirror = Mirror(served)
    try:
        spec, _ = tiny_dataset(arrays, [mirror.url])
        (x_train, _), (_, y_test) = base.load(spec)
        np.testing.assert_array_equal(x_train, arrays["x_train"])
        np.testing.assert_array_equal(y_test, arrays["y_test"])
        assert len(mirror.requests) == 4
        assert cached_files(isolated) == sorted(served)
        base.load(spec)  # from the cache now
        assert len(mirror.requests) == 4
    finally:
        mirror.close()


def test_corrupt_file_is_refused_and_nothing_is_cached(isolated):
    arrays = make_arrays()
    spec, served = tiny_dataset(arrays, [])
    name = "train-images-idx3-ubyte.gz"
    served[name] = gzip.compress(idx_bytes(arrays["x_train"] // 2 + 1))
    mirror = Mirror(served)
    try:
        spec = base.ImageDataset(name="tiny", files=spec.files, mirrors=(mirror.url,))
        with pytest.raises(DownloadError, match="checksum mismatch"):
            base.load(spec)
        assert name not in cached_files(isolated)
        assert not any(f.endswith(".part") for f in cached_files(isolated))
    finally:
        mirror.close()


def test_dead_mirror_then_a_good_one(isolated):
    arrays = make_arrays()
    _, served = tiny_dataset(arrays, [])
    empty, good = Mirror({}), Mirror(served)
    try:
        spec, _ = tiny_dataset(arrays, [dead_url(), empty.url, good.url])
        (x_train, _), _ = base.load(spec)
        np.testing.assert_array_equal(x_train, arrays["x_train"])
        assert len(empty.requests) == 4  # each file: 404 there, then the good mirror
    finally:
        empty.close()
        good.close()


def test_a_mirror_breaking_mid_transfer_moves_on_to_the_next(isolated):
    arrays = make_arrays()
    _, served = tiny_dataset(arrays, [])
    broken, good = Mirror(served, break_mid_transfer=True), Mirror(served)
    try:
        spec, _ = tiny_dataset(arrays, [broken.url, good.url])
        (x_train, _), _ = base.load(spec)
        np.testing.assert_array_equal(x_train, arrays["x_train"])
        assert len(broken.requests) == len(good.requests) == 4
    finally:
        broken.close()
        good.close()


def test_short_transfer_is_refused(isolated):
    arrays = make_arrays()
    _, served = tiny_dataset(arrays, [])
    mirror = Mirror(served, lie_about_length=True)
    try:
        spec, _ = tiny_dataset(arrays, [mirror.url])
        with pytest.raises(DownloadError):
            base.load(spec)
        assert cached_files(isolated) == []
    finally:
        mirror.close()


def test_offline_error_says_where_to_put_the_files(isolated):
    spec, _ = tiny_dataset(make_arrays(), [dead_url(), dead_url()])
    with pytest.raises(DownloadError) as info:
        base.load(spec)
    message = str(info.value)
    assert "TINYNN_DATA" in message and str(isolated / "cache" / "tiny") in message
    assert message.count("http://127.0.0.1") == 2  # both mirrors' failures are listed
    assert "--data-dir" in message and "TINYNN_DATA=DIR make demo" in message
    assert not (isolated / "cache").exists()  # no empty cache folder left behind
