"""Record what Keras does on a tiny, fixed training run, for tests/test_keras_parity.py.

Needs Keras 3 with TensorFlow (``pip install tensorflow-cpu``), and tinynn's
source on the path only for reading MNIST. Run from the repository root:

    PYTHONPATH=. TINYNN_DATA=../shared/datasets python tools/make_keras_parity.py

For each model below, it sets weights drawn from a fixed seed, trains with
``fit(shuffle=False, batch_size=32, epochs=1)`` on the first 640 training
images (20 optimizer steps), and stores the initial weights, the weights after
training, the fit logs, the evaluation and the predictions on 200 test images
in ``tests/fixtures/keras_parity.npz``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from tinynn.datasets import mnist  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "keras_parity.npz"
N_TRAIN, N_TEST = 640, 200

#: name -> (layers as [class, options], loss as [class, options], optimizer as [class, options]).
#: Class names are the same in Keras and tinynn.
SCE, CCE = "SparseCategoricalCrossentropy", "CategoricalCrossentropy"


def dense(units, activation=None):
    return ["Dense", {"units": units, "activation": activation}]


def conv(filters, kernel_size, **options):
    return ["Conv2D", {"filters": filters, "kernel_size": kernel_size, **options}]


#: Convolutional models take the images as (28, 28, 1) (the rest: rows of 784); their
#: weights must match to 5e-5 (more sums of more terms per weight than a dense layer's).
IMAGES = [28, 28, 1]
CONV_TOLERANCE = 5e-5


MODELS = {
    "simple": ([dense(10, "sigmoid")], [SCE, {}], ["Adam", {}]),
    "hidden": ([dense(100, "relu"), dense(10, "sigmoid")], [SCE, {}], ["Adam", {}]),
    "softmax": ([dense(10, "softmax")], [SCE, {}], ["Adam", {}]),
    "linear_from_logits": ([dense(32, "tanh"), dense(10)], [SCE, {"from_logits": True}],
                           ["Adam", {}]),
    "relu_probabilities": ([dense(16, "tanh"), dense(10, "relu")], [SCE, {}], ["Adam", {}]),
    "hidden_sgd_momentum": ([dense(100, "relu"), dense(10, "sigmoid")], [SCE, {}],
                            ["SGD", {"learning_rate": 0.05, "momentum": 0.9}]),
    "hidden_sgd_nesterov": ([dense(100, "relu"), dense(10, "sigmoid")], [SCE, {}],
                            ["SGD", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}]),
    # The Keras MNIST MLP, narrower: Dropout (rate 0 for an exact comparison), softmax,
    # one-hot labels, categorical cross-entropy, RMSprop.
    "mlp_rmsprop_categorical": (
        [dense(64, "relu"), ["Dropout", {"rate": 0.0}], dense(64, "relu"),
         ["Dropout", {"rate": 0.0}], dense(10, "softmax")], [CCE, {}], ["RMSprop", {}]),
    "rmsprop_centered_momentum": ([dense(32, "relu"), dense(10)], [CCE, {"from_logits": True}],
                                  ["RMSprop", {"momentum": 0.5, "centered": True}]),
    "categorical_probabilities": ([dense(16, "tanh"), dense(10, "relu")], [CCE, {}],
                                  ["Adam", {}]),
    "adamw_softmax_layer": ([dense(32, "tanh"), dense(10), ["Softmax", {}]], [SCE, {}],
                            ["AdamW", {"weight_decay": 0.05}]),
    # TensorFlow's beginner quickstart (Dropout at rate 0 for an exact comparison).
    "quickstart": ([dense(128, "relu"), ["Dropout", {"rate": 0.0}], dense(10)],
                   [SCE, {"from_logits": True}], ["Adam", {}]),
    # LeakyReLU and Adagrad, at their defaults and with options.
    "leaky_relu_adam": ([dense(64), ["LeakyReLU", {"negative_slope": 0.1}], dense(32),
                         ["LeakyReLU", {}], dense(10, "sigmoid")], [SCE, {}], ["Adam", {}]),
    "adagrad": ([dense(100, "relu"), dense(10, "sigmoid")], [SCE, {}],
                ["Adagrad", {"learning_rate": 0.05}]),
    "leaky_relu_adagrad_categorical": (
        [dense(64), ["LeakyReLU", {}], dense(10, "softmax")], [CCE, {}],
        ["Adagrad", {"learning_rate": 0.01, "initial_accumulator_value": 0.5,
                     "epsilon": 1e-6}]),
    # Convolutions: valid and same padding, stride 2 on an odd size (25 × 25), a
    # non-square kernel, dilation, max and average pooling with same padding, global
    # pooling, and Keras's MNIST convnet (its Dropout at rate 0 for an exact comparison).
    "conv_valid": ([conv(8, 3, activation="relu"), ["Flatten", {}], dense(10, "softmax")],
                   [SCE, {}], ["Adam", {}]),
    "conv_same_stride2_odd": ([conv(6, 4, activation="tanh"),
                               conv(8, 3, strides=2, padding="same", activation="relu"),
                               ["Flatten", {}], dense(10)], [SCE, {"from_logits": True}],
                              ["Adam", {}]),
    "conv_nonsquare_dilated": ([conv(4, [2, 5], activation="relu"),
                                conv(6, 3, dilation_rate=2, padding="same"),
                                ["Flatten", {}], dense(10, "sigmoid")], [SCE, {}], ["Adam", {}]),
    "conv_pooling_same": ([conv(6, 3, padding="same", activation="relu"),
                           ["MaxPooling2D", {"pool_size": 3, "strides": 2, "padding": "same"}],
                           conv(8, 3, activation="relu"),
                           ["AveragePooling2D", {"pool_size": [2, 3], "padding": "same"}],
                           ["Flatten", {}], dense(10, "softmax")], [CCE, {}], ["Adam", {}]),
    "conv_global_pooling": ([conv(8, 3, strides=2, activation="relu"),
                             ["GlobalAveragePooling2D", {}], dense(10, "softmax")], [SCE, {}],
                            ["Adam", {}]),
    "conv_global_max": ([conv(8, 5, activation="relu"), ["GlobalMaxPooling2D", {}], dense(10)],
                        [SCE, {"from_logits": True}], ["Adam", {}]),
    "mnist_convnet": ([conv(32, [3, 3], activation="relu"), ["MaxPooling2D", {"pool_size": [2, 2]}],
                       conv(64, [3, 3], activation="relu"), ["MaxPooling2D", {"pool_size": [2, 2]}],
                       ["Flatten", {}], ["Dropout", {"rate": 0.0}], dense(10, "softmax")],
                      [CCE, {}], ["Adam", {}]),
}


def main() -> None:
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x = x_train[:N_TRAIN].reshape(N_TRAIN, -1)
    xt = x_test[:N_TEST].reshape(N_TEST, -1)
    out = {
        "x_train": x, "y_train": y_train[:N_TRAIN], "x_test": xt, "y_test": y_test[:N_TEST],
    }
    spec = {}
    rng = np.random.default_rng(1234)
    for name, (layers, (loss_class, loss_options), (opt_class, opt_options)) in MODELS.items():
        images = any(c == "Conv2D" for c, _ in layers)
        shape = IMAGES if images else [784]
        model = keras.Sequential(
            [keras.Input(tuple(shape))] + [getattr(keras.layers, c)(**o) for c, o in layers]
        )
        # Random non-zero weights everywhere (biases too), so every term is exercised.
        init = [rng.normal(0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()]
        if "probabilities" in name:
            # Start the outputs well inside (0, 1): near the clipping bound the
            # gradient is ~1/p and float32 rounding, not the rule, decides.
            init[-1] += np.float32(0.3)
        model.set_weights(init)
        model.compile(
            optimizer=getattr(keras.optimizers, opt_class)(**opt_options),
            loss=getattr(keras.losses, loss_class)(**loss_options),
            metrics=["accuracy"],
        )
        y, yt = y_train[:N_TRAIN], y_test[:N_TEST]
        if loss_class == CCE:
            y, yt = keras.utils.to_categorical(y, 10), keras.utils.to_categorical(yt, 10)
        xs, xts = x.reshape(-1, *shape) / 255, xt.reshape(-1, *shape) / 255
        history = model.fit(xs, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        test_loss, test_acc = model.evaluate(xts, yt, verbose=0)
        spec[name] = {"layers": layers, "loss": [loss_class, loss_options],
                      "optimizer": [opt_class, opt_options],
                      "loss_log": history.history["loss"][0],
                      "accuracy_log": history.history["accuracy"][0],
                      "test_loss": test_loss, "test_accuracy": test_acc,
                      "input_shape": shape, "tolerance": CONV_TOLERANCE if images else 1e-5}
        for i, w in enumerate(init):
            out[f"{name}/init/{i}"] = w
        for i, w in enumerate(model.get_weights()):
            out[f"{name}/trained/{i}"] = w
        out[f"{name}/predict"] = model.predict(xts, verbose=0)
        print(f"{name}: loss {spec[name]['loss_log']:.5f}, test accuracy {test_acc:.4f}")
    out["spec"] = np.array(json.dumps(spec | {"keras": keras.__version__}))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
