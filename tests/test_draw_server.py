"""examples/draw.py without a browser: the HTTP contract, and where the model comes from
(examples/draw_models.py).

The server runs on a free port in a thread, with the notebook's hidden model
at its initial (random) weights, again with a small convnet likewise, and with
both, as the command serves them, a request's "model" choosing: the contract does
not need a trained model. Only ``train`` and ``train_convnet`` read MNIST.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import tinynn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import draw  # noqa: E402
import draw_models  # noqa: E402
from draw_preprocess import preprocess  # noqa: E402
from mnist import build  # noqa: E402


def hidden_model(seed: int = 0) -> tinynn.Sequential:
    tinynn.utils.set_random_seed(seed)
    model = build("hidden")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def small_convnet(seed: int = 0, activation: str = "relu") -> tinynn.Sequential:
    """Keras's MNIST convnet with fewer filters (4 and 6), at its initial weights."""
    tinynn.utils.set_random_seed(seed)
    model = tinynn.Sequential([
        tinynn.Input(shape=(28, 28, 1)),
        tinynn.layers.Conv2D(4, 3, activation=activation),
        tinynn.layers.MaxPooling2D(2),
        tinynn.layers.Conv2D(6, 3, activation=activation),
        tinynn.layers.MaxPooling2D(2),
        tinynn.layers.Flatten(),
        tinynn.layers.Dropout(0.5),
        tinynn.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def model():
    return hidden_model()


@pytest.fixture(scope="module")
def convnet():
    return small_convnet()


def _serve(*models):
    server = draw.make_server([draw_models.Reader(m) for m in models], port=0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def port(model):
    yield from _serve(model)


@pytest.fixture(scope="module")
def convnet_port(convnet):
    yield from _serve(convnet)


@pytest.fixture(scope="module")
def both_port(model, convnet):
    """Both models, as the command serves them without --model (the convnet the default)."""
    yield from _serve(model, convnet)


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict | bytes]:
    """(status, JSON answer or raw bytes) of one request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.getheader("Content-Type") == "application/json":
        return response.status, json.loads(data)
    return response.status, data


def post(port: int, path: str, body: object) -> tuple[int, dict]:
    return request(port, "POST", path, json.dumps(body).encode(),
                   {"Content-Type": "application/json"})


def raw(port: int, data: bytes) -> tuple[int, dict]:
    """Send bytes as they are, stop sending, and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def expected_answer(model, pixels: np.ndarray) -> dict:
    """What /predict should say, computed here with NumPy from the weights."""
    w1, b1, w2, b2 = model.get_weights()
    hidden = np.maximum(pixels @ w1 + b1, 0)
    logits = hidden @ w2 + b2
    p = np.exp(logits - logits.max())
    return {"prediction": int(logits.argmax()), "probabilities": p / p.sum(), "hidden": hidden}


def check_answer(answer: dict, expected: dict) -> None:
    assert set(answer) >= {"prediction", "probabilities", "hidden"}
    assert answer["prediction"] == expected["prediction"]
    assert np.allclose(answer["probabilities"], expected["probabilities"], atol=1e-5)
    assert np.allclose(answer["hidden"], expected["hidden"], rtol=1e-5, atol=1e-5)
    assert sum(answer["probabilities"]) == pytest.approx(1)


def images(n: int, seed: int = 1) -> np.ndarray:
    """Random sparse images in [0, 1], as float32 (the model's precision)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 784)) * (rng.random((n, 784)) < 0.2)
    return x.astype(np.float32)


# ------------------------------------------------------------------ /predict


def test_predict_answers_digit_probabilities_and_hidden_units(port, model):
    for pixels in [np.zeros(784, np.float32), np.ones(784, np.float32), *images(3)]:
        status, answer = post(port, "/predict", {"pixels": pixels.tolist()})
        assert status == 200
        assert set(answer) == {"model", "prediction", "probabilities", "hidden"}
        assert answer["model"] == "hidden"
        assert len(answer["probabilities"]) == 10 and len(answer["hidden"]) == 100
        check_answer(answer, expected_answer(model, pixels.astype(np.float64)))


def _pixels(**changes) -> list:
    pixels = [0.25] * 784
    for index, value in changes.items():
        pixels[int(index[1:])] = value
    return pixels


BAD_PREDICT = [
    (b"{not json", "not valid JSON"),
    (b'{"pixels": [0.5, 0.5', "not valid JSON"),
    (b"\xff\xfe\x00", "not valid JSON"),
    (b"[" * 200_000, "not valid JSON"),  # deeper than the parser's recursion limit
    (b"", "not valid JSON"),
    (b"[]", "JSON object"),
    (b'"pixels"', "JSON object"),
    (json.dumps({"pixel": [0] * 784}).encode(), "missing ['pixels']"),
    (json.dumps({"pixels": [0] * 784, "label": 3}).encode(), "unexpected ['label']"),
    (json.dumps({"pixels": "0" * 784}).encode(), "pixels must be a list of 784 numbers"),
    (json.dumps({"pixels": [0] * 783}).encode(), "pixels must have 784 values, got 783"),
    (json.dumps({"pixels": [0] * 785}).encode(), "pixels must have 784 values, got 785"),
    (json.dumps({"pixels": []}).encode(), "pixels must have 784 values, got 0"),
    (json.dumps({"pixels": [[0] * 28] * 28}).encode(), "pixels must have 784 values, got 28"),
    (json.dumps({"pixels": _pixels(p5=float("nan"))}).encode(), "pixels[5] is nan"),
    (json.dumps({"pixels": _pixels(p6=float("inf"))}).encode(), "pixels[6] is inf"),
    (json.dumps({"pixels": _pixels(p7=float("-inf"))}).encode(), "pixels[7] is -inf"),
    (json.dumps({"pixels": _pixels(p0=1e999)}).encode(), "pixels[0] is inf"),
    (json.dumps({"pixels": _pixels(p9=1.5)}).encode(), "pixels[9] is 1.5"),
    (json.dumps({"pixels": _pixels(p9=-0.01)}).encode(), "pixels[9] is -0.01"),
    (json.dumps({"pixels": _pixels(p1=10**400)}).encode(), "every value must be in 0..1"),
    (json.dumps({"pixels": _pixels(p2=True)}).encode(), "pixels[2] is true"),
    (json.dumps({"pixels": _pixels(p3="0.5")}).encode(), 'pixels[3] is "0.5"'),
    (json.dumps({"pixels": _pixels(p4=None)}).encode(), "pixels[4] is null"),
    (json.dumps({"pixels": _pixels(p8=[0.5])}).encode(), "pixels[8] is [0.5]"),
]


@pytest.mark.parametrize("body, message", BAD_PREDICT,
                         ids=[f"{m}" for _, m in BAD_PREDICT])
def test_bad_predict_requests_get_400_naming_the_problem(port, model, body, message):
    status, answer = request(port, "POST", "/predict", body)
    assert status == 400
    assert message in answer["error"]
    # ...and the server carries on.
    status, answer = post(port, "/predict", {"pixels": [0.0] * 784})
    assert status == 200
    check_answer(answer, expected_answer(model, np.zeros(784)))


def test_bodies_over_one_megabyte_get_413(port):
    pixels = b'{"pixels": [' + b",".join([b"0"] * 784) + b"]}"
    at_limit = pixels + b" " * (draw.MAX_BODY - len(pixels))  # JSON allows trailing spaces
    assert request(port, "POST", "/predict", at_limit)[0] == 200
    status, answer = request(port, "POST", "/predict", at_limit + b" ")
    assert status == 413
    assert f"the limit is {draw.MAX_BODY}" in answer["error"]
    # A huge body is refused from its Content-Length alone, without waiting for it.
    status, answer = raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Length: 1000000000000\r\n\r\n")
    assert status == 413 and "1000000000000 bytes" in answer["error"]
    assert request(port, "GET", "/")[0] == 200


@pytest.mark.parametrize("data, status, message", [
    (b"POST /predict HTTP/1.0\r\n\r\n", 411, "Content-Length is required"),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     411, "not chunked"),
    (b"POST /predict HTTP/1.0\r\nContent-Length: ten\r\n\r\n", 400, "byte count"),
    (b"POST /predict HTTP/1.0\r\nContent-Length: -5\r\n\r\n", 400, "byte count"),
    (b"POST /predict HTTP/1.0\r\nContent-Length: 100\r\n\r\n{\"pix", 400, "ended after 5"),
    (b"POST /nowhere HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", 404, "no such endpoint"),
    (b"GET /predict HTTP/1.0\r\n\r\n", 405, "takes POST"),
    (b"GET /secrets HTTP/1.0\r\n\r\n", 404, "no such page"),
])
def test_malformed_http_gets_an_error_and_the_server_carries_on(port, data, status, message):
    got, answer = raw(port, data)
    assert (got, message in answer["error"]) == (status, True), answer
    assert post(port, "/predict", {"pixels": [0.0] * 784})[0] == 200


def test_a_client_that_vanishes_mid_body_does_not_stop_the_server(port, capfd):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.0\r\nContent-Length: 5000\r\n\r\n{\"pixels\": [")
    assert post(port, "/predict", {"pixels": [0.0] * 784})[0] == 200
    assert "Traceback" not in capfd.readouterr().err  # an expected event, not a crash


def ask_concurrently(port: int, x: np.ndarray, rounds: int, workers: int, check, expected,
                     model: str | None = None) -> None:
    """Send every image of ``x`` to /predict ``rounds`` times from ``workers`` threads at once
    (asking for ``model`` if given), and ``check`` each answer against ``expected[i]``."""
    def ask(i):
        body = {"pixels": x[i].tolist(), **({"model": model} if model else {})}
        return i, post(port, "/predict", body)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(ask, [i for _ in range(rounds) for i in range(len(x))]))
    for i, (status, answer) in results:
        assert status == 200
        check(answer, expected[i])


def test_concurrent_requests_each_get_their_own_answer(port, model):
    x = images(24, seed=2)
    expected = [expected_answer(model, row.astype(np.float64)) for row in x]
    ask_concurrently(port, x, 4, 12, check_answer, expected)


# ------------------------------------------------------------------ /predict-drawing and /


def drawing(height=120, width=90) -> np.ndarray:
    """A canvas's alpha channel with a thick 7 on it, as integers 0..255."""
    ink = np.zeros((height, width), np.int64)
    ink[20:30, 10:80] = 255                    # the bar
    for row in range(30, 110):                 # the diagonal, anti-aliased at its edges
        col = 75 - (row - 30) * 40 // 80
        ink[row, col - 6 : col + 6] = 255
        ink[row, col - 7] = ink[row, col + 6] = 90
    return ink


def test_predict_drawing_preprocesses_and_returns_the_models_input(port, model):
    ink = drawing()
    status, answer = post(port, "/predict-drawing",
                          {"width": 90, "height": 120, "ink": ink.ravel().tolist()})
    assert status == 200
    pixels = np.array(answer["input"], np.float32)
    assert np.array_equal(pixels, preprocess(ink / 255).ravel())
    check_answer(answer, expected_answer(model, pixels.astype(np.float64)))
    # The input it returns, sent back to /predict, gives the same answer exactly.
    again = post(port, "/predict", {"pixels": answer["input"]})[1]
    assert again == {k: answer[k] for k in ("model", "prediction", "probabilities", "hidden")}


@pytest.mark.parametrize("change, message", [
    ({"width": 0}, "width must be an integer in 1..2048, got 0"),
    ({"height": 3000}, "height must be an integer in 1..2048, got 3000"),
    ({"width": 90.0}, "width must be an integer"),
    ({"width": 91}, "ink must be a list of width × height = 10920 integers, got 10800"),
    ({"ink": "abc"}, 'got "abc"'),
    ({"ink": [0.5] * 10800}, "ink[0] is 0.5"),
    ({"ink": [256] * 10800}, "ink[0] is 256: every value must be in 0..255"),
    ({"ink": [0] * 10800}, "the drawing is empty"),
    ({"ink": None}, "ink must be a list"),
])
def test_bad_drawings_get_400(port, change, message):
    body = {"width": 90, "height": 120, "ink": drawing().ravel().tolist(), **change}
    status, answer = post(port, "/predict-drawing", body)
    assert status == 400
    assert message in answer["error"]


def test_the_page_is_served_whole_and_offline(port):
    status, page = request(port, "GET", "/")
    assert status == 200
    text = page.decode()
    for element in ('id="canvas"', 'id="clear"', 'id="prediction"', 'id="probabilities"',
                    'id="input-preview"', 'id="hidden"', 'id="feature-maps"', "pointerdown",
                    'id="model-switch"', "/predict-drawing", '"/models"'):
        assert element in text
    assert "://" not in text  # nothing fetched from elsewhere: it works offline


# ------------------------------------------------------------------ a convnet: its feature maps


def conv_valid(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 'valid' convolution of one image (h, w, c) by a kernel (kh, kw, c, f), in NumPy."""
    windows = np.lib.stride_tricks.sliding_window_view(x, kernel.shape[:2], axis=(0, 1))
    return np.einsum("ijcab,abcf->ijf", windows, kernel) + bias


def pool(x: np.ndarray) -> np.ndarray:
    """2×2 max pooling of one image (h, w, c), dropping an odd last row or column."""
    h, w = x.shape[0] // 2, x.shape[1] // 2
    return x[: 2 * h, : 2 * w].reshape(h, 2, w, 2, -1).max(axis=(1, 3))


def expected_convnet_answer(convnet, pixels: np.ndarray, activation=lambda z: np.maximum(z, 0)):
    """What /predict should say for ``small_convnet``, computed here with NumPy: the
    prediction, the probabilities, and each Conv2D layer's maps (h, w, maps)."""
    k1, b1, k2, b2, w, b = (a.astype(np.float64) for a in convnet.get_weights())
    first = activation(conv_valid(pixels.reshape(28, 28, 1), k1, b1))
    second = activation(conv_valid(pool(first), k2, b2))
    logits = pool(second).ravel() @ w + b  # Flatten is row-major; Dropout is off
    p = np.exp(logits - logits.max())
    return {"prediction": int(logits.argmax()), "probabilities": p / p.sum(),
            "feature_maps": [first, second]}


def decoded(layer: dict) -> np.ndarray:
    """A layer of the answer's ``feature_maps`` back as values, shape (h, w, maps)."""
    h, w, count = layer["shape"]
    maps = np.array(layer["maps"], np.float64)
    low, high = np.array(layer["low"])[:, None], np.array(layer["high"])[:, None]
    return (low + maps / 255 * (high - low)).reshape(count, h, w).transpose(1, 2, 0)


def check_convnet_answer(answer: dict, expected: dict) -> None:
    assert set(answer) >= {"prediction", "probabilities", "feature_maps"}
    assert "hidden" not in answer
    assert answer["prediction"] == expected["prediction"]
    assert np.allclose(answer["probabilities"], expected["probabilities"], atol=1e-5)
    assert sum(answer["probabilities"]) == pytest.approx(1)
    assert len(answer["feature_maps"]) == len(expected["feature_maps"])
    for layer, want in zip(answer["feature_maps"], expected["feature_maps"]):
        h, w, count = want.shape
        assert layer["shape"] == [h, w, count]
        assert len(layer["maps"]) == count == len(layer["low"]) == len(layer["high"])
        assert all(len(m) == h * w and all(type(v) is int and 0 <= v <= 255 for v in m)
                   for m in layer["maps"])
        low, high = np.array(layer["low"]), np.array(layer["high"])
        assert np.isfinite(low).all() and np.isfinite(high).all()
        assert np.allclose(low, np.minimum(want.min(axis=(0, 1)), 0), atol=1e-5)
        assert np.allclose(high, np.maximum(want.max(axis=(0, 1)), 0), atol=1e-5)
        # Rounded to 1/255 of each map's range: within half a step (and float32's error).
        assert np.all(np.abs(decoded(layer) - want) <= (high - low) / 510 + 1e-5)


def test_a_convnet_answers_its_feature_maps(convnet_port, convnet):
    for pixels in [np.zeros(784, np.float32), np.ones(784, np.float32), *images(3)]:
        status, answer = post(convnet_port, "/predict", {"pixels": pixels.tolist()})
        assert status == 200
        assert set(answer) == {"model", "prediction", "probabilities", "feature_maps"}
        assert [layer["name"] for layer in answer["feature_maps"]] == [
            layer.name for layer in convnet.layers if isinstance(layer, tinynn.layers.Conv2D)]
        check_convnet_answer(answer, expected_convnet_answer(convnet, pixels.astype(np.float64)))


def test_kerass_convnet_shows_32_maps_of_26x26_and_64_of_11x11():
    answer = draw_models.Reader(build("convnet")).read(images(1, seed=5)[0])
    assert [layer["shape"] for layer in answer["feature_maps"]] == [[26, 26, 32], [11, 11, 64]]
    for layer in answer["feature_maps"]:
        maps = np.array(layer["maps"])
        assert maps.shape == (layer["shape"][2], layer["shape"][0] * layer["shape"][1])
        assert maps.min() >= 0 and maps.max() == 255  # each map scaled by itself
        assert np.isfinite(layer["low"]).all() and np.isfinite(layer["high"]).all()
    assert len(json.dumps(answer)) < 200_000  # what the page fetches for every stroke


def test_feature_maps_are_scaled_map_by_map():
    maps = np.stack([np.array([[0.0, 2.0], [1.0, 0.5]]),      # ReLU-like: 0 is black
                     np.array([[-1.0, 3.0], [1.0, 0.0]]),     # negative values too
                     np.zeros((2, 2)),                        # finds nothing: all black
                     np.array([[4.0, 4.0], [4.0, 4.0]])], -1)  # a constant: white
    answer = draw_models.feature_maps("conv", maps)
    assert answer == {"name": "conv", "shape": [2, 2, 4],
                      "maps": [[0, 255, 128, 64], [0, 255, 128, 64], [0, 0, 0, 0],
                               [255, 255, 255, 255]],
                      "low": [0.0, -1.0, 0.0, 0.0], "high": [2.0, 3.0, 0.0, 4.0]}


def test_a_convnets_maps_before_their_activation_are_scaled_from_their_least_value():
    convnet = small_convnet(seed=2, activation=None)
    pixels = images(1, seed=6)[0]
    answer = draw_models.Reader(convnet).read(pixels)
    check_convnet_answer(answer, expected_convnet_answer(convnet, pixels.astype(np.float64),
                                                         activation=lambda z: z))
    assert min(answer["feature_maps"][0]["low"]) < 0


def test_predict_drawing_on_a_convnet_returns_its_input_and_maps(convnet_port, convnet):
    ink = drawing()
    status, answer = post(convnet_port, "/predict-drawing",
                          {"width": 90, "height": 120, "ink": ink.ravel().tolist()})
    assert status == 200
    assert set(answer) == {"model", "prediction", "probabilities", "feature_maps", "input"}
    pixels = np.array(answer["input"], np.float32)
    assert np.array_equal(pixels, preprocess(ink / 255).ravel())
    check_convnet_answer(answer, expected_convnet_answer(convnet, pixels.astype(np.float64)))
    again = post(convnet_port, "/predict", {"pixels": answer["input"]})[1]
    assert again == {k: answer[k] for k in ("model", "prediction", "probabilities",
                                            "feature_maps")}


@pytest.mark.parametrize("path, body, message", [
    ("/predict", b"{not json", "not valid JSON"),
    ("/predict", json.dumps({"pixels": [0] * 783}).encode(), "pixels must have 784 values"),
    ("/predict", json.dumps({"pixels": _pixels(p5=float("nan"))}).encode(), "pixels[5] is nan"),
    ("/predict", json.dumps({"pixels": _pixels(p9=1.5)}).encode(), "pixels[9] is 1.5"),
    ("/predict", json.dumps({"pixels": [[0] * 28] * 28}).encode(), "784 values, got 28"),
    ("/predict-drawing", json.dumps({"width": 2, "height": 2, "ink": [0] * 4}).encode(),
     "the drawing is empty"),
    ("/predict-drawing", json.dumps({"width": 2, "height": 2, "ink": [300] * 4}).encode(),
     "ink[0] is 300"),
])
def test_a_convnet_server_refuses_bad_requests_too(convnet_port, convnet, path, body, message):
    status, answer = request(convnet_port, "POST", path, body)
    assert status == 400
    assert message in answer["error"]
    status, answer = post(convnet_port, "/predict", {"pixels": [0.0] * 784})
    assert status == 200
    check_convnet_answer(answer, expected_convnet_answer(convnet, np.zeros(784)))


def test_concurrent_requests_to_a_convnet_each_get_their_own_maps(convnet_port, convnet):
    x = images(8, seed=7)
    expected = [expected_convnet_answer(convnet, row.astype(np.float64)) for row in x]
    ask_concurrently(convnet_port, x, 3, 8, check_convnet_answer, expected)


HIDDEN_INFO = {"kind": "hidden", "layers": ["Dense(100, relu)", "Dense(10, sigmoid)"],
               "hidden": 100}


def test_models_tells_the_page_what_it_will_show(port, convnet_port, both_port):
    assert request(port, "GET", "/models") == (200, {"default": "hidden",
                                                     "models": [HIDDEN_INFO]})
    status, answer = request(convnet_port, "GET", "/models")
    assert (status, answer["default"], len(answer["models"])) == (200, "convnet", 1)
    answer = answer["models"][0]
    assert answer["kind"] == "convnet"
    assert answer["layers"] == ["Conv2D(4, 3×3, relu)", "MaxPooling2D(2×2)",
                                "Conv2D(6, 3×3, relu)", "MaxPooling2D(2×2)", "Flatten",
                                "Dropout(0.5)", "Dense(10, softmax)"]
    assert [layer["shape"] for layer in answer["feature_maps"]] == [[26, 26, 4], [11, 11, 6]]
    drawn = post(convnet_port, "/predict", {"pixels": [0.0] * 784})[1]["feature_maps"]
    assert [m["name"] for m in answer["feature_maps"]] == [m["name"] for m in drawn]
    # Both models: the convnet first, and the default.
    assert request(both_port, "GET", "/models") == (200, {"default": "convnet",
                                                          "models": [answer, HIDDEN_INFO]})
    # It takes GET only; the server carries on. The old /model is gone.
    status, answer = raw(port, b"POST /models HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
    assert (status, "/models takes GET" in answer["error"]) == (405, True)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/models", body=b"", headers={"Content-Length": "0"})
    response = connection.getresponse()
    assert (response.status, response.getheader("Allow")) == (405, "GET")
    connection.close()
    assert request(port, "GET", "/model")[0] == 404
    assert request(port, "GET", "/models")[0] == 200


# ------------------------------------------------------------------ both models: "model" chooses


def test_a_request_chooses_its_model_and_the_convnet_is_the_default(both_port, model, convnet):
    for pixels in [np.zeros(784, np.float32), *images(2, seed=9)]:
        as_hidden = expected_answer(model, pixels.astype(np.float64))
        as_convnet = expected_convnet_answer(convnet, pixels.astype(np.float64))
        for body, check, expected in [
            ({}, check_convnet_answer, as_convnet),
            ({"model": "convnet"}, check_convnet_answer, as_convnet),
            ({"model": "hidden"}, check_answer, as_hidden),
        ]:
            status, answer = post(both_port, "/predict", {"pixels": pixels.tolist(), **body})
            assert (status, answer["model"]) == (200, body.get("model", "convnet"))
            check(answer, expected)
    ink = drawing().ravel().tolist()
    for kind, key in [("hidden", "hidden"), ("convnet", "feature_maps")]:
        status, answer = post(both_port, "/predict-drawing",
                              {"model": kind, "width": 90, "height": 120, "ink": ink})
        assert (status, answer["model"], key in answer) == (200, kind, True)
        again = post(both_port, "/predict", {"model": kind, "pixels": answer["input"]})[1]
        assert again == {k: answer[k] for k in again}


def test_concurrent_requests_to_both_models_each_get_their_own_answer(both_port, model,
                                                                      convnet):
    x = images(8, seed=10)
    hidden = [expected_answer(model, row.astype(np.float64)) for row in x]
    maps = [expected_convnet_answer(convnet, row.astype(np.float64)) for row in x]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(ask_concurrently, both_port, x, 2, 6, check_answer, hidden,
                                 "hidden"),
                     pool.submit(ask_concurrently, both_port, x, 2, 6, check_convnet_answer,
                                 maps, "convnet")]:
            done.result()


@pytest.mark.parametrize("server, asked, message", [
    ("both", "resnet", 'model must be "convnet" or "hidden", got "resnet"'),
    ("both", "Convnet", 'got "Convnet"'),
    ("both", None, "model must be"),
    ("both", 1, "got 1"),
    ("both", ["hidden"], 'got ["hidden"]'),
    ("hidden", "convnet", 'model "convnet" is not served here (draw.py --model serves one '
                          'model): ask for "hidden"'),
    ("convnet", "hidden", 'model "hidden" is not served here'),
])
@pytest.mark.parametrize("path", ["/predict", "/predict-drawing"])
def test_a_model_the_server_does_not_hold_gets_400_naming_the_field(
        port, convnet_port, both_port, server, asked, message, path):
    at = {"both": both_port, "hidden": port, "convnet": convnet_port}[server]
    body = ({"pixels": [0.0] * 784} if path == "/predict" else
            {"width": 90, "height": 120, "ink": drawing().ravel().tolist()})
    status, answer = post(at, path, {**body, "model": asked})
    assert (status, message in answer["error"]) == (400, True), answer
    assert post(at, path, body)[0] == 200


def test_make_server_takes_one_model_of_each_kind(model, convnet):
    hidden, maps = draw_models.Reader(model), draw_models.Reader(convnet)
    for readers, default, message in [([], None, "one model of each kind at most, got []"),
                                      ([hidden, hidden], None, "got ['hidden', 'hidden']"),
                                      ([hidden], "convnet", "'convnet' is not among ['hidden']")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            draw.make_server(readers, port=0, default=default)
    server = draw.make_server([hidden, maps], port=0, default="hidden")
    try:
        assert (list(server.readers), server.default) == (["convnet", "hidden"], "hidden")
    finally:
        server.server_close()


# ------------------------------------------------------------------ the model


def test_model_option_loads_that_file(tmp_path, model, capsys):
    path = tmp_path / "digits.npz"
    model.save(path)
    loaded = draw_models.obtain_model(path)
    assert f"Loaded the model from {path}" in capsys.readouterr().out
    x = images(5)
    assert np.array_equal(loaded.predict(x), model.predict(x))


def test_model_option_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(SystemExit, match=f"--model {missing}: no such file"):
        draw_models.obtain_model(missing)
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"PK\x03\x04 this is not a model")
    with pytest.raises(SystemExit, match=f"--model {damaged}: not a readable tinynn file"):
        draw_models.obtain_model(damaged)
    simple = tmp_path / "simple.npz"
    build("simple").save(simple)
    with pytest.raises(SystemExit, match=f"--model {simple}: the model has no hidden layer"):
        draw_models.obtain_model(simple)
    assert not missing.exists()


def test_without_model_option_the_cached_model_is_used(tmp_path, monkeypatch, model, capsys):
    monkeypatch.setenv("TINYNN_CACHE", str(tmp_path))
    monkeypatch.setattr(draw_models, "train", lambda path: pytest.fail("trained despite a cache"))
    path = draw_models.default_model_path()
    assert path == tmp_path / "models" / "mnist_hidden.npz"
    path.parent.mkdir()
    model.save(path)
    loaded = draw_models.obtain_model(None)
    assert "saved by an earlier run" in capsys.readouterr().out
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights()))


def test_without_a_usable_cache_a_model_is_trained(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYNN_CACHE", str(tmp_path))
    trained = []
    monkeypatch.setattr(draw_models, "train", lambda path: trained.append(path) or hidden_model(1))
    draw_models.obtain_model(None)
    assert trained == [draw_models.default_model_path()]
    assert "No saved model" in capsys.readouterr().out
    draw_models.default_model_path().parent.mkdir()
    draw_models.default_model_path().write_bytes(b"truncated")
    draw_models.obtain_model(None)
    assert trained == [draw_models.default_model_path()] * 2
    assert "is unusable" in capsys.readouterr().out


def test_train_saves_a_model_that_reads_digits(mnist_data, tmp_path):
    path = tmp_path / "models" / "mnist_hidden.npz"
    draw_models.train(path, epochs=1)
    model = draw_models.obtain_model(path)
    (_, _), (x_test, y_test) = mnist_data
    predicted = model.predict(x_test[:2000].reshape(-1, 784) / 255).argmax(axis=1)
    assert np.mean(predicted == y_test[:2000]) > 0.9


def test_the_kind_of_model_is_read_from_its_layers(tmp_path, convnet, model, capsys):
    assert (draw_models.model_kind(convnet), draw_models.model_kind(model)) == ("convnet", "hidden")
    assert draw_models.conv_layers(convnet) == [convnet.layers[0], convnet.layers[2]]
    path = tmp_path / "convnet.npz"
    convnet.save(path)
    loaded = draw_models.obtain_model(path)
    assert f"Loaded the model from {path}" in capsys.readouterr().out
    x = images(3).reshape(3, 28, 28, 1)
    assert np.array_equal(loaded.predict(x), convnet.predict(x))
    assert draw_models.obtain_model(path, "convnet") is not None
    with pytest.raises(SystemExit, match=f"--model {path} holds a convnet model, but "
                                         "--model-kind says hidden"):
        draw_models.obtain_model(path, "hidden")


def test_a_convnet_the_page_cannot_show_is_refused():
    conv = tinynn.layers.Conv2D
    for layers, message in [
        ([conv(2, 3, input_shape=(20, 20, 1)), tinynn.layers.Flatten(), tinynn.layers.Dense(10)],
         "28×28"),
        ([conv(2, 3, input_shape=(28, 28, 1)), tinynn.layers.Flatten(), tinynn.layers.Dense(3)],
         "10 units"),
        ([conv(2, 3, input_shape=(28, 28, 1)), tinynn.layers.Flatten()], "10 units"),
    ]:
        with pytest.raises(ValueError, match=message):
            draw_models.model_kind(tinynn.Sequential(layers))
    with pytest.raises(ValueError, match="no Conv2D layer"):
        draw_models.conv_layers(hidden_model())
    # A convnet nested in a model, or fed flat pixels through a Reshape, is shown too.
    inner = small_convnet(seed=3)
    nested = tinynn.Sequential([inner])
    assert draw_models.conv_layers(nested) == draw_models.conv_layers(inner)
    flat = tinynn.Sequential([tinynn.layers.Reshape((28, 28, 1), input_shape=(784,)),
                              *inner.layers])  # the same layers
    pixels = images(1, seed=8)[0]
    assert draw_models.Reader(flat).read(pixels) == draw_models.Reader(inner).read(pixels)


def test_without_model_option_the_cached_convnet_is_used(tmp_path, monkeypatch, convnet,
                                                         model, capsys):
    monkeypatch.setenv("TINYNN_CACHE", str(tmp_path))
    monkeypatch.setattr(draw_models, "train_convnet",
                        lambda path: pytest.fail("trained despite a cache"))
    path = draw_models.default_model_path("convnet")
    assert path == tmp_path / "models" / "mnist_convnet.npz"
    path.parent.mkdir()
    convnet.save(path)
    model.save(draw_models.default_model_path("hidden"))  # beside it, kept for --model-kind hidden
    loaded = draw_models.obtain_model(None, "convnet")
    assert "saved by an earlier run" in capsys.readouterr().out
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), convnet.get_weights()))
    assert draw_models.model_kind(draw_models.obtain_model(None, "hidden")) == "hidden"


def test_without_a_usable_cached_convnet_one_is_trained(tmp_path, monkeypatch, model, capsys):
    monkeypatch.setenv("TINYNN_CACHE", str(tmp_path))
    trained = []
    monkeypatch.setattr(draw_models, "train_convnet",
                        lambda path: trained.append(path) or small_convnet(1))
    monkeypatch.setattr(draw_models, "train", lambda path: pytest.fail("trained the hidden model"))
    path = draw_models.default_model_path("convnet")
    assert draw_models.model_kind(draw_models.obtain_model(None, "convnet")) == "convnet"
    assert trained == [path]
    assert "No saved model" in capsys.readouterr().out
    path.parent.mkdir()
    model.save(path)  # a hidden model where the convnet should be
    draw_models.obtain_model(None, "convnet")
    assert trained == [path] * 2
    assert "is unusable (it is not a convnet model)" in capsys.readouterr().out


def test_train_convnet_saves_a_convnet_that_reads_digits(mnist_data, tmp_path, capsys):
    path = tmp_path / "models" / "mnist_convnet.npz"
    draw_models.train_convnet(path, samples=3000)
    out = capsys.readouterr().out
    assert float(out.split("Test accuracy: ")[1].split()[0]) > 0.85  # ~0.89 from 3,000 images
    assert f"Saved the model to {path}" in out
    model = draw_models.obtain_model(path, "convnet")
    (_, _), (x_test, y_test) = mnist_data
    predicted = model.predict(x_test[:2000, :, :, None] / 255).argmax(axis=1)
    assert np.mean(predicted == y_test[:2000]) > 0.85


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "linear"])
def test_probabilities_follow_the_output_activation(activation):
    tinynn.utils.set_random_seed(3)
    model = tinynn.Sequential([tinynn.layers.Dense(100, activation="relu", input_shape=(784,)),
                               tinynn.layers.Dense(10, activation=activation)])
    x = images(1, seed=4)
    answer = draw_models.Reader(model).read(x[0])
    outputs = model.predict(x)[0].astype(np.float64)
    if activation == "softmax":
        logits = np.log(outputs)
    elif activation == "sigmoid":
        logits = np.log(outputs / (1 - outputs))
    else:
        logits = outputs
    expected = np.exp(logits) / np.exp(logits).sum()
    assert np.allclose(answer["probabilities"], expected, rtol=1e-5)
    assert answer["prediction"] == int(np.argmax(expected))


def test_a_model_the_page_cannot_show_is_refused():
    flat = tinynn.Sequential([tinynn.layers.Flatten(input_shape=(28, 28)),
                              tinynn.layers.Dense(100, activation="relu"),
                              tinynn.layers.Dense(10, activation="sigmoid")])
    assert draw_models.hidden_layer(flat) is flat.layers[1]
    draw_models.Reader(flat)  # takes 28×28 inputs too
    for layers, message in [
        ([tinynn.layers.Dense(10, input_shape=(784,))], "no hidden layer"),
        ([tinynn.layers.Dense(5, input_shape=(784,)), tinynn.layers.Dense(3)], "10 units"),
        ([tinynn.layers.Dense(5, input_shape=(100,)), tinynn.layers.Dense(10)], "28×28"),
    ]:
        with pytest.raises(ValueError, match=message):
            draw_models.hidden_layer(tinynn.Sequential(layers))


# ------------------------------------------------------------------ the command


def test_the_command_serves_the_page_and_stops_on_ctrl_c(tmp_path, model):
    path = tmp_path / "digits.npz"
    model.save(path)
    env = {**os.environ, "TINYNN_CACHE": str(tmp_path / "cache")}
    script = ROOT / "examples" / "draw.py"
    # Ctrl+C as in a terminal, even if this test runs where SIGINT is ignored (a background
    # job), which the child would inherit.
    launcher = ("import runpy, signal, sys; signal.signal(signal.SIGINT, "
                "signal.default_int_handler); sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, str(script), "--port", "0", "--model", str(path),
         "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[0].startswith(f"Loaded the model from {path}")
        assert lines[1].startswith("Draw a digit at http://127.0.0.1:")
        port = int(lines[1].split("http://127.0.0.1:")[1].split("/")[0])
        assert request(port, "GET", "/")[0] == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "Stopped." in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert not (tmp_path / "cache").exists()  # --model given: the cache is not touched


def test_the_command_refuses_a_bad_port_and_a_busy_one(tmp_path, model, port, capsys):
    with pytest.raises(SystemExit) as e:
        draw.parse_args(["--port", "70000"])
    assert e.value.code == 2
    assert "--port must be in 0..65535, got 70000" in capsys.readouterr().err
    path = tmp_path / "digits.npz"
    model.save(path)
    with pytest.raises(SystemExit, match=f"cannot listen on 127.0.0.1:{port}"):
        draw.main(["--port", str(port), "--model", str(path)])


def test_the_command_serves_both_models_the_convnet_first_unless_told_otherwise(
        monkeypatch, model, convnet):
    asked, served = [], []

    def obtain(path, kind):
        asked.append((path, kind))
        return convnet if kind == "convnet" or path == "convnet.npz" else model

    def make_server(readers, host, port, quiet, default):
        served.append(([reader.kind for reader in readers], default))
        raise SystemExit("stop here")

    monkeypatch.setattr(draw, "obtain_model", obtain)
    monkeypatch.setattr(draw, "make_server", make_server)
    for argv in ([], ["--model-kind", "hidden"], ["--model", "convnet.npz"],
                 ["--model", "m.npz", "--model-kind", "hidden"]):
        with pytest.raises(SystemExit, match="stop here"):
            draw.main(argv)
    assert asked == [(None, "convnet"), (None, "hidden")] * 2 + [("convnet.npz", None),
                                                                 ("m.npz", "hidden")]
    assert served == [(["convnet", "hidden"], None), (["convnet", "hidden"], "hidden"),
                      (["convnet"], None), (["hidden"], "hidden")]


def test_the_command_refuses_an_unknown_model_kind(capsys):
    with pytest.raises(SystemExit) as e:
        draw.parse_args(["--model-kind", "resnet"])
    assert e.value.code == 2
    assert "invalid choice: 'resnet'" in capsys.readouterr().err
