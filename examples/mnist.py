"""The Keras MNIST notebook, rebuilt on tinynn: two dense models learn handwritten digits.

    python examples/mnist.py [--epochs 5] [--batch-size 32] [--seed 0] [--data-dir DIR]

MNIST is read from --data-dir, or from $TINYNN_DATA (see tinynn.datasets.mnist).
"""

from __future__ import annotations

import argparse
import time

import tinynn as keras


def build_simple() -> keras.Sequential:
    """784 pixels → 10 sigmoid outputs: the notebook's first model."""
    return keras.Sequential([keras.layers.Dense(10, input_shape=(784,), activation="sigmoid")])


def build_hidden() -> keras.Sequential:
    """784 → 100 relu → 10 sigmoid: the notebook's model with a hidden layer."""
    return keras.Sequential([
        keras.layers.Dense(100, input_shape=(784,), activation="relu"),
        keras.layers.Dense(10, activation="sigmoid"),
    ])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="directory with the MNIST IDX files")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data(args.data_dir)
    print("Number of training samples:", len(x_train))
    print("Number of testing samples:", len(x_test))
    print("Shape of an individual sample:", x_train[0].shape)

    # Scale to [0, 1] and flatten each 28×28 image to 784 numbers.
    x_train_flattened = (x_train / 255).reshape(len(x_train), -1)
    x_test_flattened = (x_test / 255).reshape(len(x_test), -1)

    results = {}
    for name, build in (("simple", build_simple), ("hidden", build_hidden)):
        print(f"\n== {name} model ==")
        model = build()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.summary()
        start = time.perf_counter()
        model.fit(x_train_flattened, y_train, epochs=args.epochs, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        test_loss, test_accuracy = model.evaluate(x_test_flattened, y_test)
        print(f"Test loss: {test_loss:.4f}, Test accuracy: {test_accuracy:.4f} "
              f"(trained in {seconds:.1f} s)")
        results[name] = {"test_loss": test_loss, "test_accuracy": test_accuracy,
                         "train_seconds": seconds}
    return results


if __name__ == "__main__":
    main()
