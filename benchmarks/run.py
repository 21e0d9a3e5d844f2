"""tinynn against Keras and PyTorch on the notebook's task: one command, one table.

    python benchmarks/run.py                       # everything, 3 seeds, 5 epochs
    python benchmarks/run.py --seeds 0 --frameworks tinynn-numba,keras

Each run (framework × model × seed) is a separate process (benchmarks/worker.py),
started one at a time, so no run shares a core, a cache or a warm-up with
another. Keras and PyTorch are optional: give the interpreter of an environment
that has them (--keras-python, --torch-python, or $TINYNN_KERAS_PYTHON /
$TINYNN_TORCH_PYTHON); a framework that does not import is reported and skipped.

Writes benchmarks/results/latest.json (every run), latest.md (the table) and
latest.png (the chart), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FRAMEWORKS = ["tinynn-numba", "tinynn-numpy", "keras", "torch"]
IMPORTS = {"tinynn-numba": "tinynn, numba", "tinynn-numpy": "tinynn", "keras": "keras",
           "torch": "torch"}


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
    if framework == "keras":
        return args.keras_python or os.environ.get("TINYNN_KERAS_PYTHON") or sys.executable
    if framework == "torch":
        return args.torch_python or os.environ.get("TINYNN_TORCH_PYTHON") or sys.executable
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
    cmd = [python, str(HERE / "worker.py"), "--framework", framework, "--model", model,
           "--seed", str(seed), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), *extra]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = wall  # the whole process: start-up, imports, data, training
    return result


def summarise(runs: list[dict]) -> list[dict]:
    """One row per framework and model: medians over seeds."""
    rows = []
    keys = sorted({(r["model"], r["framework"]) for r in runs},
                  key=lambda k: (k[0] != "simple", FRAMEWORKS.index(k[1])))
    for model, framework in keys:
        group = [r for r in runs if r["model"] == model and r["framework"] == framework]

        def med(f, group=group):
            return float(np.median([f(r) for r in group]))

        rows.append({
            "model": model, "framework": framework, "seeds": len(group),
            "epoch_s": med(lambda r: np.median(r["epochs"][1:] or r["epochs"])),
            "first_epoch_s": med(lambda r: r["epochs"][0]),
            "fit_overhead_s": med(lambda r: r["fit_overhead_seconds"]),
            "wall_s": med(lambda r: r["wall_seconds"]),
            "accuracy": med(lambda r: r["test_accuracy"]),
            "loss": med(lambda r: r["test_loss"]),
            "predict_1_ms": med(lambda r: r["predict_seconds"]["1"] * 1e3),
            "predict_32_ms": med(lambda r: r["predict_seconds"]["32"] * 1e3),
            "predict_10k_ms": med(lambda r: r["predict_seconds"]["10000"] * 1e3),
            "peak_rss_mb": med(lambda r: r["peak_rss_mb"]),
        })
    for row in rows:
        for base in ("tinynn-numpy", "keras"):
            ref = next((r for r in rows if r["model"] == row["model"]
                        and r["framework"] == base), None)
            row[f"vs_{base}"] = ref["epoch_s"] / row["epoch_s"] if ref else None
    return rows


def table(rows: list[dict], info: dict, args) -> str:
    def ratio(x):
        return "—" if x is None else f"{x:.1f}×"

    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}; "
        f"{info['date']}. MNIST, batch {args.batch_size}, {args.epochs} epochs, "
        f"seeds {args.seeds}; medians over seeds (s/epoch: median of epochs 2–{args.epochs}).",
        "",
        "| model | framework | s/epoch | speed-up vs NumPy | vs Keras | first epoch s "
        "| fit set-up s | whole run s | test acc | test loss | predict 1 / 32 / 10k ms "
        "| peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['framework']} | {r['epoch_s']:.3f} | "
            f"{ratio(r['vs_tinynn-numpy'])} | {ratio(r['vs_keras'])} | "
            f"{r['first_epoch_s']:.3f} | {r['fit_overhead_s']:.2f} | {r['wall_s']:.1f} | "
            f"{r['accuracy']:.4f} | {r['loss']:.4f} | {r['predict_1_ms']:.2f} / "
            f"{r['predict_32_ms']:.2f} / {r['predict_10k_ms']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
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
    plt = pyplot()
    if plt is None:
        return
    models = [m for m in ("simple", "hidden") if any(r["model"] == m for r in rows)]
    frameworks = [f for f in FRAMEWORKS if any(r["framework"] == f for r in rows)]
    colors = {"tinynn-numba": "#1b9e77", "tinynn-numpy": "#7570b3", "keras": "#d95f02",
              "torch": "#e7298a"}
    fig, ax = plt.subplots(figsize=(8, 4.8))
    width = 0.8 / len(frameworks)
    for i, fw in enumerate(frameworks):
        for j, model in enumerate(models):
            row = next((r for r in rows if r["framework"] == fw and r["model"] == model), None)
            if row is None:
                continue
            x = j + (i - (len(frameworks) - 1) / 2) * width
            ax.bar(x, row["epoch_s"], width * 0.95, color=colors[fw],
                   label=fw if j == 0 else None)
            ax.text(x, row["epoch_s"] * 1.08, f"{row['epoch_s']:.2f}", ha="center",
                    va="bottom", fontsize=9)
    ax.set_yscale("log")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([{"simple": "simple: Dense(10, sigmoid)",
                         "hidden": "hidden: Dense(100, relu) → Dense(10, sigmoid)"}[m]
                        for m in models])
    ax.set_ylabel("seconds per epoch (log scale, lower is better)")
    ax.set_title(f"MNIST, batch 32: training time per epoch\n{info['cpu']}, {info['cores']} cores",
                 fontsize=10)
    ax.legend(loc="upper left", fontsize=9)
    ax.set_ylim(top=ax.get_ylim()[1] * 2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def start_up(args) -> dict:
    """tinynn-numba's compile cost: a run with an empty kernel cache, then one with it warm.

    Reported: how much longer fit takes to finish its first epoch than a later
    epoch takes (set-up + first epoch − later epoch), and the process's import time.
    """
    report = {}
    with tempfile.TemporaryDirectory() as cache:
        for name in ("cold", "warm"):  # the same cache directory: empty, then filled
            r = run_one(sys.executable, "tinynn-numba", "hidden", 0, args, ["--no-predict"],
                        {"NUMBA_CACHE_DIR": cache})
            extra = r["fit_overhead_seconds"] + r["epochs"][0] - float(np.median(r["epochs"][1:]))
            report[name] = {"first_epoch_extra_s": extra, "wall_s": r["wall_seconds"]}
    probe = subprocess.run(
        [sys.executable, "-c", "import time; t = time.perf_counter(); import tinynn; "
         "print(time.perf_counter() - t)"], capture_output=True, text=True, cwd=HERE.parent)
    report["import_tinynn_s"] = float(probe.stdout.strip())
    print(f"tinynn-numba start-up: first epoch +{report['cold']['first_epoch_extra_s']:.2f} s "
          f"with an empty kernel cache (compiling), +{report['warm']['first_epoch_extra_s']:.2f} s "
          f"with it warm; `import tinynn` {report['import_tinynn_s']:.3f} s")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--models", default="simple,hidden")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--keras-python", default=None)
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    info = machine()
    runs, skipped = [], {}
    startup = start_up(args) if "tinynn-numba" in args.frameworks.split(",") else None
    for framework in args.frameworks.split(","):
        python = interpreter(framework, args)
        why = available(python, framework)
        if why:
            skipped[framework] = why
            print(f"{framework}: not available with {python} ({why}); skipped")
            continue
        for model in args.models.split(","):
            for seed in seeds:
                result = run_one(python, framework, model, seed, args)
                print(f"{framework:13} {model:6} seed {seed}: "
                      f"{np.median(result['epochs'][1:] or result['epochs']):.3f} s/epoch, "
                      f"test accuracy {result['test_accuracy']:.4f}", flush=True)
                runs.append(result)
    rows = summarise(runs)
    text = table(rows, info, args)
    print()
    print(text)
    if startup:
        text += (f"\n\ntinynn-numba start-up: fit's first epoch takes "
                 f"{startup['cold']['first_epoch_extra_s']:.2f} s longer than a later one with "
                 f"an empty kernel cache (the first-ever compile), "
                 f"{startup['warm']['first_epoch_extra_s']:.2f} s longer with the cache warm; "
                 f"`import tinynn` takes {startup['import_tinynn_s']:.3f} s.")
    record = {"machine": info, "args": vars(args), "skipped": skipped, "startup": startup,
              "runs": runs, "summary": rows}
    (out / "latest.json").write_text(json.dumps(record, indent=1))
    (out / "latest.md").write_text(text + "\n")
    chart(rows, out / "latest.png", info)
    print(f"\nwrote {out / 'latest.json'}, latest.md and latest.png")


if __name__ == "__main__":
    main()
