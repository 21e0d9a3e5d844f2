"""The Keras MNIST notebook, rebuilt on tinynn: two dense models (and a convnet) learn digits.

    python examples/mnist.py                     # 5 epochs, batch 32, seed 0, into ./mnist_output
    python examples/mnist.py --dataset fashion_mnist --epochs 10 --out fashion_output
    python examples/mnist.py --models simple,hidden,convnet   # with Keras's MNIST convnet

Cell by cell as the notebook: load the data and describe it, scale it to [0, 1]
and flatten it, then train and evaluate a model with no hidden layer
(Dense(10, sigmoid)) and one with a hidden layer (Dense(100, relu) → Dense(10,
sigmoid)), both with Adam and sparse categorical cross-entropy; the notebook
then trains the simple model for another round, which this script repeats.
Beyond the notebook it draws learning curves, the simple model's weights as
images, the most confident mistakes, per-class precision and recall, and
writes metrics.json and report.md into --out. ``--models convnet`` adds Keras's "Simple
MNIST convnet" (two Conv2D + MaxPooling2D, Dropout(0.5), softmax), trained on the images
with their channel axis, and draws its first layer's 32 filters and their feature maps on
a test digit.

MNIST is read from --data-dir, or found as tinynn.datasets.base describes
(set $TINYNN_DATA on a machine without internet).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import tinynn as keras
from tinynn import metrics, plots

MODELS = ("simple", "hidden", "convnet")


def build(name: str) -> keras.Sequential:
    """The notebook's two models, and Keras's MNIST convnet."""
    if name == "convnet":
        layers = keras.layers
        return keras.Sequential([
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ])
    if name == "simple":
        return keras.Sequential([keras.layers.Dense(10, input_shape=(784,), activation="sigmoid")])
    return keras.Sequential([
        keras.layers.Dense(100, input_shape=(784,), activation="relu"),
        keras.layers.Dense(10, activation="sigmoid"),
    ])


class EpochTimer(keras.callbacks.Callback):
    """Seconds per epoch, for metrics.json."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def confidences(outputs: np.ndarray, model: str) -> np.ndarray:
    """The probabilities the training objective assumes: softmax of the output layer's logits.

    The dense models end in sigmoids, but the loss Keras (and tinynn) minimises is the
    softmax cross-entropy of the sigmoids' inputs, so logit(output) recovers them; the
    convnet's outputs are softmax probabilities already.
    """
    if model == "convnet":
        return outputs.astype(np.float64)
    p = np.clip(outputs.astype(np.float64), 1e-7, 1 - 1e-7)
    z = np.log(p / (1 - p))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per fit (5)")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per step (32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--data-dir", default=None, help="directory with the dataset's files")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--out", default=None, help="output folder (default ./<dataset>_output)")
    parser.add_argument("--models", default="simple,hidden",
                        help="comma-separated, from: simple, hidden, convnet")
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N training and test images (quick runs)")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown or not args.models:
        parser.error(f"--models takes names from {list(MODELS)}, got {args.models}")
    for name in ("epochs", "batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    args.out = Path(args.out or f"{args.dataset}_output")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    draw = not args.no_plots and plots.available()
    if not args.no_plots and not draw:
        print(f"No figures: {plots.MISSING}")
    keras.utils.set_random_seed(args.seed)
    dataset = getattr(keras.datasets, args.dataset)
    class_names = getattr(dataset, "CLASS_NAMES", None)

    # Load and describe the data.
    try:
        (x_train, y_train), (x_test, y_test) = dataset.load_data(args.data_dir)
    except (OSError, ValueError) as e:  # not found, not downloadable, or damaged
        raise SystemExit(f"error: {e}") from None
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
        x_test, y_test = x_test[: args.limit], y_test[: args.limit]
    print("Number of training samples:", len(x_train))
    print("Number of testing samples:", len(x_test))
    print("Shape of an individual sample:", x_train[0].shape)
    figures = {}
    if draw:
        label = class_names[y_train[0]] if class_names else y_train[0]
        figures["sample"] = plots.save(plots.sample(x_train[0], label), args.out / "sample.png")

    # Scale to [0, 1] and flatten each 28×28 image into 784 numbers.
    x_train = x_train / 255
    x_test = x_test / 255
    x_train_flattened = x_train.reshape(len(x_train), -1)
    x_test_flattened = x_test.reshape(len(x_test), -1)

    # The convnet reads images with a channel axis: (n, 28, 28, 1).
    inputs = {"train": {"convnet": x_train[..., None]}, "test": {"convnet": x_test[..., None]}}
    results, histories, outputs, kernel, convnet = {}, {}, {}, None, None
    for name in args.models:
        train_x = inputs["train"].get(name, x_train_flattened)
        test_x = inputs["test"].get(name, x_test_flattened)
        print(f"\n== The {name} model ==")
        model = build(name)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.summary()
        timer = EpochTimer()
        # The test set rides along as validation data for the learning curves
        # only: nothing is tuned on it.
        history = model.fit(train_x, y_train, epochs=args.epochs,
                            batch_size=args.batch_size, callbacks=[timer],
                            validation_data=(test_x, y_test))
        test_loss, test_accuracy = model.evaluate(test_x, y_test)
        print(f"Test loss: {test_loss:.4f}, Test accuracy: {test_accuracy:.4f}")
        result = {"test_accuracy": test_accuracy, "test_loss": test_loss,
                  "loss": history.history["loss"], "accuracy": history.history["accuracy"],
                  "val_loss": history.history["val_loss"],
                  "val_accuracy": history.history["val_accuracy"],
                  "epoch_seconds": timer.seconds,
                  "parameters": model.count_params()}
        if name == "simple":
            # The notebook trains the simple model for a second round after evaluating it.
            model.fit(x_train_flattened, y_train, epochs=args.epochs, batch_size=args.batch_size)
            loss2, accuracy2 = model.evaluate(x_test_flattened, y_test)
            print(f"After the second round: test loss {loss2:.4f}, accuracy {accuracy2:.4f}")
            result["second_round"] = {"test_accuracy": accuracy2, "test_loss": loss2}
            kernel = model.get_weights()[0]
        if name == "convnet":
            convnet = model
        y_predicted = model.predict(test_x)
        predicted = y_predicted.argmax(axis=1)
        cm = metrics.confusion_matrix(labels=y_test, predictions=predicted, num_classes=10)
        precision, recall = metrics.precision_recall(cm)
        result.update(confusion_matrix=cm.tolist(), precision=precision.tolist(),
                      recall=recall.tolist(), most_confused=metrics.most_confused(cm, 5))
        results[name], histories[name], outputs[name] = result, history.history, y_predicted
        if draw:
            figures[f"confusion_{name}"] = plots.save(
                plots.confusion_matrix(cm, f"Confusion matrix, {name} model", class_names),
                args.out / f"confusion_{name}.png")

    if draw:
        figures.update(draw_more(args, x_test, y_test, histories, outputs, kernel, class_names))
        if convnet is not None:
            figures.update(draw_convnet(args, convnet, x_test))
    (args.out / "metrics.json").write_text(json.dumps(
        {"dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size,
         "seed": args.seed, "backend": keras.get_backend(), "models": results}, indent=1))
    write_report(args, results, figures, class_names)
    print(f"\nWrote {args.out / 'metrics.json'}, {args.out / 'report.md'}"
          + (f" and {len(figures)} figures" if figures else ""))
    return results


def draw_more(args, x_test, y_test, histories, outputs, kernel, class_names) -> dict:
    """The figures beyond the notebook's confusion matrix."""
    figures = {"learning_curves": plots.save(plots.learning_curves(histories),
                                             args.out / "learning_curves.png")}
    best = next((m for m in ("convnet", "hidden") if m in outputs), args.models[0])
    # Five random test images, as in the notebook (from the seeded generator).
    pick = np.random.randint(0, len(x_test), size=min(5, len(x_test)))
    figures["predictions"] = plots.save(
        plots.predictions(x_test[pick], y_test[pick], outputs[best][pick].argmax(axis=1),
                          class_names), args.out / "predictions.png")
    if kernel is not None:
        figures["templates"] = plots.save(
            plots.weight_templates(kernel, class_names),
            args.out / "templates.png")
    probs = confidences(outputs[best], best)
    figures["mistakes"] = plots.save(
        plots.misclassified(x_test, y_test, probs.argmax(axis=1), probs.max(axis=1), 16,
                            class_names), args.out / "mistakes.png")
    return figures


def draw_convnet(args, model, x_test) -> dict:
    """The convnet's first layer: its filters, and what they see in the first test digit."""
    first = model.layers[0]
    maps = first(x_test[:1, :, :, None])[0]
    return {"filters": plots.save(plots.filters(first.get_weights()[0]),
                                  args.out / "filters.png"),
            "feature_maps": plots.save(plots.feature_maps(x_test[0], maps),
                                       args.out / "feature_maps.png")}


def confusion_caption(model: str, result: dict, name) -> str:
    """What the two panels of a confusion figure show, with this run's numbers."""
    cm = np.array(result["confusion_matrix"])
    hits = np.diag(cm)
    worst = result["most_confused"][0] if result["most_confused"] else None
    text = (f"The {model} model on the test set; rows are the true class, columns the "
            f"prediction, and darker cells hold larger counts. Left, every count: the "
            f"diagonal (correct answers, {hits.min():,}–{hits.max():,} per class) sets the "
            f"colour scale, so all {cm.sum() - hits.sum():,} mistakes look alike, pale. Right, "
            f"the mistakes alone on their own scale")
    if worst:
        t, p, c = worst
        text += f": the darkest cell is {name(t)} read as {name(p)} ({c} times)"
    return text + "."


def write_report(args, results, figures, class_names) -> None:
    name = (lambda k: class_names[k]) if class_names else str
    lines = [f"# {args.dataset}: what small networks learn", "",
             f"tinynn, {args.epochs} epochs, batch {args.batch_size}, seed {args.seed}, "
             f"backend {keras.get_backend()}. Command: `python examples/mnist.py "
             f"--dataset {args.dataset} --epochs {args.epochs} --batch-size {args.batch_size} "
             f"--seed {args.seed}{f' --limit {args.limit}' if args.limit else ''}`.", "",
             "| model | parameters | test accuracy | test loss | training time |",
             "|---|---:|---:|---:|---:|"]
    for model, r in results.items():
        lines.append(f"| {model} | {r['parameters']:,} | {r['test_accuracy']:.4f} | "
                     f"{r['test_loss']:.4f} | {sum(r['epoch_seconds']):.1f} s |")
    if "simple" in results and "hidden" in results:
        s, h = results["simple"], results["hidden"]
        error_s, error_h = 1 - s["test_accuracy"], 1 - h["test_accuracy"]
        lines += ["", f"The hidden layer takes test accuracy from {s['test_accuracy']:.4f} to "
                  f"{h['test_accuracy']:.4f}: the error rate falls from {100 * error_s:.2f} % to "
                  f"{100 * error_h:.2f} %"
                  + (f", {error_s / error_h:.1f} times fewer mistakes" if error_h > 0 else "")
                  + f", for {h['parameters'] / s['parameters']:.0f}× the parameters."]
    if "simple" in results:
        r2 = results["simple"]["second_round"]
        lines += ["", f"As in the notebook, the simple model then trained for {args.epochs} more "
                  f"epochs: test accuracy {r2['test_accuracy']:.4f}, loss {r2['test_loss']:.4f}."]
    lines += ["", "## Per class", "", "Precision: of the images given a class, the share that "
              "belong to it; recall: of the images of a class, the share found. As in the "
              "notebook, the simple model is measured after its second round here.", "",
              "| class | " + " | ".join(
        f"{m} precision | {m} recall" for m in results) + " |",
        "|---|" + "---:|---:|" * len(results)]
    for k in range(10):
        lines.append(f"| {name(k)} | " + " | ".join(
            f"{r['precision'][k]:.3f} | {r['recall'][k]:.3f}" for r in results.values()) + " |")
    for model, r in results.items():
        pairs = ", ".join(f"{name(t)} read as {name(p)} ({c}×)" for t, p, c in r["most_confused"])
        lines += ["", f"Most confused by the {model} model: {pairs or 'none'}."]
    captions = {
        "sample": "The first training image and its label: the data as the network sees it, "
                  "before scaling.",
        "learning_curves": "Loss and accuracy per epoch; solid lines are the training "
                           "averages, dashed the held-out test set — a gap that opens up "
                           "would mean overfitting.",
        **{f"confusion_{model}": confusion_caption(model, r, name)
           for model, r in results.items()},
        "templates": "Each output unit of the simple model drawn as one weight per pixel: red "
                     "votes for the class, blue against (the colour scale stops at the 99th "
                     "percentile of the weights' sizes). Pixels near the border, lit in only a "
                     "few training images, end with some of the largest weights and make the "
                     "dark frame; the class's own shape shows only faintly inside it: red "
                     "where its ink tends to be, blue where ink speaks against it.",
        "mistakes": "The test images the better model got wrong with the highest confidence "
                    "(softmax of its logits): many are ambiguous even to a person.",
        "filters": "The convnet's first layer: 32 filters of 3 × 3 weights, each slid over the "
                   "image (red weights reward ink, blue penalise it): edges and strokes at "
                   "various angles.",
        "feature_maps": "The first test digit and what each of the 32 filters makes of it "
                        "(after the ReLU): bright where the filter's stroke is found. The "
                        "maps are 26 × 26: a 3 × 3 window fits 26 times across 28 pixels.",
        "predictions": "Five random test images with the true and predicted labels (red when "
                       "wrong), as the notebook shows them.",
    }
    if figures:
        lines += ["", "## Figures"]
        for key, path in figures.items():
            lines += ["", f"![{key}]({Path(path).name})", "", captions[key]]
    else:
        lines += ["", f"(No figures: {plots.MISSING}.)"]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
