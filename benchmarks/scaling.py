"""How the cost of an epoch grows with the work: hidden width and batch size.

    python benchmarks/scaling.py --keras-python /path/to/keras-venv/bin/python

Runs the hidden model (784 → width relu → 10 sigmoid) for 3 epochs per point,
in its own process per point (benchmarks/worker.py), and reports the median of
epochs 2 and 3: widths 100, 256, 512, 1024 at batch 32, and batches 32, 128, 512 at
width 100. Writes benchmarks/results/scaling.json and scaling.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from run import RESULTS, available, interpreter, machine, pyplot, run_one

WIDTHS = [100, 256, 512, 1024]
BATCHES = [32, 128, 512]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default="tinynn-numba,tinynn-numpy,keras")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--keras-python", default=None)
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--replot", action="store_true",
                        help="redraw scaling.png from scaling.json without running")
    args = parser.parse_args()
    args.epochs = 3
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((out / "scaling.json").read_text())
        print_table(saved["runs"])
        plot(saved["runs"], out / "scaling.png", saved["machine"])
        return
    points = [(w, 32) for w in WIDTHS] + [(100, b) for b in BATCHES if b != 32]
    results = []
    for framework in args.frameworks.split(","):
        python = interpreter(framework, args)
        why = available(python, framework)
        if why:
            print(f"{framework}: not available with {python} ({why}); skipped")
            continue
        for width, batch in points:
            args.batch_size = batch
            r = run_one(python, framework, "hidden", 0, args,
                        ["--units", str(width), "--no-predict"])
            r["epoch_s"] = float(np.median(r["epochs"][1:]))
            print(f"{framework:13} width {width:5} batch {batch:4}: {r['epoch_s']:.3f} s/epoch",
                  flush=True)
            results.append(r)
    info = machine()
    (out / "scaling.json").write_text(json.dumps({"machine": info, "runs": results}, indent=1))
    print_table(results)
    plot(results, out / "scaling.png", info)


def print_table(results: list[dict]) -> None:
    frameworks = list(dict.fromkeys(r["framework"] for r in results))
    print("\n| width | batch | " + " | ".join(f"{f} s/epoch" for f in frameworks) + " |")
    print("|---:|---:|" + "---:|" * len(frameworks))
    for width, batch in sorted({(r["units"], r["batch_size"]) for r in results}):
        cells = []
        for f in frameworks:
            r = next((r for r in results if r["framework"] == f and r["units"] == width
                      and r["batch_size"] == batch), None)
            cells.append("—" if r is None else f"{r['epoch_s']:.3f}")
        print(f"| {width} | {batch} | " + " | ".join(cells) + " |")


def plot(results: list[dict], path: Path, info: dict) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for framework in dict.fromkeys(r["framework"] for r in results):
        mine = [r for r in results if r["framework"] == framework]
        by_width = sorted((r["units"], r["epoch_s"]) for r in mine if r["batch_size"] == 32)
        by_batch = sorted((r["batch_size"], r["epoch_s"]) for r in mine if r["units"] == 100)
        left.plot(*zip(*by_width), marker="o", label=framework)
        right.plot(*zip(*by_batch), marker="o", label=framework)
    left.set(xscale="log", yscale="log", xlabel="hidden width (batch 32)",
             ylabel="seconds per epoch", title="Cost against hidden width")
    right.set(xscale="log", yscale="log", xlabel="batch size (width 100)",
              title="Cost against batch size")
    left.set_xticks(WIDTHS, [str(w) for w in WIDTHS])
    right.set_xticks(BATCHES, [str(b) for b in BATCHES])
    left.minorticks_off()
    right.minorticks_off()
    ticks = [0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 10, 20]
    for ax in (left, right):
        low, high = ax.get_ylim()
        shown = [t for t in ticks if low <= t <= high]
        ax.set_yticks(shown, [f"{t:g}" for t in shown])
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=9)
    fig.suptitle(f"MNIST hidden model, 60k samples per epoch — {info['cpu']}, "
                 f"{info['cores']} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
