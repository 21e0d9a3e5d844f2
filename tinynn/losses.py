"""Cross-entropy losses, exactly as Keras computes them: sparse (integer labels)
and categorical (one-hot rows).

**What Keras really minimises.** With its TensorFlow backend, a ``sigmoid`` or
``softmax`` activation keeps its input (the *logits*) beside its output, and a
cross-entropy loss with ``from_logits=False`` uses those logits when it finds
them: the loss is the *softmax* cross-entropy of the output layer's logits. So
the classic MNIST model ``Dense(10, activation="sigmoid")`` trains exactly like
softmax regression, while ``predict()`` still returns the ten sigmoid values.
tinynn does the same by default; ``use_output_logits=False`` gives the literal
formula on the outputs instead. ``Loss.formula`` is the one place this rule lives.

The three cases:

* ``"output_logits"``: the output is a sigmoid/softmax's and ``use_output_logits``:
  the softmax formula on its logits z (Keras does this even when ``from_logits=True``);
* ``"logits"``: ``from_logits=True``: the same formula on the raw outputs;
* ``"probabilities"``: otherwise, the outputs clipped to [ε, 1 − ε] and read as
  probabilities.
"""

from __future__ import annotations

import numpy as np

from tinynn import utils, validation
from tinynn.backend import kernels


class Loss:
    """A cross-entropy: per-sample ``forward``, and ``backward`` for the batch mean.

    Subclasses name their kernels: ``<kernel>_softmax_cross_entropy`` (logits)
    and ``<kernel>_probability_cross_entropy`` (probabilities), each with its
    ``_backward``, in the kernel modules (``tinynn.reference``).

    Args:
        from_logits: the outputs are logits, not probabilities.
        use_output_logits: when the output layer's activation is sigmoid or
            softmax, compute the loss from its logits, as Keras's TensorFlow
            backend does (default True).
        epsilon: clipping bound for the probability formula (Keras's 1e-7).
    """

    name = ""
    kernel = ""

    def __init__(self, from_logits: bool = False, use_output_logits: bool = True,
                 epsilon: float = 1e-7):
        self.from_logits = validation.boolean(from_logits, "from_logits")
        self.use_output_logits = validation.boolean(use_output_logits, "use_output_logits")
        self.epsilon = validation.positive_float(epsilon, "epsilon")
        if self.epsilon >= 0.5:
            raise ValueError(f"epsilon must be in (0, 0.5), got {epsilon!r}")
        #: Whether the last ``forward`` read the output layer's logits, so that
        #: ``backward`` gives dL/d(logits), not dL/d(outputs).
        self.on_logits = False

    def formula(self, has_logits: bool) -> str:
        """Keras's logits rule: ``"output_logits"``, ``"logits"`` or ``"probabilities"``.

        Args:
            has_logits: the output layer's activation is sigmoid or softmax.
        """
        if has_logits and self.use_output_logits:
            return "output_logits"
        return "logits" if self.from_logits else "probabilities"

    def forward(self, y_true: np.ndarray, y_pred: np.ndarray,
                logits: np.ndarray | None = None) -> np.ndarray:
        """Per-sample losses, shape (n,).

        Args:
            y_true: the targets (see ``check_targets``).
            y_pred: the model's outputs, shape (n, c).
            logits: the output activation's input, shape (n, c), if it kept one.
        """
        formula = self.formula(logits is not None)
        self.on_logits = formula == "output_logits"
        self._input = logits if self.on_logits else y_pred
        self._targets = y_true
        self._kind = "probability" if formula == "probabilities" else "softmax"
        return self._kernel("")(*self._arguments())

    def backward(self) -> np.ndarray:
        """dL/d(what ``forward`` read) for the batch-mean loss, shape (n, c)."""
        return self._kernel("_backward")(*self._arguments())

    def _kernel(self, suffix: str):
        return getattr(kernels(), f"{self.kernel}_{self._kind}_cross_entropy{suffix}")

    def _arguments(self) -> tuple:
        eps = (self.epsilon,) if self._kind == "probability" else ()
        return (self._input, self._targets, *eps)

    def __call__(self, y_true, y_pred) -> float:
        """The batch-mean loss of outputs ``y_pred`` (n, c) against ``y_true``.

        Plain arrays carry no logits, so this is the probability formula unless
        ``from_logits=True``.
        """
        validation.inputs(y_pred, "y_pred", None)  # checks only: the sum stays in float64
        y_pred = np.asarray(y_pred, dtype=np.float64)
        y_true = self.check_targets(y_true, "y_true", len(y_pred), y_pred.shape[-1])
        return float(self.forward(y_true, y_pred).mean())

    def check_targets(self, y, name: str, samples: int, classes: int) -> np.ndarray:
        """The targets, checked, in the form the kernels take."""
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"from_logits": self.from_logits, "use_output_logits": self.use_output_logits,
                "epsilon": self.epsilon}


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy between integer labels, shape (n,), and outputs over c classes.

    loss_i = −log p_{i,y_i}

    >>> import numpy as np
    >>> loss = SparseCategoricalCrossentropy()
    >>> round(loss(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])), 4)
    0.1643
    """

    name = "sparse_categorical_crossentropy"
    kernel = "sparse"

    def check_targets(self, y, name: str, samples: int, classes: int) -> np.ndarray:
        return validation.labels(y, name, samples, classes)


class CategoricalCrossentropy(Loss):
    """Cross-entropy between one-hot (or probability) rows, shape (n, c), and outputs.

    loss_i = −Σ_j t_ij · log p_ij

    >>> import numpy as np
    >>> loss = CategoricalCrossentropy()
    >>> round(loss(np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.1], [0.2, 0.8]])), 4)
    0.1643
    """

    name = "categorical_crossentropy"
    kernel = "categorical"

    def check_targets(self, y, name: str, samples: int, classes: int) -> np.ndarray:
        return validation.targets(y, name, samples, classes)


#: The built-in losses by class name.
LOSSES = utils.registry(Loss, __name__)
#: ... and by their Keras string names.
NAMES = {cls.name: cls for cls in LOSSES.values() if cls.name}


def get(identifier: str | Loss) -> Loss:
    """A loss object from its Keras name, or the object itself."""
    if isinstance(identifier, Loss):
        return identifier
    if not isinstance(identifier, str) or identifier not in NAMES:
        raise ValueError(
            f"loss must be one of {sorted(NAMES)} or a loss object, got {identifier!r}"
        )
    return NAMES[identifier]()
