"""The drawing page's requests: the JSON bodies its server takes, checked, and answered.

``examples/draw.py`` carries the bytes (HTTP, the body's size, the status codes);
this module is what the bodies mean. Each endpoint in ``ROUTES`` takes a request's
parsed JSON and the model (a ``draw_models.Reader``) it asked for, checks every
field, and returns the answer as a dict for JSON. A body the server cannot read raises
``RequestError``, whose message names the first field at fault and what it should be:
the server sends it back as ``{"error": message}`` with the error's status.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus

import numpy as np
from draw_models import PIXELS, Reader
from draw_preprocess import preprocess

#: The largest canvas side accepted by /predict-drawing.
MAX_SIDE = 2048


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
        raise RequestError(f"{name} must be a list of {count} numbers, got {show(values)}")
    if len(values) != count:
        raise RequestError(f"{name} must have {count} values, got {len(values)}")
    kinds = (int,) if integers else (int, float)
    what = "integers" if integers else "finite numbers"
    for i, v in enumerate(values):
        # type() rather than isinstance: JSON's true and false are not numbers here.
        if type(v) not in kinds:
            raise RequestError(f"{name}[{i}] is {show(v)}: every value must be one of the "
                             f"{what} in {low:g}..{high:g}")
        if type(v) is float and not math.isfinite(v):
            raise RequestError(f"{name}[{i}] is {v}: every value must be finite")
        if not low <= v <= high:  # exact for huge integers too
            raise RequestError(f"{name}[{i}] is {show(v)}: every value must be in "
                             f"{low:g}..{high:g}")
    return np.array(values, np.float64)


def show(value: object) -> str:
    """``value`` as JSON for an error message, cut short past 40 characters."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fields(body: object, expected: tuple[str, ...]) -> None:
    """Check that ``body`` is an object with the ``expected`` fields and at most "model"."""
    shape = "{" + ", ".join(f'"{k}": ...' for k in expected) + '[, "model": ...]}'
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object {shape}, got {show(body)}")
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
            raise RequestError(f"{side} must be an integer in 1..{MAX_SIDE}, got {show(v)}")
    width, height = body["width"], body["height"]
    if not isinstance(body["ink"], list) or len(body["ink"]) != width * height:
        got = len(body["ink"]) if isinstance(body["ink"], list) else show(body["ink"])
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
