"""How the cost of an epoch grows with the work (hidden width, batch size) and the cores.

    python benchmarks/scaling.py --keras-python K/bin/python --torch-python T/bin/python \
        --jax-python J/bin/python
    python benchmarks/scaling.py --limit 300 --epochs 2 --frameworks tinynn-numba,jax  # quick

Runs the hidden model (784 → width relu → 10 sigmoid) for 3 epochs per point,
in its own process per point (benchmarks/worker.py), and reports the median of
epochs 2 and 3: widths 100, 256, 512, 1024 at batch 32, and batches 32, 128, 512 at
width 100. Each point runs once per thread setting (--threads, default 1 and 2):
the process is pinned to that many cores and each framework's own thread count
is set to it (TensorFlow's intra/inter-op threads, torch.set_num_threads, XLA's
multi-threaded Eigen off for 1, BLAS and Numba through the environment;
see worker.limit_threads). tinynn's compiled training runs one thread per pinned
core (TINYNN_THREADS), or calls BLAS from one thread for layers of ≥ 200,000 weights;
its NumPy backend's BLAS uses the threads. Writes benchmarks/results/scaling.json
and scaling.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from run import RESULTS, available, interpreter, later_epochs, machine, pyplot, run_one
from worker import FRAMEWORKS

WIDTHS = [100, 256, 512, 1024]
BATCHES = [32, 128, 512]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--threads", default="1,2",
                        help="thread settings to run each point at (cores pinned)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first LIMIT samples only (a quick check)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--keras-python", default=None)
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--jax-python", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--replot", action="store_true",
                        help="redraw scaling.png from scaling.json without running")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((out / "scaling.json").read_text())
        print_table(saved["runs"])
        plot(saved["runs"], out / "scaling.png", saved["machine"])
        return
    points = [(w, 32) for w in WIDTHS] + [(100, b) for b in BATCHES if b != 32]
    settings = [int(t) for t in args.threads.split(",")]
    if any(t < 1 for t in settings):
        parser.error(f"--threads must be positive integers, got {args.threads!r}")
    results = []
    for framework in args.frameworks.split(","):
        python = interpreter(framework, args)
        why = available(python, framework)
        if why:
            print(f"{framework}: not available with {python} ({why}); skipped")
            continue
        for threads in settings:
            for width, batch in points:
                args.batch_size, args.threads = batch, threads
                r = run_one(python, framework, "hidden", 0, args,
                            ["--units", str(width), "--no-predict"])
                r["epoch_s"] = later_epochs(r["epochs"])
                print(f"{framework:13} {threads} thread(s) width {width:5} batch {batch:4}: "
                      f"{r['epoch_s']:.3f} s/epoch", flush=True)
                results.append(r)
    info = machine()
    (out / "scaling.json").write_text(json.dumps({"machine": info, "runs": results}, indent=1))
    print_table(results)
    plot(results, out / "scaling.png", info)


def setting(r: dict) -> tuple[str, int | None]:
    """(framework, threads requested): one column of the table, one line of the chart.
    Runs from before thread settings were recorded have None."""
    return r["framework"], (r.get("threads") or {}).get("requested")


def label(key: tuple[str, int | None]) -> str:
    framework, threads = key
    return framework if threads is None else f"{framework} ×{threads}"


def print_table(results: list[dict]) -> None:
    """A markdown table: a row per (width, batch), a column per framework and thread setting."""
    columns = list(dict.fromkeys(setting(r) for r in results))
    print("\n" + "×n: pinned to n cores, the framework's threads set to n.\n")
    print("| width | batch | " + " | ".join(f"{label(c)} s/epoch" for c in columns) + " |")
    print("|---:|---:|" + "---:|" * len(columns))
    for width, batch in sorted({(r["units"], r["batch_size"]) for r in results}):
        cells = []
        for c in columns:
            r = next((r for r in results if setting(r) == c and r["units"] == width
                      and r["batch_size"] == batch), None)
            cells.append("—" if r is None else f"{r['epoch_s']:.3f}")
        print(f"| {width} | {batch} | " + " | ".join(cells) + " |")


def plot(results: list[dict], path: Path, info: dict) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    colors = {}
    for key in dict.fromkeys(setting(r) for r in results):
        mine = [r for r in results if setting(r) == key]
        by_width = sorted((r["units"], r["epoch_s"]) for r in mine if r["batch_size"] == 32)
        by_batch = sorted((r["batch_size"], r["epoch_s"]) for r in mine if r["units"] == 100)
        # One colour per framework; one thread dashed.
        style = {"marker": "o", "label": label(key), "linestyle": "--" if key[1] == 1 else "-"}
        if key[0] in colors:
            style["color"] = colors[key[0]]
        line, = left.plot(*zip(*by_width), **style)
        colors.setdefault(key[0], line.get_color())
        right.plot(*zip(*by_batch), **{**style, "color": colors[key[0]]})
    left.set(xscale="log", yscale="log", xlabel="hidden width (batch 32)",
             ylabel="seconds per epoch", title="Cost against hidden width")
    right.set(xscale="log", yscale="log", xlabel="batch size (width 100)",
              title="Cost against batch size")
    left.set_xticks(WIDTHS, [str(w) for w in WIDTHS])
    right.set_xticks(BATCHES, [str(b) for b in BATCHES])
    left.minorticks_off()
    right.minorticks_off()
    ticks = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 10, 20, 50]
    for ax in (left, right):
        low, high = ax.get_ylim()
        shown = [t for t in ticks if low <= t <= high]
        ax.set_yticks(shown, [f"{t:g}" for t in shown])
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    samples = "/".join(str(n) for n in sorted({r.get("train_samples", 60000) for r in results}))
    fig.suptitle(f"MNIST hidden model, {samples} samples per epoch — {info['cpu']}, "
                 f"{info['cores']} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
