"""What the toolchain costs before any tinynn kernel runs: the floor under the start-up targets.

    python benchmarks/floors.py [--runs 5]

Each figure is timed in a fresh process (the median of ``--runs``): importing NumPy,
Numba and SciPy's linalg (which Numba imports the first time it loads or compiles
anything, to find BLAS), and the first call of a one-line ``@njit(cache=True)``
function, with its cache filled by an earlier process and with it empty. A process's
first fit or predict on the compiled path pays at least ``import numba`` plus that
first cached call, whatever tinynn's kernels are.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

KERNEL = "import numba\n\n\n@numba.njit(cache=True)\ndef add_one(x):\n    return x + 1\n"

#: (row label, the statements timed, the statements run before the clock starts).
PROBES = {
    "import numpy": ("import numpy", ""),
    "import numba (NumPy already imported)": ("import numba", "import numpy"),
    "import scipy.linalg (NumPy already imported)": ("import scipy.linalg", "import numpy"),
    "first call of a cached one-line kernel (Numba already imported)": (
        "import floor_kernel; floor_kernel.add_one(1)", "import numba"),
    "the same, SciPy's linalg already imported too": (
        "import floor_kernel; floor_kernel.add_one(1)", "import numba, scipy.linalg"),
}


def seconds(timed: str, before: str, folder: str) -> float:
    """How long ``timed`` takes in a fresh interpreter, after ``before``."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {folder!r})
        {before}
        start = time.perf_counter()
        {timed}
        print(time.perf_counter() - start)
    """)
    env = {"NUMBA_CACHE_DIR": folder, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be a positive integer, got {args.runs}")
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "floor_kernel.py").write_text(KERNEL)
        cold = []
        for _ in range(args.runs):  # each run compiles: the cache is emptied first
            for stale in Path(folder).glob("**/*.nb[ic]"):
                stale.unlink()
            cold.append(seconds(*PROBES["first call of a cached one-line kernel "
                                        "(Numba already imported)"], folder))
        for label, (timed, before) in PROBES.items():  # the cache is filled from here on
            rows[label] = [seconds(timed, before, folder) for _ in range(args.runs)]
    rows["the same kernel's first call with an empty cache (compiling it)"] = cold
    floor = (statistics.median(rows["import numba (NumPy already imported)"])
             + statistics.median(rows["first call of a cached one-line kernel "
                                      "(Numba already imported)"]))
    print(f"| in a fresh process (median of {args.runs}) | s | min | max |")
    print("|---|---:|---:|---:|")
    for label, times in rows.items():
        print(f"| {label} | {statistics.median(times):.3f} | {min(times):.3f} | "
              f"{max(times):.3f} |")
    print(f"\nFloor of a process's first compiled call with a warm cache (import numba + the "
          f"first cached call): {floor:.2f} s.")


if __name__ == "__main__":
    main()
