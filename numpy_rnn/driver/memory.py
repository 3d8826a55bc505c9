"""The memory guard: refuse, before allocating anything, a run that cannot fit in memory.

A 100,000-wide hidden layer, a trillion-wide embedding or a trillion samples used to end in a
40-line traceback from NumPy (``ArrayMemoryError``), or worse, in a process that grew until the
kernel killed it. Now whatever is about to allocate asks the task what it will hold
(:class:`~numpy_rnn.tasks.sizes.MemoryEstimate`: its model's parameters counted from the shapes,
``Task.parameter_count``, and the activations of the batches it will actually make,
``Task.training_memory``; the commands ask likewise for evaluation, sampling, beam search and
checkpoint loading), and this module compares that with what the machine has and stops with one
line saying both, and which flag to lower:

* :func:`available_bytes`: ``MemAvailable`` from ``/proc/meminfo``, or less when a cgroup limit
  (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) leaves less; ``$NUMPY_RNN_MEMORY_LIMIT``
  (bytes, or ``512M``, ``2G``, ``1.5GiB``) overrides both. Unknown: no check.
* :func:`check_fits` raises :class:`MemoryLimitError` (a ``ValueError``, so the command line
  prints it as one ``error:`` line) when an estimate is over what is available.

A default language-model run (LSTM 2 x 256, batch 32 x 150, float32) is estimated at about
230 MiB, for a measured peak of about 180 MiB.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..tasks.sizes import MemoryEstimate

__all__ = ["MEMORY_LIMIT_ENV", "MemoryEstimate", "MemoryLimitError", "available_bytes",
           "check_fits", "format_bytes", "parse_bytes"]

MEMORY_LIMIT_ENV = "NUMPY_RNN_MEMORY_LIMIT"


class MemoryLimitError(ValueError):
    """A run would need more memory than the machine has; the message is one line saying how
    much, for what, against what is available, and which setting to make smaller."""


# --------------------------------------------------------------------------------------------
# What the machine has
# --------------------------------------------------------------------------------------------

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """``"2G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"{MEMORY_LIMIT_ENV}={text!r} is not an amount of memory: give bytes, "
                         "or a number with K, M, G or T (e.g. 2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None     # "max": no limit


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024       # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    """What the cgroup's limit leaves (limit - usage), v2 then v1; None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(limit_file)
        if limit is not None and limit < 2**60:          # v1 writes "no limit" as ~2^63
            return max(limit - (_read_int(usage_file) or 0), 0)
    return None


def available_bytes() -> int | None:
    """The memory this process may still allocate, in bytes, or None when unknown (then
    nothing is refused): ``$NUMPY_RNN_MEMORY_LIMIT`` when set, else the least of
    ``MemAvailable`` and what the cgroup's limit leaves."""
    env = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if env:
        return parse_bytes(env)
    known = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(known) if known else None


# --------------------------------------------------------------------------------------------
# Refusing
# --------------------------------------------------------------------------------------------

def format_bytes(n: int) -> str:
    """``1.5 GiB``, ``320.0 MiB``, ``12.0 KiB``, ``100 bytes``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and (unit != "TiB" or n >= 2**50):
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} bytes"


def check_fits(estimate: MemoryEstimate, advice: str | None = None,
               available: int | None = None) -> None:
    """Raise :class:`MemoryLimitError` when ``estimate`` needs more than ``available`` bytes
    (default: :func:`available_bytes`; None there: no check). The message ends with
    ``advice`` (default: the estimate's own, which names the flag to lower)."""
    if available is None:
        available = available_bytes()
    if available is None or estimate.total <= available:
        return
    parts = sorted(((v, k) for k, v in estimate.parts.items() if v > 0), reverse=True)
    shown = ", ".join(f"{format_bytes(v)} for {k}" for v, k in parts[:3])
    where = (f"the limit is {format_bytes(available)} ({MEMORY_LIMIT_ENV})"
             if os.environ.get(MEMORY_LIMIT_ENV, "").strip()
             else f"this machine has {format_bytes(available)} available")
    raise MemoryLimitError(f"{estimate.what} about {format_bytes(estimate.total)} "
                           f"({estimate.shape}: {shown}) but {where}: "
                           f"{advice or estimate.advice}")
