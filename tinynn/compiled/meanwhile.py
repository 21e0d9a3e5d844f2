"""While the fused step compiles: the same step, run as Python over its compiled loops.

Why: Numba takes ~13 s here to compile ``fused.train_steps`` for a model, and only
~0.3 s for each loop it calls (``loops.py``, ``updates.py``). So a fit that finds no
compiled step on disk runs the step's own code as Python (``python_twin``: every helper
marked ``inline``, ``chosen_by_type`` or ``calling_python`` as its Python function,
every loop compiled) on one thread, while another process compiles the step into the
disk cache (``compile_elsewhere``). The next call of ``fit`` that finds it there uses it.

The loops are the same compiled code either way, and what runs between them is exact
(copies, indexing, comparisons, a float32 loss times an integer count), so the weights
are bit for bit those of the compiled step, and they do not depend on the thread count
(``tests/test_meanwhile.py`` checks model by model). ``TINYNN_COMPILE=foreground`` makes
a fit wait for the compile instead (the test suite does, to test the compiled step).
"""

from __future__ import annotations

import functools
import os
import pickle
import subprocess
import sys
import threading
import time
import types

import numba
from numba.core.compiler_lock import global_compiler_lock
from numba.core.dispatcher import Dispatcher
from numba.core.typing.typeof import Purpose, typeof

_ROOM = "tinynn.compiled"
#: Held while twins are made: fits on several threads may make them at once.
_LOCK = threading.RLock()


def background() -> bool:
    """Whether a fit may train meanwhile rather than wait for its step to compile."""
    return os.environ.get("TINYNN_COMPILE", "background") != "foreground" \
        and not numba.config.DISABLE_JIT


def signature(args: tuple) -> tuple:
    """The Numba types of a kernel's arguments, as its dispatcher would type them."""
    return tuple(typeof(a, Purpose.argument) for a in args)


def ready(kernel, sig: tuple) -> bool:
    """Whether ``kernel`` is compiled for ``sig``, in memory or on disk (then loaded, as
    numba's dispatcher loads it before it would compile)."""
    if sig in kernel.overloads:
        return True
    with global_compiler_lock:
        try:
            result = kernel._cache.load_overload(sig, kernel.targetctx)
            if result is None:
                return False
            kernel.targetctx.insert_user_function(result.entry_point, result.fndesc,
                                                  [result.library])
        except AttributeError:  # numba's internals moved: compile here, as before
            return True
        kernel.add_overload(result)
    return True


_STARTED: dict = {}


def compile_elsewhere(jobs: tuple) -> bool:
    """Compile each (module, kernel name, signature) of ``jobs``, in order, into the disk
    cache in a new process, once per set of jobs in a process. It goes on after this one
    ends, so that the next run finds them compiled; it waits for the one started before
    it, so that a script that trains several models does not compile them all at once.
    Returns False if no process could be started (then compile here)."""
    if jobs not in _STARTED:
        before = [c.pid for c in _STARTED.values() if c.poll() is None][-1:]
        # (the child imports tinynn as this process did: from the same paths)
        path = os.pathsep.join(p for p in sys.path if p)
        try:
            child = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONPATH": path},
                                     start_new_session=True)
            child.stdin.write(pickle.dumps((before, jobs)))
            child.stdin.close()
        except OSError:  # (no interpreter to start, no process left, a closed pipe)
            return False
        _STARTED[jobs] = child
    return True


def job(kernel, args: tuple) -> tuple:
    """A job for ``compile_elsewhere``: ``kernel`` for the types of ``args``."""
    return getattr(kernel, "py_func", kernel).__module__, kernel.__name__, signature(args)


def python_twin(function):
    """``function`` (a compiled kernel of this room) run as Python: each helper it calls
    that numba would copy into it (``inline``, ``chosen_by_type``, ``calling_python``)
    becomes its Python function too; each other kernel stays compiled."""
    with _LOCK:
        return _rebuilt(getattr(function, "py_func", function))


def _twin(f):
    if isinstance(f, Dispatcher):
        inlined = f.targetoptions.get("inline") == "always"
        return _twin(f.py_func) if inlined or getattr(f, "calls_python", False) else f
    if not isinstance(f, types.FunctionType) or not f.__module__.startswith(_ROOM):
        return f
    if hasattr(f, "choose"):  # a jit.chosen_by_type stub
        return _chosen(f.choose)
    return _rebuilt(f)


@functools.cache
def _chosen(choose):
    """A compile-time choice made at run time, by the arguments' classes (as numba
    would by their types)."""
    from tinynn.compiled.jit import _Typed

    made = {}

    def chosen(*args):
        key = tuple(type(a) for a in args)
        if key not in made:
            with _LOCK:
                made[key] = _twin(choose(*(_Typed(k) for k in key)))
        return made[key](*args)

    return chosen


_REBUILT: dict = {}


def _rebuilt(f: types.FunctionType) -> types.FunctionType:
    """f's code with its module's names twinned (and its closure's values)."""
    if f not in _REBUILT:
        cells = tuple(types.CellType(_twin(c.cell_contents)) for c in f.__closure__ or ())
        _REBUILT[f] = types.FunctionType(f.__code__, _globals(f.__module__), f.__name__,
                                         f.__defaults__, cells or None)
    return _REBUILT[f]


_GLOBALS: dict = {}


def _globals(module: str) -> dict:
    """A module's names, each function of this room twinned (kept before it is filled:
    the functions of a module call each other)."""
    if module not in _GLOBALS:
        names = _GLOBALS[module] = dict(sys.modules[module].__dict__)
        for key, value in list(names.items()):
            names[key] = _twin(value)
    return _GLOBALS[module]


def _main() -> None:
    """The compiling process: read the jobs and compile each."""
    import importlib

    before, jobs = pickle.loads(sys.stdin.buffer.read())
    for pid in before:
        while _running(pid):  # (the compile started before this one)
            time.sleep(0.2)
    for module, name, sig in jobs:
        getattr(importlib.import_module(module), name).compile(sig)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has ended; without /proc, assume it has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


if __name__ == "__main__":
    _main()
