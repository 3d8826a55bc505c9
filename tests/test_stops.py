"""Nothing lost on any stop (numpy_rnn.driver.stops): signals and closed outputs.

Each signal test starts a real training process (or an ``mpiexec`` job, or two processes with
torchrun's environment), sends the signal at a random moment after a random number of steps,
and checks what the stop leaves: the status ``128 + signal``, a line saying where the checkpoint
is, a checkpoint of exactly the last step taken, the loss curve, no lock and no temporary file;
then it resumes and checks that the losses equal those of a run that was never stopped. The
moment is drawn from a fresh seed printed on failure, so each run tries another one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_distributed import (
    PYTHON,
    _mpiexec,
    config,
    flags,
    gloo_job,
    job_env,
    losses,
    metrics,
)

from numpy_rnn.driver import stops
from numpy_rnn.driver.checkpoint import load_checkpoint
from numpy_rnn.driver.stops import Interrupted, StopRequest, deferred_stop, exit_status
from numpy_rnn.driver.train import resume_config, train

LONG = 100_000            # --steps of a run that only a signal ends
SEED = random.randrange(2**32)


@pytest.fixture
def moment():
    """A random number of steps after which to send the signal, and a random delay within the
    step; the seed is in the failure report."""
    rng = random.Random(SEED)
    print(f"signal moment seed: {SEED}")
    return lambda: (rng.randint(3, 25), rng.uniform(0.0, 0.004))


def wait_for_steps(proc: subprocess.Popen[Any], out: Path, steps: int,
                   deadline_s: float = 60) -> None:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the signal: {proc.communicate()[1][-2000:]}")
        try:
            if len(metrics(out)) >= steps:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    proc.kill()
    pytest.fail("the run took no steps in time")


def assert_stopped_cleanly(out: Path, status: int, stdout: str, signum: int) -> int:
    """What a stop must leave; returns the checkpoint's step."""
    assert status == exit_status(signum), stdout[-2000:]
    name = signal.Signals(signum).name
    assert f"stopped by {name} after step" in stdout
    _, meta = load_checkpoint(out / "checkpoint.npz")
    step = meta["step"]
    assert f"after step {step}:" in stdout and "--resume" in stdout
    assert [r["step"] for r in metrics(out)] == list(range(1, step + 1))
    assert (out / "loss.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "loss.png",
                                                     "metrics.jsonl"]
    return step


def resume_and_compare(tmp_path: Path, out: Path, step: int, **kw: Any) -> None:
    """Resume ``out`` for 3 more steps; its losses equal an uninterrupted run's."""
    train(resume_config(out, {"steps": step + 3, "quiet": True, **kw}))
    straight = tmp_path / "straight"
    train(config(straight, steps=step + 3, eval_every=1000, **kw))
    np.testing.assert_allclose(losses(out), losses(straight), rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------
# One process
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_ends_the_run_after_its_step_with_a_checkpoint(plants, tmp_path, moment,
                                                                      signum):
    out = tmp_path / "run"
    args = [a for a in flags(out, steps=LONG, eval_every=1000) if a != "--quiet"]
    proc = subprocess.Popen([PYTHON, "-m", "numpy_rnn", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=job_env())
    steps, delay = moment()
    wait_for_steps(proc, out, steps)
    time.sleep(delay)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    step = assert_stopped_cleanly(out, proc.returncode, stdout, signum)
    assert step >= steps and "Traceback" not in stderr
    resume_and_compare(tmp_path, out, step)


def test_one_signal_delivered_twice_is_one_request(plants, tmp_path):
    # A terminal's Ctrl-C reaches the whole process group while the launcher forwards it too.
    out = tmp_path / "run"
    args = [a for a in flags(out, steps=LONG, eval_every=1000) if a != "--quiet"]
    proc = subprocess.Popen([PYTHON, "-m", "numpy_rnn", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=job_env())
    wait_for_steps(proc, out, 5)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert_stopped_cleanly(out, proc.returncode, stdout, signal.SIGINT)


def test_a_stop_request_is_forced_by_a_later_or_another_signal(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(stops.time, "monotonic", lambda: clock[0])
    request = StopRequest()
    assert not request
    request.receive(signal.SIGINT)
    clock[0] += stops.GRACE_S / 2
    request.receive(signal.SIGINT)                     # the same, delivered twice
    assert request.signum == signal.SIGINT
    with pytest.raises(Interrupted) as forced:
        request.receive(signal.SIGTERM)                # another signal: at once
    assert forced.value.signum == signal.SIGTERM
    clock[0] += 2 * stops.GRACE_S
    with pytest.raises(Interrupted):
        request.receive(signal.SIGINT)                 # Ctrl-C again, later: at once
    # ... and with real signals, in this process: the handlers go back after the block.
    before = signal.getsignal(signal.SIGTERM)
    with deferred_stop() as request:
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.signum == signal.SIGTERM
        clock[0] += 2 * stops.GRACE_S
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_stop_during_the_setup_takes_no_step(plants, tmp_path, monkeypatch):
    from numpy_rnn.driver import train as train_mod

    original = train_mod.get_task
    cfg = config(tmp_path / "run", steps=5)

    def get_task(name):                   # the signal arrives while the corpus loads
        os.kill(os.getpid(), signal.SIGTERM)
        return original(name)

    monkeypatch.setattr(train_mod, "get_task", get_task)
    summary = train(cfg)
    assert summary.stop_signal == signal.SIGTERM and summary.step == 0
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


# --------------------------------------------------------------------------------------------
# Closed outputs
# --------------------------------------------------------------------------------------------


def test_a_closed_standard_output_loses_log_lines_not_the_run(plants, tmp_path):
    out = tmp_path / "run"
    args = [a for a in flags(out, steps=30, eval_every=10) if a != "--quiet"]
    # train ... | head -1: the reader leaves after the first line.
    shell = subprocess.run(["bash", "-c", '"$@" | head -1; exit "${PIPESTATUS[0]}"', "bash",
                            PYTHON, "-m", "numpy_rnn", *args],
                           capture_output=True, text=True, env=job_env(), timeout=120)
    assert shell.returncode == 0, shell.stderr[-2000:]
    assert shell.stdout.count("\n") == 1
    assert "Broken pipe" not in shell.stderr and "error" not in shell.stderr
    assert load_checkpoint(out / "checkpoint.npz")[1]["step"] == 30
    assert (out / "loss.png").is_file()

    # sample into a pipe nobody reads: ends quietly with SIGPIPE's status, as Unix tools do.
    read, write = os.pipe()
    os.close(read)
    sample = subprocess.run([PYTHON, "-m", "numpy_rnn", "sample", "--checkpoint",
                             str(out / "checkpoint.npz"), "--num-samples", "50"],
                            stdout=write, stderr=subprocess.PIPE, text=True, env=job_env(),
                            timeout=60)
    os.close(write)
    assert sample.returncode == 128 + signal.SIGPIPE
    assert "Broken pipe" not in sample.stderr and "error" not in sample.stderr


# --------------------------------------------------------------------------------------------
# Several processes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_signal_to_mpiexec_stops_every_process_after_the_same_step(plants, tmp_path, moment,
                                                                      signum, to_group):
    # Ctrl-C in a terminal: SIGINT to mpiexec's whole process group; a scheduler: SIGTERM to
    # mpiexec, which forwards it to the processes.
    mpiexec = _mpiexec()
    out = tmp_path / "job"
    args = [a for a in flags(out, steps=LONG, eval_every=1000) if a != "--quiet"]
    proc = subprocess.Popen([mpiexec, "-n", "2", PYTHON, "-m", "mpi4py", "-m", "numpy_rnn",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=job_env(), start_new_session=True)
    steps, delay = moment()
    wait_for_steps(proc, out, steps)
    time.sleep(delay)
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    step = assert_stopped_cleanly(out, proc.returncode, stdout, signum)
    assert "MPI_Abort" not in stderr and "Traceback" not in stderr, stderr[-2000:]
    # A 2-process run resumes in one process with --grad-accum 2, exactly.
    resume_and_compare(tmp_path, out, step, grad_accum=2)


def test_sigterm_to_every_gloo_process_stops_them_after_the_same_step(plants, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("torch_ref.backend")
    out = tmp_path / "job"
    args = [a for a in flags(out, backend="torch", steps=LONG, eval_every=1000)
            if a != "--quiet"]
    job = gloo_job(args)
    wait_for_steps(job.procs[0], out, 8)
    for p in job.procs:             # as torchrun does when it is stopped
        p.send_signal(signal.SIGTERM)
    (s0, out0, err0), (s1, _, err1) = job.outputs(timeout=60)
    assert s1 == exit_status(signal.SIGTERM), err1[-2000:]
    step = assert_stopped_cleanly(out, s0, out0, signal.SIGTERM)
    assert "Traceback" not in err0 + err1
    meta = load_checkpoint(out / "checkpoint.npz")[1]
    assert meta["train"]["processes"] == 2 and step == meta["step"]


def test_the_readme_says_what_each_stop_leaves():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for what in ("SIGTERM", "kill -9", "Ctrl-C", "| head"):
        assert what in readme, what


def test_the_next_run_removes_what_a_killed_writer_left(plants, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    left = [out / ".checkpoint.npz.4242.0badf00d.tmp", out / ".metrics.jsonl.7.12345678.tmp"]
    for path in left:
        path.write_bytes(b"half a file")
    (out / "notes.tmp").write_text("mine")           # not one of ours: kept
    train(config(out, steps=2))
    assert not any(p.exists() for p in left) and (out / "notes.tmp").exists()


def test_a_validation_loss_far_above_the_first_loss_is_divergence(plants, tmp_path, capsys):
    from numpy_rnn.driver.cli import main

    status = main(flags(tmp_path / "run", lr=1e12, clip=0, steps=10, eval_every=5))
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "step 5" in err and "lower --lr" in err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
