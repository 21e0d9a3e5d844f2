"""Reading the compiled kernels from Numba's disk cache in the background, from import on.

Why: even with every kernel already on disk, a process's first ``fit`` used to
wait ~0.5 s before its first step, importing Numba (which imports SciPy's BLAS),
setting up its code generator and reading the fused kernels' machine code. A
script imports tinynn and then loads its data; a thread started by ``import
tinynn`` does that work meanwhile, so the first fit finds the kernels ready.

What it does not do: compile. It reads only signatures already on disk, and of
each fused kernel only the one written last: a script most likely trains what it
trained last, every signature read costs memory (a few MB), and one that the fit
needs but the warm-up did not read costs the fit ~0.06 s. So a first run on a new
machine still compiles, in the foreground, and says so. The thread holds no lock
the foreground could not wait for, makes a fork wait until it is done (a child
must not inherit a lock it holds half-way), and reads nothing more once the
foreground runs a fused kernel itself, or at exit. If anything goes wrong it
gives up silently: the foreground then does the same work and reports any error.

This module imports no Numba itself; ``start`` is called by ``import tinynn``
only when the compiled backend is selected.
"""

from __future__ import annotations

import atexit
import os
import threading

#: The fused kernels' names (``kernels.fused``): what a first fit or predict waits for.
KERNELS = ("train_steps", "forward_rows", "workspace", "blas_in_training")

#: True until the warm-up thread has imported the kernel modules: until then a module
#: found in ``sys.modules`` may still be executing (``backend.import_kernels`` waits).
importing = False
_thread: threading.Thread | None = None
_stopping = threading.Event()


def start() -> None:
    """Start the warm-up thread (once per process)."""
    global _thread, importing
    if _thread is not None:
        return
    importing = True
    _thread = threading.Thread(target=_run, name="tinynn-warm-up", daemon=True)
    atexit.register(stop)
    os.register_at_fork(before=wait)
    _thread.start()


def wait() -> None:
    """Until the warm-up is over (from any thread but its own)."""
    thread = _thread
    if thread is not None and thread is not threading.current_thread():
        thread.join()


def stop() -> None:
    """Read no further signature, and wait for the one being read (at exit)."""
    step_aside()
    wait()


def _run() -> None:
    global importing
    try:
        from tinynn.kernels import fused  # imports Numba, SciPy's BLAS, compiled, sync
    except Exception:
        return  # the foreground's own import will raise it where it can be seen
    finally:
        importing = False
    for name in KERNELS:
        kernel = getattr(fused, name)
        found = cached_signatures(kernel)
        if _stopping.is_set():
            return
        try:
            if found:
                kernel.compile(found[0])  # on disk: read, not compiled
        except Exception:
            return


def step_aside() -> None:
    """The foreground is about to run a fused kernel: read no further signature (it may
    need one not read yet, and reads it itself rather than wait for the others)."""
    _stopping.set()


def cached_signatures(kernel) -> list:
    """The signatures of ``kernel`` on disk that this machine and this source can use,
    most recently written first; none if Numba's cache internals are not as expected."""
    try:
        cache = kernel._cache
        files = cache._cache_file
        codegen = kernel.targetctx.codegen()
        found = []
        for key, data_name in files._load_index().items():
            path = os.path.join(files._cache_path, data_name)
            # Only entries that load as they are: anything else would be compiled here.
            if key == cache._index_key(key[0], codegen) and os.path.exists(path):
                found.append((os.path.getmtime(path), key[0]))
    except Exception:
        return []
    return [signature for _, signature in sorted(found, key=lambda f: -f[0])]
