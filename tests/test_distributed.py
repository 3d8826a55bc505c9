"""Gradient accumulation and data-parallel training (numpy_rnn.driver.distributed).

* ``--grad-accum K`` takes the plain step on the whole batch, to rounding: the same losses and
  weights within 1e-12 after 20 steps, for every task and both schedules, in both backends;
* 2 processes take bit for bit the steps of 1 process with ``--grad-accum 2``: the NumPy
  backend under ``mpiexec -n 2`` (MPICH from its wheel, the ``mpi`` extra), the torch backend
  as 2 processes on gloo (started here with torchrun's environment variables, and once under
  torchrun itself);
* a 2-process checkpoint resumes in one process with ``--grad-accum 2`` exactly; a killed
  process ends the job within seconds with a non-zero status and a loadable checkpoint; bad
  combinations are one-line errors.

The MPI tests skip without mpi4py or mpiexec, except where ``NUMPY_RNN_REQUIRE_MPI=1`` (set by
``.ci/run``, which installs the extra): there they must run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from numpy_rnn.driver import train as train_mod
from numpy_rnn.driver.backend import NumpyBackend, OptimConfig
from numpy_rnn.driver.checkpoint import CheckpointError, load_checkpoint
from numpy_rnn.driver.cli import main as cli_main
from numpy_rnn.driver.distributed import (
    Local,
    SplitStep,
    get_engine,
    row_bounds,
    slice_rows,
)
from numpy_rnn.driver.train import TrainConfig, resume_config, train
from numpy_rnn.nn.losses import IGNORE_INDEX
from numpy_rnn.tasks import get_task
from numpy_rnn.tasks.base import Batch, DropoutMask
from numpy_rnn.tasks.corpus import load_labelled_corpus
from numpy_rnn.tasks.lm import LanguageModelTask
from numpy_rnn.tasks.model import ModelConfig

PYTHON = sys.executable
BIN = Path(sys.executable).parent
RTOL = 1e-12
# The runs of this file: tiny models in float64, clipping active (every step's gradient norm
# is above 0.1 on these corpora), dropout between two layers.
TINY: dict[str, Any] = dict(hidden_size=16, num_layers=2, dropout=0.2, seq_len=16,
                            batch_size=4, steps=20, eval_every=10, sample_every=10,
                            dtype="float64", clip=0.1)
NAMES: dict[str, Any] = dict(hidden_size=8, num_layers=2, dropout=0.2, batch_size=12, steps=20,
                             eval_every=10, sample_every=10, dtype="float64", clip=0.1)


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)


@pytest.fixture
def one_thread():
    """The in-process reference runs on one BLAS thread, as each process of a job does (the
    tiny products run on one thread anyway; this makes sure)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch_ref.backend")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def config(out: Path, task: str = "lm", **kw: Any) -> TrainConfig:
    base = TINY if task == "lm" else NAMES
    return TrainConfig.for_task(task, **{**base, "out": str(out), "quiet": True, **kw})


def flags(out: Path, task: str = "lm", **kw: Any) -> list[str]:
    """The train command line of :func:`config` with the same settings."""
    settings = {**(TINY if task == "lm" else NAMES), **kw}
    args = ["train", "--task", task, "--out", str(out), "--quiet"]
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in metrics(out)]


def weights(out: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(out / "checkpoint.npz")[0]


def assert_close_runs(got: Path, want: Path, rtol: float = RTOL) -> None:
    """Every step's loss, the validation metrics and the final weights within ``rtol``
    (weights relative to each tensor's largest entry)."""
    a, b = metrics(got), metrics(want)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    np.testing.assert_allclose([r["loss"] for r in a], [r["loss"] for r in b], rtol=rtol,
                               atol=0)
    for ra, rb in zip(a, b):
        assert ra.keys() - {"allreduce_s"} == rb.keys() - {"allreduce_s"}
        for k in ra.keys() & rb.keys():
            if k.startswith(("val_", "ap_")) or k.endswith("_ap"):
                np.testing.assert_allclose(ra[k], rb[k], rtol=rtol, atol=0, err_msg=k)
    wa, wb = weights(got), weights(want)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert np.max(np.abs(wa[k] - wb[k])) <= rtol * np.max(np.abs(wb[k])), k


def assert_identical_runs(got: Path, want: Path) -> None:
    """Bit for bit: every step's loss and gradient norm, and the final weights."""
    a, b = metrics(got), metrics(want)
    assert len(a) == len(b)
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["grad_norm"] for r in a] == [r["grad_norm"] for r in b]
    wa, wb = weights(got), weights(want)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


# --------------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------------


def test_row_bounds_cut_like_array_split():
    for rows in range(14):
        for parts in range(1, 7):
            bounds = row_bounds(rows, parts)
            sizes = [len(a) for a in np.array_split(np.arange(rows), parts)]
            assert np.diff(bounds).tolist() == sizes
            assert bounds[0] == 0 and bounds[-1] == rows


def test_loss_terms_count_what_each_loss_averages_over():
    lm, classify, conditional = (get_task(t) for t in ("lm", "classify", "conditional"))
    assert lm.loss_terms(np.zeros((4, 16), dtype=np.int64)) == 64                # lm: B*T
    assert classify.loss_terms(np.zeros((4, 7), dtype=np.float32)) == 28         # classify
    padded = np.array([[3, 1, IGNORE_INDEX], [2, IGNORE_INDEX, IGNORE_INDEX]])
    assert conditional.loss_terms(padded) == 3                                   # conditional


def test_mask_batch_axes_come_from_the_task_even_when_T_equals_B():
    lm = ModelConfig(vocab_size=5, hidden_size=3, num_layers=3, dropout=0.5)
    batch = Batch(np.zeros((7, 7), dtype=np.int64), np.zeros((7, 7), dtype=np.int64))
    assert get_task("lm").dropout_masks(lm, batch) == [((7, 7, 3), 1, lm.dropout)] * 2

    class PooledDropout(LanguageModelTask):  # a task with a (B, ...) mask as well: axis 0
        def dropout_masks(self, config, batch):
            B, T = batch.inputs.shape
            return [*super().dropout_masks(config, batch), DropoutMask((B, T), 0, 0.5)]

    pooled = ModelConfig(vocab_size=5, hidden_size=3, num_layers=2, dropout=0.5)
    four = Batch(np.zeros((4, 4), dtype=np.int64), np.zeros((4, 4), dtype=np.int64))
    assert [m.rows for m in PooledDropout().dropout_masks(pooled, four)] == [1, 0]
    # ... and a split step cuts each mask on its own axis: rows 2:4 of the (B, T) one.
    backend = NumpyBackend(pooled, OptimConfig())
    step = SplitStep(backend, Local(), grad_accum=2, task=PooledDropout())
    seen = []
    original = backend.compute_gradients
    backend.compute_gradients = lambda i, t, s, m: (seen.append(m), original(i, t, s, m[:1]))[1]
    masks = [np.ones((4, 4, 3), bool), np.arange(16).reshape(4, 4) % 2 == 0]
    step(four, None, masks, lambda: 0)
    assert [m[1].shape for m in seen] == [(2, 4), (2, 4)]
    np.testing.assert_array_equal(seen[1][1], masks[1][2:])


def test_slice_rows_cuts_every_field_of_a_names_batch(labelled):
    corpus = load_labelled_corpus("plants")
    cfg = config(Path("unused"), "conditional")
    batch = next(get_task("conditional").batches(cfg, corpus))
    part = slice_rows(batch.inputs, 3, 7)
    assert type(part) is type(batch.inputs)
    for whole, cut in zip(batch.inputs, part):
        np.testing.assert_array_equal(cut, whole[3:7])
    assert part.tokens.shape[1] == batch.inputs.tokens.shape[1]     # the same T


def test_weighting_by_loss_terms_is_what_makes_accumulation_exact(labelled):
    # Two micro-batches of the conditional task with different numbers of valid characters:
    # weighted by their counts they give the whole batch's gradient; their plain mean does not.
    corpus = load_labelled_corpus("plants")
    cfg = config(Path("unused"), "conditional", dropout=0.0)
    task = get_task("conditional")
    model_config = task.model_config(cfg, corpus)
    batch = next(task.batches(cfg, corpus))
    backend = NumpyBackend(model_config, OptimConfig())
    backend.load_state_dict(task.build(model_config, seed=3).state_dict())
    whole = backend.compute_gradients(batch.inputs, batch.targets, None)
    g_whole = backend.flat_gradients()
    parts, counts = [], []
    for lo, hi in ((0, 5), (5, 12)):
        t = batch.targets[lo:hi]
        r = backend.compute_gradients(slice_rows(batch.inputs, lo, hi), t, None)
        parts.append((r.loss, backend.flat_gradients()))
        counts.append(task.loss_terms(t))
    assert counts[0] / 5 != counts[1] / 7        # the names differ in length: unequal shares
    n = sum(counts)
    weighted = sum(c / n * g for c, (_, g) in zip(counts, parts))
    mean = sum(g for _, g in parts) / 2
    scale = np.max(np.abs(g_whole))
    assert np.max(np.abs(weighted - g_whole)) <= 1e-13 * scale
    assert np.max(np.abs(mean - g_whole)) > 1e-4 * scale
    assert abs(sum(c / n * loss for c, (loss, _) in zip(counts, parts)) - whole.loss) \
        <= 1e-14 * whole.loss


def test_one_process_engine_does_nothing_and_imports_no_engine():
    engine = get_engine()
    assert isinstance(engine, Local) and (engine.rank, engine.size) == (0, 1)
    buf = np.arange(3.0)
    engine.allreduce(buf)
    engine.broadcast(buf)
    engine.barrier()
    np.testing.assert_array_equal(buf, [0.0, 1.0, 2.0])
    code = ("import sys, numpy_rnn.driver.train as t; t.get_engine(); "
            "print('mpi4py' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_split_step_leaves_the_carried_state_of_each_stream(plants):
    # The stream schedule's state splits by rows and joins back in order.
    cfg = config(Path("unused"), grad_accum=2)
    corpus = get_task("lm").load("plants")
    model_config = get_task("lm").model_config(cfg, corpus)
    backend = NumpyBackend(model_config, OptimConfig())
    step = SplitStep(backend, Local(), grad_accum=2)
    batches = get_task("lm").batches(cfg, corpus)
    b = next(batches)
    masks = train_mod.draw_dropout_masks(np.random.default_rng(0), 0.2,
                                         model_config.dropout_mask_shapes(16, 4))
    r1, stop = step(b, None, masks, lambda: 0)
    assert not stop and r1.state is not None and r1.state[0].shape == (2, 4, 16)
    b2 = next(batches)
    backend2 = NumpyBackend(model_config, OptimConfig())
    backend2.load_state_dict(backend.state_dict())
    plain_rows = backend2.compute_gradients(b2.inputs[2:], b2.targets[2:],
                                            tuple(s[:, 2:] for s in r1.state),
                                            [m[:, 2:] for m in masks])
    r2, stop = step(Batch(b2.inputs, b2.targets, reset=False), r1.state, masks,
                    lambda: signal.SIGTERM)
    assert stop == signal.SIGTERM
    np.testing.assert_array_equal(r2.state[0][:, 2:], plain_rows.state[0])


# --------------------------------------------------------------------------------------------
# --grad-accum K is the plain step, to rounding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule, dropout, k", [("random", 0.0, 2), ("stream", 0.0, 4),
                                                  ("stream", 0.2, 2), ("random", 0.2, 4)])
def test_grad_accum_equals_the_plain_step_for_the_lm(plants, tmp_path, schedule, dropout, k):
    kw = dict(schedule=schedule, dropout=dropout, batch_size=8)
    train(config(tmp_path / "plain", **kw))
    train(config(tmp_path / "accum", grad_accum=k, **kw))
    assert_close_runs(tmp_path / "accum", tmp_path / "plain")
    assert min(r["grad_norm"] for r in metrics(tmp_path / "plain")) > 0.1   # clipping acts


@pytest.mark.parametrize("task, k", [("classify", 3), ("classify", 6), ("conditional", 4),
                                     ("conditional", 12)])
def test_grad_accum_equals_the_plain_step_for_the_name_tasks(labelled, tmp_path, task, k):
    # Step 19 of these runs is the epoch's last batch, 4 names: micro-batches of unequal
    # sizes (k=3), and empty ones (k=6, 12). The conditional task's micro-batches hold
    # different numbers of characters, so only the weighting by them makes this exact.
    train(config(tmp_path / "plain", task))
    train(config(tmp_path / "accum", task, grad_accum=k))
    assert len(metrics(tmp_path / "plain")) == 20
    assert_close_runs(tmp_path / "accum", tmp_path / "plain")


def test_grad_accum_equals_the_plain_step_in_the_torch_backend(plants, tmp_path, torch):
    kw = dict(backend="torch", schedule="stream", batch_size=8)
    train(config(tmp_path / "plain", **kw))
    train(config(tmp_path / "accum", grad_accum=4, **kw))
    assert_close_runs(tmp_path / "accum", tmp_path / "plain")


def test_grad_accum_resumes_exactly_and_is_checked_on_resume(plants, tmp_path):
    kw = dict(schedule="stream", batch_size=8, grad_accum=2)
    train(config(tmp_path / "straight", **kw))
    train(config(tmp_path / "resumed", **{**kw, "steps": 10}))
    with pytest.raises(CheckpointError, match=r"2 micro-batches per step .* pass --grad-accum 2"):
        train(resume_config(tmp_path / "resumed", {"steps": 20, "grad_accum": 1}))
    train(resume_config(tmp_path / "resumed", {"steps": 20}))      # keeps its --grad-accum
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")


def test_a_batch_that_does_not_split_is_a_one_line_error(plants, tmp_path, capsys):
    with pytest.raises(ValueError, match="batch_size 6 does not split into grad_accum 4"):
        TrainConfig(batch_size=6, grad_accum=4)
    code = cli_main(["train", "--out", str(tmp_path / "out"), "--batch-size", "6",
                     "--grad-accum", "4"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: batch_size 6")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# Several processes: MPI (numpy backend)
# --------------------------------------------------------------------------------------------


def _mpiexec() -> str:
    found = BIN / "mpiexec"
    path = str(found) if found.exists() else shutil.which("mpiexec")
    if path is None or importlib.util.find_spec("mpi4py") is None:
        why = "needs mpi4py and mpiexec (pip install 'numpy_rnn[mpi]')"
        if os.environ.get("NUMPY_RNN_REQUIRE_MPI") == "1":
            pytest.fail(why + ": NUMPY_RNN_REQUIRE_MPI=1 says they must run here")
        pytest.skip(why)
    return path


@pytest.fixture
def mpiexec():
    return _mpiexec()


def job_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "RANK", "WORLD_SIZE",
                "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        env.pop(key, None)
    env.update(extra)
    return env


def mpi_train(mpiexec: str, args: list[str], n: int = 2, check: bool = True,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [mpiexec, "-n", str(n), PYTHON, "-m", "mpi4py", "-m", "numpy_rnn", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=job_env(),
                            timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("schedule", ["random", "stream"])
def test_two_mpi_processes_equal_one_with_grad_accum_2_bit_for_bit(plants, tmp_path, mpiexec,
                                                                   one_thread, schedule):
    mpi_train(mpiexec, flags(tmp_path / "mpi", schedule=schedule))
    train(config(tmp_path / "one", schedule=schedule, grad_accum=2))
    assert_identical_runs(tmp_path / "mpi", tmp_path / "one")
    # Validation, split over the two processes, is the one process's to rounding.
    assert_close_runs(tmp_path / "mpi", tmp_path / "one")
    records = metrics(tmp_path / "mpi")
    assert all(r["grad_norm"] > 0.1 for r in records)        # clipping acted at every step
    assert all(r["allreduce_s"] >= 0 for r in records)
    _, meta = load_checkpoint(tmp_path / "mpi" / "checkpoint.npz")
    assert (meta["train"]["processes"], meta["train"]["micro_batches"]) == (2, 2)
    if schedule == "stream":     # the whole run's state: every stream, from both processes
        np.testing.assert_array_equal(
            np.asarray(meta["train"]["carried"]),
            np.asarray(load_checkpoint(tmp_path / "one" / "checkpoint.npz")[1]
                       ["train"]["carried"]))


@pytest.mark.parametrize("task", ["classify", "conditional"])
def test_mpi_trains_the_name_tasks_as_one_process_does(labelled, tmp_path, mpiexec, one_thread,
                                                       task):
    # 2 processes x 6 micro-batches of 1 name: at step 19 (4 names) process 1 has none.
    mpi_train(mpiexec, flags(tmp_path / "mpi", task, grad_accum=6))
    train(config(tmp_path / "plain", task))
    assert_close_runs(tmp_path / "mpi", tmp_path / "plain")


def test_a_two_process_checkpoint_resumes_in_one_process_with_grad_accum_2(plants, tmp_path,
                                                                           mpiexec, one_thread):
    kw = dict(schedule="stream", batch_size=8)
    mpi_train(mpiexec, flags(tmp_path / "straight", **kw))
    mpi_train(mpiexec, flags(tmp_path / "resumed", **{**kw, "steps": 10}))
    before = (tmp_path / "resumed" / "checkpoint.npz").read_bytes()
    with pytest.raises(CheckpointError, match=r"\(2 processes x --grad-accum 1\); with 1 "
                                              r"process pass --grad-accum 2"):
        train(resume_config(tmp_path / "resumed", {"steps": 20}))
    assert (tmp_path / "resumed" / "checkpoint.npz").read_bytes() == before
    train(resume_config(tmp_path / "resumed", {"steps": 20, "grad_accum": 2}))
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    assert_identical_runs(tmp_path / "resumed", tmp_path / "straight")


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    return lines[0]


def test_bad_mpi_launches_are_one_line_errors(plants, tmp_path, mpiexec):
    line = _one_error_line(mpi_train(mpiexec, flags(tmp_path / "a", backend="torch"),
                                     check=False))
    assert "mpiexec runs the numpy backend" in line and "torchrun" in line
    line = _one_error_line(mpi_train(mpiexec, flags(tmp_path / "b", batch_size=6), n=4,
                                     check=False))
    assert "--batch-size 6 does not split into 4 processes" in line
    # A run saved by one process with 2 micro-batches: 2 processes must drop --grad-accum.
    train(config(tmp_path / "c", grad_accum=2, steps=5))
    line = _one_error_line(mpi_train(mpiexec, ["train", "--out", str(tmp_path / "c"),
                                               "--resume", "--steps", "10"], check=False))
    assert "with 2 processes pass --grad-accum 1" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _pids_of(out: Path, rank_variable: str) -> dict[int, int]:
    """rank -> pid of the Python processes whose command line names ``out``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(out).encode() not in cmdline or not any(b"python" in c for c in cmdline[:1]):
            continue
        for item in environ:
            if item.startswith(rank_variable.encode() + b"="):
                found[int(item.split(b"=", 1)[1])] = int(proc.name)
    return found


def _kill_rank_1_mid_run(proc: subprocess.Popen[str], out: Path, rank_variable: str,
                         deadline_s: float = 90) -> tuple[int, float, dict[str, Any]]:
    """Wait for the job's first checkpoint and a few steps more, SIGKILL process 1, and
    return the job's status, the seconds it took to end, and the lock's holder seen first."""
    start = time.monotonic()
    lock: dict[str, Any] = {}
    while time.monotonic() - start < deadline_s:
        if proc.poll() is not None:
            pytest.fail(f"the job ended before it was killed: {proc.communicate()[1][-2000:]}")
        with contextlib.suppress(OSError, ValueError):
            if not lock:
                lock = json.loads((out / ".lock").read_text())
            if (out / "checkpoint.npz").exists() and len(metrics(out)) >= 13:
                break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the job made no checkpoint in time")
    pids = _pids_of(out, rank_variable)
    assert set(pids) >= {0, 1}, pids
    os.kill(pids[1], signal.SIGKILL)
    killed = time.monotonic()
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job still ran 30 s after one of its processes was killed")
    lock["rank0_pid"] = pids[0]
    return proc.returncode, time.monotonic() - killed, lock


def test_a_killed_mpi_process_ends_the_job_and_leaves_a_loadable_checkpoint(plants, tmp_path,
                                                                            mpiexec):
    out = tmp_path / "job"
    args = flags(out, steps=100000, eval_every=5, sample_every=100000)
    proc = subprocess.Popen([mpiexec, "-n", "2", PYTHON, "-m", "mpi4py", "-m", "numpy_rnn",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=job_env())
    status, seconds, lock = _kill_rank_1_mid_run(proc, out, "PMI_RANK")
    assert status != 0 and seconds < 15
    assert lock["pid"] == lock["rank0_pid"]             # only process 0 held the lock
    weights, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["step"] % 5 == 0 and meta["step"] >= 10
    assert all(np.isfinite(w).all() for w in weights.values())
    # ... and it continues, here in one process (a stale lock is taken over).
    summary = train(resume_config(out, {"steps": meta["step"] + 2, "grad_accum": 2}))
    assert summary.step == meta["step"] + 2


# --------------------------------------------------------------------------------------------
# Several processes: torch.distributed (torch backend, gloo)
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Job(NamedTuple):
    procs: list[subprocess.Popen[str]]

    def wait(self, timeout: float = 180) -> list[tuple[int, str]]:
        """Each process's exit status and standard error."""
        return [(status, err) for status, _, err in self.outputs(timeout)]

    def outputs(self, timeout: float = 180) -> list[tuple[int, str, str]]:
        """Each process's exit status, standard output and standard error."""
        results = []
        for p in self.procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
        return results


def gloo_job(args: list[str], n: int = 2, command: list[str] | None = None) -> Job:
    """``n`` processes of ``python -m numpy_rnn ARGS`` (or of ``command``, the ARGS after it)
    with the environment torchrun gives its workers (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT), on 127.0.0.1."""
    port = str(_free_port())
    command = command or [PYTHON, "-m", "numpy_rnn"]
    procs = [subprocess.Popen([*command, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=job_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(n),
                                          MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                                          OMP_NUM_THREADS="1"))
             for r in range(n)]
    return Job(procs)


@pytest.mark.parametrize("schedule", ["random", "stream"])
def test_two_gloo_processes_equal_one_with_grad_accum_2_bit_for_bit(plants, tmp_path, torch,
                                                                    schedule):
    job = gloo_job(flags(tmp_path / "gloo", backend="torch", schedule=schedule))
    train(config(tmp_path / "one", backend="torch", schedule=schedule, grad_accum=2))
    for status, err in job.wait():
        assert status == 0, err[-3000:]
    assert_identical_runs(tmp_path / "gloo", tmp_path / "one")
    assert_close_runs(tmp_path / "gloo", tmp_path / "one")
    assert all(r["grad_norm"] > 0.1 for r in metrics(tmp_path / "gloo"))


# Trains as `python -m numpy_rnn train ...` does, then closes the engine as it does at exit and
# prints the names of the threads left in the process.
_TRAIN_THEN_CLOSE = """
import json, os, sys
from numpy_rnn.driver.cli import main
from numpy_rnn.driver.distributed import get_engine
assert main(sys.argv[1:]) == 0
get_engine()._close()
tasks = "/proc/self/task"
print(json.dumps([open(f"{tasks}/{t}/comm").read().strip() for t in os.listdir(tasks)]))
"""


def test_closing_the_gloo_engine_ends_its_threads(plants, tmp_path, torch):
    # gloo's worker threads must be gone before the interpreter shuts down: a worker that
    # releases a finished collective's tensors then needs the GIL, and dies in
    # std::terminate, aborting a run that had succeeded. The threads end only when the
    # process group is freed, which the run must not prevent.
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs Linux's /proc to list a process's threads")
    job = gloo_job(flags(tmp_path / "gloo", backend="torch", steps=2, eval_every=2),
                   command=[PYTHON, "-c", _TRAIN_THEN_CLOSE])
    for rank, (status, out, err) in enumerate(job.outputs()):
        assert status == 0, err[-3000:]
        threads = json.loads(out.strip().splitlines()[-1])
        assert len(threads) > 0 and not [t for t in threads if "gloo" in t], (rank, threads)


def test_torchrun_launches_it_and_a_killed_process_ends_the_job(plants, tmp_path, torch):
    torchrun = BIN / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    out = tmp_path / "job"
    args = flags(out, backend="torch", steps=100000, eval_every=5, sample_every=100000)
    proc = subprocess.Popen([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m",
                             "numpy_rnn", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=job_env())
    status, seconds, lock = _kill_rank_1_mid_run(proc, out, "RANK")
    assert status != 0 and seconds < 15
    assert lock["pid"] == lock["rank0_pid"]
    _, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["step"] % 5 == 0 and meta["step"] >= 10
    assert (meta["train"]["processes"], meta["train"]["micro_batches"]) == (2, 2)
