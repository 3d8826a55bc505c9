"""One training run per output directory: a second run is refused, a stale lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_plants

from numpy_rnn.driver.rundir import LOCK_NAME, RunLockedError, run_lock

ROOT = Path(__file__).resolve().parent.parent
HOLD = ("import sys, time\n"
        "from numpy_rnn.driver.rundir import run_lock\n"
        "with run_lock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n")


def env_with(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ, NUMPY_RNN_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    env.pop("PYTHONHASHSEED", None)
    return env


def start_holder(out: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def cli_train(out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "numpy_rnn", "train", "--out", str(out), "--hidden-size", "8",
            "--num-layers", "1", "--seq-len", "8", "--batch-size", "2", "--steps", "4",
            "--eval-every", "4", "--sample-every", "4", "--dtype", "float64", *extra]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


@pytest.fixture
def data(tmp_path):
    write_plants(tmp_path / "data")
    return tmp_path / "data"


def test_a_second_run_on_a_held_directory_is_refused_and_touches_nothing(tmp_path, data):
    env = env_with(data)
    out = tmp_path / "run"
    first = cli_train(out, env)
    assert first.returncode == 0, first.stderr
    before = snapshot(out)
    holder = start_holder(out, env)
    try:
        for extra in ((), ("--overwrite",), ("--resume", "--steps", "8")):
            second = cli_train(out, env, *extra)
            assert second.returncode == 2
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1, second.stderr
            assert str(out) in lines[0] and f"process {holder.pid}" in lines[0], lines[0]
            assert {k: v for k, v in snapshot(out).items() if k != LOCK_NAME} == before
    finally:
        holder.kill()
        holder.wait()


def test_two_training_processes_on_one_directory(tmp_path, data):
    """A real run holds its directory from start to end; the one started beside it is refused
    and the first run ends normally with all its steps."""
    env = env_with(data)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "numpy_rnn", "train", "--out", str(out), "--hidden-size", "32",
            "--num-layers", "2", "--seq-len", "32", "--batch-size", "8", "--steps", "400",
            "--eval-every", "400", "--sample-every", "400", "--dtype", "float64", "--quiet"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.jsonl").exists() or not (out / LOCK_NAME).exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.05)
        second = cli_train(out, env, "--overwrite")
        assert second.returncode == 2
        assert f"process {first.pid}" in second.stderr and str(out) in second.stderr
        assert first.poll() is None, "the first run must still be running for this test"
    finally:
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 401))
    assert not (out / LOCK_NAME).exists()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_line(tmp_path, data):
    env = env_with(data)
    out = tmp_path / "run"
    holder = start_holder(out, env)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (out / LOCK_NAME).exists()            # left behind: the process had no time to clean
    result = cli_train(out, env)
    assert result.returncode == 0, result.stderr
    assert f"took over a stale lock (process {holder.pid}" in result.stdout
    assert (out / "checkpoint.npz").is_file() and not (out / LOCK_NAME).exists()


def test_run_lock_in_one_process(tmp_path):
    out = tmp_path / "new"
    lines: list[str] = []
    with run_lock(out, lines.append) as path:
        assert path == out / LOCK_NAME
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match=f"process {os.getpid()}"), \
                run_lock(out, lines.append):
            pass
        assert path.exists()                     # the refused attempt changed nothing
    assert lines == []
    assert not out.exists()                      # created here, still empty: removed again
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "note.txt").write_text("mine")
    with run_lock(tmp_path / "kept", lines.append):
        pass
    assert (tmp_path / "kept" / "note.txt").read_text() == "mine"
