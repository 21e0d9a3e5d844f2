"""A new user's first run: the whole process of one epoch, tinynn against its peers.

    python benchmarks/first_run.py --torch-python /work/venvs/torch/bin/python --rounds 3

Each round runs, as separate processes and in turn: tinynn with an empty kernel cache
(a new user's first ``make demo``: it trains while its step compiles in another process),
tinynn again with the cache that process filled (the second run), and each peer given,
on the same model (``--model``, default the hidden one) for one epoch (``worker.py --epochs 1
--no-predict``). It prints the median
wall time of the whole process (interpreter start, imports, data, compile, the epoch) and
its peak memory (maximum resident set), with ratios against PyTorch's from the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(python: str, framework: str, model: str, env: dict) -> tuple[float, float]:
    """(seconds, peak MB) of one whole process training ``model`` for one epoch."""
    cmd = [python, str(HERE / "worker.py"), "--framework", framework, "--model", model,
           "--epochs", "1", "--no-predict"]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=HERE.parent, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{framework} failed:\n{child.stderr.read().decode()[-2000:]}")
    child.stderr.close()
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hidden")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--keras-python", default=None)
    parser.add_argument("--jax-python", default=None)
    args = parser.parse_args()
    peers = {name: python for name, python in (("torch", args.torch_python),
                                                ("keras", args.keras_python),
                                                ("jax", args.jax_python)) if python}
    base = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    times: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        cache = tempfile.mkdtemp(prefix="tinynn-first-run-")
        env = {**base, "NUMBA_CACHE_DIR": cache}
        times.setdefault("tinynn, empty kernel cache", []).append(
            run(sys.executable, "tinynn-numba", args.model, env))
        _wait_for_compiling()
        times.setdefault("tinynn, cache filled", []).append(
            run(sys.executable, "tinynn-numba", args.model, env))
        for name, python in peers.items():
            times.setdefault(name, []).append(run(python, name, args.model, base))
    medians = {name: (statistics.median(s for s, _ in runs), max(m for _, m in runs))
               for name, runs in times.items()}
    torch = medians.get("torch", (None,))[0]
    print(f"\n{args.model} model, one epoch, whole process; median of {args.rounds} rounds; "
          f"{os.cpu_count()} cores; {_cpu()}\n")
    print("| run | seconds | × PyTorch's | peak memory (MB) |")
    print("|---|---:|---:|---:|")
    for name, (seconds, peak) in medians.items():
        ratio = f"{seconds / torch:.2f}" if torch else "—"
        print(f"| {name} | {seconds:.2f} | {ratio} | {peak:.0f} |")


def _wait_for_compiling() -> None:
    """Until the process that the first run left compiling its step (``meanwhile.py``) ends."""
    while any(b"tinynn.compiled.meanwhile" in _read(p)
              for p in Path("/proc").glob("[0-9]*/cmdline")):
        time.sleep(0.5)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # (the process ended)
        return b""


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
