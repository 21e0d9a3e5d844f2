"""Pooling layers, with Keras 3's names and defaults: ``MaxPooling2D``, ``AveragePooling2D``,
``GlobalMaxPooling2D`` and ``GlobalAveragePooling2D`` (channels-last images).

They have no weights; their math is ``tinynn/convolution.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinynn.backend import kernels
from tinynn.layers.base import Layer
from tinynn.layers.conv import channels_last, image_shape, output_size, padding_of, pair


class _Pooling2D(Layer):
    """A pooling over windows of ``pool_size``, ``strides`` apart (None: ``pool_size``)."""

    kernel = ""  # the kernels' name: "max_pool2d" or "average_pool2d"

    def __init__(self, pool_size: int | Sequence[int] = (2, 2),
                 strides: int | Sequence[int] | None = None, padding: str = "valid",
                 data_format: str | None = None, input_shape: Sequence[int] | None = None,
                 name: str | None = None):
        super().__init__(input_shape, name)
        self.pool_size = pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else pair(strides, "strides")
        self.padding = padding_of(padding)
        channels_last(data_format)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        oh, ow = output_size(self, input_shape, self.pool_size, self.strides, (1, 1),
                             self.padding)
        return (oh, ow, input_shape[-1])

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.compute_output_shape(input_shape)  # refuses a shape it cannot pool
        super().build(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}


class MaxPooling2D(_Pooling2D):
    """The largest value of each window, channel by channel.

    Args:
        pool_size: (ph, pw), or an int for a square; default (2, 2).
        strides: (sh, sw), an int, or None for ``pool_size``.
        padding: ``"valid"`` or ``"same"`` (padding never wins the max).
        data_format: None or ``"channels_last"``.

    >>> import numpy as np
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    >>> MaxPooling2D()(x)[0, :, :, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x = x
        return kernels().max_pool2d_forward(x, self.pool_size, self.strides, self.padding)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Each window's gradient goes to its (first) maximum."""
        return kernels().max_pool2d_backward(dy, self._x, self.pool_size, self.strides,
                                             self.padding)


class AveragePooling2D(_Pooling2D):
    """The mean of each window, channel by channel; with ``"same"`` padding, the mean of
    the window's in-image part (as Keras).

    Args:
        pool_size, strides, padding, data_format: as ``MaxPooling2D``.

    >>> import numpy as np
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    >>> AveragePooling2D()(x)[0, :, :, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x_shape = x.shape
        return kernels().average_pool2d_forward(x, self.pool_size, self.strides, self.padding)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Each window's gradient, shared equally by the inputs it averaged."""
        return kernels().average_pool2d_backward(dy, self._x_shape, self.pool_size,
                                                 self.strides, self.padding)


class _GlobalPooling2D(Layer):
    def __init__(self, data_format: str | None = None, keepdims: bool = False,
                 input_shape: Sequence[int] | None = None, name: str | None = None):
        super().__init__(input_shape, name)
        channels_last(data_format)
        if keepdims is not False:
            raise ValueError(f"keepdims={keepdims!r}: only keepdims=False is supported")

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (image_shape(input_shape, self)[-1],)


class GlobalMaxPooling2D(_GlobalPooling2D):
    """The largest value of each channel over the whole image: (n, h, w, c) → (n, c).

    >>> import numpy as np
    >>> GlobalMaxPooling2D()(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
    array([[6., 7.]], dtype=float32)
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x = x
        return kernels().global_max_pool2d_forward(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return kernels().global_max_pool2d_backward(dy, self._x)


class GlobalAveragePooling2D(_GlobalPooling2D):
    """The mean of each channel over the whole image: (n, h, w, c) → (n, c).

    >>> import numpy as np
    >>> GlobalAveragePooling2D()(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
    array([[3., 4.]], dtype=float32)
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x_shape = x.shape
        return kernels().global_average_pool2d_forward(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return kernels().global_average_pool2d_backward(dy, self._x_shape)
