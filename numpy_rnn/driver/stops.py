"""How a run stops without losing work: signals, and standard output that goes away.

A training run learns that it must stop in two ways, and neither may cost it its checkpoint.

* **A signal**: ``SIGINT`` (Ctrl-C), ``SIGTERM`` (``kill``, ``timeout``, batch schedulers,
  ``docker stop``, systemd) or ``SIGHUP`` (the terminal closed). :func:`deferred_stop` turns
  the first one into a request (:class:`StopRequest`) that the training loop reads between
  steps, so the step in progress finishes, the checkpoint of that step is written whole and
  the run ends with status ``128 + signal`` (130, 143, 129), as a process killed by that signal
  would. The same signal again within :data:`GRACE_S` seconds is the same request delivered
  twice (a terminal sends Ctrl-C to the whole process group while ``mpiexec`` and ``torchrun``
  forward it too; ``torchrun`` follows it with ``SIGTERM``) and is ignored; any later one
  forces the stop at once (:class:`Interrupted`): the checkpoint on disk is then the previous
  one, whole, because every file is written beside its target and renamed over it.
* **A closed output**: ``train ... | head -1`` closes the pipe after one line, a closed
  terminal turns writes into ``EIO``. :func:`tolerate_closed_output` wraps ``sys.stdout`` and
  ``sys.stderr`` so that a write to an output that is gone sends the rest of that stream to
  ``/dev/null`` instead of raising: the run's log is lost, not the run.

``kill -9`` (and the kernel's out-of-memory killer) cannot be caught: the run ends at once and
leaves its last checkpoint, whole, plus the lock file, which the next run takes over
(:mod:`numpy_rnn.driver.rundir`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["GRACE_S", "STOP_SIGNALS", "Interrupted", "StopRequest", "deferred_stop",
           "exit_status", "tolerate_closed_output"]

#: The signals that ask a run to stop after its current step (those this platform has).
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
#: Seconds within which the same signal again counts as the first one delivered twice.
GRACE_S = 1.0


def exit_status(signum: int) -> int:
    """The shell's status of a process ended by signal ``signum``: ``128 + signum``."""
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """A stop forced by a second signal, or a run that stopped early on a signal: carries the
    signal, so the command line can exit with ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class StopRequest:
    """The first stop signal a process received (``signum``, None before any) and when."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._at = 0.0

    def __bool__(self) -> bool:
        return self.signum is not None

    def receive(self, signum: int) -> None:
        """Record ``signum``; raise :class:`Interrupted` when a stop was requested before, more
        than :data:`GRACE_S` seconds ago or by another signal."""
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._at = int(signum), now
        elif signum != self.signum or now - self._at > GRACE_S:
            raise Interrupted(signum)


@contextlib.contextmanager
def deferred_stop() -> Iterator[StopRequest]:
    """Within the block, the :data:`STOP_SIGNALS` set a :class:`StopRequest` rather than
    ending the process; the previous handlers come back after it.

    A stop requested in the middle of an optimizer update would leave some weights stepped and
    others not; the loop reads the request between steps instead. Outside the main thread
    (where signal handlers cannot be set) the request is never set.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        request.receive(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


# --------------------------------------------------------------------------------------------
# Output that goes away
# --------------------------------------------------------------------------------------------

#: The errors of a write to a closed pipe (EPIPE) or to a terminal that hung up (EIO).
_GONE = (errno.EPIPE, errno.EIO)


def output_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the output it was writing to is gone (closed pipe, hung-up tty)."""
    return isinstance(exc, OSError) and exc.errno in _GONE


class _Tolerant:
    """A text stream that, once a write or flush finds its output gone, points its file
    descriptor at ``/dev/null`` and drops what it is given from then on."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def _guard(self, op: str, *args: Any) -> Any:
        if self.gone:
            return len(args[0]) if op == "write" else None
        try:
            return getattr(self._stream, op)(*args)
        except OSError as exc:
            if not output_gone(exc):
                raise
            self._close()
            return len(args[0]) if op == "write" else None

    def _close(self) -> None:
        self.gone = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())   # the interpreter's final flush finds it
            os.close(devnull)

    def write(self, text: str) -> int:
        return int(self._guard("write", text))

    def flush(self) -> None:
        self._guard("flush")

    def isatty(self) -> bool:
        return not self.gone and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def tolerate_closed_output() -> Iterator[None]:
    """Within the block, writes to a ``sys.stdout`` or ``sys.stderr`` whose reader is gone
    are dropped instead of raising ``BrokenPipeError`` (or ``EIO``)."""
    saved = sys.stdout, sys.stderr
    sys.stdout = _Tolerant(saved[0])
    sys.stderr = _Tolerant(saved[1])
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        sys.stdout, sys.stderr = saved


def silence_stdout() -> None:
    """Point standard output at ``/dev/null``: after a closed pipe, so that the interpreter's
    final flush does not report the broken pipe again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
