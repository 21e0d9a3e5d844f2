"""``Conv2D``: a 2-D convolution over channels-last images, with Keras 3's names and defaults.

Its math is ``tinynn/convolution.py`` (``conv2d_forward`` / ``conv2d_backward``), called
through the selected backend as ``Dense`` calls its kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tinynn import activations, initializers, validation
from tinynn.backend import kernels
from tinynn.convolution import PADDINGS, geometry
from tinynn.layers.base import Layer
from tinynn.layers.core import make_kernel_and_bias


def pair(value: object, name: str) -> tuple[int, int]:
    """Keras's spelling of a 2-D size: an int n means (n, n); else two positive ints."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return (validation.positive_int(value[0], name), validation.positive_int(value[1], name))
    n = validation.positive_int(value, name)
    return (n, n)


def padding_of(value: object) -> str:
    """``"valid"`` or ``"same"``, in any case (as Keras reads it)."""
    if not isinstance(value, str) or value.lower() not in PADDINGS:
        raise ValueError(f"padding must be one of {list(PADDINGS)}, got {value!r}")
    return value.lower()


def channels_last(data_format: object) -> None:
    """tinynn's images are channels-last (Keras's default); refuse the other layout clearly."""
    if data_format not in (None, "channels_last"):
        raise ValueError(f"data_format={data_format!r}: tinynn supports channels_last only "
                         f"(images of shape (batch, height, width, channels)); transpose "
                         f"channels-first arrays with np.moveaxis(x, 1, -1)")


def image_shape(input_shape: Sequence[int], layer: Layer) -> tuple[int, int, int]:
    """One sample's (h, w, c), or a clear error naming the layer."""
    if len(input_shape) != 3:
        raise ValueError(
            f"layer {layer.name!r} ({type(layer).__name__}) expects images of shape (batch, "
            f"height, width, channels), got one sample of shape {tuple(input_shape)}; for "
            f"grayscale images add the channel axis: np.expand_dims(x, -1)")
    return tuple(input_shape)


def output_size(layer: Layer, input_shape, window, strides, dilation, padding) -> tuple:
    """(oh, ow) of windows over an image, refused when no whole window fits."""
    h, w, _ = image_shape(input_shape, layer)
    out = tuple(geometry(size, k, s, d, padding)[0]
                for size, k, s, d in zip((h, w), window, strides, dilation))
    if min(out) < 1:
        raise ValueError(f"layer {layer.name!r}: a {window[0]}×{window[1]} window (dilation "
                         f"{dilation}) does not fit in a {h}×{w} image with padding="
                         f"'{padding}'; the output would be empty")
    return out


class Conv2D(Layer):
    """A 2-D convolution: ``activation(conv(x, kernel) + bias)``, channels-last.

    z[n, i, j, f] = Σ_{a, b, c} x[n, i·sh + a·dh, j·sw + b·dw, c] · kernel[a, b, c, f] + bias[f]

    Args:
        filters: number of output channels f.
        kernel_size: (kh, kw), or an int for a square.
        strides: (sh, sw), or an int; default (1, 1).
        padding: ``"valid"`` (whole windows only) or ``"same"`` (⌈h / s⌉ outputs; the
            extra padding goes at the bottom and right, as TensorFlow's).
        data_format: None or ``"channels_last"`` (``"channels_first"`` is refused).
        dilation_rate: (dh, dw), or an int; > 1 only with strides 1, as Keras.
        groups: 1 (grouped convolutions are not built in).
        activation, use_bias, kernel_initializer, bias_initializer: as ``Dense``; the
            kernel has shape (kh, kw, c, f) and Glorot's fans are kh · kw · c and kh · kw · f.
        input_shape: one image's (h, w, c), or None to build from the first input.

    >>> import numpy as np
    >>> layer = Conv2D(4, 3, activation="relu")
    >>> layer(np.zeros((2, 28, 28, 1), np.float32)).shape
    (2, 26, 26, 4)
    >>> [w.shape for w in layer.get_weights()]
    [(3, 3, 1, 4), (4,)]
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = (1, 1),
        groups: int = 1,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable = "glorot_uniform",
        bias_initializer: str | Callable = "zeros",
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ):
        super().__init__(input_shape, name)
        self.filters = validation.positive_int(filters, "filters")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.strides = pair(strides, "strides")
        self.padding = padding_of(padding)
        channels_last(data_format)
        self.dilation_rate = pair(dilation_rate, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"strides={self.strides} and dilation_rate={self.dilation_rate}: "
                             f"strides > 1 together with dilation_rate > 1 is not supported "
                             f"(as in Keras)")
        if validation.positive_int(groups, "groups") != 1:
            raise ValueError(f"groups={groups}: only groups=1 is supported")
        self.activation = activations.get(activation)
        self.use_bias = validation.boolean(use_bias, "use_bias")
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.compute_output_shape(input_shape)  # refuses a shape it cannot convolve
        make_kernel_and_bias(self, (*self.kernel_size, input_shape[-1], self.filters))
        super().build(input_shape)

    def check(self) -> None:
        super().check()
        activations.get(self.activation)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        oh, ow = output_size(self, input_shape, self.kernel_size, self.strides,
                             self.dilation_rate, self.padding)
        return (oh, ow, self.filters)

    def _geometry(self) -> tuple:
        return self.strides, self.padding, self.dilation_rate

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """a = f(conv(x, W) + b); keeps x and a for backward, z when the loss may want it."""
        z, a = kernels().conv2d_forward(x, self.params["kernel"], self.params.get("bias"),
                                        *self._geometry(), self.activation)
        self._x, self._a = x, a
        self.logits = z if self.activation in activations.KEEPS_LOGITS else None
        return a

    def backward(self, dy: np.ndarray, wrt_logits: bool = False, need_dx: bool = True):
        """dz = f'(z) ⊙ dy; dW correlates x with dz; dx is dz fully correlated with the
        flipped kernel (see ``tinynn.convolution.conv2d_backward``).

        Args:
            dy: dL/da, shape (n, oh, ow, f); with ``wrt_logits=True``, dL/dz.
            need_dx: False for the first layer, whose input gradient nobody uses.
        """
        dx, dW, db = kernels().conv2d_backward(
            self._x, self.params["kernel"], self._a, dy, *self._geometry(),
            "linear" if wrt_logits else self.activation, need_dx)
        self.grads["kernel"] = dW
        if self.use_bias:
            self.grads["bias"] = db
        return dx

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "dilation_rate": self.dilation_rate,
                "activation": self.activation, "use_bias": self.use_bias}
