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

The command and the HTTP server are here; the models (which the page can show, where
they come from, what they make of an image) are in ``draw_models.py``, and what each
request's body must hold, checked field by field, in ``draw_requests.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The examples are scripts, not a package: share this page's modules (draw_models.py,
# draw_requests.py) and through them the notebook's models (mnist.py: the hidden model
# and Keras's convnet) and the preprocessing (draw_preprocess.py) by file.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from draw_models import KINDS, Reader, obtain_model  # noqa: E402
from draw_requests import ROUTES, RequestError, parse_json, show  # noqa: E402

PAGE = HERE / "draw.html"
#: The largest request body read, in bytes (a 280×280 canvas is ~160 kB of JSON).
MAX_BODY = 1_000_000
#: After a 413, at most this much of the refused body is read and dropped, so
#: that closing the connection does not reset it before the client reads the answer.
MAX_DISCARD = 16_000_000


# ------------------------------------------------------------------ the server


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
            raise RequestError(f"model must be {served}, got {show(kind)}")
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
