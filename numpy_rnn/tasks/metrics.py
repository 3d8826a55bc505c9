"""The tasks' metrics: average precision for multi-label classification (micro and macro), and
edit distance, word and phoneme error rates for sequence-to-sequence outputs (below).

Average precision summarises a ranking of scores against binary labels as the mean of the
precision at each positive, weighted by the recall it adds:

    AP = Σ_n (R_n - R_{n-1}) P_n

over the distinct score thresholds in decreasing order, with ``P_n`` and ``R_n`` the precision
and recall of predicting positive every score >= the n-th threshold. Equal scores form one
threshold (a tie is neither ordered for nor against the positives), which is what makes a
constant predictor score the base rate; this is scikit-learn's ``average_precision_score``.

* micro AP: one ranking of every (example, label) pair together;
* macro AP: the mean of each label's own AP, over the labels with at least one positive.

Sequence metrics for sequence-to-sequence tasks (grapheme to phoneme: a word's spelling to its
phonemes), where a source may have several correct outputs (its *references*):

* ``edit_distance``: the Levenshtein distance between two token sequences, and
  ``edit_distances`` for many pairs at once (vectorised across the pairs);
* ``error_rates``: the word error rate (WER: the share of words whose hypothesis equals none of
  their references) and the phoneme error rate (PER: the edits to each word's closest reference
  over those references' summed length); ``word_error_rate`` and ``phoneme_error_rate`` are
  each one of the two.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["average_precision", "label_average_precisions", "macro_average_precision",
           "micro_average_precision",
           "SequenceErrorRates", "edit_distance", "edit_distances", "error_rates",
           "phoneme_error_rate", "word_error_rate"]


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of the 1-D ``scores`` against the bool ``positives`` of the same shape; NaN when
    there is no positive (the recall is undefined)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = np.asarray(positives, dtype=bool).ravel()
    if scores.shape != positives.shape:
        raise ValueError(f"scores {scores.shape} and positives {positives.shape} differ")
    n_pos = int(positives.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positives[order]
    # The last index of each run of equal scores: one threshold per distinct score.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(y)[last]
    predicted = last + 1
    precision = tp / predicted
    recall = tp / n_pos
    gained = np.diff(recall, prepend=0.0)
    return float(np.sum(gained * precision))


def micro_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of every (example, label) pair of ``scores (N, R)`` against bool ``targets (N, R)``,
    ranked together."""
    return average_precision(np.asarray(scores).ravel(), np.asarray(targets).ravel())


def label_average_precisions(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each label's AP, ``(R,)``; NaN for a label without positives."""
    scores, targets = np.asarray(scores), np.asarray(targets, dtype=bool)
    return np.array([average_precision(scores[:, j], targets[:, j])
                     for j in range(scores.shape[1])])


def macro_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """The mean of the labels' APs, over the labels with at least one positive."""
    ap = label_average_precisions(scores, targets)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


# --------------------------------------------------------------------------------------------
# Sequence metrics: edit distance, word and phoneme error rates
# --------------------------------------------------------------------------------------------

# Pairs per vectorised block of edit_distances: blocks are cut from the pairs sorted by length,
# so a block pads to lengths close to its own, and its (block, L + 1) rows stay small.
_EDIT_BLOCK = 4096
# Up to this many DP cells, edit_distance runs the DP in plain Python (faster than NumPy's
# per-call overhead below about 50 x 50 tokens); above, one NumPy row at a time.
_PYTHON_DP_CELLS = 2500


def _levenshtein_rows(a: np.ndarray, len_a: np.ndarray, b: np.ndarray,
                      len_b: np.ndarray) -> np.ndarray:
    """Levenshtein distances of N padded pairs of integer sequences, one DP row at a time.

    a: (N, La) int64, row n holding ``len_a[n]`` tokens then padding; b: (N, Lb) likewise. The
    padding of ``a`` and of ``b`` must differ from each other and from every token (they are
    never compared with anything that lies before them, so any such value is exact).
    Returns the (N,) int64 distances.

    Row i of the DP holds ``D[i, j]``, the distance between ``a[:i]`` and ``b[:j]``, for all
    pairs and all j at once. Substitution and deletion come from row i - 1 elementwise; the
    insertion term ``D[i, j - 1] + 1`` runs along the row, and is a running minimum:
    ``D[i, j] = min over k <= j of (C[k] + j - k)`` with ``C`` the row before insertions, i.e.
    ``j + cummin(C[k] - k)``.
    """
    n, width = b.shape
    cols = np.arange(width + 1)
    row = np.broadcast_to(cols, (n, width + 1)).copy()    # D[0, j] = j: j insertions
    out = np.where(len_a == 0, len_b, 0).astype(np.int64)
    cand = np.empty_like(row)
    for i in range(1, a.shape[1] + 1):
        cand[:, 0] = i                                    # D[i, 0] = i: i deletions
        # substitution (free on a match) or deletion, from row i - 1
        np.minimum(row[:, :-1] + (a[:, i - 1 : i] != b), row[:, 1:] + 1, out=cand[:, 1:])
        row = np.minimum.accumulate(cand - cols, axis=1) + cols   # then insertions
        finished = np.flatnonzero(len_a == i)
        out[finished] = row[finished, len_b[finished]]
    return out


def _pad(seqs: Sequence[Sequence[int]], fill: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    padded = np.full((len(seqs), int(lengths.max(initial=0))), fill, dtype=np.int64)
    for row, s in enumerate(seqs):
        padded[row, : len(s)] = s
    return padded, lengths


def edit_distances(hypotheses: Sequence[Sequence[Hashable]],
                   references: Sequence[Sequence[Hashable]]) -> np.ndarray:
    """The Levenshtein distance of each pair ``(hypotheses[n], references[n])``, (N,) int64.

    Tokens are any hashable values (phoneme strings, characters, integer ids) compared with
    ``==``; substitution, insertion and deletion each cost 1, a match 0. Empty sequences are
    allowed (the distance is then the other's length). Vectorised across the pairs (blocks
    of pairs of similar lengths, one DP row for the whole block at a time): the 13,396
    (word, pronunciation) pairs of the CMUdict test split take about 0.1 s.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    ids: dict[Hashable, int] = {}
    hyp = [[ids.setdefault(t, len(ids)) for t in h] for h in hypotheses]
    ref = [[ids.setdefault(t, len(ids)) for t in r] for r in references]
    out = np.empty(len(hyp), dtype=np.int64)
    order = sorted(range(len(hyp)), key=lambda k: (len(hyp[k]), len(ref[k])))
    for start in range(0, len(order), _EDIT_BLOCK):
        block = order[start : start + _EDIT_BLOCK]
        a, len_a = _pad([hyp[k] for k in block], -1)
        b, len_b = _pad([ref[k] for k in block], -2)
        out[block] = _levenshtein_rows(a, len_a, b, len_b)
    return out


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """The Levenshtein distance between two token sequences: the fewest substitutions,
    insertions and deletions (each of cost 1) that turn ``a`` into ``b``.
    E.g. ``edit_distance("kitten", "sitting") == 3``.

    One pair at a time: tens of microseconds for word-length sequences. For many pairs
    ``edit_distances`` is several times faster per pair.
    """
    if len(a) * len(b) > _PYTHON_DP_CELLS:
        ids: dict[Hashable, int] = {}
        a_ids = np.array([[ids.setdefault(t, len(ids)) for t in a]], dtype=np.int64)
        b_ids = np.array([[ids.setdefault(t, len(ids)) for t in b]], dtype=np.int64)
        return int(_levenshtein_rows(a_ids, np.array([len(a)]), b_ids, np.array([len(b)]))[0])
    # Short sequences: the plain DP in Python beats NumPy's per-call overhead. Rows run over
    # the shorter sequence; ``left`` is D[i, j - 1], the cell just computed.
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        row, left = [i], i
        for j, y in enumerate(b):
            left = min(prev[j + 1] + 1, left + 1, prev[j] + (x != y))
            row.append(left)
        prev = row
    return prev[-1]


@dataclass(frozen=True)
class SequenceErrorRates:
    """The error rates of a set of hypotheses against their references (see ``error_rates``).

    wer: word error rate, ``word_errors / words``, in [0, 1].
    per: phoneme (token) error rate, ``edits / reference_tokens``, >= 0 (above 1 only when
        hypotheses are much longer than the references); NaN when ``reference_tokens`` is 0.
    words: the number of words (hypotheses) scored.
    word_errors: the words whose hypothesis equals none of their references.
    edits: the summed edit distances to each word's closest reference.
    reference_tokens: the summed lengths of those closest references.
    """

    wer: float
    per: float
    words: int
    word_errors: int
    edits: int
    reference_tokens: int


def error_rates(hypotheses: Sequence[Sequence[Hashable]],
                references: Sequence[Sequence[Sequence[Hashable]]]) -> SequenceErrorRates:
    """Word and phoneme error rates of one hypothesis per word against the word's references.

    hypotheses: N token sequences, ``hypotheses[n]`` the output for word n (may be empty).
    references: N non-empty lists of token sequences, ``references[n]`` every correct output
        for word n (a word with two pronunciations has two).

    With ``d(h, r)`` the edit distance (``edit_distance``) and, for each word n, its *closest*
    reference ``r*_n``, the one of least ``d(hypotheses[n], r)`` (ties: the shorter; then the
    first):

        WER = #{n : hypotheses[n] equals none of references[n]} / N
        PER = Σ_n d(hypotheses[n], r*_n) / Σ_n len(r*_n)

    So a word is right when it matches any reference exactly, and PER charges each word only
    for its distance to the pronunciation it came closest to (an empty hypothesis costs
    ``len(r*_n)``, the shortest reference). Both are fractions, not percentages.
    Raises ``ValueError`` when N is 0, the two lengths differ, or a word has no reference.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise ValueError("error_rates needs at least one word, got none")
    counts = np.array([len(refs) for refs in references], dtype=np.int64)
    if not counts.all():
        raise ValueError(f"word {int(np.argmin(counts))} has no reference")
    # Every (word, reference) pair, the references of a word contiguous.
    flat_hyps = [hyp for hyp, refs in zip(hypotheses, references) for _ in refs]
    flat_refs = [r for refs in references for r in refs]
    dist = edit_distances(flat_hyps, flat_refs)
    ref_len = np.array([len(r) for r in flat_refs], dtype=np.int64)
    # The closest reference of each word: least distance, then least length, as one key.
    stride = int(ref_len.max()) + 1
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    best = np.minimum.reduceat(dist * stride + ref_len, starts)
    best_dist, best_len = best // stride, best % stride
    words = len(hypotheses)
    word_errors = int(np.count_nonzero(best_dist))
    edits, reference_tokens = int(best_dist.sum()), int(best_len.sum())
    return SequenceErrorRates(
        wer=word_errors / words,
        per=edits / reference_tokens if reference_tokens else float("nan"),
        words=words,
        word_errors=word_errors,
        edits=edits,
        reference_tokens=reference_tokens,
    )


def word_error_rate(hypotheses: Sequence[Sequence[Hashable]],
                    references: Sequence[Sequence[Sequence[Hashable]]]) -> float:
    """The share of words whose hypothesis equals none of their references
    (``error_rates(...).wer``; the definitions are in ``error_rates``)."""
    return error_rates(hypotheses, references).wer


def phoneme_error_rate(hypotheses: Sequence[Sequence[Hashable]],
                       references: Sequence[Sequence[Sequence[Hashable]]]) -> float:
    """The edits to each word's closest reference over those references' summed length
    (``error_rates(...).per``; the definitions are in ``error_rates``)."""
    return error_rates(hypotheses, references).per
