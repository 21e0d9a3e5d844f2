"""The warm-up thread (``tinynn.kernels.warmup``): ``import tinynn`` reads the fused kernels
from Numba's disk cache in the background, and never gets in the foreground's way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tinynn.kernels import warmup

MODEL = (
    "import numpy as np, tinynn\n"
    "tinynn.utils.set_random_seed(0)\n"
    "model = tinynn.Sequential([tinynn.Input((6,)), tinynn.layers.Dense(3, activation='relu'),\n"
    "                           tinynn.layers.Dense(2)])\n"
    "x = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)\n"
)


def python(code: str, cache, backend: str = "numba") -> subprocess.CompletedProcess:
    env = {"NUMBA_CACHE_DIR": str(cache), "TINYNN_BACKEND": backend, "PYTHONHASHSEED": "0"}
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300, env={**os.environ, **env})
    assert child.returncode == 0, child.stderr
    return child


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A kernel cache holding the predict kernel of MODEL (compiled once, by a first run)."""
    cache = tmp_path_factory.mktemp("numba-cache")
    first = python(MODEL + "print(model.predict(x).tolist())", cache)
    return cache, first.stdout


def test_the_first_predict_finds_its_kernel_read_by_the_warm_up(warm_cache):
    cache, expected = warm_cache
    child = python(
        "from tinynn.kernels import warmup\n" + MODEL +
        "warmup.wait()\n"
        "from tinynn.kernels import fused\n"
        "read = len(fused.forward_rows.overloads)\n"
        "print(model.predict(x).tolist())\n"
        "print(read, len(fused.forward_rows.overloads))\n", cache)
    outputs, counts = child.stdout.splitlines()
    assert outputs + "\n" == expected
    assert counts == "1 1"  # read in the background; the foreground read nothing more


def test_nothing_is_read_or_compiled_from_an_empty_cache(tmp_path):
    child = python("import tinynn\nfrom tinynn.kernels import warmup, fused\nwarmup.wait()\n"
                   "print(len(fused.forward_rows.overloads), len(fused.train_steps.overloads))",
                   tmp_path)
    assert child.stdout.split() == ["0", "0"]
    assert not list(tmp_path.rglob("*.nbc"))  # nothing compiled (nor written) in the background


def test_the_foreground_may_use_the_kernels_while_the_thread_imports_them(warm_cache):
    cache, expected = warm_cache
    child = python("import tinynn\nk = tinynn.backend.kernels()\nprint(len(k.UPDATES))\n"
                   + MODEL + "print(model.predict(x).tolist())", cache)
    count, outputs = child.stdout.split("\n", 1)
    assert int(count) >= 4 and outputs == expected


def test_a_fork_waits_for_the_warm_up_and_the_child_predicts(warm_cache):
    cache, expected = warm_cache
    child = python(
        MODEL.replace("import numpy as np, tinynn", "import os, numpy as np, tinynn") +
        "pid = os.fork()  # at once, while the warm-up is (most likely) still reading\n"
        "if pid == 0:\n"
        "    print(model.predict(x).tolist(), flush=True)\n"
        "    os._exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('child exit', status)\n", cache)
    assert child.stdout == expected + "child exit 0\n"


def test_exit_during_the_warm_up_is_clean(warm_cache):
    cache, _ = warm_cache
    child = python("import tinynn", cache)
    assert child.stderr == ""


def test_the_numpy_backend_starts_no_thread(warm_cache):
    cache, _ = warm_cache
    child = python("import sys, threading, tinynn\n"
                   "print([t.name for t in threading.enumerate()], 'numba' in sys.modules)",
                   cache, backend="numpy")
    assert child.stdout.strip() == "['MainThread'] False"


def test_cached_signatures_of_something_that_is_no_cached_kernel_are_none():
    assert warmup.cached_signatures(len) == []
    assert warmup.cached_signatures(lambda: None) == []
