"""Loss functions. One for now: sparse categorical cross-entropy, exactly as Keras computes it.

**What Keras really minimises.** With its TensorFlow backend, a ``sigmoid`` or
``softmax`` activation keeps its input (the *logits*) beside its output, and
``sparse_categorical_crossentropy`` with ``from_logits=False`` uses those logits
when it finds them: the loss is the *softmax* cross-entropy of the output
layer's logits, averaged over the batch. So the classic MNIST model
``Dense(10, activation="sigmoid")`` trains exactly like softmax regression,
while ``predict()`` still returns the ten sigmoid values. tinynn does the same by
default; pass ``use_output_logits=False`` to get the literal formula on the
outputs instead.

The three cases:

* output of a sigmoid/softmax (and ``use_output_logits=True``):
  ``loss = −z_y + log Σ_j e^(z_j)`` on the logits z (Keras does this even when
  ``from_logits=True`` is passed);
* ``from_logits=True``: the same formula on the raw outputs;
* otherwise: ``p = clip(output, 1e-7, 1 − 1e-7)``, ``loss = −log p_y + log Σ_j p_j``.
"""

from __future__ import annotations

import numpy as np

from tinynn.backend import kernels


class SparseCategoricalCrossentropy:
    """Cross-entropy between integer labels and a model's outputs over c classes.

    Args:
        from_logits: the outputs are logits, not probabilities.
        use_output_logits: when the output layer's activation is sigmoid or
            softmax, compute the loss from its logits, as Keras's TensorFlow
            backend does (default True). False uses the probability formula on
            the activation's outputs, literally.
        epsilon: clipping bound for the probability formula (Keras's 1e-7).

    >>> import numpy as np
    >>> loss = SparseCategoricalCrossentropy()
    >>> round(loss(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])), 4)
    0.1643
    """

    name = "sparse_categorical_crossentropy"

    def __init__(
        self, from_logits: bool = False, use_output_logits: bool = True, epsilon: float = 1e-7
    ):
        self.from_logits = bool(from_logits)
        self.use_output_logits = bool(use_output_logits)
        if not 0 < epsilon < 0.5:
            raise ValueError(f"epsilon must be in (0, 0.5), got {epsilon!r}")
        self.epsilon = float(epsilon)
        #: Whether the last ``forward`` used the output layer's logits, so that
        #: ``backward`` gives the gradient with respect to them, not to the outputs.
        self.used_output_logits = False

    def forward(
        self, y_true: np.ndarray, y_pred: np.ndarray, logits: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-sample losses.

        Args:
            y_true: integer labels, shape (n,).
            y_pred: the model's outputs, shape (n, c).
            logits: the output activation's input, shape (n, c), if it kept one.

        Returns:
            shape (n,).
        """
        k = kernels()
        self.used_output_logits = logits is not None and self.use_output_logits
        self._input = logits if self.used_output_logits else y_pred
        self._softmax = self.used_output_logits or self.from_logits
        self._labels = y_true
        if self._softmax:
            return k.sparse_softmax_cross_entropy(self._input, y_true)
        return k.sparse_probability_cross_entropy(self._input, y_true, self.epsilon)

    def backward(self) -> np.ndarray:
        """Gradient of the batch mean with respect to what ``forward`` worked on, shape (n, c)."""
        k = kernels()
        if self._softmax:
            return k.sparse_softmax_cross_entropy_backward(self._input, self._labels)
        return k.sparse_probability_cross_entropy_backward(
            self._input, self._labels, self.epsilon
        )

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        """The batch-mean loss of outputs ``y_pred`` (n, c) against labels ``y_true`` (n,).

        Plain arrays carry no logits, so this is the probability formula unless
        ``from_logits=True``.
        """
        y_pred = np.asarray(y_pred, dtype=np.float64)
        return float(self.forward(np.asarray(y_true).astype(np.intp), y_pred).mean())

    def get_config(self) -> dict:
        return {
            "from_logits": self.from_logits,
            "use_output_logits": self.use_output_logits,
            "epsilon": self.epsilon,
        }


LOSSES = {SparseCategoricalCrossentropy.name: SparseCategoricalCrossentropy}


def get(identifier: str | SparseCategoricalCrossentropy) -> SparseCategoricalCrossentropy:
    """A loss object from its Keras name, or the object itself."""
    if isinstance(identifier, SparseCategoricalCrossentropy):
        return identifier
    if identifier not in LOSSES:
        raise ValueError(
            f"loss must be one of {sorted(LOSSES)} or a loss object, got {identifier!r}"
        )
    return LOSSES[identifier]()
