"""A task defined outside the package (tests/external_task.py) works through the whole driver:
registered with ``register_task`` (or found through the ``numpy_rnn.tasks`` entry points), it
trains from the command line, resumes exactly, evaluates, splits into micro-batches equal to the
plain step, and has its own ``--help`` -- with no change to numpy_rnn."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from pathlib import Path

import external_task
import numpy as np
import pytest

import numpy_rnn.tasks as tasks
from numpy_rnn.driver.checkpoint import load_checkpoint
from numpy_rnn.driver.cli import main
from numpy_rnn.tasks import TaskRegistryError, get_task, register_task


@pytest.fixture
def vowels(tmp_path, monkeypatch):
    """The task registered (and gone after the test), and a small text to tag."""
    monkeypatch.setitem(tasks.TASKS, "vowels", external_task.VowelTask())
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("bcdfghklmnprstvaeiou"), size=int(rng.integers(3, 9))))
             for _ in range(600)]
    path = tmp_path / "words.txt"
    path.write_text(" ".join(words) + "\n", encoding="utf-8")
    return path


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "vowels", "--data", str(data), "--out", str(out), "--quiet",
            *extra]


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in
            (out / "metrics.jsonl").read_text().splitlines()]


def test_an_outside_task_trains_resumes_and_evaluates(vowels, tmp_path, capsys):
    assert main(train_args(vowels, tmp_path / "straight")) == 0
    straight = losses(tmp_path / "straight")
    assert len(straight) == 30 and straight[-1] < straight[0]          # it learns
    _, meta = load_checkpoint(tmp_path / "straight" / "checkpoint.npz")
    assert meta["task"] == "vowels" and meta["step"] == 30

    assert main(train_args(vowels, tmp_path / "resumed", "--steps", "20")) == 0
    assert main(["train", "--out", str(tmp_path / "resumed"), "--resume", "--steps", "30",
                 "--quiet"]) == 0
    assert losses(tmp_path / "resumed") == straight                     # exactly

    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "straight" / "checkpoint.npz"),
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    last = json.loads((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()[-1])
    assert got["val_loss"] == pytest.approx(last["val_loss"], rel=1e-12)


def test_an_outside_task_splits_into_micro_batches_as_the_plain_step(vowels, tmp_path):
    flags = ("--num-layers", "2", "--dropout", "0.3", "--dtype", "float64", "--steps", "12")
    assert main(train_args(vowels, tmp_path / "plain", *flags)) == 0
    assert main(train_args(vowels, tmp_path / "accum", *flags, "--grad-accum", "2")) == 0
    np.testing.assert_allclose(losses(tmp_path / "accum"), losses(tmp_path / "plain"),
                               rtol=1e-12, atol=0)


def test_an_outside_task_brings_settings_the_driver_never_heard_of(vowels, tmp_path, capsys):
    """--window and --logit-scale are the task's own options: the command line takes them,
    the run's checkpoint keeps them, a resumed run continues with them exactly, evaluation uses
    the scale (kept in the model's config), and they reach Python the same way."""
    from numpy_rnn.driver.config import TrainConfig

    flags = ("--window", "10", "--logit-scale", "2.5", "--steps", "20")
    assert main(train_args(vowels, tmp_path / "scaled", *flags)) == 0
    scaled = losses(tmp_path / "scaled")
    assert main(train_args(vowels, tmp_path / "plain", "--window", "10", "--steps", "20")) == 0
    assert scaled != losses(tmp_path / "plain")                         # the knob acts
    _, meta = load_checkpoint(tmp_path / "scaled" / "checkpoint.npz")
    assert meta["options"]["logit_scale"] == 2.5 and meta["options"]["window"] == 10
    assert meta["model_config"]["logit_scale"] == 2.5
    assert "window" not in meta["train"]["config"]

    assert main(train_args(vowels, tmp_path / "resumed", *flags[:4], "--steps", "12")) == 0
    assert main(["train", "--out", str(tmp_path / "resumed"), "--resume", "--steps", "20",
                 "--quiet"]) == 0
    assert losses(tmp_path / "resumed") == scaled                       # exactly
    assert main(["train", "--out", str(tmp_path / "resumed"), "--resume", "--steps", "30",
                 "--window", "x"]) == 2                                 # parsed as its type
    assert main(["train", "--out", str(tmp_path / "resumed"), "--resume", "--steps", "30",
                 "--window", "11", "--quiet"]) == 2                     # batching must match
    assert "window 10 (asked for 11)" in capsys.readouterr().err

    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "scaled" / "checkpoint.npz"),
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    last = json.loads((tmp_path / "scaled" / "metrics.jsonl").read_text().splitlines()[-1])
    assert got["val_loss"] == pytest.approx(last["val_loss"], rel=1e-12)

    config = TrainConfig.for_task("vowels", logit_scale=3.0, steps=5)
    assert config.options.logit_scale == 3.0 and config.options.window == 12
    with pytest.raises(ValueError, match="logit_scale"):
        TrainConfig.for_task("vowels", logit_scale=-1.0)
    with pytest.raises(TypeError, match="my_knob"):
        TrainConfig.for_task("vowels", my_knob=3)
    assert main(["train", "--window", "4", "--out", str(tmp_path / "lm")]) == 2
    assert "--window does not apply to --task lm (an option of vowels)" in \
        capsys.readouterr().err


def test_an_outside_task_has_its_own_help(vowels, capsys):
    assert main(["train", "--task", "vowels", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "units per recurrent layer (default: 12)" in text
    assert "characters per training window (default: 12)" in text
    assert "multiply the tagger's logits by this (default: 1.0)" in text
    assert "vowels" in text
    assert "--pooling" not in text                       # another task's flag


def test_a_task_comes_from_an_entry_point_and_a_broken_one_is_one_error(monkeypatch):
    def points(group: str) -> list[EntryPoint]:
        assert group == tasks.ENTRY_POINT_GROUP
        return [EntryPoint("vowels", "external_task:VowelTask", group)]

    monkeypatch.setattr(tasks, "_entry_points_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points", points)
    monkeypatch.delitem(tasks.TASKS, "vowels", raising=False)
    try:
        assert isinstance(get_task("vowels"), external_task.VowelTask)
        with pytest.raises(TaskRegistryError, match="registered already"):
            register_task(external_task.VowelTask)
    finally:
        tasks.TASKS.pop("vowels", None)

    monkeypatch.setattr(tasks, "_entry_points_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group: [EntryPoint("broken", "no_such_module:Task", group)])
    with pytest.raises(TaskRegistryError, match="broken = no_such_module:Task"):
        get_task("nothing")
