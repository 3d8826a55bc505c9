"""The seq2seq task in both backends (issue 19): the same run through the driver, once with the
NumPy backend and once with the torch one, logs the same losses, validates alike and ends at
the same weights, for every attention score with and without input feeding; and one checkpoint
decodes (greedy, beam search, the ``translate`` command) to the same outputs in both.

The runs are small (hidden 16, batches of 8, two layers so that dropout between them applies)
over a file of made-up words whose targets are their letters reversed and spelled out, with
plain random batches (no length buckets), so every batch pads sources and targets of mixed
lengths."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import read_metrics

from numpy_rnn.driver.checkpoint import backend_from_checkpoint, load_checkpoint, read_checkpoint
from numpy_rnn.driver.cli import main
from numpy_rnn.driver.train import TrainConfig, resume_config, train
from numpy_rnn.tasks import get_task
from numpy_rnn.tasks.decoding import Hypothesis, beam_search, greedy_decode
from numpy_rnn.tasks.seq2seq import BOS, EOS, MAX_OUTPUT, Seq2SeqConfig, encode_sources

pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: float64: both backends round at 1.1e-16 and differ only in the order of their sums; over
#: 50 Adam steps the losses agree to ~5e-16 and the weights to ~1e-13 (measured), so these
#: leave three orders of magnitude of margin and still catch any real difference (>= 1e-4).
LOSS_RTOL = 1e-10
PARAM_ATOL = 1e-9
LOGP_ATOL = 1e-10


def write_pairs(path: Path, n: int = 400) -> list[str]:
    """``n`` made-up words of 2 to 6 letters, each with its letters reversed, upper-cased and
    spaced as the target ("abc" -> "C B A"); returns the words."""
    rng = random.Random(0)
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice("abcdefg") for _ in range(rng.randint(2, 6))))
    path.write_text("".join(f"{w}\t{' '.join(reversed(w.upper()))}\n" for w in sorted(words)),
                    encoding="utf-8")
    return sorted(words)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.tsv"
    write_pairs(path)
    return path


@pytest.fixture(scope="module", autouse=True)
def no_plots() -> Iterator[None]:
    """Training draws no loss curves (matplotlib alone would cost seconds)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
        yield


def settings(pairs: Path, out: Path, backend: str, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        data=str(pairs), hidden_size=16, num_layers=2, dropout=0.2, batch_size=8,
        length_buckets=0, steps=50, eval_every=25, sample_every=1000, num_eval_samples=0,
        dtype="float64", lr=0.01, seed=7, out=str(out), quiet=True)
    return TrainConfig.for_task("seq2seq", backend=backend, **{**base, **kw})


def train_both(pairs: Path, root: Path, **kw: Any) -> tuple[Path, Path]:
    """The same run in each backend: its output directories (numpy's, torch's)."""
    outs = root / "numpy", root / "torch"
    for out, backend in zip(outs, ("numpy", "torch")):
        summary = train(settings(pairs, out, backend, **kw))
        assert summary.step == kw.get("steps", 50)
    return outs


def assert_same_runs(a: Path, b: Path, *, loss_rtol: float = LOSS_RTOL,
                     param_atol: float = PARAM_ATOL, dtype: str = "float64") -> None:
    """Every logged step's loss and gradient norm, every validation's metrics (the error rates
    exactly), and the final weights of the two runs agree."""
    ma, mb = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == list(range(1, len(ma) + 1))
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose([r[key] for r in mb], [r[key] for r in ma], rtol=loss_rtol,
                                   atol=0, err_msg=key)
    va = [r for r in ma if "val_loss" in r]
    vb = [r for r in mb if "val_loss" in r]
    assert va and [r["step"] for r in va] == [r["step"] for r in vb]
    for ra, rb in zip(va, vb):
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=loss_rtol, abs=0)
        assert (rb["wer"], rb["per"], rb["words"]) == (ra["wer"], ra["per"], ra["words"])
    wa, meta_a = load_checkpoint(a / "checkpoint.npz")
    wb, meta_b = load_checkpoint(b / "checkpoint.npz")
    assert (meta_a["backend"], meta_b["backend"]) == ("numpy", "torch")
    assert meta_a["step"] == meta_b["step"] == len(ma)
    assert sorted(wa) == sorted(wb)
    for name in wa:
        assert wa[name].dtype == wb[name].dtype == np.dtype(dtype), name
        scale = max(1.0, float(np.max(np.abs(wa[name]))))
        np.testing.assert_allclose(wb[name], wa[name], rtol=0, atol=param_atol * scale,
                                   err_msg=name)


def predictors(checkpoint: Path) -> list[Any]:
    weights, meta = load_checkpoint(checkpoint)
    return [backend_from_checkpoint(weights, meta, b) for b in ("numpy", "torch")]


def sources(words: list[str], checkpoint: Path) -> tuple[np.ndarray, np.ndarray]:
    return encode_sources([tuple(w) for w in words],
                          read_checkpoint(checkpoint).record.vocabularies["source"])


def assert_same_hypotheses(got: list[Hypothesis], want: list[Hypothesis]) -> None:
    assert [h.tokens for h in got] == [h.tokens for h in want]
    np.testing.assert_allclose([h.log_prob for h in got], [h.log_prob for h in want], rtol=0,
                               atol=LOGP_ATOL)
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=0,
                               atol=LOGP_ATOL)


def assert_same_decoding(checkpoint: Path, words: list[str],
                         beams: tuple[tuple[int, int], ...]) -> None:
    """Greedy decoding and beam search of ``(beam, nbest)`` each give the same tokens and
    log-probabilities through either backend."""
    source, lengths = sources(words, checkpoint)
    kw = dict(bos=BOS, eos=EOS, max_length=MAX_OUTPUT)
    np_model, torch_model = predictors(checkpoint)
    assert_same_hypotheses(greedy_decode(torch_model, source, lengths, **kw),
                           greedy_decode(np_model, source, lengths, **kw))
    for beam, nbest in beams:
        got = beam_search(torch_model, source, lengths, beam=beam, nbest=nbest, **kw)
        want = beam_search(np_model, source, lengths, beam=beam, nbest=nbest, **kw)
        assert [len(h) for h in want] == [nbest] * len(words)
        for g, w in zip(got, want):
            assert_same_hypotheses(g, w)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_runs(pairs, tmp_path_factory) -> tuple[Path, Path]:
    """The default model (LSTM, general attention, input feeding), 50 steps in each backend."""
    return train_both(pairs, tmp_path_factory.mktemp("default"))


def test_the_runs_drop_out_and_read_batches_of_uneven_lengths(pairs):
    config = settings(pairs, Path("unused"), "numpy")
    task = get_task("seq2seq")
    corpus = task.load(config.data)
    model_config = task.model_config(config, corpus)
    assert isinstance(model_config, Seq2SeqConfig) and model_config.dropout > 0
    batch = next(task.batches(config, corpus))
    assert task.dropout_masks(model_config, batch)          # masks between the two layers
    inputs = batch.inputs
    assert len(set(inputs.source_lengths.tolist())) > 1     # padded sources
    target_lengths = (np.asarray(batch.targets) >= 0).sum(axis=1)
    assert len(set(target_lengths.tolist())) > 1            # and padded targets


def test_the_default_model_takes_the_same_50_steps_in_both_backends(default_runs):
    assert_same_runs(*default_runs)
    records = read_metrics(default_runs[0])
    assert records[-1]["loss"] < 0.9 * records[0]["loss"]   # it learns: the steps mean something


@pytest.mark.parametrize("attention,feeding,cell", [
    ("general", False, "lstm"),
    ("additive", True, "lstm"),
    ("additive", False, "lstm"),
    ("dot", True, "lstm"),
    ("dot", False, "lstm"),
    ("none", True, "lstm"),
    ("none", False, "lstm"),
    ("general", True, "gru"),
    ("additive", False, "rnn"),
])
def test_every_decoder_takes_the_same_steps_and_decodes_alike(pairs, tmp_path, attention,
                                                               feeding, cell):
    steps = 15 if cell == "lstm" else 10
    a, b = train_both(pairs, tmp_path, attention=attention, input_feeding=feeding, cell=cell,
                      steps=steps, eval_every=steps)
    assert_same_runs(a, b)
    assert_same_decoding(a / "checkpoint.npz", ["abc", "gfedcba", "a", "bbbbbb"], ((3, 3),))


def test_float32_runs_agree_to_float32_rounding(pairs, tmp_path):
    # float32 rounds at 6e-8 and the two backends sum in different orders (BLAS, autograd), so
    # the runs part at the last bits from the first step and the difference is carried (not
    # amplified much) through 30 Adam steps: measured, the losses agree to ~3e-7 relative and
    # the weights to ~2e-6. 1e-5 and 1e-4 leave a margin of 30-50x, and a real difference (a
    # wrong term, mask or Adam step of lr = 1e-2) is larger by orders of magnitude still. The
    # error rates of greedy decoding are still compared exactly: an argmax flips only where two
    # log-probabilities lie within float32 rounding, which none of these few words comes near.
    a, b = train_both(pairs, tmp_path, dtype="float32", steps=30, eval_every=15)
    assert_same_runs(a, b, loss_rtol=1e-5, param_atol=1e-4, dtype="float32")


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def decode_words_of(pairs: Path) -> list[str]:
    """A hundred of the file's words, every fourth, and a few it does not have: one letter,
    and longer than any (the beam then runs to ``max_length`` for some)."""
    words = [line.split("\t")[0] for line in pairs.read_text(encoding="utf-8").splitlines()]
    return [*words[::4], "a", "g", "abcdefgabcdefg", "gggggggggggggggggggggggg"]


def test_greedy_and_beam_search_decode_alike_in_both_backends(pairs, default_runs):
    checkpoint = default_runs[0] / "checkpoint.npz"
    words = decode_words_of(pairs)
    # One step by hand first: the encoder's memory and states, and every output of a decoder
    # step (log-probabilities, state, attentional state, attention weights).
    source, lengths = sources(words, checkpoint)
    np_model, torch_model = predictors(checkpoint)
    enc = [m.infer("encode", source, lengths) for m in (np_model, torch_model)]
    for x, y in zip(enc[0][1], enc[1][1]):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(enc[1][0], enc[0][0], rtol=0, atol=1e-12)
    memory, state = enc[0]
    tokens = np.full(len(words), BOS, dtype=np.int64)
    feed = np.zeros((len(words), memory.shape[-1]))
    for _ in range(2):
        out = [m.infer("decode_step", tokens, state, feed, memory, lengths)
               for m in (np_model, torch_model)]
        np.testing.assert_allclose(out[1][0], out[0][0], rtol=0, atol=LOGP_ATOL)
        for x, y in zip(out[0][1], out[1][1]):
            np.testing.assert_allclose(y, x, rtol=0, atol=1e-12)
        np.testing.assert_allclose(out[1][2], out[0][2], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out[1][3], out[0][3], rtol=0, atol=1e-12)
        tokens, state, feed = np.argmax(out[0][0], axis=1), out[0][1], out[0][2]
    # The searches.
    assert_same_decoding(checkpoint, words, ((3, 3), (5, 3), (5, 1)))


def test_translate_prints_the_same_outputs_with_either_backend(pairs, default_runs, capsys):
    checkpoint = str(default_runs[0] / "checkpoint.npz")
    words = decode_words_of(pairs)[:40]
    capsys.readouterr()
    for flags in (["--beam", "1"], ["--beam", "3", "--nbest", "3"],
                  ["--beam", "5", "--nbest", "3"]):
        rows = []
        for backend in ("numpy", "torch"):
            assert main(["translate", "--checkpoint", checkpoint, "--backend", backend,
                         "--json", *flags, *words]) == 0
            rows.append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
        assert [r["source"] for r in rows[0]] == [r["source"] for r in rows[1]] == words
        for a, b in zip(*rows):
            assert [o["tokens"] for o in a["outputs"]] == [o["tokens"] for o in b["outputs"]]
            np.testing.assert_allclose([o["log_prob"] for o in b["outputs"]],
                                       [o["log_prob"] for o in a["outputs"]], rtol=0,
                                       atol=LOGP_ATOL)
        assert {len(r["outputs"]) for r in rows[0]} == {int(flags[-1]) if "--nbest" in flags
                                                        else 1}


def test_a_run_resumed_in_the_other_backend_continues_it_exactly(pairs, tmp_path,
                                                                 default_runs):
    # The checkpoint carries the weights, Adam's moments, the batch order and the dropout
    # generator across the backends: 25 torch steps, then 25 numpy ones, are the numpy run.
    train(settings(pairs, tmp_path / "run", "torch", steps=25))
    train(resume_config(tmp_path / "run", {"steps": 50, "backend": "numpy"}))
    np.testing.assert_allclose(
        [r["loss"] for r in read_metrics(tmp_path / "run")],
        [r["loss"] for r in read_metrics(default_runs[0])], rtol=LOSS_RTOL, atol=0)
    want, _ = load_checkpoint(default_runs[0] / "checkpoint.npz")
    got, _ = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    for name in want:
        scale = max(1.0, float(np.max(np.abs(want[name]))))
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=PARAM_ATOL * scale,
                                   err_msg=name)
