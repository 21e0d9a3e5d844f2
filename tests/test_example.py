"""examples/mnist.py end to end on a slice of real MNIST, and the seed notebook's own cells."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ["sample", "confusion_simple", "confusion_hidden", "learning_curves", "predictions",
           "templates", "mistakes"]


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_example", ROOT / "examples" / "mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_writes_metrics_figures_and_report(mnist_data, tmp_path):
    pytest.importorskip("matplotlib")
    results = load_example().main(["--epochs", "1", "--limit", "3000", "--out", str(tmp_path)])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["models"]) == {"simple", "hidden"}
    for name, model in metrics["models"].items():
        assert 0.6 < model["test_accuracy"] <= 1 and model["test_loss"] > 0  # chance: 0.1
        assert len(model["loss"]) == len(model["accuracy"]) == len(model["epoch_seconds"]) == 1
        assert np.array(model["confusion_matrix"]).sum() == 3000
        assert model["test_accuracy"] == pytest.approx(results[name]["test_accuracy"])
    assert "second_round" in metrics["models"]["simple"]
    for figure in FIGURES:
        path = tmp_path / f"{figure}.png"
        assert path.stat().st_size > 1000, figure
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "report.md").read_text()
    assert all(f"({figure}.png)" in report for figure in FIGURES)
    assert "| simple | 7,850 |" in report and "| hidden | 79,510 |" in report


def test_example_without_plots_still_reports(mnist_data, tmp_path):
    load_example().main(["--epochs", "1", "--limit", "500", "--models", "hidden",
                         "--no-plots", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "metrics.json").read_text())["models"].keys() == {"hidden"}
    assert not list(tmp_path.glob("*.png"))
    assert "(No figures" in (tmp_path / "report.md").read_text()


def test_example_adds_the_convnet_with_its_filters_and_feature_maps(mnist_data, tmp_path):
    pytest.importorskip("matplotlib")
    load_example().main(["--epochs", "1", "--limit", "3000", "--models", "convnet",
                         "--out", str(tmp_path)])
    metrics = json.loads((tmp_path / "metrics.json").read_text())["models"]["convnet"]
    assert metrics["parameters"] == 34_826
    assert metrics["test_accuracy"] > 0.85  # 3,000 images, one epoch of batches of 32
    report = (tmp_path / "report.md").read_text()
    for figure in ("confusion_convnet", "filters", "feature_maps", "mistakes"):
        assert (tmp_path / f"{figure}.png").stat().st_size > 0
        assert f"({figure}.png)" in report


@pytest.mark.parametrize("argv", [["--models", "deep"], ["--epochs", "0"], ["--limit", "-1"],
                                  ["--dataset", "cifar"], ["--data-dir", "/nonexistent"]])
def test_example_refuses_bad_arguments(argv, tmp_path):
    with pytest.raises(SystemExit):
        load_example().main([*argv, "--out", str(tmp_path)])
    assert not (tmp_path / "metrics.json").exists()


def notebook_path() -> Path | None:
    candidates = [os.environ.get("TINYNN_SEED_NOTEBOOK"),
                  ROOT.parent / "shared" / "seed" / "mnist-notebook.ipynb"]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def test_the_seed_notebook_runs_on_tinynn(mnist_data, monkeypatch, tmp_path):
    """The notebook's code cells with `import tinynn as keras` for the TensorFlow imports."""
    path = notebook_path()
    if path is None:
        message = "the seed notebook (../shared/seed or $TINYNN_SEED_NOTEBOOK) is missing"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "show", lambda *a, **k: plt.close("all"))
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    source = "\n".join("".join(c["source"]) for c in cells)
    source = (source.replace("import tensorflow as tf\n", "")
              .replace("from tensorflow import keras", "import tinynn as keras")
              .replace("tf.math.confusion_matrix", "keras.metrics.confusion_matrix"))
    assert "tensorflow" not in source and "tf." not in source
    namespace: dict = {}
    exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 (the user's notebook)
    assert namespace["test_accuracy"] > 0.9
    assert namespace["hidden_test_accuracy"] > 0.95
    assert np.asarray(namespace["cm"]).sum() == 10000


def test_example_without_matplotlib_says_how_to_get_figures(mnist_data, tmp_path, monkeypatch,
                                                            capsys):
    from tinynn import plots

    monkeypatch.setattr(plots, "available", lambda: False)
    load_example().main(["--epochs", "1", "--limit", "500", "--models", "simple",
                         "--out", str(tmp_path)])
    assert "pip install 'tinynn[plots]'" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.png"))
    assert (tmp_path / "metrics.json").exists()
