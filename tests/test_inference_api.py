"""``numpy_rnn.load`` (issue 26): the trained model of any task's checkpoint, with its task's
inference methods, which the command line calls too, so the two agree; ``import numpy_rnn``
stays light until it is used."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT, SEQ2SEQ_TINY, write_reversed_pairs

import numpy_rnn
from numpy_rnn.tasks.classify import TrainedClassifier
from numpy_rnn.tasks.conditional import ConditionalGenerator
from numpy_rnn.tasks.lm import Generator
from numpy_rnn.tasks.seq2seq import Translator


@pytest.fixture
def seq2seq_checkpoint(tmp_path, run, monkeypatch):
    monkeypatch.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
    pairs = write_reversed_pairs(tmp_path)
    out = tmp_path / "s2s"
    status, _, err = run("train", "--task", "seq2seq", "--data", pairs, *SEQ2SEQ_TINY,
                         "--steps", "30", "--eval-every", "30", "--out", out)
    assert status == 0, err
    return out / "checkpoint.npz"


def test_import_numpy_rnn_loads_no_task_and_no_driver():
    code = ("import sys, numpy_rnn; assert callable(numpy_rnn.load); "
            "print(sorted(m for m in sys.modules if m.startswith(('numpy_rnn.tasks', "
            "'numpy_rnn.driver', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_a_language_model_samples_as_the_command_does(trained_lm, run):
    model = numpy_rnn.load(trained_lm / "checkpoint.npz")
    assert isinstance(model, Generator) and "lm model" in repr(model)
    names = model.sample(6, seed=3, temperature=0.7, prime="ro")
    assert len(names) == 6 and all(n.startswith("ro") for n in names)
    status, out, err = run("sample", "--checkpoint", trained_lm / "checkpoint.npz",
                           "--num-samples", "6", "--seed", "3", "--temperature", "0.7",
                           "--prime", "ro")
    assert status == 0, err
    assert out.rstrip("\n").split("\n") == names
    assert model.sample(6, seed=3, temperature=0.7, prime="ro") == names   # the seed fixes it
    assert len(model.sample(2, stop="length", max_length=7, seed=0)[0]) == 7
    with pytest.raises(ValueError, match="stop must be one of"):
        model.sample(1, stop="never")
    with pytest.raises(ValueError, match=r"never seen|outside|vocabulary"):
        model.sample(1, prime="\u2603")


def test_a_classifier_predicts_as_the_command_does(labelled, tmp_path, run):
    out = tmp_path / "cls"
    status, _, err = run("train", "--task", "classify", "--out", out, "--hidden-size", "8",
                         "--steps", "3", "--eval-every", "3", "--batch-size", "8", "--quiet")
    assert status == 0, err
    model = numpy_rnn.load(out / "checkpoint.npz")
    assert isinstance(model, TrainedClassifier)
    names = ["rosa canina", "rosa"]
    predicted = model.predict(names)
    assert [list(p) for p in predicted] == [list(model.labels)] * 2
    alone = model.predict("rosa")       # one string: a list of one (float32: another batch)
    assert len(alone) == 1 and alone[0] == pytest.approx(predicted[1], rel=1e-5)
    status, text, err = run("predict", "--checkpoint", out / "checkpoint.npz", "--json", *names)
    assert status == 0, err
    rows = [json.loads(line) for line in text.splitlines()]
    for row, mine in zip(rows, predicted):
        assert row["probabilities"] == pytest.approx(mine, rel=1e-12)
    weights = model.attention(names)
    assert [len(w) for w in weights] == [len(n) for n in names]
    assert all(abs(float(w.sum()) - 1) < 1e-5 for w in weights)


def test_a_conditional_generator_samples_for_a_region(labelled, tmp_path, run):
    out = tmp_path / "cond"
    status, _, err = run("train", "--task", "conditional", "--out", out, "--hidden-size", "8",
                         "--num-layers", "1", "--dropout", "0", "--steps", "3", "--eval-every",
                         "3", "--batch-size", "8", "--quiet")
    assert status == 0, err
    model = numpy_rnn.load(out / "checkpoint.npz")
    assert isinstance(model, ConditionalGenerator)
    region = model.labels[0]
    names = model.sample(4, condition=region, seed=1)
    status, text, err = run("sample", "--checkpoint", out / "checkpoint.npz", "--condition",
                            region, "--num-samples", "4", "--seed", "1")
    assert status == 0, err
    assert text.rstrip("\n").split("\n") == names
    with pytest.raises(ValueError, match="unknown region code 'zz'"):
        model.sample(1, condition=["zz"])
    with pytest.raises(ValueError, match="generates names"):
        model.sample(1, stop="length")


def test_a_seq2seq_model_translates_as_the_command_does(seq2seq_checkpoint, run):
    model = numpy_rnn.load(seq2seq_checkpoint)
    assert isinstance(model, Translator)
    words = ["abc", "gfed", "a"]
    best = model.translate(words)
    assert all(isinstance(b, list) and all(isinstance(t, str) for t in b) for b in best)
    assert model.translate("abc") == best[0]                     # one source: its output
    nbest = model.translate(words, beam=3, nbest=3)
    assert [len(n) for n in nbest] == [3, 3, 3]
    for hyps in nbest:
        scores = [score for _, score in hyps]
        assert scores == sorted(scores, reverse=True)            # best first, by the score
    status, text, err = run("translate", "--checkpoint", seq2seq_checkpoint, "--beam", "1",
                            *words)
    assert status == 0, err
    assert [line.split("\t") for line in text.splitlines()] == [
        [w, " ".join(b)] for w, b in zip(words, best)]
    status, text, err = run("translate", "--checkpoint", seq2seq_checkpoint, "--beam", "3",
                            "--nbest", "3", "--json", *words)
    assert status == 0, err
    for row, hyps in zip(map(json.loads, text.splitlines()), nbest):
        assert [o["tokens"] for o in row["outputs"]] == [tokens for tokens, _ in hyps]
        assert [o["score"] for o in row["outputs"]] == pytest.approx([s for _, s in hyps])
        assert all(o["log_prob"] <= o["score"] + 1e-12 for o in row["outputs"])
    with pytest.raises(ValueError, match=r"source 1 \('a1'\): characters the model has never "
                                         r"seen: '1' \(it knows 'abcdefg'\)"):
        model.translate(["abc", "a1"])
    with pytest.raises(ValueError, match="nbest 3 needs a beam of at least 3"):
        model.translate("abc", beam=2, nbest=3)


def test_both_backends_translate_alike(seq2seq_checkpoint):
    pytest.importorskip("torch")
    words = ["abc", "gfed", "bad", "cafe"]
    mine = numpy_rnn.load(seq2seq_checkpoint).translate(words, beam=3, nbest=2)
    theirs = numpy_rnn.load(seq2seq_checkpoint, backend="torch").translate(words, beam=3,
                                                                           nbest=2)
    for a, b in zip(mine, theirs):
        assert [t for t, _ in a] == [t for t, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=1e-5)


def test_a_huge_beam_is_refused_before_allocating(seq2seq_checkpoint, monkeypatch):
    from numpy_rnn.driver.memory import MemoryLimitError

    monkeypatch.setenv("NUMPY_RNN_MEMORY_LIMIT", "2G")
    with pytest.raises(MemoryLimitError, match="choose a smaller --beam"):
        numpy_rnn.load(seq2seq_checkpoint).translate("abc", beam=10**7)
