"""The one table of built-ins: every built-in part of the textbook and its compiled form.

A model trains in one compiled call per many steps (``fused.py``) when each of its
parts has a row here. Each kind of part has its table:

* ``LAYERS``: a layer class and how it lowers to the fused step's ops (``lower_*``);
* ``ACTIVATIONS``: the branches of ``loops._activate``, by activation name;
* ``UPDATES``: the loops of ``updates.LOOPS``, by the update kernel an optimizer names
  (``KernelOptimizer.kernel``);
* ``LOSSES``: the loss classes whose targets the fused step reads (labels or rows).

Codes are positions in these tables: derived here, never typed twice. The loops and
``fused.py`` read them as constants, ``engine.py`` lowers a model with them, and
``check`` (run at import) refuses a built-in with no row, or a row naming a kernel the
reference lacks (the tests hold each compiled twin to its reference). Adding a built-in is
its class, its reference pair, its compiled twin, and one row here (CONTRIBUTING.md has
the checklist).
"""

from __future__ import annotations

import math

from tinynn import activations, layers, losses, optimizers, reference
from tinynn.training import Fault

# ---------------------------------------------------------------- op kinds
#: What the fused step does for one op row ``[kind, arg, width]`` (and a float parameter).
AFFINE, ACTIVATE, DROPOUT, USER = range(4)
#: How a run of fused steps ended: the textbook's ``training.Fault``, as plain ints.
FINISHED, LOSS_NOT_FINITE, WEIGHTS_NOT_FINITE, ABORTED = (
    int(Fault.NONE), int(Fault.LOSS), int(Fault.WEIGHTS), int(Fault.ABORTED))

# ---------------------------------------------------------------- activations
#: Activation names in code order (a code is a position here). A name with a parameter
#: takes it from the op row (e.g. LeakyReLU's negative_slope).
ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu")
LINEAR, RELU, SIGMOID, TANH, SOFTMAX, LEAKY_RELU = range(len(ACTIVATIONS))
CODES = {name: code for code, name in enumerate(ACTIVATIONS)}

# ---------------------------------------------------------------- optimizers
#: Update kernels in code order. Each optimizer's scalar arguments come from its
#: ``update_arguments``; its slots, in ``slot_names`` order, fill the first ``len(slot_names)``
#: of the step's ``MAX_SLOTS`` slot tuples.
UPDATES = ("sgd_update", "adam_update", "adamw_update", "rmsprop_update", "adagrad_update")
SGD_UPDATE, ADAM_UPDATE, ADAMW_UPDATE, RMSPROP_UPDATE, ADAGRAD_UPDATE = range(len(UPDATES))
#: The most slots any built-in optimizer has: the width of the fused step's slot tuple.
MAX_SLOTS = max(len(cls.slot_names) for cls in optimizers.OPTIMIZERS.values())

# ---------------------------------------------------------------- losses
#: The built-in losses and whether their targets are rows (categorical) or labels.
LOSSES = {losses.SparseCategoricalCrossentropy: False, losses.CategoricalCrossentropy: True}


# ---------------------------------------------------------------- layers
# A lowering takes (layer, input width, training) and returns op rows
# (kind, argument, output width, parameter); the engine numbers the Dense and
# Dropout layers it meets (the ``argument`` of AFFINE and DROPOUT rows).


def lower_dense(layer, width: int, training: bool) -> list[tuple]:
    """z = x · W + b, then the activation (none for linear)."""
    rows = [(AFFINE, -1, layer.units, 0.0)]
    return rows + lower_activation(layer, layer.units, training)


def lower_activation(layer, width: int, training: bool) -> list[tuple]:
    """a = f(z) by the activation's name."""
    if layer.activation == "linear":
        return []
    return [(ACTIVATE, CODES[layer.activation], width, 0.0)]


def lower_leaky_relu(layer, width: int, training: bool) -> list[tuple]:
    """a = z or negative_slope · z: the slope rides in the op row."""
    return [(ACTIVATE, LEAKY_RELU, width, layer.negative_slope)]


def lower_dropout(layer, width: int, training: bool) -> list[tuple]:
    """y = x · s while training (at rate 0, or in inference, no op); its rate, seed and
    mask counter ride in ``fused.Dropouts``."""
    return [(DROPOUT, -1, width, 0.0)] if training and layer.rate > 0 else []


def lower_nothing(layer, width: int, training: bool) -> list[tuple]:
    """A view of the same numbers (Flatten): rows stay rows."""
    return []


def lower_user(layer, width: int, training: bool) -> list[tuple]:
    """A layer with no row here (a user's, or a subclass of a built-in), in training: the
    fused step calls its own forward and backward (``users.py``); the engine numbers the
    user layers it meets."""
    return [(USER, -1, int(math.prod(layer.compute_output_shape(layer.input_shape))), 0.0)]


#: The row of a built-in that has compiled twins (``kernels.py``) but no fused ops: a model
#: with one trains step by step, layer by layer, each layer's twins compiled. (A
#: convolution's step is mostly arithmetic: crossing from Python once a layer costs little.)
STEP_BY_STEP = None

#: Built-in layer classes and their lowerings: exactly these classes (a subclass may have
#: changed the math: it trains as a user's layer, ``lower_user``).
LAYERS = {
    layers.Dense: lower_dense,
    layers.Activation: lower_activation,
    layers.ReLU: lower_activation,
    layers.Softmax: lower_activation,
    layers.LeakyReLU: lower_leaky_relu,
    layers.Dropout: lower_dropout,
    layers.Flatten: lower_nothing,
    layers.Reshape: lower_nothing,
    layers.Conv2D: STEP_BY_STEP,
    layers.MaxPooling2D: STEP_BY_STEP,
    layers.AveragePooling2D: STEP_BY_STEP,
    layers.GlobalMaxPooling2D: STEP_BY_STEP,
    layers.GlobalAveragePooling2D: STEP_BY_STEP,
}


#: The kernels of the step-by-step built-ins (``tinynn/convolution.py``), forward and backward.
CONVOLUTION = tuple(f"{name}_{way}" for name in ("conv2d", "max_pool2d", "average_pool2d",
                                                 "global_max_pool2d", "global_average_pool2d")
                    for way in ("forward", "backward"))


def check() -> None:
    """Every built-in has a row, and every row's kernels exist in the reference (the
    compiled twins are checked against it by tests/test_kernels.py)."""
    missing = ([n for n, c in layers.LAYERS.items() if c not in LAYERS]
               + [n for n in activations.NAMES if n not in CODES]
               + [n for n, c in optimizers.OPTIMIZERS.items() if c.kernel not in UPDATES]
               + [n for n, c in losses.LOSSES.items() if c not in LOSSES])
    if missing:
        raise RuntimeError(f"built-ins without a row in tinynn/compiled/table.py: {missing}")
    names = [*UPDATES, *(f"{n}_backward" for n in ACTIVATIONS), *CONVOLUTION]
    absent = [n for n in names if not callable(getattr(reference, n, None))]
    if absent:
        raise RuntimeError(f"tinynn/compiled/table.py names kernels that tinynn.reference "
                           f"lacks: {absent}")


def constants() -> str:
    """What compiled code takes from the textbook (the fault codes) and this table, as
    text: part of the kernel cache's stamp, so that a change to them recompiles."""
    return repr((FINISHED, LOSS_NOT_FINITE, WEIGHTS_NOT_FINITE, ABORTED, ACTIVATIONS,
                 UPDATES, MAX_SLOTS))


check()
