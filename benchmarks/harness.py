"""Timing: rounds of blocks, one backend at a time, and the statistics of per-round ratios.

The method, and why:

* **Blocks, not alternating single calls.** On a machine with few cores the BLAS and OpenMP
  threads of the backend that just ran keep spinning for a while (OpenBLAS's pthreads and torch's
  libgomp both busy-wait before sleeping) and steal the cores from the other backend. So each
  backend gets a short pause (the other one's threads go to sleep), one untimed warm-up call, then a
  block of timed calls; the time of a call is the block's time divided by its length.
* **Rounds and per-round ratios.** A round times every backend once, in an order that rotates
  from round to round. The ratio NumPy/torch (and NumPy/floor) is taken within a round, where
  both saw the same machine, and summarised over rounds by its median, min and max. A machine
  whose speed drifts (other jobs, thermal limits) moves both numbers of a round together.
* **The same thread count for both.** NumPy's BLAS is limited with threadpoolctl, torch with
  ``torch.set_num_threads``; :func:`thread_limit` sets both and restores them.
* Python's garbage collector is off inside a block (as in ``timeit``) and runs in the pause,
  over the objects the calls created only (everything older is frozen first).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Backend:
    """One thing to time: ``call()`` does the work once, ``sync()`` waits for it (GPU)."""

    name: str
    call: Callable[[], Any]
    sync: Callable[[], None] = lambda: None


@dataclass
class Timings:
    """Seconds per call of one backend, one entry per round, and the block length used."""

    calls: int
    per_round: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.per_round)


@dataclass
class RatioStats:
    """A ratio taken per round: its median, min and max over the rounds, and every value."""

    median: float
    min: float
    max: float
    per_round: list[float]

    @classmethod
    def of(cls, num: Timings, den: Timings) -> RatioStats:
        r = [a / b for a, b in zip(num.per_round, den.per_round)]
        return cls(statistics.median(r), min(r), max(r), r)


@contextmanager
def thread_limit(n: int, torch_too: bool = True) -> Iterator[None]:
    """NumPy's BLAS (threadpoolctl) limited to ``n`` threads inside the block, and torch's too
    when ``torch_too`` (only then is torch imported)."""
    from threadpoolctl import threadpool_limits

    before = None
    if torch_too:
        import torch
        before = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        if before is not None:
            torch.set_num_threads(before)


def _block(b: Backend, calls: int) -> float:
    """Seconds per call over a block of ``calls`` calls, garbage collector off."""
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(calls):
            b.call()
        b.sync()
        return (time.perf_counter() - t0) / calls
    finally:
        if gc_was_on:
            gc.enable()


def calibrate(b: Backend, target_s: float, max_calls: int = 1000) -> int:
    """How many calls fill about ``target_s`` seconds (at least 1), from one untimed call and
    one timed one. The first call also pays one-off costs (allocation, caches, lazy init)."""
    t0 = time.perf_counter()
    b.call()
    b.sync()
    t = time.perf_counter() - t0
    if t < 2 * target_s:        # not obviously a one-call block: time a call without one-offs
        t = _block(b, 1)
    return max(1, min(max_calls, math.ceil(target_s / max(t, 1e-9))))


def measure(backends: list[Backend], rounds: int, calls: int | None, pause: float,
            target_block_s: float, progress: Callable[[str], None] | None = None
            ) -> dict[str, Timings]:
    """Time every backend for ``rounds`` rounds and return its seconds per call by name.

    ``calls`` fixes the block length; None calibrates it per backend so a block lasts about
    ``target_block_s``. Each backend's block in a round is preceded by ``pause`` seconds of
    sleep and one warm-up call.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    # A full collection walks every object alive, torch's many included (~0.2 s on a slow
    # machine); collect once, then freeze the survivors so the collections in the pauses only
    # look at what the calls left behind.
    gc.collect()
    gc.freeze()
    try:
        result = {}
        for b in backends:
            n = calls if calls is not None else calibrate(b, target_block_s)
            result[b.name] = Timings(calls=n)
        for r in range(rounds):
            k = r % len(backends)
            for b in backends[k:] + backends[:k]:      # rotate who goes first
                gc.collect()
                time.sleep(pause)
                b.call()                           # warm-up: caches, the other's threads asleep
                b.sync()
                result[b.name].per_round.append(_block(b, result[b.name].calls))
            if progress:
                progress(f"round {r + 1}/{rounds}: " + ", ".join(
                    f"{name} {t.per_round[-1] * 1e3:.2f} ms" for name, t in result.items()))
    finally:
        gc.unfreeze()
    return result
