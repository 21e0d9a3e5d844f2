"""Layers, with Keras's names and defaults: the contract, then the built-in layers.

**The contract.** A layer is three methods around two dicts:

* ``build(input_shape)`` creates ``self.params[...]`` for samples of that
  shape, then calls ``super().build(input_shape)``;
* ``forward(x, training=False)`` returns the output and keeps what backward needs;
* ``backward(dy)`` turns dL/d(output) into dL/d(input), and leaves dL/d(param)
  in ``self.grads`` under the keys of ``self.params``. A backward that takes a
  ``need_dx`` argument is called with ``need_dx=False`` when it is the model's first
  layer: nobody reads the gradient of the inputs, so it may skip it.

A subclass that keeps to it trains with ``fit`` on every backend. The math of
the built-in layers lives in the kernels (``tinynn.reference`` and its compiled twins).

The *logits rule* (see ``tinynn.losses``): a layer whose output is a sigmoid or
softmax keeps that activation's input in ``self.logits``; a cross-entropy loss
may then start backprop from there, and calls ``backward(dy, wrt_logits=True)``.
"""

from tinynn import utils
from tinynn.layers.activation import Activation, LeakyReLU, ReLU, Softmax
from tinynn.layers.base import Layer, call_forward, check_weight, takes, unique_name
from tinynn.layers.conv import Conv2D
from tinynn.layers.core import Dense, Flatten, Input, InputLayer, Reshape
from tinynn.layers.dropout import Dropout
from tinynn.layers.pooling import (
    AveragePooling2D,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    MaxPooling2D,
)

__all__ = ["Activation", "AveragePooling2D", "Conv2D", "Dense", "Dropout", "Flatten",
           "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Input", "InputLayer", "LAYERS",
           "Layer", "LeakyReLU", "MaxPooling2D", "ReLU", "Reshape", "Softmax", "call_forward",
           "check_weight", "takes", "unique_name"]

#: The built-in layers by class name (model files name them so).
LAYERS = utils.registry(Layer, __name__)
