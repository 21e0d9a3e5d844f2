"""tinynn against Keras, PyTorch and JAX on MNIST: one command, one table.

    python benchmarks/run.py                       # everything, 3 seeds, each model's epochs
    python benchmarks/run.py --seeds 0 --frameworks tinynn-numba,keras --models hidden
    python benchmarks/run.py --limit 600 --epochs 1 --seeds 0   # a quick check that all runs

The models (``specs.MODELS``): the notebook's ``simple`` and ``hidden`` (batch
32, 5 epochs), TensorFlow's ``quickstart`` (batch 32, 5 epochs), Keras's
``mnist_mlp`` and ``convnet`` (the "Simple MNIST convnet" example; batch 128, 3
epochs each), and ``hidden-user`` (the hidden model with a user's first layer;
tinynn-numba only, compared with the built-in model).

Each run (framework × model × seed) is a separate process (benchmarks/worker.py),
started one at a time, so no run shares a core, a cache or a warm-up with
another. Keras, PyTorch and JAX are optional: give the interpreter of an
environment that has them (--keras-python, --torch-python, --jax-python, or
$TINYNN_KERAS_PYTHON / $TINYNN_TORCH_PYTHON / $TINYNN_JAX_PYTHON); a framework
that does not import is reported and skipped.

Writes benchmarks/results/latest.json (every run), latest.md (the table) and
latest.png (the chart), and prints the table. Ratios are of seconds per epoch
between rows of this same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from specs import MODELS, TINYNN_ONLY
from worker import FRAMEWORKS

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
IMPORTS = {"tinynn-numba": "tinynn, numba", "tinynn-numpy": "tinynn", "keras": "keras",
           "torch": "torch", "jax": "jax"}
#: The peers' interpreters: (option, environment variable).
PYTHONS = {"keras": ("keras_python", "TINYNN_KERAS_PYTHON"),
           "torch": ("torch_python", "TINYNN_TORCH_PYTHON"),
           "jax": ("jax_python", "TINYNN_JAX_PYTHON")}
#: Rows whose ratios are taken against another model's rows: a user's part
#: against the built-in model it replaces.
BASE_MODEL = {"hidden-user": "hidden", "hidden-scale": "hidden",
              "hidden-leaky-adagrad": "hidden"}
#: What each comparison with the base model is held to.
CONTRACT = {"hidden-user": "a user's Dense, its own NumPy included",
            "hidden-scale": "the layer contract: ≤ 3×",
            "hidden-leaky-adagrad": "the built-in contract: ≤ 1.5×"}
#: Who runs a tinynn-only model by default.
USER_FRAMEWORKS = ("tinynn-numba",)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": platform.platform(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def interpreter(framework: str, args) -> str:
    if framework in PYTHONS:
        option, variable = PYTHONS[framework]
        return getattr(args, option, None) or os.environ.get(variable) or sys.executable
    return sys.executable


def available(python: str, framework: str) -> str | None:
    """None if the framework imports under ``python``, else why not."""
    probe = subprocess.run([python, "-c", f"import {IMPORTS[framework]}"],
                           capture_output=True, text=True, cwd=HERE.parent)
    if probe.returncode == 0:
        return None
    return (probe.stderr.strip().splitlines() or ["import failed"])[-1]


def run_one(python: str, framework: str, model: str, seed: int, args,
            extra: list[str] = (), env: dict | None = None) -> dict:
    """One worker process; its JSON result, with the process's wall time added."""
    cmd = [python, str(HERE / "worker.py"), "--framework", framework, "--model", model,
           "--seed", str(seed), *extra]
    for option in ("epochs", "batch_size", "limit", "threads", "data_dir"):
        if getattr(args, option, None):
            cmd += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = wall  # the whole process: start-up, imports, data, training
    return result


def later_epochs(epochs: list[float]) -> float:
    """Seconds per epoch once warm: the median of epochs 2 … n (epoch 1 if there is one)."""
    return float(np.median(epochs[1:] or epochs))


def summarise(runs: list[dict]) -> list[dict]:
    """One row per framework and model: medians over seeds, and same-run ratios."""
    order = list(MODELS)
    rows = []
    keys = sorted({(r["model"], r["framework"]) for r in runs},
                  key=lambda k: (order.index(k[0]), FRAMEWORKS.index(k[1])))
    for model, framework in keys:
        group = [r for r in runs if r["model"] == model and r["framework"] == framework]

        def med(f, group=group):
            return float(np.median([f(r) for r in group]))

        row = {
            "model": model, "framework": framework, "seeds": len(group),
            "batch_size": group[0]["batch_size"], "epochs": len(group[0]["epochs"]),
            "train_samples": group[0].get("train_samples", 60000),
            "threads": group[0].get("threads", {}).get("framework"),
            "version": group[0].get("version", ""),
            "epoch_s": med(lambda r: later_epochs(r["epochs"])),
            "first_epoch_s": med(lambda r: r["epochs"][0]),
            "fit_overhead_s": med(lambda r: r["fit_overhead_seconds"]),
            "wall_s": med(lambda r: r["wall_seconds"]),
            "accuracy": med(lambda r: r["test_accuracy"]),
            "loss": med(lambda r: r["test_loss"]),
            "peak_rss_mb": med(lambda r: r["peak_rss_mb"]),
        }
        if all("predict_seconds" in r for r in group):
            for n in ("1", "32", "10000"):
                row[f"predict_{n}_ms"] = med(lambda r, n=n: r["predict_seconds"][n] * 1e3)
        rows.append(row)
    for row in rows:
        base = BASE_MODEL.get(row["model"], row["model"])
        for peer in ("tinynn-numpy", "keras", "jax"):
            ref = find(rows, base, peer)
            row[f"vs_{peer}"] = ref["epoch_s"] / row["epoch_s"] if ref else None
        built_in = find(rows, base, row["framework"]) if base != row["model"] else None
        #: How many times slower than the same framework's built-in model.
        row["vs_built_in"] = row["epoch_s"] / built_in["epoch_s"] if built_in else None
    return rows


def find(rows: list[dict], model: str, framework: str) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["framework"] == framework), None)


def table(rows: list[dict], info: dict, args) -> str:
    def ratio(x):
        return "—" if x is None else f"{x:.1f}×"

    def predict(r):
        if "predict_1_ms" not in r:
            return "—"
        return (f"{r['predict_1_ms']:.2f} / {r['predict_32_ms']:.2f} / "
                f"{r['predict_10000_ms']:.1f}")

    samples = sorted({r["train_samples"] for r in rows})
    threads = (f"pinned to {args.threads} core(s)" if args.threads else
               "each framework's default threads (tinynn's compiled training: one per core)")
    versions = ", ".join(dict.fromkeys(r["version"] for r in rows if r.get("version")))
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"{info['system']}; {info['date']}." + (f" Versions: {versions}." if versions else ""),
        f"MNIST, {'/'.join(map(str, samples))} training samples; seeds {args.seeds}; "
        f"{threads}. Medians over seeds; s/epoch is the median of epochs 2 … n. "
        "Ratios are of s/epoch within this run: how many times faster than NumPy, "
        "Keras or JAX (a user's-part row: against the built-in model's rows).",
        "",
        "| model | framework | batch | epochs | threads | s/epoch | vs NumPy | vs Keras "
        "| vs JAX | first epoch s | fit set-up s | whole run s | test acc | test loss "
        "| predict 1 / 32 / 10k ms | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['framework']} | {r['batch_size']} | {r['epochs']} | "
            f"{r['threads'] or '—'} | {r['epoch_s']:.3f} | {ratio(r['vs_tinynn-numpy'])} | "
            f"{ratio(r['vs_keras'])} | {ratio(r['vs_jax'])} | "
            f"{r['first_epoch_s']:.3f} | {r['fit_overhead_s']:.2f} | {r['wall_s']:.1f} | "
            f"{r['accuracy']:.4f} | {r['loss']:.4f} | {predict(r)} | {r['peak_rss_mb']:.0f} |"
        )
    for r in rows:
        if r["vs_built_in"] is not None:
            base = BASE_MODEL[r["model"]]
            lines.append(
                f"\n{r['model']} on {r['framework']} takes {r['epoch_s']:.3f} s/epoch, "
                f"{r['vs_built_in']:.2f}× the {base} model's "
                f"{find(rows, base, r['framework'])['epoch_s']:.3f} s ({CONTRACT[r['model']]}); "
                f"test accuracy {r['accuracy']:.4f}.")
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot drawing to files, or None (with a note) when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install -e '.[plots]'): no chart drawn")
        return None
    return plt


def chart(rows: list[dict], path: Path, info: dict) -> None:
    """Seconds per epoch, a group of bars per model, a colour per framework (log scale)."""
    plt = pyplot()
    if plt is None:
        return
    models = [m for m in MODELS if any(r["model"] == m for r in rows)]
    frameworks = [f for f in FRAMEWORKS if any(r["framework"] == f for r in rows)]
    colors = {"tinynn-numba": "#1b9e77", "tinynn-numpy": "#7570b3", "keras": "#d95f02",
              "torch": "#e7298a", "jax": "#66a61e"}
    fig, ax = plt.subplots(figsize=(max(8, 2.2 * len(models)), 5))
    width = 0.8 / len(frameworks)
    for i, fw in enumerate(frameworks):
        for j, model in enumerate(models):
            row = find(rows, model, fw)
            if row is None:
                continue
            x = j + (i - (len(frameworks) - 1) / 2) * width
            ax.bar(x, row["epoch_s"], width * 0.95, color=colors[fw],
                   label=fw if fw not in ax.get_legend_handles_labels()[1] else None)
            ax.text(x, row["epoch_s"] * 1.08, f"{row['epoch_s']:.2f}", ha="center",
                    va="bottom", fontsize=7, rotation=90)
    ax.set_yscale("log")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([textwrap.fill(MODELS[m].title, 26) for m in models], fontsize=8)
    ax.set_ylabel("seconds per epoch (log scale, lower is better)")
    ax.set_title(f"MNIST: training time per epoch\n{info['cpu']}, {info['cores']} cores",
                 fontsize=10)
    ax.legend(loc="upper left", fontsize=9)
    ax.set_ylim(top=ax.get_ylim()[1] * 4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def start_up(args) -> dict:
    """tinynn-numba's start-up cost: processes on an empty kernel cache, then on the filled one.

    Reported: how much longer a process's first fit takes than its second, the same
    fit (one epoch of the hidden model), with the cache empty (compiling) and warm; with
    the cache warm, how much longer a process's first predict of the 10k test rows takes
    than later ones (a process that predicts before any fit); and the time of
    ``import tinynn``.
    """
    report = {}
    one = argparse.Namespace(**{**vars(args), "epochs": 1, "batch_size": None})
    with tempfile.TemporaryDirectory() as cache:
        for name in ("cold", "warm"):  # the same cache directory: empty, then filled
            r = run_one(sys.executable, "tinynn-numba", "hidden", 0, one, ["--fit-twice"],
                        {"NUMBA_CACHE_DIR": cache})
            report[name] = {"first_fit_extra_s": r["first_fit_seconds"] - r["second_fit_seconds"],
                            "wall_s": r["wall_seconds"]}
        # The first predict of a process (10k rows, before any fit), with the cache warm.
        r = run_one(sys.executable, "tinynn-numba", "hidden", 0, one, ["--first-predict"],
                    {"NUMBA_CACHE_DIR": cache})
        report["warm"]["first_predict_extra_s"] = (r["first_predict_seconds"]
                                                  - r["later_predict_seconds"])
    probe = subprocess.run(
        [sys.executable, "-c", "import time; t = time.perf_counter(); import tinynn; "
         "print(time.perf_counter() - t)"], capture_output=True, text=True, cwd=HERE.parent)
    report["import_tinynn_s"] = float(probe.stdout.strip())
    print(start_up_line(report))
    return report


def start_up_line(startup: dict) -> str:
    """The start-up figures in a sentence (records from before the fit-twice probe
    measured fit's first epoch against a later epoch instead)."""
    cold, warm = startup["cold"], startup["warm"]
    if "first_fit_extra_s" in cold:
        key, what, than = ("first_fit_extra_s", "a process's first fit (one epoch) takes",
                           "than its second")
    else:
        key, what, than = "first_epoch_extra_s", "fit's first epoch takes", "than a later one"
    cold_s, warm_s = cold[key], warm[key]
    return (f"tinynn-numba start-up: {what} {cold_s:.2f} s longer {than} with an empty kernel "
            f"cache (the first-ever compile), {warm_s:.2f} s longer with the cache warm, and "
            f"a process's first predict of 10k rows {warm['first_predict_extra_s']:.3f} s "
            f"longer than a later one; `import tinynn` takes {startup['import_tinynn_s']:.3f} s.")


def plan_runs(args) -> list[tuple[str, str]]:
    """(framework, model) pairs to run: a tinynn-only model only on its frameworks."""
    frameworks, models = args.frameworks.split(","), args.models.split(",")
    for name, known in (("--frameworks", FRAMEWORKS), ("--models", list(MODELS))):
        unknown = set(frameworks if name == "--frameworks" else models) - set(known)
        if unknown:
            raise SystemExit(f"{name}: unknown {sorted(unknown)}; choose from {known}")
    return [(f, m) for f in frameworks for m in models
            if m not in TINYNN_ONLY or f in USER_FRAMEWORKS]


def replot(out: Path) -> None:
    """The reports again from latest.json (summarised anew, so older records work too)."""
    record = json.loads((out / "latest.json").read_text())
    record["args"] = {"seeds": "?", "threads": None, **record["args"]}
    record["summary"] = summarise(record["runs"])
    write_reports(record, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every model (default: each model's own)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size of every model (default: each model's own)")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first LIMIT samples only (a quick check)")
    parser.add_argument("--threads", type=int, default=None,
                        help="pin every run to this many cores (default: all)")
    parser.add_argument("--no-startup", action="store_true",
                        help="skip tinynn-numba's cold/warm kernel-cache runs")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--keras-python", default=None)
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--jax-python", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--replot", action="store_true",
                        help="rewrite latest.md and latest.png from latest.json without running")
    args = parser.parse_args()
    out = Path(args.out)
    if args.replot:
        replot(out)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    pairs = plan_runs(args)
    out.mkdir(parents=True, exist_ok=True)

    info = machine()
    runs, skipped = [], {}
    startup = None
    if "tinynn-numba" in args.frameworks.split(",") and not args.no_startup:
        startup = start_up(args)
    for framework in dict.fromkeys(f for f, _ in pairs):
        python = interpreter(framework, args)
        why = available(python, framework)
        if why:
            skipped[framework] = why
            print(f"{framework}: not available with {python} ({why}); skipped")
            continue
        for model in [m for f, m in pairs if f == framework]:
            for seed in seeds:
                result = run_one(python, framework, model, seed, args)
                print(f"{framework:13} {model:11} seed {seed}: "
                      f"{later_epochs(result['epochs']):.3f} s/epoch, "
                      f"test accuracy {result['test_accuracy']:.4f}", flush=True)
                runs.append(result)
    rows = summarise(runs)
    record = {"machine": info, "args": vars(args), "skipped": skipped, "startup": startup,
              "runs": runs, "summary": rows}
    (out / "latest.json").write_text(json.dumps(record, indent=1))
    write_reports(record, out)


def write_reports(record: dict, out: Path) -> None:
    """Print the table, and write it (latest.md) and the chart (latest.png)."""
    rows, info, startup = record["summary"], record["machine"], record["startup"]
    text = table(rows, info, argparse.Namespace(**record["args"]))
    print()
    print(text)
    if startup:
        text += "\n\n" + start_up_line(startup)
    (out / "latest.md").write_text(text + "\n")
    chart(rows, out / "latest.png", info)
    print(f"\nwrote {out / 'latest.json'}, latest.md and latest.png")


if __name__ == "__main__":
    main()
