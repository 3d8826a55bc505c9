"""Gradient accumulation and data-parallel training: one optimizer step over micro-batches.

A step's batch of B rows (sequences, names) is cut into M micro-batches of consecutive rows
(:func:`row_bounds`). Each micro-batch's gradient is that of the task's mean loss on its rows;
weighted by its share of the batch's loss terms (the task's ``loss_terms``: characters for the
language model, (name, label) pairs for the classifier, valid characters or target tokens for
the generators) and summed, they give the gradient of the mean over the whole batch, whatever the
micro-batches' sizes: accumulation computes the plain step, to rounding. The sum is clipped
and the optimizer takes one step.

With P processes, process r takes micro-batches ``r*K .. r*K + K - 1`` of ``M = P*K`` (the rows
one process with ``--grad-accum M`` would give them), sums its own weighted gradients and the
processes add theirs with one all-reduce of one flat float64 buffer per step (the gradients,
the loss, and the stop signals, so every process ends at the same step when one receives
SIGINT, SIGTERM or SIGHUP).
Every process then takes the identical optimizer step. For P = 2 the sum of two terms is the
same in any order, so 2 processes compute bit for bit what one process with ``--grad-accum 2``
computes; for P > 2 the engine's reduction order is its own (equal to rounding).

An :class:`Engine` is the little the driver needs from a distributed runtime: rank, size, an
in-place all-reduce (sum) of a float buffer, a broadcast and a barrier. :class:`Local` is the
one-process engine (every operation does nothing), :class:`MPIEngine` uses mpi4py (the NumPy
backend, launched by ``mpiexec -n P python -m mpi4py -m numpy_rnn train ...``), and
``torch_ref.backend.TorchDistributed`` uses torch.distributed (the torch backend, launched by
``torchrun``). :func:`get_engine` picks the one the process was launched with; mpi4py is imported
only under MPI and torch only under torchrun.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from .._install import install_hint
from ..tasks import get_task
from ..tasks.base import Batch, Rows, State, Task
from ..tasks.model import ModelConfig
from .backend import Backend, StepResult
from .stops import STOP_SIGNALS

__all__ = ["DistributedError", "Engine", "FollowerExit", "Local", "MPIEngine", "PlainStep",
           "SplitPredictor", "SplitStep", "agree_on_stop", "broadcast_object", "collectively",
           "gather_rows", "get_engine", "launcher", "row_bounds", "slice_rows"]

#: Environment variables that set a thread count: when one is set, the user has chosen.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

T = TypeVar("T")


class DistributedError(ValueError):
    """A process of the job failed before the work started, or the launch cannot work."""


class FollowerExit(SystemExit):
    """How a process other than rank 0 leaves when all processes failed the same way: quietly,
    with status 0, because rank 0 reports the error (one line) and ends the job with its own
    status."""

    def __init__(self) -> None:
        super().__init__(0)


# --------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------


class Engine(ABC):
    """The collective operations of a data-parallel job, over NumPy buffers.

    Every process must call the same operations in the same order with buffers of the same
    shape and dtype; each operation returns when every process has made it.
    """

    name: str = ""
    rank: int = 0
    size: int = 1

    @abstractmethod
    def allreduce(self, buf: np.ndarray) -> None:
        """Replace the C-contiguous float array ``buf`` by its sum over all processes."""

    @abstractmethod
    def broadcast(self, buf: np.ndarray, root: int = 0) -> None:
        """Overwrite the C-contiguous array ``buf`` with process ``root``'s."""

    @abstractmethod
    def barrier(self) -> None:
        """Return when every process has called it."""

    def close(self) -> None:
        """End the job's communication, when every process leaves in order (after the run
        returned, or all failed alike): the launcher then takes each process's exit status as
        it is rather than as a failure that ends the others. Nothing to do by default."""
        return None


class Local(Engine):
    """One process: the sum over all processes is the buffer itself."""

    name = "local"

    def allreduce(self, buf: np.ndarray) -> None:
        pass

    def broadcast(self, buf: np.ndarray, root: int = 0) -> None:
        pass

    def barrier(self) -> None:
        pass


class MPIEngine(Engine):
    """MPI's ``COMM_WORLD`` through mpi4py's buffer interface (no pickling): ``Allreduce``
    with ``MPI.IN_PLACE`` and ``MPI.SUM``, ``Bcast``, ``Barrier``."""

    name = "mpi"

    def __init__(self) -> None:
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise ImportError("launched by mpiexec, but mpi4py is not installed: "
                              f"{install_hint('mpi')}") from exc
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    def allreduce(self, buf: np.ndarray) -> None:
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)

    def broadcast(self, buf: np.ndarray, root: int = 0) -> None:
        self.comm.Bcast(buf, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def close(self) -> None:
        """``MPI.Finalize``: ``python -m mpi4py`` turns a non-zero exit status of a process
        that has not finalized into ``MPI_Abort``, which would kill the other processes (and
        with them a checkpoint being written); finalized, a stop's status 130 or 143 is just
        the job's status."""
        if not self._MPI.Is_finalized():
            self._MPI.Finalize()


def launcher(environ: dict[str, str] | None = None) -> tuple[str | None, int]:
    """Which launcher started this process, read from its environment, and the number of
    processes it started: ``("mpi", P)`` under mpiexec (MPICH's and Intel's ``PMI_SIZE``, Open
    MPI's ``OMPI_COMM_WORLD_SIZE``), ``("torch", P)`` under torchrun (``WORLD_SIZE`` with
    ``RANK`` and ``MASTER_ADDR``), ``(None, 1)`` otherwise."""
    env = os.environ if environ is None else environ
    mpi = env.get("PMI_SIZE") or env.get("OMPI_COMM_WORLD_SIZE")
    torch = env.get("WORLD_SIZE") if "RANK" in env and "MASTER_ADDR" in env else None
    if mpi and torch:
        raise DistributedError("launched by both mpiexec and torchrun: run the numpy backend "
                               "under mpiexec or the torch backend under torchrun")
    if mpi:
        return "mpi", int(mpi)
    if torch:
        return "torch", int(torch)
    return None, 1


_ENGINE: Engine | None = None


def get_engine() -> Engine:
    """The engine of this process, made on the first call: :class:`Local` unless launched by
    mpiexec or torchrun with more than one process. A multi-process engine sets each process to
    one BLAS (and torch) thread unless ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` says otherwise."""
    global _ENGINE
    if _ENGINE is None:
        kind, size = launcher()
        engine: Engine
        if kind is None or size == 1:
            engine = Local()
        elif kind == "mpi":
            engine = MPIEngine()
            if "mpi4py.run" not in sys.modules and engine.rank == 0:
                print("note: launched without 'python -m mpi4py': a process that fails may "
                      "leave the others waiting; launch with mpiexec -n P python -m mpi4py -m "
                      "numpy_rnn train ...", file=sys.stderr)
        else:
            try:
                module = importlib.import_module("torch_ref.backend")
            except ImportError as exc:
                raise ImportError(f"launched by torchrun, but the torch backend needs "
                                  f"{exc.name}: {install_hint('torch')}") from exc
            engine = module.TorchDistributed()
        if engine.size > 1 and not any(v in os.environ for v in THREAD_VARIABLES):
            _one_blas_thread()
        _ENGINE = engine
    return _ENGINE


def _one_blas_thread() -> None:
    """One BLAS thread in this process (threadpoolctl; without it, a note)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("note: threadpoolctl is not installed, so each process keeps its BLAS threads; "
              f"set OPENBLAS_NUM_THREADS=1 (or {install_hint('mpi')})", file=sys.stderr)
        return
    threadpool_limits(limits=1, user_api="blas")


# --------------------------------------------------------------------------------------------
# Collective helpers, built on the engine's operations
# --------------------------------------------------------------------------------------------


def broadcast_object(engine: Engine, obj: Any, root: int = 0) -> Any:
    """Process ``root``'s ``obj`` (anything picklable) on every process: its pickle's length,
    then its bytes, each broadcast as an array. One process: ``obj`` itself."""
    if engine.size == 1:
        return obj
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if engine.rank == root else b""
    length = np.array([len(data)], dtype=np.int64)
    engine.broadcast(length, root)
    buf = (np.frombuffer(data, dtype=np.uint8).copy() if engine.rank == root
           else np.empty(int(length[0]), dtype=np.uint8))
    engine.broadcast(buf, root)
    return obj if engine.rank == root else pickle.loads(buf.tobytes())


def collectively(engine: Engine, fn: Callable[[], T]) -> T:
    """``fn()`` on every process, and an error on every process if it failed on any.

    One process: just ``fn()``. Several: when ``fn`` raised on any process, rank 0 raises its
    own exception, or a :class:`DistributedError` with the message of the first process that
    failed; the other processes raise :class:`FollowerExit` (an unexpected error's traceback
    printed first), so the job reports one line and ends with rank 0's status. Never leaves a
    process waiting for another that gave up.
    """
    if engine.size == 1:
        return fn()
    result: Any = None
    error: Exception | None = None
    try:
        result = fn()
    except Exception as exc:   # every process must learn of any failure
        error = exc
    flags = np.zeros(engine.size)
    flags[engine.rank] = error is not None
    engine.allreduce(flags)
    if not flags.any():
        return result
    first = int(np.flatnonzero(flags)[0])
    message = broadcast_object(engine, _describe(error) if engine.rank == first else None,
                               root=first)
    if engine.rank == 0:
        if error is not None:
            raise error
        raise DistributedError(f"process {first} of {engine.size} failed: {message}")
    if error is not None and not isinstance(error, (ValueError, OSError, ImportError)):
        traceback.print_exception(error)
    raise FollowerExit


def agree_on_stop(engine: Engine, signum: int) -> int:
    """The stop signal every process agrees on (collective): 0 when no process received one,
    else the first of :data:`~numpy_rnn.driver.stops.STOP_SIGNALS` that any process received
    (SIGINT before SIGTERM before SIGHUP), so that all end the same way."""
    if engine.size == 1:
        return signum
    slots = _stop_slots(signum)
    engine.allreduce(slots)
    return _agreed(slots)


def _stop_slots(signum: int, out: np.ndarray | None = None) -> np.ndarray:
    """One slot per stop signal, 1 where ``signum`` is that signal: summed over the processes,
    the count of processes that received each."""
    slots = np.zeros(len(STOP_SIGNALS)) if out is None else out
    slots[:] = [float(signum == s) for s in STOP_SIGNALS]
    return slots


def _agreed(slots: np.ndarray) -> int:
    received = np.flatnonzero(slots > 0)
    return int(STOP_SIGNALS[received[0]]) if received.size else 0


def _describe(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {text}"


def gather_rows(engine: Engine, local: np.ndarray, counts: Sequence[int], axis: int
                ) -> np.ndarray:
    """Each process's ``local`` rows, ``counts[r]`` of them along ``axis`` on process r,
    joined in rank order on every process (one broadcast per process: copies, no
    arithmetic)."""
    if engine.size == 1:
        return local
    parts = []
    for r, n in enumerate(counts):
        shape = list(local.shape)
        shape[axis] = n
        buf = (np.ascontiguousarray(local) if r == engine.rank
               else np.empty(shape, dtype=local.dtype))
        engine.broadcast(buf, root=r)
        parts.append(buf)
    return np.concatenate(parts, axis=axis)


# --------------------------------------------------------------------------------------------
# Cutting a batch into micro-batches
# --------------------------------------------------------------------------------------------


def row_bounds(rows: int, parts: int) -> list[int]:
    """The ``parts + 1`` boundaries that cut ``rows`` consecutive rows into ``parts`` slices
    as :func:`numpy.array_split` does: the first ``rows % parts`` slices one row longer; slices
    are empty when ``rows < parts``."""
    size, extra = divmod(rows, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + size + (i < extra))
    return bounds


def slice_rows(inputs: Any, lo: int, hi: int) -> Any:
    """Rows ``lo:hi`` of a batch's inputs: the ``(B, T)`` token array, or every field of the
    task's NamedTuple of arrays (tokens, lengths, conditions: each has the B rows first)."""
    if isinstance(inputs, np.ndarray):
        return inputs[lo:hi]
    return type(inputs)(*(np.asarray(field)[lo:hi] for field in inputs))


def _rows(array: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    index = (slice(None),) * axis + (slice(lo, hi),)
    return np.ascontiguousarray(array[index])


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


class PlainStep:
    """One process, one batch: the backend's own ``train_step`` (no copies, no buffer)."""

    processes = 1
    micro_batches = 1

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.allreduce_s = 0.0

    def __call__(self, batch: Batch, state: State | None, masks: Sequence[np.ndarray] | None,
                 stop: Callable[[], int]) -> tuple[StepResult, int]:
        """The step, and the signal to stop on after it (``stop()``, asked after the step;
        0: go on)."""
        result = self.backend.train_step(batch.inputs, batch.targets, state, masks)
        return result, stop()

    def local_state(self, state: State | None) -> State | None:
        return state

    def full_state(self, state: State | None) -> State | None:
        return state


class SplitStep:
    """One optimizer step over ``engine.size * grad_accum`` micro-batches, this process taking
    ``grad_accum`` of them (see the module's docstring).

    ``__call__(batch, state, masks, stop)``: ``batch`` is the whole step's batch (every process
    draws it), ``masks`` the whole batch's dropout masks, ``stop()`` the stop signal this
    process received (0: none), ``state`` this process's rows of the
    carried state ``(L*D, B/P, H)`` each (:meth:`local_state` cuts them from the whole state,
    :meth:`full_state` joins every process's). Returns the step's result (the batch's mean
    loss, the pre-clip gradient norm, this process's rows of the final state), and the stop
    signal the processes agree on (:func:`agree_on_stop`; 0: go on). ``allreduce_s`` adds up
    the time spent in the all-reduce (which includes waiting for the slowest process).
    """

    def __init__(self, backend: Backend, engine: Engine, grad_accum: int,
                 task: Task | None = None) -> None:
        self.backend = backend
        # the task of the backend's model: the loss terms and dropout masks of its batches
        self.task = task if task is not None else get_task(backend.config.task)
        self.engine = engine
        self.processes = engine.size
        self.grad_accum = grad_accum
        self.micro_batches = engine.size * grad_accum
        self.size = backend.flat_gradients().size
        # [the weighted gradients (n), the weighted loss, one slot per stop signal], float64
        self.buffer = np.zeros(self.size + 1 + len(STOP_SIGNALS))
        self.allreduce_s = 0.0

    def _mine(self, rows: int) -> tuple[list[int], range]:
        bounds = row_bounds(rows, self.micro_batches)
        r, K = self.engine.rank, self.grad_accum
        return bounds, range(r * K, (r + 1) * K)

    def local_state(self, state: State | None) -> State | None:
        """This process's rows (axis 1) of a whole carried state."""
        if state is None or self.processes == 1:
            return state
        bounds, mine = self._mine(state[0].shape[1])
        lo, hi = bounds[mine.start], bounds[mine.stop]
        return tuple(np.ascontiguousarray(s[:, lo:hi]) for s in state)

    def full_state(self, state: State | None) -> State | None:
        """Every process's rows of the carried state, joined (on every process)."""
        if state is None or self.processes == 1:
            return state
        counts = np.zeros(self.processes)
        counts[self.engine.rank] = state[0].shape[1]
        self.engine.allreduce(counts)
        return tuple(gather_rows(self.engine, s, [int(c) for c in counts], axis=1)
                     for s in state)

    def __call__(self, batch: Batch, state: State | None, masks: Sequence[np.ndarray] | None,
                 stop: Callable[[], int]) -> tuple[StepResult, int]:
        inputs, targets = batch.inputs, np.asarray(batch.targets)
        bounds, mine = self._mine(len(targets))
        # each micro-batch's gradient weighs as its share of the loss terms (the task says)
        counts = [self.task.loss_terms(targets[bounds[m]:bounds[m + 1]])
                  for m in range(self.micro_batches)]
        total = sum(counts)
        axes = ([m.rows for m in self.task.dropout_masks(self.backend.config, batch)]
                if masks else [])
        buf, n = self.buffer, self.size
        first = True
        finals: list[State] = []
        offset = bounds[mine.start]            # where this process's rows start
        for m in mine:
            lo, hi = bounds[m], bounds[m + 1]
            if hi == lo:
                continue                        # fewer rows than micro-batches: nothing here
            sub_state = None if state is None else tuple(
                np.ascontiguousarray(s[:, lo - offset:hi - offset]) for s in state)
            sub_masks = None if not masks else [_rows(mk, ax, lo, hi)
                                                 for mk, ax in zip(masks, axes)]
            result = self.backend.compute_gradients(slice_rows(inputs, lo, hi),
                                                    targets[lo:hi], sub_state, sub_masks)
            weight = counts[m] / total
            grads = self.backend.flat_gradients()
            if first:
                np.multiply(grads, weight, out=buf[:n])
                buf[n] = weight * result.loss
                first = False
            else:
                buf[:n] += grads * weight
                buf[n] += weight * result.loss
            if result.state is not None:
                finals.append(result.state)
        if first:
            buf[:n + 1] = 0.0
        _stop_slots(stop(), out=buf[n + 1:])    # asked as late as possible: before the sum
        t0 = time.perf_counter()
        self.engine.allreduce(buf)
        self.allreduce_s += time.perf_counter() - t0
        norm = self.backend.apply_gradients(buf[:n])
        final = (tuple(np.concatenate(parts, axis=1) for parts in zip(*finals))
                 if finals else None)
        return StepResult(float(buf[n]), norm, final), _agreed(buf[n + 1:])


# --------------------------------------------------------------------------------------------
# Validation split over the processes
# --------------------------------------------------------------------------------------------


class SplitPredictor:
    """A backend whose evaluation calls are split by rows over the processes: each process
    computes its share of the rows (the first ``B % P`` processes one more) and every process
    gets every row back (:func:`gather_rows`), so a task's validation runs unchanged on every
    process, each doing 1/P of the work, and reaches the same numbers on each. Where a method's
    rows are, ``rows`` says (the task's :attr:`~numpy_rnn.tasks.base.Task.inference`); a call
    with fewer rows than processes, or of a method not listed there, runs whole on every
    process."""

    def __init__(self, backend: Backend, engine: Engine, rows: Mapping[str, Rows]) -> None:
        self.backend = backend
        self.engine = engine
        self.rows = rows

    @property
    def config(self) -> ModelConfig:
        return self.backend.config

    def infer(self, name: str, *args: Any) -> Any:
        """The backend's ``infer(name, *args)``, each process computing its share of the
        rows."""
        rows = self.rows.get(name)
        batch = None if rows is None else _batch_size(args, rows.args)
        if rows is None or batch is None or batch < self.engine.size:
            return self.backend.infer(name, *args)
        bounds = row_bounds(batch, self.engine.size)
        lo, hi = bounds[self.engine.rank], bounds[self.engine.rank + 1]
        counts = [int(c) for c in np.diff(bounds)]
        mine = [_cut(a, axis, lo, hi) for a, axis in zip(args, rows.args)]
        result = self.backend.infer(name, *mine)
        if isinstance(rows.returns, int):
            return self._join(result, rows.returns, counts)
        return tuple(self._join(r, axis, counts) for r, axis in zip(result, rows.returns))

    def _join(self, part: Any, axis: int | None, counts: list[int]) -> Any:
        """Every process's rows of one result, in order (collective)."""
        if part is None or axis is None:
            return part
        if isinstance(part, tuple):          # a recurrent state, or a NamedTuple of arrays
            joined = [self._join(p, axis, counts) for p in part]
            return type(part)(*joined) if hasattr(part, "_fields") else tuple(joined)
        return gather_rows(self.engine, np.asarray(part), counts, axis=axis)


def _batch_size(args: Sequence[Any], axes: Sequence[int | None]) -> int | None:
    """The number of rows of a call, from its first argument that has them."""
    for arg, axis in zip(args, axes):
        if arg is None or axis is None:
            continue
        first = arg[0] if isinstance(arg, tuple) else arg
        return int(np.shape(first)[axis])
    return None


def _cut(arg: Any, axis: int | None, lo: int, hi: int) -> Any:
    """Rows ``lo:hi`` (on ``axis``) of an argument: an array, a state or a NamedTuple."""
    if arg is None or axis is None:
        return arg
    if isinstance(arg, tuple):
        parts = [_cut(a, axis, lo, hi) for a in arg]
        return type(arg)(*parts) if hasattr(arg, "_fields") else tuple(parts)
    return _rows(np.asarray(arg), axis, lo, hi)
