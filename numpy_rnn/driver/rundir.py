"""One training run per output directory: a lock file that a second run is refused on.

Two ``train`` processes on the same ``--out`` (a second terminal, a job started twice) would
overwrite each other's checkpoints and metrics. :func:`run_lock` holds an exclusive
``flock`` on ``OUT/.lock`` for the whole run; the file names the holder (process id, host, start
time) for the error message a second run gets. The kernel drops the lock when its process dies,
however it dies, so a lock file left by a killed run is recognised as stale (the file is there,
the lock is free) and taken over, with a line saying so. The lock's holder also removes the
temporary files (``.NAME.PID.HEX.tmp``) that a killed writer left beside their targets: while
it holds the lock, nobody else writes there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX (Windows): see _try_lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunLockedError", "run_lock"]

LOCK_NAME = ".lock"
#: The temporary files of numpy_rnn.driver.checkpoint.atomic_write: ``.NAME.PID.HEX.tmp``.
_TEMPORARY = re.compile(r"\..+\.\d+\.[0-9a-f]{8}\.tmp")


class RunLockedError(ValueError):
    """Another live process holds the output directory's lock."""


def _describe(holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    started = holder.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) \
        if isinstance(started, (int, float)) else ""
    return f"process {pid} on {host}{when}"


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except ValueError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock without waiting; False when another process holds it."""
    if fcntl is None:  # pragma: no cover - without flock, O_EXCL-free best effort: always ours
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def run_lock(out: str | os.PathLike[str],
             log: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold the lock of the output directory ``out`` (created if missing) for the block.

    Raises :class:`RunLockedError` at once, naming the directory and the holding process, when
    another process holds it; nothing in ``out`` is touched then. A lock file whose process
    is gone is taken over, and ``log`` says so. On exit the lock file is removed, and ``out``
    too if this call created it and it is still empty (a run that failed before writing).
    Yields the lock file's path.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output directory {out} is an existing file, not a directory")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the output directory {out}: {exc.strerror or exc}"
                      ) from exc
    path = out / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(f"{out} is in use by another training run ({_describe(holder)}):"
                                 " wait for it to end, or give this run another --out")
        # The holder before us may have removed the file between our open and our lock: then
        # we hold a lock on a file nobody else can see. Lock what the path names now.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        stale = _read_holder(fd)
        if stale:
            log(f"{out}: took over a stale lock ({_describe(stale)} is gone; it was killed or "
                "crashed during its run)")
        _remove_leftovers(out)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode("utf-8"))
        os.fsync(fd)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)               # releases the lock
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()        # only if still empty


def _remove_leftovers(out: Path) -> None:
    """Remove the temporary files a killed writer left in ``out`` (called holding its lock)."""
    for entry in out.iterdir():
        if _TEMPORARY.fullmatch(entry.name) and entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()
