"""The seq2seq task through the driver and the command line, on a small file of pairs (each
word's letters reversed and spelled out): it trains and learns, resumes exactly, splits into
micro-batches equal to the plain step, takes the same steps in both backends, evaluates and
translates with the same outputs in both, and has its own flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import SEQ2SEQ_TINY, write_reversed_pairs

from numpy_rnn.driver.cli import main
from numpy_rnn.tasks.pairs import split_of

TINY = SEQ2SEQ_TINY


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    path = write_reversed_pairs(tmp_path_factory.mktemp("pairs"))
    words = [line.split("\t")[0] for line in path.read_text().splitlines()]
    assert {split_of(w) for w in words} == {"train", "dev", "test"}
    return path


def train(pairs: Path, out: Path, *flags: str) -> int:
    return main(["train", "--task", "seq2seq", "--data", str(pairs), "--out", str(out), *TINY,
                 *flags])


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_it_learns_resumes_exactly_and_evaluates_alike_in_both_backends(pairs, tmp_path,
                                                                       capsys):
    assert train(pairs, tmp_path / "a", "--steps", "60", "--eval-every", "30") == 0
    records = metrics(tmp_path / "a")
    assert records[-1]["loss"] < 0.7 * records[0]["loss"]
    assert {"val_loss", "wer", "per"} <= records[-1].keys()
    assert train(pairs, tmp_path / "b", "--steps", "30", "--eval-every", "30") == 0
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--steps", "60",
                 "--quiet"]) == 0
    assert [r["loss"] for r in metrics(tmp_path / "b")] == [r["loss"] for r in records]

    ckpt = str(tmp_path / "a" / "checkpoint.npz")
    capsys.readouterr()
    results = []
    for backend in ("numpy", "torch"):
        assert main(["evaluate", "--checkpoint", ckpt, "--json", "--backend", backend]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["wer"] == results[1]["wer"] and results[0]["per"] == results[1]["per"]
    assert results[0]["val_loss"] == pytest.approx(results[1]["val_loss"], rel=1e-10)

    outputs = []
    for backend in ("numpy", "torch"):
        assert main(["translate", "--checkpoint", ckpt, "--backend", backend, "--beam", "3",
                     "--nbest", "2", "abc", "gfed"]) == 0
        outputs.append(capsys.readouterr().out.splitlines())
    assert len(outputs[0]) == 4 and [o.split("\t")[:2] for o in outputs[0]] == \
        [o.split("\t")[:2] for o in outputs[1]]
    assert main(["translate", "--checkpoint", ckpt, "xyz"]) == 2
    assert "never seen" in capsys.readouterr().err


def test_micro_batches_and_the_torch_backend_take_the_plain_step(pairs, tmp_path):
    flags = ("--steps", "6", "--eval-every", "6", "--num-layers", "2", "--dropout", "0.2")
    assert train(pairs, tmp_path / "plain", *flags) == 0
    assert train(pairs, tmp_path / "accum", *flags, "--grad-accum", "2") == 0
    assert train(pairs, tmp_path / "torch", *flags, "--backend", "torch") == 0
    plain = [r["loss"] for r in metrics(tmp_path / "plain")]
    for other in ("accum", "torch"):
        np.testing.assert_allclose([r["loss"] for r in metrics(tmp_path / other)], plain,
                                   rtol=1e-10, atol=0)


@pytest.mark.parametrize("attention", ["additive", "dot", "none"])
def test_every_attention_and_the_plain_decoder_train(pairs, tmp_path, attention):
    assert train(pairs, tmp_path / "run", "--steps", "3", "--eval-every", "3", "--attention",
                 attention, "--no-input-feeding") == 0


def test_its_flags_are_its_own(capsys):
    assert main(["train", "--task", "seq2seq", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--attention {additive,general,dot,none}" in text and "--input-feeding" in text
    assert "word pairs per step" in text
    assert main(["train", "--task", "lm", "--attention", "dot", "--out", "x"]) == 2
    assert "does not apply to --task lm" in capsys.readouterr().err


def test_translate_writes_json_and_refuses_bad_words(pairs, tmp_path, capsys):
    assert train(pairs, tmp_path / "run", "--steps", "2", "--eval-every", "2") == 0
    ckpt = str(tmp_path / "run" / "checkpoint.npz")
    capsys.readouterr()
    assert main(["translate", "--checkpoint", ckpt, "--json", "--beam", "2", "--nbest", "2",
                 "abc"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["source"] == "abc" and len(row["outputs"]) == 2
    assert all(isinstance(o["log_prob"], float) for o in row["outputs"])
    assert row["outputs"][0]["score"] >= row["outputs"][1]["score"]      # ranked by the score
    for bad, why in (([""], "no sources to translate"), (["--beam", "0", "ab"], "--beam"),
                     (["--nbest", "3", "--beam", "2", "ab"], "--nbest")):
        assert main(["translate", "--checkpoint", ckpt, *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err


def test_a_named_corpus_is_recorded_by_name(monkeypatch, tmp_path):
    from numpy_rnn.driver.train import _data_source
    from numpy_rnn.tasks import get_task

    monkeypatch.chdir(tmp_path)
    assert _data_source("cmudict", get_task("seq2seq")) == "cmudict"
    assert _data_source("plants", get_task("lm")) == "plants"
    assert _data_source("words.tsv", get_task("seq2seq")) == str(tmp_path / "words.tsv")


def test_decode_steps_reuse_the_keys_only_while_memory_and_weights_are_the_same():
    """The keys of a memory are computed at its first step and reused while the steps pass
    the same memory and lengths and the weights' version stays (load_state_dict and
    weights_changed move it); an in-place change of the weights is seen by the next memory."""
    from numpy_rnn.tasks.seq2seq import BOS, Seq2Seq, Seq2SeqConfig

    model = Seq2Seq(Seq2SeqConfig(vocab_size=6, target_vocab_size=7, hidden_size=8,
                                  num_layers=1, dtype="float64", attention="general"), seed=1)
    source, lengths = np.array([[3, 4, 5], [2, 0, 0]]), np.array([3, 1])
    memory, state = model.encode(source, lengths)
    tokens, feed = np.full(2, BOS), np.zeros((2, 8))

    def step(over: np.ndarray) -> np.ndarray:
        fresh = Seq2Seq(model.config, seed=1)
        fresh.load_state_dict(model.state_dict())          # no cache: computes the keys
        want = fresh.decode_step(tokens, state, feed, over.copy(), lengths)[0]
        got = model.decode_step(tokens, state, feed, over, lengths)[0]
        np.testing.assert_array_equal(got, want)
        return got

    first = step(memory)
    np.testing.assert_array_equal(step(memory), first)     # the cached keys
    model.params["attention.key.weight"] *= 1.5            # an optimizer step, in place
    assert not np.array_equal(step(memory.copy()), first)  # the next memory: new keys
    other = memory.copy()
    before = step(other)                                   # a session over `other`
    model.params["attention.key.weight"] *= 1.5
    model.weights_changed()                                # or load_state_dict
    assert not np.array_equal(step(other), before)         # the same memory: new keys too


def _batches(pairs: Path, buckets: int, seed: int = 3):
    from numpy_rnn.tasks.seq2seq import PairBatches, Seq2SeqTask
    return PairBatches(Seq2SeqTask().load(str(pairs)), 8, seed, length_buckets=buckets)


@pytest.mark.parametrize("buckets", [0, 1, 4])
def test_an_epoch_of_batches_reads_each_pair_once(pairs, buckets):
    b = _batches(pairs, buckets)
    n, B = len(b.pairs), b.batch_size
    picked = np.concatenate([b.order[i:i + B] for i in range(0, n - n % B, B)])
    assert len(set(picked.tolist())) == len(picked) == n - n % B
    assert sorted(b.order.tolist()) == list(range(n))
    if buckets:    # each batch is a run of its pool sorted by length
        for i in range(0, n - n % B, B):
            assert np.all(np.diff(b.lengths[b.order[i:i + B], 0]) >= 0)


def test_length_buckets_pad_less_and_resume_where_they_stopped(pairs):
    def padded(buckets: int) -> float:
        b = _batches(pairs, buckets)
        return float(np.mean([next(b).inputs.source.shape[1] for _ in range(60)]))

    assert padded(8) < 0.9 * padded(0)
    a = _batches(pairs, 4)
    for _ in range(70):     # into the second epoch
        next(a)
    state = json.loads(json.dumps(a.state_dict()))
    b = _batches(pairs, 4, seed=99)
    b.load_state_dict(state)
    for _ in range(60):     # and on into the third, where each draws its next epoch itself
        x, y = next(a), next(b)
        assert np.array_equal(x.inputs.source, y.inputs.source)
        assert np.array_equal(x.targets, y.targets)


def test_without_buckets_the_order_is_the_plain_permutation(pairs):
    # Runs saved before --length-buckets existed resume with 0 and must draw what they drew.
    b = _batches(pairs, 0, seed=5)
    rng = np.random.default_rng([5, 0x733273])
    assert np.array_equal(b.order, rng.permutation(len(b.pairs)))


def test_length_buckets_are_checked_and_kept_on_resume(pairs, tmp_path, capsys):
    assert train(pairs, tmp_path / "a", "--steps", "2", "--length-buckets", "-1") == 2
    assert "--length-buckets" in capsys.readouterr().err
    assert train(pairs, tmp_path / "b", "--steps", "2", "--eval-every", "2",
                 "--length-buckets", "3") == 0
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--steps", "4",
                 "--length-buckets", "5", "--quiet"]) != 0
    assert "length_buckets 3" in capsys.readouterr().err
