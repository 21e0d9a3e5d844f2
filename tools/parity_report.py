"""How close tinynn ends to Keras on the parity fixture, per model and backend.

    python tools/parity_report.py

Replays tests/test_keras_parity.py's training (no Keras needed) and prints the
largest difference between tinynn's weights and Keras's after 20 steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import test_keras_parity as parity  # noqa: E402

import tinynn  # noqa: E402


def main() -> None:
    x = parity.FIXTURE["x_train"] / 255
    print("| model | " + " | ".join(sorted(tinynn.backend.BACKENDS)) + " |")
    print("|---|" + "---:|" * len(tinynn.backend.BACKENDS))
    for name in parity.MODEL_NAMES:
        cells = []
        for backend in sorted(tinynn.backend.BACKENDS):
            with tinynn.backend.using(backend):
                model = parity.build(name)
                y = parity.targets(name, parity.FIXTURE["y_train"])
                model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
            diff = max(np.abs(a - b).max() for a, b in zip(model.get_weights(),
                                                           parity._trained(name)))
            cells.append(f"{diff:.1e}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
