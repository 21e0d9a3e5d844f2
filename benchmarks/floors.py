"""What the toolchain costs before any tinynn kernel runs: the floor under the start-up targets.

    python benchmarks/floors.py [--runs 5]

Each figure is timed in a fresh process (the median of ``--runs``): importing NumPy,
Numba and SciPy's linalg, and the first call of a one-line ``@njit`` function whose
compiled code is on disk, read as numba reads its cache (it first loads every typing
and lowering module it has, SciPy's linalg among them, to find BLAS) and as tinynn
reads its kernels (``compiled/cache.py: KernelCache``, which skips that), and with
nothing on disk (compiling it). A process's first fit or predict on the compiled path
pays at least ``import numba`` plus such a first call, whatever tinynn's kernels are.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

KERNEL = """import numba
from tinynn.compiled.cache import on_disk


def add_one(x):
    return x + 1


numbas = numba.njit(cache=True)(add_one)  # numba's own cache reading
tinynns = on_disk(numba.njit(add_one))  # tinynn's
"""

FIRST_CALL = "first call of a one-line kernel on disk, numba reading it (Numba imported)"
READ_AS_TINYNN = "the same kernel read as tinynn reads its kernels"
#: (row label, the statements timed, the statements run before the clock starts).
PROBES = {
    "import numpy": ("import numpy", ""),
    "import numba (NumPy already imported)": ("import numba", "import numpy"),
    "import scipy.linalg (NumPy already imported)": ("import scipy.linalg", "import numpy"),
    FIRST_CALL: ("floor_kernel.numbas(1)", "import floor_kernel"),
    "the same, SciPy's linalg already imported too": (
        "floor_kernel.numbas(1)", "import floor_kernel, scipy.linalg"),
    READ_AS_TINYNN: ("floor_kernel.tinynns(1)", "import floor_kernel"),
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
            cold.append(seconds(*PROBES[FIRST_CALL], folder))
        for label, (timed, before) in PROBES.items():  # the cache is filled from here on
            rows[label] = [seconds(timed, before, folder) for _ in range(args.runs)]
    rows["the same kernel's first call with an empty cache (compiling it)"] = cold
    numba_import = statistics.median(rows["import numba (NumPy already imported)"])
    print(f"| in a fresh process (median of {args.runs}) | s | min | max |")
    print("|---|---:|---:|---:|")
    for label, times in rows.items():
        print(f"| {label} | {statistics.median(times):.3f} | {min(times):.3f} | "
              f"{max(times):.3f} |")
    print(f"\nA process's first call of compiled code on disk costs at least import numba "
          f"plus that call: {numba_import + statistics.median(rows[FIRST_CALL]):.2f} s as "
          f"numba reads it, {numba_import + statistics.median(rows[READ_AS_TINYNN]):.2f} s "
          f"as tinynn does.")

if __name__ == "__main__":
    main()
