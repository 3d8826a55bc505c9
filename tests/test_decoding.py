"""Greedy and beam search (numpy_rnn.tasks.decoding) against exhaustive search, on a model
whose next-token distribution depends on the whole history (so a wrong reordering of the
beams' states shows), batched over sources of different lengths."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from numpy_rnn.nn import log_softmax
from numpy_rnn.tasks.decoding import beam_search, greedy_decode

BOS, EOS, V, TABLE = 1, 2, 5, 997


class HistoryModel:
    """``log_probs = log_softmax(table[code])``, ``code`` a number of the source and of every
    token so far, carried in the state (exact in float64 for these sizes)."""

    def __init__(self, seed: int) -> None:
        self.table = np.random.default_rng(seed).normal(scale=2.0, size=(TABLE, V))
        self.table[:, 0] = -30.0                        # token 0 (padding) nearly never

    def infer(self, name: str, *args):
        return getattr(self, name)(*args)

    def encode(self, source, lengths):
        code = (source.sum(axis=1) * 7 + lengths).astype(np.float64)
        memory = np.zeros((len(source), 3, 4))
        return memory, (code[None, :, None],)

    def decode_step(self, tokens, state, feed, memory, lengths):
        code = (state[0][0, :, 0] * V + tokens) % TABLE
        log_probs = log_softmax(self.table[code.astype(np.int64)], axis=-1)
        return log_probs, (code[None, :, None],), feed, None

    def log_prob(self, source, length, tokens) -> float:
        """Of the token sequence ``tokens`` (the end token included), step by step."""
        _, state = self.encode(source[None], np.array([length]))
        total, prev = 0.0, BOS
        for tok in tokens:
            lp, state, _, _ = self.decode_step(np.array([prev]), state, None, None, None)
            total += lp[0, tok]
            prev = tok
        return total


def exhaustive(model, source, length, max_length):
    """Every output of at most ``max_length`` tokens, ended or cut at max_length, by score."""
    out = []
    for n in range(max_length + 1):
        for body in itertools.product([t for t in range(V) if t != EOS], repeat=n):
            if n < max_length:
                lp = model.log_prob(source, length, [*body, EOS])
                out.append((lp / (n + 1), body, lp))
            else:
                lp = model.log_prob(source, length, list(body))
                out.append((lp / n, body, lp))
    return sorted(out, key=lambda x: -x[0])


@pytest.fixture
def batch():
    source = np.array([[3, 4, 0], [4, 4, 3], [3, 0, 0]])
    return source, np.array([2, 3, 1])


def test_a_beam_as_wide_as_the_search_finds_the_best_outputs(batch):
    model, (source, lengths) = HistoryModel(0), batch
    L = 3
    results = beam_search(model, source, lengths, bos=BOS, eos=EOS, max_length=L,
                          beam=(V - 1) ** L + 5, nbest=3)
    for b in range(len(source)):
        want = exhaustive(model, source[b], lengths[b], L)[:3]
        got = results[b]
        assert [h.tokens for h in got] == [w[1] for w in want]
        np.testing.assert_allclose([h.log_prob for h in got], [w[2] for w in want], rtol=1e-12)
        np.testing.assert_allclose([h.score for h in got], [w[0] for w in want], rtol=1e-12)


def test_a_beam_of_one_is_greedy_and_every_score_is_the_models(batch):
    source, lengths = batch
    for seed in range(5):
        model = HistoryModel(seed)
        greedy = greedy_decode(model, source, lengths, bos=BOS, eos=EOS, max_length=6)
        one = beam_search(model, source, lengths, bos=BOS, eos=EOS, max_length=6, beam=1)
        assert [g.tokens for g in greedy] == [o[0].tokens for o in one]
        np.testing.assert_allclose([g.log_prob for g in greedy],
                                   [o[0].log_prob for o in one], rtol=1e-12)
        wide = beam_search(model, source, lengths, bos=BOS, eos=EOS, max_length=6, beam=8,
                           nbest=4)
        for b, hyps in enumerate(wide):
            assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
            for h in hyps:     # what the model gives its tokens (and the end token, if any)
                ended = h.score * (len(h.tokens) + 1) == pytest.approx(h.log_prob)
                toks = [*h.tokens, EOS] if ended else list(h.tokens)
                assert h.log_prob == pytest.approx(model.log_prob(source[b], lengths[b], toks),
                                                   rel=1e-12)


def test_each_source_is_decoded_as_if_alone(batch):
    model, (source, lengths) = HistoryModel(3), batch
    together = beam_search(model, source, lengths, bos=BOS, eos=EOS, max_length=5, beam=3,
                           nbest=2)
    for b in range(len(source)):
        alone = beam_search(model, source[b:b + 1], lengths[b:b + 1], bos=BOS, eos=EOS,
                            max_length=5, beam=3, nbest=2)
        assert together[b] == alone[0]


def test_nbest_must_fit_in_the_beam(batch):
    with pytest.raises(ValueError, match="nbest"):
        beam_search(HistoryModel(0), *batch, bos=BOS, eos=EOS, max_length=3, beam=2, nbest=3)


class AttendingModel(HistoryModel):
    """HistoryModel with an attention of each step (a function of the code), float64."""

    def decode_step(self, tokens, state, feed, memory, lengths):
        log_probs, state, feed, _ = super().decode_step(tokens, state, feed, memory, lengths)
        code = state[0][0, :, 0]
        alpha = np.stack([np.cos(code + s) for s in range(memory.shape[1])], axis=1)
        return log_probs, state, feed, alpha


@pytest.mark.parametrize("max_length", [1, 4, 6])
@pytest.mark.parametrize("attending", [False, True])
def test_greedy_of_one_source_is_the_batched_greedy_row(batch, attending, max_length):
    """One source (a loop of Python numbers) decodes as its row of a batch does: tokens,
    log-probability, score and attention, ended or cut at max_length."""
    source, lengths = batch
    for seed in range(6):
        model = (AttendingModel if attending else HistoryModel)(seed)
        together = greedy_decode(model, source, lengths, bos=BOS, eos=EOS,
                                 max_length=max_length)
        for b in range(len(source)):
            alone = greedy_decode(model, source[b:b + 1], lengths[b:b + 1], bos=BOS, eos=EOS,
                                  max_length=max_length)[0]
            assert alone == together[b]
            assert (alone.log_prob, alone.score) == (together[b].log_prob, together[b].score)
            if attending:
                assert alone.alpha.dtype == np.float64
                np.testing.assert_array_equal(alone.alpha, together[b].alpha)
            else:
                assert alone.alpha is None and together[b].alpha is None
