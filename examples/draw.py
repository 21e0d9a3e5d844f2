"""Draw a digit, watch the network think: a local web page that reads handwritten digits.

    python examples/draw.py [--port 8765] [--host 127.0.0.1] [--model-kind convnet|hidden]
                            [--model PATH]

Serves ``examples/draw.html`` at http://127.0.0.1:8765/ : draw a digit with the
mouse, a pen or a finger, and the page shows the digit the network reads, its
ten probabilities, the 28×28 image the network actually received, and what the
network makes of it inside: a convnet's feature maps (each filter of each Conv2D
layer, as a small grayscale tile), or a dense model's hidden units. A switch on the
page flips between the two models the server holds, and reads the drawing again:

* ``convnet`` (the page starts with it unless ``--model-kind hidden``): Keras's "Simple
  MNIST convnet" (``build("convnet")`` in ``examples/mnist.py``: Conv2D(32, 3×3) →
  MaxPooling2D → Conv2D(64, 3×3) → MaxPooling2D → Flatten → Dropout(0.5) → Dense(10,
  softmax)), trained for one epoch on the first 10,000 MNIST images: a few seconds,
  ~0.95 test accuracy.
* ``hidden``: the notebook's hidden model, an MLP (Dense(100, relu) → Dense(10, sigmoid),
  ``build("hidden")``), trained for 5 epochs: ~0.975.

Each is the one a previous run saved in tinynn's cache, else a new one trained on
MNIST and saved there (``models/mnist_convnet.npz``, ``models/mnist_hidden.npz``).
``--model PATH`` serves that saved model alone instead, its kind read from its layers
(Conv2D layers: their feature maps; a hidden Dense layer: its units); the page's switch
then shows the other model disabled.

The HTTP interface (standard library only; one thread per request):

* ``GET /``: the page.
* ``GET /models``: what the page shows, before anything is drawn: ``{"default": kind,
  "models": [...]}``, one entry per model served (the convnet first), ``{"kind":
  "convnet" or "hidden", "layers": ["Conv2D(32, 3×3, relu)", ...]}`` plus
  ``"feature_maps": [{"name": ..., "shape": [h, w, maps]}, ...]`` (a convnet) or
  ``"hidden": units``.
* ``POST /predict`` with ``{"pixels": [784 numbers in 0..1]}`` (a 28×28 image, row
  by row, white ink on black as in MNIST), and optionally ``"model": "convnet"`` or
  ``"hidden"`` (else the default), answers ``{"model": kind, "prediction": d,
  "probabilities": [10], "hidden": [100]}`` from the hidden model; from a convnet,
  ``"feature_maps"`` instead of ``"hidden"``: per Conv2D layer, ``{"name": ..., "shape":
  [h, w, maps], "maps": [maps lists of h·w integers in 0..255, row by row], "low": [maps],
  "high": [maps]}``, each map scaled by itself: a value v is sent as
  round(255 · (v − low) / (high − low)), where low = min(0, the map's least value) and
  high = max(0, its greatest) (all 0 for a map that is 0 everywhere).
* ``POST /predict-drawing`` with ``{"width": w, "height": h, "ink": [w·h integers
  in 0..255]}`` (the canvas's alpha channel, row by row), and optionally "model", runs
  MNIST's preprocessing (``draw_preprocess.preprocess``) and answers as ``/predict``,
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
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

import tinynn
from tinynn.datasets.base import cache_dir
from tinynn.datasets.mnist import MNIST
from tinynn.layers import Conv2D, Dense, Dropout
from tinynn.saving import ModelFileError

HERE = Path(__file__).resolve().parent
# The examples are scripts, not a package: share the notebook's models (mnist.py: the
# hidden model and Keras's convnet) and the preprocessing (draw_preprocess.py) with them by file.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from draw_preprocess import SIZE, preprocess  # noqa: E402
from mnist import build  # noqa: E402

PAGE = HERE / "draw.html"
PIXELS = SIZE * SIZE
CLASSES = 10
#: The hidden model's epochs over the 60,000 training images.
EPOCHS = 5
#: The convnet's training images (the first ones), seen once.
CONVNET_SAMPLES = 10_000
#: The kinds of model the page shows (``model_kind``): the default first.
KINDS = ("convnet", "hidden")
#: What training a model of each kind means, for the message before it starts.
TRAINING = {"convnet": f"Keras's MNIST convnet on {CONVNET_SAMPLES:,} images for one epoch "
                       f"(a few seconds)",
            "hidden": f"the notebook's hidden model ({EPOCHS} epochs)"}
#: The largest request body read, in bytes (a 280×280 canvas is ~160 kB of JSON).
MAX_BODY = 1_000_000
#: The largest canvas side accepted by /predict-drawing.
MAX_SIDE = 2048
#: After a 413, at most this much of the refused body is read and dropped, so
#: that closing the connection does not reset it before the client reads the answer.
MAX_DISCARD = 16_000_000


# ------------------------------------------------------------------ the model


def default_model_path(kind: str = "hidden") -> Path:
    """Where the trained model of ``kind`` (``"convnet"`` or ``"hidden"``) is kept: ``models/``
    beside the datasets in tinynn's cache."""
    return cache_dir(MNIST).parent / "models" / f"mnist_{kind}.npz"


def _digit_model(model: tinynn.Sequential) -> list:
    """The model's layers (nested models opened up), if it takes 28×28 images and gives
    10 classes from a last Dense layer.

    Raises:
        ValueError: naming which of the two it does not do.
    """
    layers = list(model.leaf_layers)
    first = layers[0] if layers else None
    if first is None or first.input_shape is None or math.prod(first.input_shape) != PIXELS:
        shape = None if first is None else first.input_shape
        raise ValueError(f"the model must take 28×28 images ({PIXELS} pixels), but its input "
                         f"shape is {shape}")
    if not isinstance(layers[-1], Dense) or layers[-1].units != CLASSES:
        raise ValueError(f"the model must end in a Dense layer of {CLASSES} units (one per "
                         f"digit)")
    return layers


def hidden_layer(model: tinynn.Sequential) -> Dense:
    """The layer whose activations the page shows: the first Dense layer, fed the 784 pixels.

    Raises:
        ValueError: the model does not take 28×28 images, does not give 10 classes,
            or has no hidden Dense layer.
    """
    dense = [layer for layer in _digit_model(model) if isinstance(layer, Dense)]
    if len(dense) < 2 or dense[0].input_shape != (PIXELS,):
        raise ValueError("the model has no hidden layer to show: it needs Conv2D layers, or a "
                         f"Dense layer taking the {PIXELS} pixels before its output layer")
    return dense[0]


def conv_layers(model: tinynn.Sequential) -> list[Conv2D]:
    """The layers whose feature maps the page shows: every Conv2D layer, in order.

    Raises:
        ValueError: the model does not take 28×28 images, does not give 10 classes,
            or has no Conv2D layer.
    """
    convs = [layer for layer in _digit_model(model) if isinstance(layer, Conv2D)]
    if not convs:
        raise ValueError("the model has no Conv2D layer: it has no feature maps to show")
    return convs


def model_kind(model: tinynn.Sequential) -> str:
    """``"convnet"`` for a model with Conv2D layers (the page shows their feature maps), else
    ``"hidden"`` (the page shows its hidden Dense layer's units).

    Raises:
        ValueError: the page cannot show the model (see ``conv_layers``, ``hidden_layer``).
    """
    if any(isinstance(layer, Conv2D) for layer in model.leaf_layers):
        conv_layers(model)
        return "convnet"
    hidden_layer(model)
    return "hidden"


def _mnist() -> tuple:
    try:
        return tinynn.datasets.mnist.load_data()
    except (OSError, ValueError) as e:  # not found, not downloadable, or damaged
        raise SystemExit(f"error: training the model needs MNIST: {e}") from None


def _fit_and_save(model: tinynn.Sequential, path: Path, data: tuple, epochs: int,
                  batch_size: int) -> tinynn.Sequential:
    """Train ``model`` on ``data`` ((x_train, y_train), (x_test, y_test)), report its test
    accuracy and save it at ``path``; a failure to save is reported and the model returned."""
    (x_train, y_train), (x_test, y_test) = data
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"Test accuracy: {accuracy:.4f} (trained in {seconds:.1f} s)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        print(f"Saved the model to {path}")
    except OSError as e:
        print(f"warning: could not save the model ({e}); it will be trained again next time",
              file=sys.stderr)
    return model


def train(path: Path, epochs: int = EPOCHS, seed: int = 0) -> tinynn.Sequential:
    """Train the notebook's hidden model on MNIST, as examples/mnist.py does, and save it.

    Args:
        path: where to save it (its folder is created); a failure to save is reported
            and the model still returned.
        epochs: passes over the 60,000 training images.
        seed: for tinynn.utils.set_random_seed.
    """
    (x_train, y_train), (x_test, y_test) = _mnist()
    tinynn.utils.set_random_seed(seed)
    data = ((x_train.reshape(len(x_train), -1) / 255, y_train),
            (x_test.reshape(len(x_test), -1) / 255, y_test))
    return _fit_and_save(build("hidden"), path, data, epochs, batch_size=32)


def train_convnet(path: Path, samples: int = CONVNET_SAMPLES, epochs: int = 1,
                  seed: int = 0) -> tinynn.Sequential:
    """Train Keras's MNIST convnet (``mnist.build("convnet")``) briefly and save it.

    Keras's example trains it for 15 epochs over 54,000 images (~99 %); the first
    ``samples`` images, once, in batches of 32, take a few seconds and reach ~95 %
    on the 10,000 test images.

    Args:
        path: where to save it (its folder is created); a failure to save is reported
            and the model still returned.
        samples: how many of the training images, from the first.
        epochs: passes over them.
        seed: for tinynn.utils.set_random_seed.
    """
    (x_train, y_train), (x_test, y_test) = _mnist()
    tinynn.utils.set_random_seed(seed)
    data = ((x_train[:samples, :, :, None].astype(np.float32) / 255, y_train[:samples]),
            (x_test[:, :, :, None].astype(np.float32) / 255, y_test))
    return _fit_and_save(build("convnet"), path, data, epochs, batch_size=32)


def obtain_model(path: str | Path | None, kind: str | None = None) -> tinynn.Sequential:
    """``path``'s model; without one, the cached model of ``kind``, else a newly trained one.

    Args:
        path: a saved model, or None.
        kind: with ``path``, the kind (``model_kind``) the model must be, or None for
            either; without, which model: ``"convnet"`` or ``"hidden"`` (None: the hidden
            model; the command obtains both).

    Raises:
        SystemExit: ``path`` is missing, damaged, not a digit model or not of ``kind``
            (the message names it).
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SystemExit(f"error: --model {path}: no such file")
        try:
            model = tinynn.models.load_model(path)
            found = model_kind(model)
        except (OSError, ModelFileError, ValueError) as e:
            reason = str(e).removeprefix(f"{path}: ")
            raise SystemExit(f"error: --model {path}: {reason}") from None
        if kind is not None and kind != found:
            raise SystemExit(f"error: --model {path} holds a {found} model, but --model-kind "
                             f"says {kind}")
        print(f"Loaded the model from {path}")
        return model
    kind = kind or "hidden"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    cached = default_model_path(kind)
    if cached.is_file():
        try:
            model = tinynn.models.load_model(cached)
            if model_kind(model) != kind:
                raise ValueError(f"it is not a {kind} model")
        except (OSError, ModelFileError, ValueError) as e:
            print(f"The saved model {cached} is unusable ({e}); training a new one.")
        else:
            print(f"Loaded the model saved by an earlier run: {cached}")
            return model
    else:
        print(f"No saved model at {cached}: training {TRAINING[kind]}.")
    return train(cached) if kind == "hidden" else train_convnet(cached)


def layer_text(layer) -> str:
    """A layer in a few characters: ``Conv2D(32, 3×3, relu)``, ``Dense(10, softmax)``."""
    name = type(layer).__name__
    if isinstance(layer, Dense):
        return f"{name}({layer.units}, {layer.activation})"
    if isinstance(layer, Conv2D):
        return (f"{name}({layer.filters}, {'×'.join(map(str, layer.kernel_size))}, "
                f"{layer.activation})")
    if isinstance(layer, Dropout):
        return f"{name}({layer.rate:g})"
    if hasattr(layer, "pool_size"):
        return f"{name}({'×'.join(map(str, layer.pool_size))})"
    return name


class Reader:
    """The model behind the page: pixels in, prediction, probabilities and what it makes of
    them inside (a convnet's feature maps, or the hidden units) out.

    Args:
        model: takes 28×28 images (flat or not), gives 10 outputs; see ``model_kind``.
    """

    def __init__(self, model: tinynn.Sequential):
        self.model = model
        self.kind = model_kind(model)
        layers = list(model.leaf_layers)
        if self.kind == "convnet":
            self.convs = conv_layers(model)
            # The layers up to the last Conv2D: run one by one, they give its maps.
            self.inner = layers[: layers.index(self.convs[-1]) + 1]
        else:
            self.hidden = hidden_layer(model)
        self.input_shape = tuple(layers[0].input_shape)
        # Layers keep their last input and output for backward: one request at a time.
        self._lock = threading.Lock()
        self.read(np.zeros(PIXELS, np.float32))  # compile now, not on the first request

    def describe(self) -> dict:
        """For ``GET /models``: the kind, the layers, and the feature maps' or hidden units'
        sizes."""
        answer = {"kind": self.kind,
                  "layers": [layer_text(layer) for layer in self.model.leaf_layers]}
        if self.kind == "convnet":
            shape = self.input_shape
            answer["feature_maps"] = []
            for layer in self.inner:
                shape = layer.compute_output_shape(shape)
                if layer in self.convs:
                    answer["feature_maps"].append({"name": layer.name, "shape": list(shape)})
        else:
            answer["hidden"] = self.hidden.units
        return answer

    def read(self, pixels: np.ndarray) -> dict:
        """What the model makes of one image.

        Args:
            pixels: shape (784,), float32 in [0, 1].

        Returns:
            ``prediction`` (the argmax of ``model.predict``), ``probabilities`` (10; see
            ``probabilities``), and ``feature_maps`` (a convnet: each Conv2D layer's output,
            see ``feature_maps``) or ``hidden`` (the first Dense layer's activations).
        """
        x = pixels.reshape(1, *self.input_shape)
        with self._lock:
            outputs = self.model.predict(x)
            if self.kind == "convnet":
                inside = []
                for layer in self.inner:
                    x = layer(x)
                    if layer in self.convs:
                        inside.append(feature_maps(layer.name, x[0]))
            else:
                inside = self.hidden.forward(pixels.reshape(1, PIXELS))[0].astype(float).tolist()
        return {"prediction": int(outputs[0].argmax()),
                "probabilities": probabilities(outputs, self.model.leaf_layers[-1].activation)[0]
                .tolist(),
                "feature_maps" if self.kind == "convnet" else "hidden": inside}


def feature_maps(name: str, maps: np.ndarray) -> dict:
    """One layer's feature maps for the page: each map scaled by itself to integers 0..255.

    Args:
        name: the layer's.
        maps: shape (h, w, maps), one image's output of the layer.

    Returns:
        ``{"name", "shape": [h, w, maps], "maps": [maps lists of h·w integers, row by row],
        "low": [maps], "high": [maps]}``: v is sent as round(255 · (v − low) / (high − low)),
        low = min(0, the map's least value), high = max(0, its greatest); a map that is 0
        everywhere is all 0.

    >>> answer = feature_maps("conv", np.array([[[0.0], [2.0]], [[1.0], [0.5]]]))
    >>> answer["shape"], answer["maps"], answer["low"], answer["high"]
    ([2, 2, 1], [[0, 255, 128, 64]], [0.0], [2.0])
    """
    h, w, count = maps.shape
    v = maps.astype(np.float64).transpose(2, 0, 1).reshape(count, h * w)
    low = np.minimum(v.min(axis=1), 0)
    high = np.maximum(v.max(axis=1), 0)
    span = high - low
    scaled = (v - low[:, None]) / np.where(span > 0, span, 1)[:, None]
    return {"name": name, "shape": [h, w, count],
            "maps": np.rint(255 * scaled).astype(int).tolist(),
            "low": low.tolist(), "high": high.tolist()}


def probabilities(outputs: np.ndarray, activation: str) -> np.ndarray:
    """The probabilities a model's outputs (n, 10) stand for, given its output activation.

    A softmax output is one already. Sigmoid outputs are not (they need not sum to 1):
    Keras and tinynn train them by the softmax of their logits, so that is what they
    mean: the softmax of logit(output), as ``mnist.confidences`` computes it. Any other
    output is taken as logits (``from_logits``).
    """
    if activation == "softmax":
        return outputs.astype(np.float64)
    z = outputs.astype(np.float64)
    if activation == "sigmoid":
        p = np.clip(z, 1e-7, 1 - 1e-7)
        z = np.log(p / (1 - p))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------ requests


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a message for the client."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST,
                 allow: str = "POST"):
        super().__init__(message)
        self.status = status
        self.allow = allow  # the method to name in a 405's Allow header


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
    """Check that ``body`` is an object with the ``expected`` fields and at most "model"."""
    shape = "{" + ", ".join(f'"{k}": ...' for k in expected) + '[, "model": ...]}'
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object {shape}, got {_show(body)}")
    missing = [k for k in expected if k not in body]
    extra = sorted(set(body) - set(expected) - {"model"})
    if missing or extra:
        raise RequestError(f"the body must be a JSON object {shape}: "
                         + (f"missing {missing}" if missing else f"unexpected {extra}"))


def predict(reader: Reader, body: object) -> dict:
    """``POST /predict``: ``{"pixels": [784 in 0..1]}`` (and "model", see ``DrawServer``)."""
    _fields(body, ("pixels",))
    pixels = numbers(body["pixels"], "pixels", PIXELS, 0, 1).astype(np.float32)
    return reader.read(pixels)


def predict_drawing(reader: Reader, body: object) -> dict:
    """``POST /predict-drawing``: ``{"width": w, "height": h, "ink": [w·h in 0..255]}`` (and
    "model")."""
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


def parse_json(data: bytes) -> object:
    """A request's body as JSON, or a RequestError saying why it is not."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, absurd nesting
        raise RequestError(f"the body is not valid JSON: {e}") from None


ROUTES = {"/predict": predict, "/predict-drawing": predict_drawing}


class Handler(BaseHTTPRequestHandler):
    """GET / for the page and ``INFO``; POST to ``ROUTES`` with a JSON body, read by the
    model it names. ``self.server`` is a ``DrawServer``."""

    server_version = "tinynn-draw"
    #: Seconds a connection may sit idle before its thread gives up on it.
    timeout = 30

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif path in INFO:
            answer = INFO[path](self.server)
            self._send(HTTPStatus.OK, json.dumps(answer).encode(), "application/json")
        elif path in ROUTES:
            self._error(RequestError(f"{path} takes POST", HTTPStatus.METHOD_NOT_ALLOWED))
        else:
            self._error(RequestError(f"no such page: {path}", HTTPStatus.NOT_FOUND))

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        route = ROUTES.get(path)
        try:
            data = self._read_body()
            if path in INFO:
                raise RequestError(f"{path} takes GET", HTTPStatus.METHOD_NOT_ALLOWED, "GET")
            if route is None:
                raise RequestError(f"no such endpoint: {self.path}", HTTPStatus.NOT_FOUND)
            body = parse_json(data)
            reader = self.server.reader_for(body)
            answer = {"model": reader.kind, **route(reader, body)}
        except RequestError as e:
            self._error(e)
            if e.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
                self._discard(int(self.headers["Content-Length"]))
        else:
            self._send(HTTPStatus.OK, json.dumps(answer).encode(), "application/json")

    def _read_body(self) -> bytes:
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
        return data

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
        self._send(e.status, json.dumps({"error": str(e)}).encode(), "application/json",
                   e.allow)

    def _send(self, status: HTTPStatus, data: bytes, content_type: str,
              allow: str = "POST") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            if status == HTTPStatus.METHOD_NOT_ALLOWED:
                self.send_header("Allow", allow)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except ConnectionError:  # the client left before its answer: nobody to tell
            self.close_connection = True

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)


class DrawServer(ThreadingHTTPServer):
    """The page's server, holding one model of each kind it serves (see ``make_server``).

    Attributes:
        readers: kind → Reader, in the order of ``KINDS``.
        default: the kind that reads a request without a "model" field.
        page: ``draw.html``'s bytes.
        quiet: do not log each request.
    """

    def __init__(self, address: tuple, readers: dict, default: str, quiet: bool):
        super().__init__(address, Handler)
        self.readers, self.default, self.page, self.quiet = (readers, default,
                                                            PAGE.read_bytes(), quiet)

    def describe(self) -> dict:
        """``GET /models``: ``{"default": kind, "models": [Reader.describe() of each]}``."""
        return {"default": self.default,
                "models": [reader.describe() for reader in self.readers.values()]}

    def reader_for(self, body: object) -> Reader:
        """The model a request's optional ``"model"`` field names, else the default one.

        Raises:
            RequestError: "model" names no kind, or one this server does not have.
        """
        kind = body.get("model", self.default) if isinstance(body, dict) else self.default
        served = " or ".join(f'"{k}"' for k in self.readers)
        if not isinstance(kind, str) or kind not in KINDS:
            raise RequestError(f"model must be {served}, got {_show(kind)}")
        if kind not in self.readers:
            raise RequestError(f'model "{kind}" is not served here (draw.py --model serves '
                               f"one model): ask for {served}")
        return self.readers[kind]


#: GET, answered with JSON: what the page needs to know before anything is drawn.
INFO = {"/models": DrawServer.describe}


def make_server(readers, host: str = "127.0.0.1", port: int = 8765, quiet: bool = False,
                default: str | None = None) -> DrawServer:
    """A server for the page, listening but not yet serving (call ``serve_forever``).

    Args:
        readers: a Reader, or several of different kinds (``model_kind``): the models a
            request may ask for.
        host: the address to listen on.
        port: the port; 0 picks a free one (read it from ``server.server_address``).
        quiet: do not log each request to stderr.
        default: the kind that reads a request naming none; None: the convnet if served,
            else the one model.

    Raises:
        ValueError: no readers, two of one kind, or a ``default`` not among them.
    """
    readers = [readers] if isinstance(readers, Reader) else list(readers)
    kinds = [reader.kind for reader in readers]
    if not readers or len(set(kinds)) < len(kinds):
        raise ValueError(f"the page serves one model of each kind at most, got {kinds}")
    by_kind = {reader.kind: reader for reader in readers}
    by_kind = {kind: by_kind[kind] for kind in KINDS if kind in by_kind}
    default = default or next(iter(by_kind))
    if default not in by_kind:
        raise ValueError(f"the default model {default!r} is not among {list(by_kind)}")
    return DrawServer((host, port), by_kind, default, quiet)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765, help="port (8765; 0: any free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (127.0.0.1: this machine only)")
    parser.add_argument("--model-kind", choices=KINDS, default=None,
                        help="the model the page starts with (its switch flips to the "
                             "other): the convnet (the default), showing its feature maps, or "
                             "the notebook's hidden model, showing its hidden units; with "
                             "--model, the kind that file must hold")
    parser.add_argument("--model", default=None,
                        help="serve this saved model alone, whose kind its layers tell "
                             "(default: both kinds, each the cached one, else one trained now)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.model:
        models = [obtain_model(args.model, args.model_kind)]
    else:
        models = [obtain_model(None, kind) for kind in KINDS]
    try:
        server = make_server([Reader(model) for model in models], args.host, args.port,
                             args.quiet, default=args.model_kind)
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
