"""Tests for numpy_rnn.tasks.sampling: the filters, inverse-CDF drawing, the stop rule, primes,
labels, and the same text from both backends given the same checkpoint and seed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from numpy_rnn.driver.backend import NumpyBackend, OptimConfig
from numpy_rnn.driver.checkpoint import (
    backend_from_checkpoint,
    load_checkpoint,
    make_meta,
    save_checkpoint,
)
from numpy_rnn.tasks import get_task
from numpy_rnn.tasks.corpus import Corpus, Vocabulary
from numpy_rnn.tasks.lm import CharRNN
from numpy_rnn.tasks.model import ModelConfig
from numpy_rnn.tasks.sampling import draw, filter_logits, label, labels, sample

VOCAB = Vocabulary.from_text("\n abcdefghijklmnop")


def make_backend(dtype: str = "float64", seed: int = 3, cell: str = "lstm") -> NumpyBackend:
    config = ModelConfig(vocab_size=len(VOCAB), hidden_size=12, num_layers=2, cell=cell,
                         dtype=dtype)
    backend = NumpyBackend(config, OptimConfig())
    weights = CharRNN(config, seed=seed).state_dict()
    # A larger newline bias makes names end within a few dozen characters, as a trained model's
    # do, so the stop rule is exercised.
    weights["decoder.bias"][VOCAB.chars.index("\n")] += 2.0
    backend.load_state_dict(weights)
    return backend


@pytest.fixture(scope="module")
def backend() -> NumpyBackend:
    return make_backend()


# --------------------------------------------------------------------------------------------
# Filters and drawing
# --------------------------------------------------------------------------------------------


def test_filter_without_options_is_the_softmax():
    logits = np.array([[1.0, 2.0, 3.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    p = filter_logits(logits)
    want = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, want, rtol=1e-14)


def test_temperature_sharpens_and_flattens():
    logits = np.array([[1.0, 2.0, 3.0]])
    cold, warm = filter_logits(logits, temperature=0.5), filter_logits(logits, temperature=2.0)
    base = filter_logits(logits)
    assert cold[0, 2] > base[0, 2] > warm[0, 2]
    np.testing.assert_allclose(cold, filter_logits(logits * 2), rtol=1e-14)


def test_top_k_keeps_the_k_most_likely():
    logits = np.array([[0.1, 3.0, 2.0, -1.0, 2.5]])
    p = filter_logits(logits, top_k=2)
    assert set(np.flatnonzero(p[0])) == {1, 4}
    np.testing.assert_allclose(p.sum(), 1.0)
    np.testing.assert_allclose(filter_logits(logits, top_k=99), filter_logits(logits))


def test_top_p_keeps_the_smallest_nucleus():
    probs = np.array([[0.05, 0.5, 0.3, 0.15]])
    logits = np.log(probs)
    assert set(np.flatnonzero(filter_logits(logits, top_p=0.5)[0])) == {1}
    assert set(np.flatnonzero(filter_logits(logits, top_p=0.7)[0])) == {1, 2}
    assert set(np.flatnonzero(filter_logits(logits, top_p=0.81)[0])) == {1, 2, 3}
    assert set(np.flatnonzero(filter_logits(logits, top_p=0.01)[0])) == {1}   # never empty
    np.testing.assert_allclose(filter_logits(logits, top_p=0.7)[0, [1, 2]], [0.625, 0.375])
    np.testing.assert_allclose(filter_logits(logits, top_p=1.0), probs, rtol=1e-12)


@pytest.mark.parametrize("kw, match", [
    (dict(temperature=0.0), "temperature"), (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("inf")), "temperature"), (dict(top_k=0), "top-k"),
    (dict(top_p=0.0), "top-p"), (dict(top_p=1.5), "top-p"), (dict(top_p=-0.1), "top-p"),
])
def test_bad_sampling_options_are_refused(backend, kw, match):
    with pytest.raises(ValueError, match=match):
        filter_logits(np.zeros((1, 3)), **kw)
    with pytest.raises(ValueError, match=match):
        sample(backend, VOCAB, 2, np.random.default_rng(0), **kw)


def test_draw_uses_one_uniform_per_row_and_never_a_zero_probability():
    probs = np.array([[0.0, 0.5, 0.0, 0.5], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    rng = np.random.default_rng(5)
    picks = np.array([draw(probs, rng) for _ in range(2000)])
    assert set(picks[:, 0]) == {1, 3} and set(picks[:, 1]) == {0} and set(picks[:, 2]) == {3}
    assert abs((picks[:, 0] == 1).mean() - 0.5) < 0.05
    # exactly B uniforms per call: the generator ends where 2000 * 3 draws leave it
    ref = np.random.default_rng(5)
    ref.random(2000 * 3)
    assert rng.random() == ref.random()


def test_draw_follows_the_distribution():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    idx = draw(np.tile(p, (40_000, 1)), np.random.default_rng(0))
    freq = np.bincount(idx, minlength=4) / idx.size
    np.testing.assert_allclose(freq, p, atol=0.01)


# --------------------------------------------------------------------------------------------
# sample()
# --------------------------------------------------------------------------------------------


def test_names_stop_at_the_newline_and_respect_max_length(backend):
    names = sample(backend, VOCAB, 16, np.random.default_rng(0), max_length=30)
    assert len(names) == 16
    assert all("\n" not in n and len(n) <= 30 for n in names)
    assert any(len(n) < 30 for n in names)


def test_length_mode_generates_exactly_max_length_characters(backend):
    texts = sample(backend, VOCAB, 3, np.random.default_rng(0), max_length=50,
                   stop_at_newline=False)
    assert [len(t) for t in texts] == [50, 50, 50]
    assert any("\n" in t for t in texts)    # newlines are text here, not the end


def test_same_seed_same_samples_other_seed_other_samples(backend):
    a = sample(backend, VOCAB, 8, np.random.default_rng(11), max_length=40)
    b = sample(backend, VOCAB, 8, np.random.default_rng(11), max_length=40)
    c = sample(backend, VOCAB, 8, np.random.default_rng(12), max_length=40)
    assert a == b and a != c


def test_prime_text_starts_every_sample(backend):
    names = sample(backend, VOCAB, 5, np.random.default_rng(0), prime="abc", max_length=20)
    assert all(n.startswith("abc") for n in names)
    # only the text after the prime's last newline is part of the sample
    names = sample(backend, VOCAB, 5, np.random.default_rng(0), prime="dog\nca", max_length=20)
    assert all(n.startswith("ca") for n in names)
    texts = sample(backend, VOCAB, 2, np.random.default_rng(0), prime="ab", max_length=5,
                   stop_at_newline=False)
    assert all(t.startswith("ab") and len(t) == 7 for t in texts)


def test_prime_is_conditioned_as_one_stream(backend):
    # In length mode the prime is used as given: the first character drawn must be the one
    # the model's logits after "abc" and the same uniform give.
    rng = np.random.default_rng(3)
    got = sample(backend, VOCAB, 1, rng, prime="abc", max_length=1, stop_at_newline=False)
    logits, _ = backend.logits(VOCAB.encode("abc")[None, :], None)
    p = filter_logits(logits[:, -1, :])
    want = VOCAB.chars[int(draw(p, np.random.default_rng(3))[0])]
    assert got == ["abc" + want]


def test_prime_outside_the_vocabulary_is_refused(backend):
    with pytest.raises(ValueError, match=r"prime.*not in the vocabulary.*'Z'"):
        sample(backend, VOCAB, 2, np.random.default_rng(0), prime="abZ")
    with pytest.raises(ValueError, match="prime"):
        sample(backend, VOCAB, 2, np.random.default_rng(0), prime="")


def test_newline_mode_needs_a_newline_in_the_vocabulary():
    vocab = Vocabulary.from_text("abc")
    config = ModelConfig(vocab_size=3, hidden_size=4, num_layers=1)
    be = NumpyBackend(config, OptimConfig())
    with pytest.raises(ValueError, match="newline"):
        sample(be, vocab, 1, np.random.default_rng(0), prime="a")
    assert len(sample(be, vocab, 1, np.random.default_rng(0), prime="a", max_length=4,
                      stop_at_newline=False)[0]) == 5


def test_top_k_one_is_greedy(backend):
    names = sample(backend, VOCAB, 4, np.random.default_rng(0), top_k=1, max_length=20)
    assert len(set(names)) == 1


def test_gru_and_rnn_models_sample_too():
    for cell in ("gru", "rnn"):
        be = make_backend(cell=cell)
        assert len(sample(be, VOCAB, 3, np.random.default_rng(0), max_length=10)) == 3


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def test_labels_say_train_val_or_new():
    corpus = Corpus(text="", train_text="rosa\nabies\n", val_text="pinus\n",
                    names=["rosa", "abies", "pinus"], train_names=["rosa", "abies"],
                    val_names=["pinus"], vocab=VOCAB, source=Path("x"))
    assert labels(["rosa", "pinus", "rosaceae", ""], corpus) == ["train", "val", "new", "new"]
    assert label("abies", corpus) == "train"
    text = Corpus(text="", train_text="one line\nanother\n", val_text="last one\n", names=None,
                  train_names=None, val_names=None, vocab=VOCAB, source=Path("y"))
    assert labels(["another", "last one", "x"], text) == ["train", "val", "new"]


# --------------------------------------------------------------------------------------------
# Both backends: same checkpoint, same seed, same text
# --------------------------------------------------------------------------------------------


def test_both_backends_write_the_same_text_from_one_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    try:
        import torch_ref.backend  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"torch_ref.backend not importable: {exc}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        be = make_backend()
        path = save_checkpoint(tmp_path / "c.npz", be.state_dict(),
                               make_meta(get_task("lm"), be.config,
                                         SimpleNamespace(vocab=VOCAB), step=0, source="plants"))
        weights, meta = load_checkpoint(path)
        out = {}
        for name in ("numpy", "torch"):
            model = backend_from_checkpoint(weights, meta, name)
            out[name] = (
                sample(model, VOCAB, 12, np.random.default_rng(7), max_length=40),
                sample(model, VOCAB, 3, np.random.default_rng(8), temperature=0.8, top_k=5,
                       top_p=0.9, prime="ab", max_length=30),
                sample(model, VOCAB, 2, np.random.default_rng(9), max_length=60,
                       stop_at_newline=False),
            )
        assert out["numpy"] == out["torch"]
    finally:
        torch.set_num_threads(threads)
