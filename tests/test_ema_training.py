"""``train --ema DECAY`` (issue 27): the weights' moving average is updated after every step in
both backends alike, kept in the checkpoint (a resumed run continues it exactly), validated
(so ``best.npz`` is chosen by it) and used by ``evaluate``; another ``--ema`` cannot resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import TINY, assert_user_error

from numpy_rnn.driver.checkpoint import read_checkpoint

FLAGS = [*TINY, "--num-layers", "2", "--dropout", "0.2", "--ema", "0.9", "--eval-every", "4"]


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def ema_run(cli_plants, tmp_path, run):
    out = tmp_path / "ema"
    status, _, err = run("train", *FLAGS, "--steps", "12", "--out", out)
    assert status == 0, err
    return out


def test_the_average_is_validated_kept_and_evaluated(ema_run, tmp_path, run):
    checkpoint = read_checkpoint(ema_run / "checkpoint.npz")
    ema = checkpoint.meta["train"]["ema"]
    assert ema["decay"] == 0.9 and ema["n_averaged"] == 12
    assert set(ema["averaged"]) == set(checkpoint.weights)
    assert any(not np.array_equal(ema["averaged"][k], w) for k, w in checkpoint.weights.items())
    # evaluate reads the averaged weights: it measures what the run's validation measured
    status, out, err = run("evaluate", "--checkpoint", ema_run / "checkpoint.npz", "--json")
    assert status == 0, err
    assert json.loads(out)["val_loss"] == pytest.approx(metrics(ema_run)[-1]["val_loss"],
                                                        rel=1e-12)
    # ... and a run without the average validates other numbers
    status, _, err = run("train", *[f for f in FLAGS if f not in ("--ema", "0.9")],
                         "--steps", "12", "--out", tmp_path / "plain")
    assert status == 0, err
    plain = metrics(tmp_path / "plain")
    assert [r["loss"] for r in plain] == [r["loss"] for r in metrics(ema_run)]
    assert plain[-1]["val_loss"] != metrics(ema_run)[-1]["val_loss"]


def test_a_resumed_run_continues_the_average_exactly(ema_run, tmp_path, run):
    out = tmp_path / "resumed"
    status, _, err = run("train", *FLAGS, "--steps", "8", "--out", out)
    assert status == 0, err
    status, _, err = run("train", "--out", out, "--resume", "--steps", "12", "--quiet")
    assert status == 0, err
    def exact(records):
        return [{k: v for k, v in r.items() if k not in ("chars_per_s", "elapsed_s")}
                for r in records]

    assert exact(metrics(out)) == exact(metrics(ema_run))
    elapsed = [r["elapsed_s"] for r in metrics(out)]     # the resumed run's clock goes on
    assert elapsed == sorted(elapsed)
    assert_user_error(*run("train", "--out", out, "--resume", "--steps", "16", "--ema",
                           "0.5")[::2], "ema 0.9 (asked for 0.5)")


def test_both_backends_average_alike(cli_plants, tmp_path, run):
    pytest.importorskip("torch")
    for backend in ("numpy", "torch"):
        status, _, err = run("train", *FLAGS, "--steps", "8", "--backend", backend,
                             "--out", tmp_path / backend)
        assert status == 0, err
    for mine, theirs in zip(metrics(tmp_path / "numpy"), metrics(tmp_path / "torch")):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-10)
        if "val_loss" in mine:
            assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-10)
    averages = [read_checkpoint(tmp_path / b / "checkpoint.npz").meta["train"]["ema"]
                for b in ("numpy", "torch")]
    for k, avg in averages[0]["averaged"].items():
        np.testing.assert_allclose(avg, averages[1]["averaged"][k], rtol=1e-9, atol=1e-12)
