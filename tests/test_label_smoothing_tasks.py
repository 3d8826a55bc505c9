"""``--label-smoothing`` for every task whose loss is a cross-entropy (issue 27): the language
model, the conditional generator (and seq2seq, tests/test_seq2seq_regularisation.py) smooth their
training loss as torch's ``cross_entropy(label_smoothing=eps)`` does, in both backends alike;
validation measures the plain loss; the classifier, whose loss is a binary cross-entropy, has no
such flag."""

from __future__ import annotations

import json

import pytest
from helpers import TINY, assert_user_error


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("task, fixture, flags", [
    ("lm", "cli_plants", [*TINY, "--num-layers", "2", "--dropout", "0.2"]),
    ("conditional", "labelled", ["--hidden-size", "8", "--num-layers", "1", "--dropout", "0",
                                 "--batch-size", "8", "--dtype", "float64", "--quiet"]),
])
def test_both_backends_smooth_alike_and_validation_stays_plain(task, fixture, flags, tmp_path,
                                                               run, request):
    pytest.importorskip("torch")
    request.getfixturevalue(fixture)
    common = ["train", "--task", task, *flags, "--steps", "6", "--eval-every", "6"]
    for name, extra in (("numpy", []), ("torch", ["--backend", "torch"]), ("plain", [])):
        smoothing = [] if name == "plain" else ["--label-smoothing", "0.2"]
        status, _, err = run(*common, *smoothing, *extra, "--out", tmp_path / name)
        assert status == 0, err
    smoothed, torch_run, plain = (metrics(tmp_path / n) for n in ("numpy", "torch", "plain"))
    for mine, theirs in zip(smoothed, torch_run):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-10)
    assert smoothed[-1]["val_loss"] == pytest.approx(torch_run[-1]["val_loss"], rel=1e-10)
    # the same start (same weights, same batch), another loss: the smoothed one
    assert abs(smoothed[0]["loss"] - plain[0]["loss"]) > 1e-6
    # evaluate measures the plain loss, as validation did
    status, out, err = run("evaluate", "--checkpoint", tmp_path / "numpy" / "checkpoint.npz",
                           "--json")
    assert status == 0, err
    assert json.loads(out)["val_loss"] == pytest.approx(smoothed[-1]["val_loss"], rel=1e-12)


def test_the_classifier_has_no_label_smoothing(labelled, tmp_path, run):
    assert_user_error(*run("train", "--task", "classify", "--label-smoothing", "0.1", "--out",
                           tmp_path / "c")[::2],
                      "--label-smoothing does not apply to --task classify")
