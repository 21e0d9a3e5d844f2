"""``Dropout``: inverted dropout, with masks any backend draws alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinynn import utils, validation
from tinynn.backend import kernels
from tinynn.layers.base import Layer


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale
    the rest by 1 / (1 − rate); at inference, the identity.

    Args:
        rate: fraction of the inputs to drop, in [0, 1).
        seed: key of the random masks (a non-negative integer); None draws one
            from ``tinynn.utils.generator()``, so ``set_random_seed`` repeats them.

    >>> import numpy as np
    >>> layer = Dropout(0.5, seed=0)
    >>> x = np.ones((1, 8), np.float32)
    >>> layer(x).tolist() == x.tolist()  # not training: nothing dropped
    True
    >>> sorted(set(layer(x, training=True).ravel().tolist()))  # dropped, or doubled
    [0.0, 2.0]
    """

    def __init__(self, rate: float, seed: int | None = None,
                 input_shape: Sequence[int] | None = None, name: str | None = None):
        super().__init__(input_shape, name)
        self.rate = rate
        self.seed = int(utils.generator().integers(2**63)) if seed is None else seed
        self.check()
        #: Training steps taken: the counter of the random masks.
        self.state["step"] = np.zeros(1, np.int64)
        self._scale: np.ndarray | None = None

    def check(self) -> None:
        super().check()
        validation.fraction(self.rate, "rate")
        seed = self.seed
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
                or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63) or None, got {seed!r}")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._scale = None
        if not training or self.rate == 0:
            return x
        step = int(self.state["step"][0])
        y, self._scale = kernels().dropout_forward(x, self.rate, self.seed, step)
        self.state["step"][0] = step + 1
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dx = dy · s, with the scales s of the last forward (1 at inference)."""
        return dy if self._scale is None else kernels().dropout_backward(dy, self._scale)

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
