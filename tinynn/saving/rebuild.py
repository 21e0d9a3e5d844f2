"""Layers, optimizers and losses rebuilt from a model file's description, every setting checked.

A file names classes and their settings (``{"class": "Dense", "config": {...}}``).
Each class comes from tinynn's registries, never from the file; each setting must
be a constructor argument of the right kind and read back unchanged from the
object made; and layers take their weights from the file through their
initializers (``Feed``), so nothing is allocated from a number the file made up.
"""

from __future__ import annotations

import inspect
import json

import numpy as np

from tinynn import layers, losses, optimizers

#: Model classes by name, as files name them: each registers itself (``register_model``),
#: so that reading a file needs no import of the models module (which imports this one).
MODELS: dict[str, type] = {}


def register_model(cls: type) -> type:
    """Let files name ``cls`` (a model class) by its class name."""
    MODELS[cls.__name__] = cls
    return cls


class ModelFileError(ValueError):
    """A file is not a model (or weights) file this version of tinynn can read."""


def class_for(kind: str, name: object) -> type:
    """The class a file names for a ``"model"``, ``"layer"``, ``"optimizer"`` or ``"loss"``.

    The one place that maps names in files to classes.
    """
    classes = {"model": MODELS, "layer": layers.LAYERS, "optimizer": optimizers.OPTIMIZERS,
               "loss": losses.LOSSES}[kind]
    if not isinstance(name, str) or name not in classes:
        raise ModelFileError(f"unknown {kind} (unknown class {name!r}); known {kind} classes: "
                             f"{sorted(classes)}")
    return classes[name]


def nonnegative_slots(cls: type) -> tuple[str, ...]:
    """Optimizer state that cannot be negative (a class says so in ``nonnegative_slots``)."""
    return tuple(getattr(cls, "nonnegative_slots", ()))


def make(spec: object, kind: str, where: str, feed: Feed | None = None):
    """An object from ``{"class": …, "config": {…}}``, its settings checked.

    Every setting must be a constructor argument of the class; one whose default
    is a bool or a number must be one; and every setting must read back unchanged
    from ``get_config()`` of the object made (so nothing is silently coerced).
    Constructor arguments named ``*_initializer`` are given ``feed`` (the
    stored weights), so that a layer allocates nothing the file does not hold.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise ModelFileError(f"{where} must be an object with 'class' and 'config'")
    try:
        cls = class_for(kind, spec.get("class"))
    except ModelFileError as e:
        raise ModelFileError(f"{where}: {e}") from None
    parameters = inspect.signature(cls).parameters
    injected = {p: feed for p in parameters if p.endswith("_initializer")} if feed else {}
    # (An initializer named in the file is moot: the weights come from the file.)
    config = {k: v for k, v in spec["config"].items() if k not in injected}
    for key, value in config.items():
        default = parameters[key].default if key in parameters else None
        if key not in parameters:
            raise ModelFileError(f"{where} ({cls.__name__}) has an unknown setting {key!r}")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ModelFileError(f"{where} ({cls.__name__}): {key} must be true or false, "
                                 f"got {value!r}")
        if (isinstance(default, (int, float)) and not isinstance(default, bool)
                and (isinstance(value, bool) or not isinstance(value, (int, float)))):
            raise ModelFileError(f"{where} ({cls.__name__}): {key} must be a number, "
                                 f"got {value!r}")
    try:
        made = cls(**config, **injected)
    except (TypeError, ValueError) as e:  # (ModelFileError too: a weight the file lacks)
        raise ModelFileError(f"{where} ({cls.__name__}): {e}") from None
    back = json.loads(json.dumps(made.get_config()))
    for key, value in config.items():
        if back.get(key) != value:
            raise ModelFileError(f"{where} ({cls.__name__}): {key}={value!r} does not read back "
                                 f"(it becomes {back.get(key)!r})")
    return made


class Feed:
    """An initializer that hands each layer the next stored weight, if its shape is the one asked.

    The layer calls it with the shape it is about to allocate: a shape other than
    the stored one is refused before anything that size exists.
    """

    def __init__(self, weights: list[np.ndarray]):
        self.weights, self.used = weights, 0

    def __call__(self, shape) -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        if self.used == len(self.weights):
            raise ModelFileError(f"the file holds {len(self.weights)} weight arrays, but the "
                                 f"layers expected {self.used + 1} weight arrays or more")
        w = self.weights[self.used]
        if w.shape != shape:
            raise ModelFileError(f"weight {self.used} must have shape {shape}, the file holds "
                                 f"shape {w.shape}")
        self.used += 1
        return w

    def finish(self, params: list[np.ndarray]) -> None:
        """Every stored weight was used, in order (or is set in order now)."""
        if len(params) != len(self.weights):
            raise ModelFileError(f"expected {len(params)} weight arrays, the file holds "
                                 f"{len(self.weights)}")
        for i, (p, w) in enumerate(zip(params, self.weights)):
            if p.shape != w.shape:
                raise ModelFileError(f"weight {i} must have shape {p.shape}, the file holds "
                                     f"shape {w.shape}")
        if any(p is not w for p, w in zip(params, self.weights)):
            # A layer made its own parameters: set them from the file, in Keras's order.
            for p, w in zip(params, self.weights):
                p[...] = w
