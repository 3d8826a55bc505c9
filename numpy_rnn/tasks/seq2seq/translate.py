"""From sources to outputs: decoding words (greedy or beam search) and scoring them (loss,
WER, PER)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..base import Predictor
from ..corpus import Vocabulary
from ..decoding import Hypothesis, beam_search, greedy_decode
from ..metrics import error_rates
from ..pairs import (
    Group,
    training_pairs,
)
from .data import SPECIALS, PairData, encode_sources, encode_targets, target_index
from .model import BOS, EOS, Seq2SeqInputs

__all__ = ["CHUNK", "MAX_OUTPUT", "decode_hypotheses", "decode_words", "score_groups"]

#: The longest output decoding writes, in tokens (CMUdict's longest pronunciation has 20).
MAX_OUTPUT = 40
#: Rows per inference call in validation and evaluation.
CHUNK = 256


def decode_hypotheses(model: Predictor, vocab: Vocabulary, words: Sequence[Sequence[str]],
                      beam: int = 1, nbest: int = 1) -> list[list[Hypothesis]]:
    """The ``nbest`` :class:`~numpy_rnn.tasks.decoding.Hypothesis` of each source (target ids,
    log-probability, score, and the attention ``alpha (n, S)`` of each step over the ``S``
    positions of its chunk, 0 past the source's length; None without attention), greedy when
    ``beam`` is 1, else beam search; in chunks of :data:`CHUNK` sources."""
    out: list[list[Hypothesis]] = []
    for lo in range(0, len(words), CHUNK):
        source, lengths = encode_sources(words[lo:lo + CHUNK], vocab)
        if beam == 1:
            out.extend([h] for h in greedy_decode(model, source, lengths, bos=BOS, eos=EOS,
                                                  max_length=MAX_OUTPUT))
        else:
            out.extend(beam_search(model, source, lengths, bos=BOS, eos=EOS,
                                   max_length=MAX_OUTPUT, beam=beam, nbest=nbest))
    return out


def decode_words(model: Predictor, vocab: Vocabulary, targets: Sequence[str],
                 words: Sequence[Sequence[str]], beam: int = 1, nbest: int = 1
                 ) -> list[list[tuple[tuple[str, ...], float]]]:
    """The ``nbest`` outputs (target tokens, log-probability) of each source, greedy when
    ``beam`` is 1, else beam search; in chunks of :data:`CHUNK` sources."""
    return [[(_target_tokens(h.tokens, targets), h.log_prob) for h in hyps]
            for hyps in decode_hypotheses(model, vocab, words, beam=beam, nbest=nbest)]


def _target_tokens(ids: Sequence[int], targets: Sequence[str]) -> tuple[str, ...]:
    """The target tokens of the ids ``ids`` (the special ones left out)."""
    return tuple(targets[t - SPECIALS] for t in ids if t >= SPECIALS)


def score_groups(model: Predictor, data: PairData, groups: Sequence[Group], *, beam: int = 1
                 ) -> dict[str, float]:
    """Teacher-forced loss (nats per target token, every reference a pair) and the free-running
    WER and PER of ``groups`` (see :func:`numpy_rnn.tasks.metrics.error_rates`)."""
    index = target_index(data.target_vocab)
    pairs = training_pairs(groups)
    total, count = 0.0, 0
    for lo in range(0, len(pairs), CHUNK):
        chunk = pairs[lo:lo + CHUNK]
        source, lengths = encode_sources([s for s, _ in chunk], data.source_vocab)
        target_in, targets = encode_targets([t for _, t in chunk], index)
        loss_sum, tokens = model.infer("score", Seq2SeqInputs(source, lengths, target_in),
                                       targets)
        total += float(np.sum(loss_sum))
        count += int(np.sum(tokens))
    hyps = decode_words(model, data.source_vocab, data.target_vocab, [s for s, _ in groups],
                        beam=beam)
    rates = error_rates([h[0][0] for h in hyps], [refs for _, refs in groups])
    return {"val_loss": total / count, "wer": rates.wer, "per": rates.per,
            "words": float(rates.words)}
