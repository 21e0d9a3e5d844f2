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

#: name -> (layers as (units, activation), loss options, optimizer)
MODELS = {
    "simple": ([(10, "sigmoid")], {}, ("adam", {})),
    "hidden": ([(100, "relu"), (10, "sigmoid")], {}, ("adam", {})),
    "softmax": ([(10, "softmax")], {}, ("adam", {})),
    "linear_from_logits": ([(32, "tanh"), (10, None)], {"from_logits": True}, ("adam", {})),
    "relu_probabilities": ([(16, "tanh"), (10, "relu")], {}, ("adam", {})),
    "hidden_sgd_momentum": (
        [(100, "relu"), (10, "sigmoid")], {}, ("sgd", {"learning_rate": 0.05, "momentum": 0.9})
    ),
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
    for name, (layers, loss_options, (opt_name, opt_options)) in MODELS.items():
        model = keras.Sequential(
            [keras.Input((784,))] + [keras.layers.Dense(u, activation=a) for u, a in layers]
        )
        # Random non-zero weights everywhere (biases too), so every term is exercised.
        init = [rng.normal(0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()]
        if name == "relu_probabilities":
            # Start the outputs well inside (0, 1): near the clipping bound the
            # gradient is ~1/p and float32 rounding, not the rule, decides.
            init[-1] += np.float32(0.3)
        model.set_weights(init)
        optimizer = (keras.optimizers.Adam if opt_name == "adam" else keras.optimizers.SGD)(
            **opt_options
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(**loss_options),
            metrics=["accuracy"],
        )
        history = model.fit(x / 255, y_train[:N_TRAIN], batch_size=32, epochs=1,
                            shuffle=False, verbose=0)
        test_loss, test_acc = model.evaluate(xt / 255, y_test[:N_TEST], verbose=0)
        spec[name] = {"layers": layers, "loss": loss_options, "optimizer": [opt_name, opt_options],
                      "loss_log": history.history["loss"][0],
                      "accuracy_log": history.history["accuracy"][0],
                      "test_loss": test_loss, "test_accuracy": test_acc}
        for i, w in enumerate(init):
            out[f"{name}/init/{i}"] = w
        for i, w in enumerate(model.get_weights()):
            out[f"{name}/trained/{i}"] = w
        out[f"{name}/predict"] = model.predict(xt / 255, verbose=0)
        print(f"{name}: loss {spec[name]['loss_log']:.5f}, test accuracy {test_acc:.4f}")
    out["spec"] = np.array(json.dumps(spec | {"keras": keras.__version__}))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
