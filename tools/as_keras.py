"""Run a Keras script on tinynn, unchanged: ``import keras`` (and ``from keras.x import y``)
get tinynn.

    python tools/as_keras.py examples/keras/mnist_mlp.py [--epochs N]

``--epochs N`` replaces the script's ``epochs=…`` settings, for a quicker run.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tinynn

MODULES = ("datasets", "layers", "losses", "models", "ops", "optimizers", "utils", "callbacks",
           "activations")


def alias() -> None:
    """Make ``keras`` and its submodules name tinynn's."""
    sys.modules["keras"] = tinynn
    for name in MODULES:
        sys.modules[f"keras.{name}"] = getattr(tinynn, name)


def source(path: str, epochs: int | None = None) -> str:
    """The script's text, with its epoch counts set to ``epochs`` if given."""
    text = Path(path).read_text()
    if epochs is not None:
        text = re.sub(r"\bepochs\s*=\s*\d+", f"epochs = {epochs}", text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    alias()
    exec(compile(source(args.script, args.epochs), args.script, "exec"), {"__name__": "__main__"})


if __name__ == "__main__":
    main()
