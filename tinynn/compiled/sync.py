"""Threads through one training step together: a spin barrier on a shared int64 array.

Why: a training step of the notebook's models is ~50–200 µs, too short for a
thread pool's fork and join (tens of µs each) but long enough to share between
cores if the threads meet cheaply. So each thread runs the whole of
``fused.train_steps`` on its own part of every step, and where one part needs
another's results, the threads meet here: each publishes how many meetings it
has reached and spins until every other thread has reached as many (~0.1 µs
when both cores are free; after ``SPINS`` turns it yields its core at each turn,
for when threads outnumber free cores).

The array ``sync`` (made by ``new``) holds, each on its own 64-byte cache line:
the meeting count of every thread, a flag per thread (``publish``/``read``: e.g.
"my updates were finite"), and an abort flag that Python sets (``abort``) when
a thread failed to start, so that the others stop waiting.

Numba has no atomics of its own; the two intrinsics below emit LLVM's atomic
load (acquire) and store (release), which also keep the compiler from hoisting
the spinning load out of its loop.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic

from tinynn.compiled.jit import njit

#: int64 entries per cache line: each thread's counter and flag sits on a line of its own.
LINE = 8
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_POSIX = os.name == "posix"


def new(threads: int) -> np.ndarray:
    """A fresh ``sync`` array for ``threads`` threads (one per call of a threaded kernel)."""
    return np.zeros((2 * threads + 1) * LINE, np.int64)


def abort(sync: np.ndarray) -> None:
    """Tell threads waiting at a barrier to give up (a partner thread failed to start)."""
    sync[-LINE] = 1


@intrinsic
def _load(typingctx, array, index):
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.load_atomic(builder.gep(data, [args[1]]), "acquire", 8)

    return types.int64(array, index), codegen


@intrinsic
def _store(typingctx, array, index, value):
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        builder.store_atomic(args[2], builder.gep(data, [args[1]]), "release", 8)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@intrinsic
def _pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``: lets the other hyperthread run); else nothing."""

    def codegen(context, builder, sig, args):
        if _X86:
            pause = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(pause, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _yield(typingctx):
    """Give the core to another runnable thread (POSIX ``sched_yield``); else nothing."""

    def codegen(context, builder, sig, args):
        if _POSIX:
            sched_yield = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
            builder.call(sched_yield, [])
        return context.get_dummy_value()

    return types.void(), codegen


if config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1 runs the kernels as Python: these too
    def _load(array, index):
        return array[index]

    def _store(array, index, value):
        array[index] = value

    def _pause():
        time.sleep(0)  # (lets the partner thread have Python's lock)

    _yield = _pause


#: Spins before a waiting thread starts giving its core away: a partner that is running
#: arrives within a few µs; one that is not (more threads than free cores) needs the core.
SPINS = 4096


@njit
def barrier(sync, thread, threads, meeting):
    """Wait until every thread has arrived at meeting number ``meeting`` (1, 2, …).

    Returns False if Python set the abort flag while waiting.
    """
    _store(sync, thread * LINE, meeting)
    for other in range(threads):
        spins = 0
        while _load(sync, other * LINE) < meeting:
            if _load(sync, 2 * threads * LINE):
                return False
            spins += 1
            if spins < SPINS:
                _pause()
            else:
                _yield()
    return True


@njit
def publish(sync, thread, threads, value):
    """Set this thread's flag (read by the others after the next barrier)."""
    _store(sync, (threads + thread) * LINE, value)


@njit
def read(sync, thread, threads):
    """Thread ``thread``'s flag."""
    return _load(sync, (threads + thread) * LINE)
