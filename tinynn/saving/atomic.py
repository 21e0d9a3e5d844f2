"""Writing a file so that a crash never leaves half of it, nor a temporary file for long.

The data goes to a temporary file ``.<name>.<pid>.<random>.tmp`` beside the
target (through a symlink: beside its target), is flushed to disk and renamed
over the target, so a crash leaves the old file intact. The new file gets the
mode of the file it replaces, or the umask's default mode. Temporary files
left by a writer killed mid-write are removed by the next write of the same
target (see ``remove_stale_temporaries``). A full disk (or a file-size limit)
is an ``OSError`` of the same errno that names the file and says what
happened; the temporary is removed and the old file stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: A temporary file this old whose writer is gone is removed by the next save.
STALE_SECONDS = 60.0

#: What a write that runs out of room means, by errno (EDQUOT is not on every system).
NO_ROOM = {getattr(errno, name): what for name, what in [
    ("ENOSPC", "the disk is full"),
    ("EDQUOT", "the disk quota is used up"),
    ("EFBIG", "the file would be larger than the file system or the process's file-size "
              "limit (ulimit -f) allows"),
] if hasattr(errno, name)}


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None],
                     overwrite: bool = True, caller: str = "save") -> None:
    """``write(file)`` into a temporary file beside ``path``, flushed, then renamed over it.

    Args:
        path: the file to write (through a symlink: its target).
        write: writes the whole content to the binary file it is given.
        overwrite: replace an existing file; if False, an existing file is refused
            before anything is written.
        caller: names the call in error messages (``"save"``, ``"save_weights"``).

    Raises:
        FileExistsError: ``overwrite`` is False and ``path`` exists.
        OSError: with the errno of ``NO_ROOM`` when the file does not fit, naming ``path``.
    """
    target = Path(os.path.realpath(path))  # through a symlink: replace its target, not the link
    existed = os.path.exists(target)
    if existed and not overwrite:
        raise FileExistsError(f"{caller}: {os.fspath(path)!r} exists already; pass "
                              f"overwrite=True to replace it")
    try:
        _write_and_rename(target, write)
    except OSError as e:
        if e.errno not in NO_ROOM:
            raise
        kept = "the previous file is unchanged" if existed else "no file was made"
        raise OSError(e.errno, f"{caller}: could not write {os.fspath(path)!r}: "
                               f"{NO_ROOM[e.errno]} ({os.strerror(e.errno)}); {kept}") from e


def _write_and_rename(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """The write itself; whatever fails, the temporary is gone afterwards."""
    remove_stale_temporaries(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)  # keep the replaced file's mode
    except FileNotFoundError:
        mode = None  # a new file: os.open applies the umask to 0o666
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.chmod(tmp, mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())  # a full disk may show only here (NFS, delayed allocation)
        os.replace(tmp, target)
        _fsync_directory(target.parent)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def _temporary_pattern(target: Path) -> re.Pattern:
    """Names of temporaries for ``target``: ours (with the writer's PID) and older tinynn's."""
    name = re.escape(target.name)
    return re.compile(rf"\.{name}\.(?:(?P<pid>\d+)\.[0-9a-f]{{16}}|[a-z0-9_]{{8}})\.tmp")


def remove_stale_temporaries(target: Path, min_age: float = STALE_SECONDS) -> None:
    """Remove temporaries of ``target`` left by writers that were killed mid-save.

    A temporary is stale when its writer's process is gone (no PID in the name:
    written by an older tinynn) *and* it has not been written to for ``min_age``
    seconds (``STALE_SECONDS`` by default). Both, because either alone can be wrong: on a shared
    network directory a live writer on another machine has a PID unknown here
    (but its file keeps changing), and a local writer may pause longer than a
    minute (but its PID is alive).
    """
    pattern = _temporary_pattern(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    now = time.time()
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or (match["pid"] and _process_alive(int(match["pid"]))):
            continue
        candidate = target.parent / name
        with contextlib.suppress(OSError):  # gone already, or not ours to remove
            info = os.lstat(candidate)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime >= min_age:
                os.remove(candidate)


def _process_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and below address process groups, never one writer
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # PermissionError: it exists, as another user
        return True
    return True


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (where the system allows opening a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
