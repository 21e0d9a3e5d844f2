"""Draw a digit, watch the network think: a local web page that reads handwritten digits.

    python examples/draw.py [--port 8765] [--host 127.0.0.1] [--model PATH]

Serves ``examples/draw.html`` at http://127.0.0.1:8765/ : draw a digit with the
mouse, a pen or a finger, and the page shows the digit the network reads, its
ten probabilities, the 28×28 image the network actually received, and which of
its 100 hidden units fire.

The model is the notebook's hidden model (Dense(100, relu) → Dense(10, sigmoid),
from ``examples/mnist.py``): ``--model PATH`` loads a saved one; without it, the
one a previous run saved in tinynn's cache, else a new one trained on MNIST for
a few seconds and saved there.

The HTTP interface (standard library only; one thread per request):

* ``GET /``: the page.
* ``POST /predict`` with ``{"pixels": [784 numbers in 0..1]}`` (a 28×28 image, row
  by row, white ink on black as in MNIST) answers ``{"prediction": d,
  "probabilities": [10], "hidden": [100]}``.
* ``POST /predict-drawing`` with ``{"width": w, "height": h, "ink": [w·h integers
  in 0..255]}`` (the canvas's alpha channel, row by row) runs MNIST's
  preprocessing (``draw_preprocess.preprocess``) and answers as ``/predict``,
  plus ``"input"``: the 784 pixels the model received, which the page shows.

A bad request gets a 400 (411 without a Content-Length, 413 over 1 MB) with
``{"error": "..."}`` naming the problem, and the server carries on.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

import tinynn
from tinynn.datasets.base import cache_dir
from tinynn.datasets.mnist import MNIST
from tinynn.layers import Dense
from tinynn.saving import ModelFileError

HERE = Path(__file__).resolve().parent
# The examples are scripts, not a package: share the notebook's model (mnist.py)
# and the preprocessing (draw_preprocess.py) with them by file.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from draw_preprocess import SIZE, preprocess  # noqa: E402
from mnist import build, confidences  # noqa: E402

PAGE = HERE / "draw.html"
PIXELS = SIZE * SIZE
CLASSES = 10
EPOCHS = 5
#: The largest request body read, in bytes (a 280×280 canvas is ~160 kB of JSON).
MAX_BODY = 1_000_000
#: The largest canvas side accepted by /predict-drawing.
MAX_SIDE = 2048
#: After a 413, at most this much of the refused body is read and dropped, so
#: that closing the connection does not reset it before the client reads the answer.
MAX_DISCARD = 16_000_000


# ------------------------------------------------------------------ the model


def default_model_path() -> Path:
    """Where the trained model is kept: ``models/`` beside the datasets in tinynn's cache."""
    return cache_dir(MNIST).parent / "models" / "mnist_hidden.npz"


def hidden_layer(model: tinynn.Sequential) -> Dense:
    """The layer whose activations the page shows: the first Dense layer, fed the 784 pixels.

    Raises:
        ValueError: the model does not take 28×28 images, does not give 10 classes,
            or has no hidden Dense layer.
    """
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    first = model.layers[0] if model.layers else None
    if first is None or first.input_shape is None or math.prod(first.input_shape) != PIXELS:
        shape = None if first is None else first.input_shape
        raise ValueError(f"the model must take 28×28 images ({PIXELS} pixels), but its input "
                         f"shape is {shape}")
    if not dense or dense[-1] is not model.layers[-1] or dense[-1].units != CLASSES:
        raise ValueError(f"the model must end in a Dense layer of {CLASSES} units (one per "
                         f"digit)")
    if len(dense) < 2 or dense[0].input_shape != (PIXELS,):
        raise ValueError("the model has no hidden layer to show: it needs a Dense layer "
                         f"taking the {PIXELS} pixels before its output layer")
    return dense[0]


def train(path: Path, epochs: int = EPOCHS, seed: int = 0) -> tinynn.Sequential:
    """Train the notebook's hidden model on MNIST, as examples/mnist.py does, and save it.

    Args:
        path: where to save it (its folder is created); a failure to save is reported
            and the model still returned.
        epochs: passes over the 60,000 training images.
        seed: for tinynn.utils.set_random_seed.
    """
    try:
        (x_train, y_train), (x_test, y_test) = tinynn.datasets.mnist.load_data()
    except (OSError, ValueError) as e:  # not found, not downloadable, or damaged
        raise SystemExit(f"error: training the model needs MNIST: {e}") from None
    tinynn.utils.set_random_seed(seed)
    x_train = x_train.reshape(len(x_train), -1) / 255
    x_test = x_test.reshape(len(x_test), -1) / 255
    model = build("hidden")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"Test accuracy: {accuracy:.4f}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        print(f"Saved the model to {path}")
    except OSError as e:
        print(f"warning: could not save the model ({e}); it will be trained again next time",
              file=sys.stderr)
    return model


def obtain_model(path: str | Path | None) -> tinynn.Sequential:
    """``path``'s model; without one, the cached model, else a newly trained one.

    Raises:
        SystemExit: ``path`` is missing, damaged or not a digit model (the message names it).
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SystemExit(f"error: --model {path}: no such file")
        try:
            model = tinynn.models.load_model(path)
            hidden_layer(model)
        except (OSError, ModelFileError, ValueError) as e:
            reason = str(e).removeprefix(f"{path}: ")
            raise SystemExit(f"error: --model {path}: {reason}") from None
        print(f"Loaded the model from {path}")
        return model
    cached = default_model_path()
    if cached.is_file():
        try:
            model = tinynn.models.load_model(cached)
            hidden_layer(model)
        except (OSError, ModelFileError, ValueError) as e:
            print(f"The saved model {cached} is unusable ({e}); training a new one.")
        else:
            print(f"Loaded the model saved by an earlier run: {cached}")
            return model
    else:
        print(f"No saved model at {cached}: training the notebook's hidden model "
              f"({EPOCHS} epochs).")
    return train(cached)


class Reader:
    """The model behind the page: pixels in, prediction, probabilities and hidden units out.

    Args:
        model: takes 28×28 images (flat or not), gives 10 outputs; see ``hidden_layer``.
    """

    def __init__(self, model: tinynn.Sequential):
        self.model = model
        self.hidden = hidden_layer(model)
        self.input_shape = tuple(model.layers[0].input_shape)
        # Layers keep their last input and output for backward: one request at a time.
        self._lock = threading.Lock()
        self.read(np.zeros(PIXELS, np.float32))  # compile now, not on the first request

    def read(self, pixels: np.ndarray) -> dict:
        """What the model makes of one image.

        Args:
            pixels: shape (784,), float32 in [0, 1].

        Returns:
            ``prediction`` (the argmax of ``model.predict``), ``probabilities`` (10; see
            ``probabilities``) and ``hidden`` (the first Dense layer's activations).
        """
        with self._lock:
            outputs = self.model.predict(pixels.reshape(1, *self.input_shape))
            hidden = self.hidden.forward(pixels.reshape(1, PIXELS))
        return {"prediction": int(outputs[0].argmax()),
                "probabilities": probabilities(outputs, self.model.layers[-1].activation)[0]
                .tolist(),
                "hidden": hidden[0].astype(float).tolist()}


def probabilities(outputs: np.ndarray, activation: str) -> np.ndarray:
    """The probabilities a model's outputs (n, 10) stand for, given its output activation.

    A softmax output is one already. Sigmoid outputs are not (they need not sum to 1):
    Keras and tinynn train them by the softmax of their logits, so that is what they
    mean (``mnist.confidences``). Any other output is taken as logits (``from_logits``).
    """
    if activation == "softmax":
        return outputs.astype(np.float64)
    if activation == "sigmoid":
        return confidences(outputs)
    z = outputs.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------ requests


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a message for the client."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


def numbers(values: object, name: str, count: int, low: float, high: float,
            integers: bool = False) -> np.ndarray:
    """``values`` as float64 if it is a JSON list of ``count`` finite numbers in [low, high].

    Raises:
        RequestError: naming the first value that is not.
    """
    if not isinstance(values, list):
        raise RequestError(f"{name} must be a list of {count} numbers, got {_show(values)}")
    if len(values) != count:
        raise RequestError(f"{name} must have {count} values, got {len(values)}")
    kinds = (int,) if integers else (int, float)
    what = "integers" if integers else "finite numbers"
    for i, v in enumerate(values):
        # type() rather than isinstance: JSON's true and false are not numbers here.
        if type(v) not in kinds:
            raise RequestError(f"{name}[{i}] is {_show(v)}: every value must be one of the "
                             f"{what} in {low:g}..{high:g}")
        if type(v) is float and not math.isfinite(v):
            raise RequestError(f"{name}[{i}] is {v}: every value must be finite")
        if not low <= v <= high:  # exact for huge integers too
            raise RequestError(f"{name}[{i}] is {_show(v)}: every value must be in "
                             f"{low:g}..{high:g}")
    return np.array(values, np.float64)


def _show(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fields(body: object, expected: tuple[str, ...]) -> None:
    shape = "{" + ", ".join(f'"{k}": ...' for k in expected) + "}"
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object {shape}, got {_show(body)}")
    missing = [k for k in expected if k not in body]
    extra = sorted(set(body) - set(expected))
    if missing or extra:
        raise RequestError(f"the body must be a JSON object {shape}: "
                         + (f"missing {missing}" if missing else f"unexpected {extra}"))


def predict(reader: Reader, body: object) -> dict:
    """``POST /predict``: ``{"pixels": [784 in 0..1]}``."""
    _fields(body, ("pixels",))
    pixels = numbers(body["pixels"], "pixels", PIXELS, 0, 1).astype(np.float32)
    return reader.read(pixels)


def predict_drawing(reader: Reader, body: object) -> dict:
    """``POST /predict-drawing``: ``{"width": w, "height": h, "ink": [w·h in 0..255]}``."""
    _fields(body, ("width", "height", "ink"))
    for side in ("width", "height"):
        v = body[side]
        if type(v) is not int or not 1 <= v <= MAX_SIDE:
            raise RequestError(f"{side} must be an integer in 1..{MAX_SIDE}, got {_show(v)}")
    width, height = body["width"], body["height"]
    if not isinstance(body["ink"], list) or len(body["ink"]) != width * height:
        got = len(body["ink"]) if isinstance(body["ink"], list) else _show(body["ink"])
        raise RequestError(f"ink must be a list of width × height = {width * height} integers, "
                         f"got {got}")
    ink = numbers(body["ink"], "ink", width * height, 0, 255, integers=True)
    try:
        pixels = preprocess(ink.reshape(height, width) / 255)
    except ValueError as e:  # an empty drawing
        raise RequestError(str(e)) from None
    pixels = pixels.reshape(PIXELS)
    return {**reader.read(pixels), "input": pixels.astype(float).tolist()}


ROUTES = {"/predict": predict, "/predict-drawing": predict_drawing}


class Handler(BaseHTTPRequestHandler):
    """GET / for the page; POST to ``ROUTES`` with a JSON body. ``self.server`` has
    ``reader``, ``page`` and ``quiet`` (see ``make_server``)."""

    server_version = "tinynn-draw"
    #: Seconds a connection may sit idle before its thread gives up on it.
    timeout = 30

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif path in ROUTES:
            self._error(RequestError(f"{path} takes POST", HTTPStatus.METHOD_NOT_ALLOWED))
        else:
            self._error(RequestError(f"no such page: {path}", HTTPStatus.NOT_FOUND))

    def do_POST(self):
        route = ROUTES.get(self.path.split("?", 1)[0])
        try:
            body = self._read_json()
            if route is None:
                raise RequestError(f"no such endpoint: {self.path}", HTTPStatus.NOT_FOUND)
            answer = route(self.server.reader, body)
        except RequestError as e:
            self._error(e)
            if e.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
                self._discard(int(self.headers["Content-Length"]))
        else:
            self._send(HTTPStatus.OK, json.dumps(answer).encode(), "application/json")

    def _read_json(self) -> object:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RequestError("send the body with a Content-Length, not chunked",
                             HTTPStatus.LENGTH_REQUIRED)
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError("Content-Length is required", HTTPStatus.LENGTH_REQUIRED)
        if not length.strip().isdigit():
            self.close_connection = True
            raise RequestError(f"Content-Length must be a byte count, got {length[:40]!r}")
        length = int(length)
        if length > MAX_BODY:
            self.close_connection = True
            raise RequestError(f"the body is {length} bytes; the limit is {MAX_BODY}",
                             HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        data = self.rfile.read(length)
        if len(data) < length:
            self.close_connection = True
            raise RequestError(f"the body ended after {len(data)} of {length} bytes")
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, absurd nesting
            raise RequestError(f"the body is not valid JSON: {e}") from None

    def _discard(self, length: int) -> None:
        """Drop (a bounded part of) a refused body, so that closing the connection with
        unread data does not reset it before the client has read the answer."""
        self.wfile.flush()
        left = min(length, MAX_DISCARD)
        try:
            self.connection.settimeout(2)
            while left > 0 and (chunk := self.rfile.read1(min(left, 65536))):
                left -= len(chunk)
        except OSError:  # the client stopped sending: nothing more to drop
            pass

    def _error(self, e: RequestError) -> None:
        self._send(e.status, json.dumps({"error": str(e)}).encode(), "application/json")

    def _send(self, status: HTTPStatus, data: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            if status == HTTPStatus.METHOD_NOT_ALLOWED:
                self.send_header("Allow", "POST")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except ConnectionError:  # the client left before its answer: nobody to tell
            self.close_connection = True

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)


def make_server(reader: Reader, host: str = "127.0.0.1", port: int = 8765,
                quiet: bool = False) -> ThreadingHTTPServer:
    """A server for the page, listening but not yet serving (call ``serve_forever``).

    Args:
        reader: the model.
        host: the address to listen on.
        port: the port; 0 picks a free one (read it from ``server.server_address``).
        quiet: do not log each request to stderr.
    """
    server = ThreadingHTTPServer((host, port), Handler)
    server.reader, server.page, server.quiet = reader, PAGE.read_bytes(), quiet
    return server


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765, help="port (8765; 0: any free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (127.0.0.1: this machine only)")
    parser.add_argument("--model", default=None,
                        help="a saved model (default: the cached one, else train one)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    reader = Reader(obtain_model(args.model))
    try:
        server = make_server(reader, args.host, args.port, args.quiet)
    except OSError as e:  # address in use, unknown host
        raise SystemExit(f"error: cannot listen on {args.host}:{args.port}: {e}") from None
    host, port = server.server_address[:2]
    print(f"Draw a digit at http://{host}:{port}/  (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStopped.")
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
