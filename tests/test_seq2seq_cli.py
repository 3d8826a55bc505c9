"""The seq2seq task's command line beyond training (issue 19): ``translate --plot`` draws the
attention of each word's best output into one PNG, written whole or not at all, and refuses a
bad path or a model without attention before decoding; the decoders return the attention of
every step of each hypothesis (the weights decode_step gives along its tokens); ``evaluate``
takes ``--split`` and ``--beam`` for seq2seq checkpoints only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import SEQ2SEQ_TINY, assert_user_error, write_reversed_pairs

from numpy_rnn.driver.cli import main
from numpy_rnn.tasks.decoding import beam_search, greedy_decode
from numpy_rnn.tasks.pairs import load_pairs
from numpy_rnn.tasks.seq2seq import BOS, EOS, Seq2Seq, Seq2SeqConfig

TINY = SEQ2SEQ_TINY


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    path = write_reversed_pairs(tmp_path_factory.mktemp("pairs"))
    return path


def _train(pairs: Path, out: Path, *flags: str) -> Path:

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
        assert main(["train", "--task", "seq2seq", "--data", str(pairs), "--out", str(out),
                     *TINY, *flags]) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(pairs, tmp_path_factory) -> Path:
    """A seq2seq run with attention (general, input feeding), 30 steps, one evaluation."""
    return _train(pairs, tmp_path_factory.mktemp("g2p") / "run", "--steps", "30",
                  "--eval-every", "30")


@pytest.fixture(scope="module")
def checkpoint(run_dir) -> Path:
    return run_dir / "checkpoint.npz"


@pytest.fixture(scope="module")
def plain_checkpoint(pairs, tmp_path_factory) -> Path:
    """A seq2seq checkpoint without attention (2 steps)."""
    out = _train(pairs, tmp_path_factory.mktemp("plain") / "run", "--steps", "2",
                 "--eval-every", "2", "--attention", "none")
    return out / "checkpoint.npz"


# -- translate --plot -------------------------------------------------------------------------


def test_plot_draws_a_png_of_a_panel_per_word_and_prints_as_before(checkpoint, run, tmp_path):
    from matplotlib.image import imread

    words = ["abc", "gfedabcd", "agg"]
    status, plain, _ = run("translate", "--checkpoint", checkpoint, *words)
    assert status == 0
    png = tmp_path / "attention.png"
    status, out, err = run("translate", "--checkpoint", checkpoint, "--plot", png, *words)
    assert status == 0, err
    assert out == plain                                  # the output is as without --plot
    assert f"attention of 3 sources drawn in {png}" in err
    three = imread(png)
    assert three.ndim == 3 and three.shape[2] in (3, 4) and min(three.shape[:2]) > 50
    one_png = tmp_path / "one.PNG"
    status, out, _ = run("translate", "--checkpoint", checkpoint, "--plot", one_png, "--json",
                         "--beam", "1", "abc")
    assert status == 0 and json.loads(out)["source"] == "abc"
    one = imread(one_png, format="png")
    assert one.shape[0] < three.shape[0]                 # a panel per word, stacked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention.png", "one.PNG"]


def test_plot_refuses_bad_paths_and_models_without_attention_writing_nothing(
        checkpoint, plain_checkpoint, run, tmp_path):
    (tmp_path / "dir.png").mkdir()
    cases = [
        ((checkpoint, "--plot", tmp_path / "missing" / "a.png", "abc"), "does not exist"),
        ((checkpoint, "--plot", tmp_path / "a.jpg", "abc"), ".png"),
        ((checkpoint, "--plot", tmp_path / "dir.png", "abc"), "is a directory"),
        ((checkpoint, "--plot", tmp_path / "a.png", *["ab"] * 21), "at most 20"),
        ((plain_checkpoint, "--plot", tmp_path / "a.png", "abc"), "--attention none"),
    ]
    for argv, why in cases:
        status, out, err = run("translate", "--checkpoint", *argv)
        assert_user_error(status, err, why)
        assert out == ""                                 # refused before decoding
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.png"]
    # Without --plot the model without attention translates as before.
    status, out, _ = run("translate", "--checkpoint", plain_checkpoint, "abc")
    assert status == 0 and out.startswith("abc\t")


def test_a_plot_that_fails_while_drawing_leaves_no_file(checkpoint, run, tmp_path,
                                                        monkeypatch):
    from numpy_rnn.tasks.seq2seq import task as seq2seq_task

    def broken(words, outputs, alphas, f):
        f.write(b"\x89PNG half a picture")
        raise ValueError("the drawing failed")

    monkeypatch.setattr(seq2seq_task, "plot_translation_attention", broken)
    status, out, err = run("translate", "--checkpoint", checkpoint, "--plot",
                           tmp_path / "a.png", "abc")
    assert_user_error(status, err, "the drawing failed")
    assert out == ""                                     # drawn before the output is printed
    assert list(tmp_path.iterdir()) == []                # no file, no temporary one


def test_plot_translation_attention_checks_its_shapes(tmp_path):
    from numpy_rnn.nn.module import ShapeError
    from numpy_rnn.tasks.seq2seq import plot_translation_attention

    with pytest.raises(ShapeError, match="'ab'"):
        plot_translation_attention(["ab"], [["A", "</s>"]], [np.ones((2, 3))],
                                   tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# -- the attention the decoders return ----------------------------------------------------------


class _Predictor:
    """A NumPy model as the decoders read it (``Predictor.infer``)."""

    def __init__(self, model: Seq2Seq) -> None:
        self.model, self.config = model, model.config

    def infer(self, name: str, *args):
        return getattr(self.model, name)(*args)


def _untrained(attention: str, input_feeding: bool, seed: int) -> Seq2Seq:
    model = Seq2Seq(Seq2SeqConfig(vocab_size=8, target_vocab_size=6, hidden_size=8,
                                  num_layers=1, dtype="float64", attention=attention,
                                  input_feeding=input_feeding), seed=seed)
    model.params["out.bias"][EOS] += 0.3       # some outputs end, some run to max_length
    return model


@pytest.fixture(scope="module")
def models(checkpoint) -> list[tuple[Seq2Seq, np.ndarray, np.ndarray]]:
    """Models with each score and decoder path, with sources of uneven lengths: the trained
    one's (general, input feeding) and untrained ones."""
    from numpy_rnn.driver.checkpoint import read_checkpoint
    from numpy_rnn.tasks.seq2seq import encode_sources

    loaded = read_checkpoint(checkpoint)
    config = loaded.config
    assert isinstance(config, Seq2SeqConfig)
    trained = Seq2Seq(config, seed=0)
    trained.load_state_dict(loaded.weights)
    words = ["abcdefg", "a", "gfe", "bbaac", "dg"]
    source, lengths = encode_sources([tuple(w) for w in words],
                                     loaded.record.vocabularies["source"])
    toy = (np.array([[3, 4, 5, 6, 7], [2, 0, 0, 0, 0], [5, 5, 1, 0, 0]]), np.array([5, 1, 3]))
    return [(trained, source, lengths)] + [
        (_untrained(attention, fed, seed), *toy)
        for attention, fed in (("general", True), ("additive", False), ("dot", True))
        for seed in range(2)]


def _replay(model: Seq2Seq, source: np.ndarray, length: int, tokens: list[int]
            ) -> tuple[np.ndarray, float]:
    """decode_step teacher-forced along ``tokens`` (the end token included, if any) on one
    source alone: the attention of each step ``(n, length)`` and the log-probability."""
    memory, state = model.encode(source[None, :length], np.array([length]))
    feed = np.zeros((1, model.config.hidden_size))
    prev, rows, total = BOS, [], 0.0
    for tok in tokens:
        lp, state, feed, alpha = model.decode_step(np.array([prev]), state, feed, memory,
                                                   np.array([length]))
        rows.append(alpha[0])
        total += lp[0, tok]
        prev = tok
    return np.array(rows).reshape(len(tokens), length), total


def _check_alpha(model: Seq2Seq, hyp, source: np.ndarray, length: int,
                 max_length: int) -> bool:
    """``hyp``'s attention is a distribution over the valid positions at every step, 0 past
    the source's length, and what decode_step gives along its tokens; returns whether the
    output ended (with an end token)."""
    ended = len(hyp.alpha) == len(hyp.tokens) + 1
    assert ended or len(hyp.tokens) == max_length
    assert hyp.alpha.shape == (len(hyp.tokens) + ended, len(source))
    np.testing.assert_allclose(hyp.alpha[:, :length].sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(hyp.alpha[:, length:] == 0.0) and np.all(hyp.alpha >= 0.0)
    want, log_prob = _replay(model, source, length, [*hyp.tokens, *([EOS] if ended else [])])
    np.testing.assert_allclose(hyp.alpha[:, :length], want, rtol=0, atol=1e-12)
    assert hyp.log_prob == pytest.approx(log_prob, rel=1e-10)
    return ended


def test_greedy_returns_the_attention_of_each_step(models):
    ended = []
    for model, source, lengths in models:
        for max_length in (3, 8):
            hyps = greedy_decode(_Predictor(model), source, lengths, bos=BOS, eos=EOS,
                                 max_length=max_length)
            ended += [_check_alpha(model, h, source[b], int(lengths[b]), max_length)
                      for b, h in enumerate(hyps)]
    assert any(ended) and not all(ended)                 # both kinds of output checked


def test_beam_search_returns_the_attention_along_each_hypothesis(models):
    ended = []
    for model, source, lengths in models:
        for max_length in (3, 6):
            found = beam_search(_Predictor(model), source, lengths, bos=BOS, eos=EOS,
                                max_length=max_length, beam=4, nbest=3)
            for b, hyps in enumerate(found):
                assert len(hyps) == 3
                ended += [_check_alpha(model, h, source[b], int(lengths[b]), max_length)
                          for h in hyps]
        # A beam of one follows greedy's steps, attention included.
        one = beam_search(_Predictor(model), source, lengths, bos=BOS, eos=EOS, max_length=6,
                          beam=1)
        greedy = greedy_decode(_Predictor(model), source, lengths, bos=BOS, eos=EOS,
                               max_length=6)
        for o, g in zip(one, greedy):
            assert o[0] == g
            np.testing.assert_allclose(o[0].alpha, g.alpha, rtol=0, atol=1e-12)
    assert any(ended) and not all(ended)


def test_a_model_without_attention_returns_none():
    model = _Predictor(_untrained("none", True, 0))
    source, lengths = np.array([[3, 4, 5], [2, 0, 0]]), np.array([3, 1])
    assert all(h.alpha is None for h in greedy_decode(model, source, lengths, bos=BOS,
                                                      eos=EOS, max_length=4))
    assert all(h.alpha is None for hyps in beam_search(model, source, lengths, bos=BOS,
                                                       eos=EOS, max_length=4, beam=2, nbest=2)
               for h in hyps)


# -- evaluate --split / --beam --------------------------------------------------------------------


def _evaluate(run, checkpoint: Path, *flags: object) -> dict:
    status, out, err = run("evaluate", "--checkpoint", checkpoint, "--json", *flags)
    assert status == 0, err
    metrics = json.loads(out)
    assert {"val_loss", "wer", "per", "words", "split", "beam"} <= metrics.keys()
    assert np.isfinite(metrics["val_loss"]) and metrics["val_loss"] > 0
    assert 0.0 <= metrics["wer"] <= 1.0 and metrics["per"] >= 0.0
    return metrics


def test_evaluate_takes_the_split_and_the_beam(pairs, run_dir, checkpoint, run):
    corpus = load_pairs(str(pairs))
    test = _evaluate(run, checkpoint)
    assert (test["split"], test["beam"], test["words"]) == ("test", 5, len(corpus.test))
    dev_greedy = _evaluate(run, checkpoint, "--split", "dev", "--beam", "1")
    assert (dev_greedy["split"], dev_greedy["beam"]) == ("dev", 1)
    assert dev_greedy["words"] == len(corpus.dev)             # every dev word
    # Greedy on the dev split is what validation measured for this checkpoint (its last).
    last = [json.loads(line) for line in
            (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert dev_greedy["wer"] == last["wer"] and dev_greedy["per"] == last["per"]
    assert dev_greedy["val_loss"] == pytest.approx(last["val_loss"], rel=1e-12)
    dev_beam = _evaluate(run, checkpoint, "--split", "dev", "--beam", "5")
    assert dev_beam["val_loss"] == dev_greedy["val_loss"]     # teacher-forced: no decoding
    status, text, _ = run("evaluate", "--checkpoint", checkpoint, "--split", "dev",
                          "--beam", "1")
    assert status == 0 and text.startswith("dev: loss") and "greedy" in text


def test_evaluate_refuses_a_bad_beam_or_split_and_other_tasks_checkpoints(checkpoint, run,
                                                                          trained_lm):
    for flags, why in ((("--beam", "0"), "--beam"), (("--beam", "-2"), "--beam"),
                       (("--split", "train"), "--split")):
        assert_user_error(*run("evaluate", "--checkpoint", checkpoint, *flags)[::2], why)
    lm = trained_lm / "checkpoint.npz"
    for flags in (("--split", "dev"), ("--beam", "3")):
        assert_user_error(*run("evaluate", "--checkpoint", lm, *flags)[::2],
                          f"{flags[0]} needs a seq2seq checkpoint")
    status, out, _ = run("evaluate", "--checkpoint", lm, "--json")   # unchanged without them
    assert status == 0 and "split" not in json.loads(out)
