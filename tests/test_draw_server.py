"""examples/draw.py without a browser: the HTTP contract, and where the model comes from.

The server runs on a free port in a thread, with the notebook's hidden model
at its initial (random) weights: the contract does not need a trained model.
"""

from __future__ import annotations

import http.client
import json
import os
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
from draw_preprocess import preprocess  # noqa: E402
from mnist import build  # noqa: E402


def hidden_model(seed: int = 0) -> tinynn.Sequential:
    tinynn.utils.set_random_seed(seed)
    model = build("hidden")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def model():
    return hidden_model()


@pytest.fixture(scope="module")
def port(model):
    server = draw.make_server(draw.Reader(model), port=0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


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
        assert set(answer) == {"prediction", "probabilities", "hidden"}
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


def test_concurrent_requests_each_get_their_own_answer(port, model):
    x = images(24, seed=2)
    expected = [expected_answer(model, row.astype(np.float64)) for row in x]

    def ask(i):
        return i, post(port, "/predict", {"pixels": x[i].tolist()})

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(ask, [i for _ in range(4) for i in range(len(x))]))
    for i, (status, answer) in results:
        assert status == 200
        check_answer(answer, expected[i])


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
    assert again == {k: answer[k] for k in ("prediction", "probabilities", "hidden")}


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
                    'id="input-preview"', 'id="hidden"', "pointerdown", "/predict-drawing"):
        assert element in text
    assert "://" not in text  # nothing fetched from elsewhere: it works offline


# ------------------------------------------------------------------ the model


def test_model_option_loads_that_file(tmp_path, model, capsys):
    path = tmp_path / "digits.npz"
    model.save(path)
    loaded = draw.obtain_model(path)
    assert f"Loaded the model from {path}" in capsys.readouterr().out
    x = images(5)
    assert np.array_equal(loaded.predict(x), model.predict(x))


def test_model_option_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(SystemExit, match=f"--model {missing}: no such file"):
        draw.obtain_model(missing)
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"PK\x03\x04 this is not a model")
    with pytest.raises(SystemExit, match=f"--model {damaged}: not a readable tinynn file"):
        draw.obtain_model(damaged)
    simple = tmp_path / "simple.npz"
    build("simple").save(simple)
    with pytest.raises(SystemExit, match=f"--model {simple}: the model has no hidden layer"):
        draw.obtain_model(simple)
    assert not missing.exists()


def test_without_model_option_the_cached_model_is_used(tmp_path, monkeypatch, model, capsys):
    monkeypatch.setenv("TINYNN_CACHE", str(tmp_path))
    monkeypatch.setattr(draw, "train", lambda path: pytest.fail("trained despite a cache"))
    path = draw.default_model_path()
    assert path == tmp_path / "models" / "mnist_hidden.npz"
    path.parent.mkdir()
    model.save(path)
    loaded = draw.obtain_model(None)
    assert "saved by an earlier run" in capsys.readouterr().out
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights()))


def test_without_a_usable_cache_a_model_is_trained(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYNN_CACHE", str(tmp_path))
    trained = []
    monkeypatch.setattr(draw, "train", lambda path: trained.append(path) or hidden_model(1))
    draw.obtain_model(None)
    assert trained == [draw.default_model_path()]
    assert "No saved model" in capsys.readouterr().out
    draw.default_model_path().parent.mkdir()
    draw.default_model_path().write_bytes(b"truncated")
    draw.obtain_model(None)
    assert trained == [draw.default_model_path()] * 2
    assert "is unusable" in capsys.readouterr().out


def test_train_saves_a_model_that_reads_digits(mnist_data, tmp_path):
    path = tmp_path / "models" / "mnist_hidden.npz"
    draw.train(path, epochs=1)
    model = draw.obtain_model(path)
    (_, _), (x_test, y_test) = mnist_data
    predicted = model.predict(x_test[:2000].reshape(-1, 784) / 255).argmax(axis=1)
    assert np.mean(predicted == y_test[:2000]) > 0.9


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "linear"])
def test_probabilities_follow_the_output_activation(activation):
    tinynn.utils.set_random_seed(3)
    model = tinynn.Sequential([tinynn.layers.Dense(100, activation="relu", input_shape=(784,)),
                               tinynn.layers.Dense(10, activation=activation)])
    x = images(1, seed=4)
    answer = draw.Reader(model).read(x[0])
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
    assert draw.hidden_layer(flat) is flat.layers[1]
    draw.Reader(flat)  # takes 28×28 inputs too
    for layers, message in [
        ([tinynn.layers.Dense(10, input_shape=(784,))], "no hidden layer"),
        ([tinynn.layers.Dense(5, input_shape=(784,)), tinynn.layers.Dense(3)], "10 units"),
        ([tinynn.layers.Dense(5, input_shape=(100,)), tinynn.layers.Dense(10)], "28×28"),
    ]:
        with pytest.raises(ValueError, match=message):
            draw.hidden_layer(tinynn.Sequential(layers))


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
