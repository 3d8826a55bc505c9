"""From sources to outputs: decoding words (greedy or beam search) and scoring them (loss,
WER, PER), and :class:`Translator`, a trained model's ``translate``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from ..base import Predictor, TrainedModel
from ..corpus import TokenVocabulary, Vocabulary
from ..decoding import Hypothesis, beam_search, greedy_decode
from ..metrics import error_rates
from ..pairs import (
    Group,
    training_pairs,
)
from .data import (
    CMUDICT,
    CMUDICT_STRESS,
    SPECIALS,
    PairData,
    encode_sources,
    encode_targets,
    target_index,
)
from .model import BOS, EOS, PAD, Seq2SeqConfig, Seq2SeqInputs
from .sizes import decoding_estimate

__all__ = ["CHUNK", "MAX_OUTPUT", "Translator", "decode_hypotheses", "decode_words",
           "score_groups"]

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
            "words": int(rates.words)}


class Translator(TrainedModel):
    """A trained sequence-to-sequence model, ready to translate (a CMUdict model: spelling to
    pronunciation)::

        g2p = numpy_rnn.load("runs/g2p/best.npz")
        g2p.translate("Hello")            # its phonemes, a list of strings: HH EH L OW
        g2p.translate(["read", "live"], beam=5, nbest=2)
        # for each word its 2 best pronunciations, (phonemes, score) pairs, best first

    A source is read as the model was trained: a model of CMUdict lower-cases it (its words
    were), then each source is cut into its characters, or split on whitespace for a model of
    words (``--source-tokens words``). :meth:`tokens` says what is wrong with a source the
    model cannot read; :meth:`hypotheses` gives every output's log-probability, score and
    attention.
    """

    @property
    def source_vocab(self) -> Vocabulary:
        """The source tokens the model reads (index 0, padding, is none of them)."""
        vocab = self.vocabularies["source"]
        assert isinstance(vocab, Vocabulary)
        return vocab

    @property
    def target_vocab(self) -> tuple[str, ...]:
        """The target tokens the model writes."""
        target = self.vocabularies["target"]
        assert isinstance(target, tuple)
        return target

    @property
    def words(self) -> bool:
        """Whether sources are read as words (split on whitespace), not characters."""
        return isinstance(self.source_vocab, TokenVocabulary)

    @property
    def lowercase(self) -> bool:
        """Whether sources are lower-cased first (a model of CMUdict, whose words are)."""
        return self.meta.get("data") in (CMUDICT, CMUDICT_STRESS)

    def tokens(self, source: str) -> tuple[str, ...]:
        """``source`` as the model reads it; ``ValueError`` saying what keeps the model from
        reading it (empty, or characters or words it has never seen, which it names, with the
        characters it knows)."""
        if not isinstance(source, str):
            raise TypeError(f"a source must be a string, got {type(source).__name__}")
        text = source.lower() if self.lowercase else source
        tokens = tuple(text.split()) if self.words else tuple(text)
        if not tokens:
            raise ValueError("an empty source: give it at least one "
                             + ("word" if self.words else "character"))
        known = set(self.source_vocab.chars[PAD + 1:])         # index 0 is the padding entry
        unknown = sorted(set(tokens) - known)
        if unknown and not self.words:
            shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in unknown)
            knows = "".join(c for c in self.source_vocab.chars[PAD + 1:] if c.isprintable())
            raise ValueError(f"characters the model has never seen: {shown!r} (it knows "
                             f"{knows!r})")
        if unknown:
            listed = ", ".join(repr(w) for w in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise ValueError(f"words the model has never seen: {listed}{more}")
        return tokens

    def hypotheses(self, sources: Sequence[str], beam: int = 1, nbest: int = 1
                   ) -> list[list[Hypothesis]]:
        """The ``nbest`` best outputs of each source as
        :class:`~numpy_rnn.tasks.decoding.Hypothesis` (target ids, log-probability, the
        length-normalised score they are ranked by, attention), best first: greedy for
        ``beam=1``, else beam search. ``ValueError`` for a source the model cannot read
        (:meth:`tokens`, naming its position) or bad ``beam``/``nbest``."""
        for name, value in (("beam", beam), ("nbest", nbest)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if nbest > beam:
            raise ValueError(f"nbest {nbest} needs a beam of at least {nbest}")
        tokens = []
        for i, source in enumerate(sources):
            try:
                tokens.append(self.tokens(source))
            except ValueError as exc:
                raise ValueError(f"source {i} ({source!r}): {exc}") from None
        if not tokens:
            return []
        assert isinstance(self.config, Seq2SeqConfig)
        self.check_fits(decoding_estimate(self.config, min(len(tokens), CHUNK),
                                          max(map(len, tokens)), beam, MAX_OUTPUT,
                                          "choose a smaller --beam"))
        return decode_hypotheses(self.model, self.source_vocab, tokens, beam=beam, nbest=nbest)

    def output(self, hypothesis: Hypothesis) -> list[str]:
        """A hypothesis's target tokens (the special ones left out)."""
        return list(_target_tokens(hypothesis.tokens, self.target_vocab))

    @overload
    def translate(self, sources: str, beam: int = 1, nbest: int = 1) -> Any: ...

    @overload
    def translate(self, sources: Sequence[str], beam: int = 1, nbest: int = 1
                  ) -> list[Any]: ...

    def translate(self, sources: str | Sequence[str], beam: int = 1, nbest: int = 1
                  ) -> Any:
        """The output of each source, a list of target tokens, greedy (``beam=1``) or by beam
        search; with ``nbest > 1``, the ``nbest`` best of each as ``(tokens, score)`` pairs,
        best first, ``score`` the mean log-probability per output token (the end included)
        they are ranked by. One source given as a string gives its result alone, a sequence of
        them a list."""
        listed: list[str] = [sources] if isinstance(sources, str) else list(sources)
        found = self.hypotheses(listed, beam, nbest)
        results: list[Any] = [
            self.output(hyps[0]) if nbest == 1 else [(self.output(h), h.score) for h in hyps]
            for hyps in found]
        return results[0] if isinstance(sources, str) else results
