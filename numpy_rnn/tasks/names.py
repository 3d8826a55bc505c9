"""Batches of whole names, for the two tasks that read one name per sequence, and what those
two tasks share as tasks of a labelled corpus (:class:`LabelledTask`).

The classifier (many-to-one) and the conditional generator (one-to-many) both train on batches
of whole names of different lengths, padded to the longest of the batch and run with their
``lengths`` so that the recurrence never runs over padding. :class:`NameBatches` deals them:
each epoch is a random permutation of the training names, drawn from a generator seeded by
``(seed, epoch)``; the permutation is cut into pools of ``POOL`` batches, each pool is sorted by
length and cut into batches (names of similar length together: little padding), and the batches
of the epoch are shuffled. The whole state is the number of batches handed out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Task, labels_problem
from .corpus import Corpus, Vocabulary

if TYPE_CHECKING:
    from .model import ModelConfig

__all__ = ["POOL", "LabelledTask", "NameBatches", "longest_name", "names_advice", "pad"]

#: Batches per length-sorted pool: names of similar length share a batch, but each pool is a
#: random slice of the epoch, so batch composition still changes from epoch to epoch.
POOL = 32
# Mixed into the seed of the epoch generator, so its draws are not those of any other
# generator seeded with the run's seed.
_NAME_BATCH_TAG = 0x62617463


def longest_name(names: Sequence[str] | None) -> int:
    """The length of the longest of ``names`` (0 for none): what a batch of whole names pads
    to (with the newline before or after it), for the memory guard."""
    return max(map(len, names or ()), default=0)


def names_advice(longest: int) -> str:
    """What to make smaller when a step over batches of names does not fit (the memory
    guard's advice), the longest name ``longest`` characters."""
    return ("choose a smaller --hidden-size, --num-layers, --embedding-dim or --batch-size (the "
            f"batch's names are padded to the longest, {longest:,} characters)")


def pad(encoded: Sequence[np.ndarray], fill: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pad 1-D int arrays (each of length >= 1) to the longest: ``(tokens (B, T), lengths
    (B,))``, int64, ``tokens[b, lengths[b]:] == fill``."""
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    if lengths.size and lengths.min() < 1:
        raise ValueError("every sequence needs at least one token")
    tokens = np.full((len(encoded), int(lengths.max(initial=1))), fill, dtype=np.int64)
    for b, e in enumerate(encoded):
        tokens[b, :len(e)] = e
    return tokens, lengths


class NameBatches:
    """Batches of indices into a list of names: which names go together, epoch after epoch.

    ``lengths (N,)``: each name's length (what the pools sort by). ``make(indices, epoch)`` is
    called with each batch's indices into the names (and the epoch, for draws that change per
    epoch) and returns the batch. Every epoch hands out ``ceil(N / batch_size)`` batches, the
    last of each pool possibly smaller.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int,
                 make: Any, describe: str) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.size == 0:
            raise ValueError("there are no training names to batch")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.make = make
        self._describe = describe
        self.position = 0
        self._epoch: int | None = None
        self._order: list[np.ndarray] = []

    @property
    def batches_per_epoch(self) -> int:
        n, B = self.lengths.size, self.batch_size
        pool = POOL * B
        full, rest = divmod(n, pool)
        return full * POOL + -(-rest // B)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The batches of ``epoch``, in order: index arrays into the names."""
        rng = np.random.default_rng([self.seed, epoch, _NAME_BATCH_TAG])
        perm = rng.permutation(self.lengths.size)
        B, pool = self.batch_size, POOL * self.batch_size
        batches: list[np.ndarray] = []
        for start in range(0, perm.size, pool):
            chunk = perm[start:start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i:i + B] for i in range(0, chunk.size, B))
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        epoch, k = divmod(self.position, self.batches_per_epoch)
        if epoch != self._epoch:
            self._order, self._epoch = self.epoch_batches(epoch), epoch
        self.position += 1
        return self.make(self._order[k], epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "num_names": int(self.lengths.size),
                "batch_size": self.batch_size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, mine in (("num_names", self.lengths.size), ("batch_size", self.batch_size),
                          ("seed", self.seed)):
            if key in state and int(state[key]) != mine:
                raise ValueError(f"the batches were saved with {key}={state[key]}, this run "
                                 f"has {key}={mine}")
        position = state["position"]
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError(f"position must be an integer >= 0, got {position!r}")
        self.position = position

    def describe(self) -> str:
        return self._describe


class LabelledTask(Task):
    """What the tasks of a labelled corpus (a name and its labels a line) share: their models
    read the characters and know the labels, so a checkpoint keeps both vocabularies,
    ``characters`` and ``labels``, and refuses labels that are not the model's (sorted,
    distinct, ``num_labels`` of them)."""

    def vocabularies(self, corpus: Corpus) -> dict[str, Vocabulary | tuple[str, ...]]:
        assert corpus.labels is not None
        return {"characters": corpus.vocab, "labels": corpus.labels}

    def vocabulary_names(self) -> tuple[str, ...]:
        return ("characters", "labels")

    def record_problem(self, config: ModelConfig,
                       vocabularies: Mapping[str, Vocabulary | tuple[str, ...]]) -> str | None:
        return super().record_problem(config, vocabularies) or labels_problem(
            config, vocabularies)
