"""Decoding an encoder-decoder: greedy search and beam search, batched, for either backend.

Both run a model through two inference methods (``Predictor.infer``), so the NumPy model and
its torch twin decode with the same code and the same choices:

* ``encode(source (B, S), lengths (B,)) -> (memory (B, S, H), state)``: the encoder's outputs
  and the decoder's initial recurrent state (a tuple of ``(L, B, H)`` arrays);
* ``decode_step(tokens (B,), state, feed (B, H), memory (B, S, H), lengths (B,))
  -> (log_probs (B, V), state, feed, alpha)``: one decoder step from the previous tokens,
  ``feed`` the previous attentional state (zeros before the first step).

**Greedy** takes the most likely token at every step. **Beam search** keeps, for every source, the
``K`` most likely unfinished hypotheses (rows ``b*K .. b*K + K - 1`` of one batch of ``B*K`` rows,
so every step is one model call for the whole batch), extends each by every token, and keeps the
``K`` best extensions that do not end; an extension by the end token that ranks among the ``K`` best
is a finished hypothesis. A hypothesis is ranked by its length-normalised score, the mean
log-probability of its tokens (the end token included), so that short outputs are not favoured for
being short. A source's search ends when it has ``K`` finished hypotheses; the whole search at
``max_length`` steps, where unfinished hypotheses count as finished. ``nbest`` returns the best N.

Each hypothesis also holds its attention, when the model has one: ``alpha (n, S)``, the weights
``decode_step`` gave the source positions at each of its ``n`` scored steps (the end token's
included), 0 past the source's length. Greedy keeps every step's weights; beam search keeps each
step's weights of all its rows and the back-pointers of each step, and follows them back from
the rows of the returned hypotheses only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .base import Predictor

__all__ = ["Hypothesis", "beam_search", "greedy_decode"]


class Hypothesis(NamedTuple):
    """One output: its tokens (without the end token), the sum of their log-probabilities
    (the end token's included), the ranking score, that sum over the number of tokens, and
    ``alpha``, float64 ``(n, S)``: the attention over the ``S`` source positions (the batch's
    width, 0 past the source's length) of each of the ``n`` scored steps, the end token's
    included (``n = len(tokens) + 1``, or ``len(tokens)`` for an output cut at
    ``max_length``); None for a model without attention.

    Two hypotheses are equal when their tokens, log-probabilities and scores are (``alpha``, an
    array, is left out of ``==`` and of the hash)."""

    tokens: tuple[int, ...]
    log_prob: float
    score: float
    alpha: np.ndarray | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hypothesis):
            return NotImplemented
        return self[:3] == other[:3]

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self[:3])


def greedy_decode(model: Predictor, source: np.ndarray, lengths: np.ndarray, *, bos: int,
                  eos: int, max_length: int) -> list[Hypothesis]:
    """The most likely token at every step, for each of the ``B`` sources ``(B, S)`` of
    ``lengths (B,)``: one :class:`Hypothesis` per source (with its attention of each step),
    at most ``max_length`` tokens before the end token."""
    memory, state = model.infer("encode", source, lengths)
    B = len(source)
    feed = np.zeros((B, memory.shape[-1]), dtype=memory.dtype)
    if B == 1:
        return [_greedy_one(model, memory, state, feed, lengths, bos, eos, max_length)]
    tokens = np.full(B, bos, dtype=np.int64)
    out = np.zeros((B, max_length), dtype=np.int64)
    log_prob = np.zeros(B)
    steps = np.full(B, max_length)         # tokens each output has (the end token included)
    done = np.zeros(B, dtype=bool)
    alphas: np.ndarray | None = None       # (B, max_length, S): each step's attention
    for t in range(max_length):
        log_probs, state, feed, alpha = model.infer("decode_step", tokens, state, feed, memory,
                                                    lengths)
        if alpha is not None:
            if alphas is None:
                alphas = np.zeros((B, max_length, alpha.shape[1]))
            alphas[:, t] = alpha
        tokens = np.argmax(log_probs, axis=1).astype(np.int64)
        step_lp = log_probs[np.arange(B), tokens]
        log_prob += np.where(done, 0.0, step_lp)
        out[:, t] = tokens
        ended = ~done & (tokens == eos)
        steps[ended] = t + 1
        done |= ended
        if done.all():
            break
    result = []
    for b in range(B):
        n = int(steps[b])
        body = out[b, :n - 1] if done[b] else out[b, :n]
        result.append(Hypothesis(tuple(int(x) for x in body), float(log_prob[b]),
                                 float(log_prob[b]) / n,
                                 None if alphas is None else alphas[b, :n].copy()))
    return result


def _greedy_one(model: Predictor, memory: np.ndarray, state: tuple[np.ndarray, ...],
                feed: np.ndarray, lengths: np.ndarray, bos: int, eos: int, max_length: int
                ) -> Hypothesis:
    """:func:`greedy_decode` of one source (``memory (1, S, H)``): the same steps and sums
    (Python floats are float64, as the batched sums are), with Python numbers where the
    batched loop keeps arrays of one row (a word at a time is what a speech front end
    decodes, and each small array operation costs about as much as a row of arithmetic)."""
    token = np.array([bos], dtype=np.int64)
    tokens: list[int] = []
    log_prob = 0.0
    alphas: list[np.ndarray] = []          # (1, S) per step
    ended = False
    for _ in range(max_length):
        log_probs, state, feed, alpha = model.infer("decode_step", token, state, feed, memory,
                                                    lengths)
        if alpha is not None:
            alphas.append(alpha)
        best = int(log_probs[0].argmax())
        log_prob += float(log_probs[0, best])
        if best == eos:
            ended = True
            break
        tokens.append(best)
        token = np.array([best], dtype=np.int64)
    n = len(tokens) + ended                # the scored steps, the end token's included
    return Hypothesis(tuple(tokens), log_prob, log_prob / n,
                      np.concatenate(alphas).astype(np.float64, copy=False) if alphas else None)


def beam_search(model: Predictor, source: np.ndarray, lengths: np.ndarray, *, bos: int,
                eos: int, max_length: int, beam: int, nbest: int = 1
                ) -> list[list[Hypothesis]]:
    """The ``nbest`` best hypotheses of a beam of ``beam`` for each of the ``B`` sources
    ``(B, S)`` of ``lengths (B,)``, best first, each with its attention of each step (see the
    module's docstring)."""
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be in [1, beam={beam}], got {nbest}")
    K = beam
    memory, state = model.infer("encode", source, lengths)
    B = len(source)
    rows = np.repeat(np.arange(B), K)                    # the source of each of the B*K rows
    memory, lengths = memory[rows], np.asarray(lengths)[rows]
    state = tuple(s[:, rows] for s in state)
    feed = np.zeros((B * K, memory.shape[-1]), dtype=memory.dtype)
    tokens = np.full(B * K, bos, dtype=np.int64)
    history = np.zeros((B * K, 0), dtype=np.int64)
    # Only the first row of each source is live at the first step (all K start the same).
    scores = np.full((B, K), -np.inf)
    scores[:, 0] = 0.0
    # Each finished hypothesis with the row and step its last token was scored at.
    finished: list[list[tuple[Hypothesis, int, int]]] = [[] for _ in range(B)]
    open_ = np.ones(B, dtype=bool)                       # sources still searching
    # Per step t: the attention of each of the B*K rows (B*K, S), and the back-pointers
    # (B*K,): the row at step t that each row at step t+1 extends.
    alphas: list[np.ndarray] = []
    back: list[np.ndarray] = []
    for t in range(max_length):
        log_probs, state, feed, alpha = model.infer("decode_step", tokens, state, feed, memory,
                                                    lengths)
        if alpha is not None:
            alphas.append(alpha)
        V = log_probs.shape[1]
        total = (scores[:, :, None] + log_probs.reshape(B, K, V)).reshape(B, K * V)
        # The 2K best extensions of each source: at most K of them end, so K go on.
        best = np.argpartition(-total, 2 * K - 1, axis=1)[:, :2 * K] if K * V > 2 * K \
            else np.broadcast_to(np.arange(K * V), (B, K * V))
        best_scores = np.take_along_axis(total, best, axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")
        best, best_scores = (np.take_along_axis(best, order, axis=1),
                             np.take_along_axis(best_scores, order, axis=1))
        parent, token = best // V, best % V
        ends = token == eos
        # An ending among the K best is a finished hypothesis; the K best that do not end go
        # on (as in fairseq's and OpenNMT's beam search).
        final = ends & np.isfinite(best_scores) & (np.arange(2 * K if K * V > 2 * K
                                                             else K * V) < K)
        for b, j in zip(*np.nonzero(final & open_[:, None])):
            row = b * K + parent[b, j]
            finished[b].append((_hypothesis(history[row], float(best_scores[b, j]), t + 1),
                                int(row), t))
        keep = np.argsort(ends, axis=1, kind="stable")[:, :K]   # non-ending first, by score
        parent = np.take_along_axis(parent, keep, axis=1)
        token = np.take_along_axis(token, keep, axis=1)
        scores = np.take_along_axis(best_scores, keep, axis=1)
        open_ &= np.array([len(f) < K for f in finished])
        scores[~open_] = -np.inf
        if not open_.any():
            break
        src = (np.arange(B)[:, None] * K + parent).reshape(-1)
        back.append(src)
        state = tuple(s[:, src] for s in state)
        feed = feed[src]
        tokens = token.reshape(-1).astype(np.int64)
        history = np.concatenate([history[src], tokens[:, None]], axis=1)
    else:
        # max_length reached: the unfinished hypotheses of the open sources count too.
        for b in np.flatnonzero(open_):
            for k in range(K):
                if np.isfinite(scores[b, k]):
                    finished[b].append((_hypothesis(history[b * K + k], float(scores[b, k]),
                                                    max_length),
                                        int(back[-1][b * K + k]) if back else b * K + k,
                                        max_length - 1))
    best_of = [sorted(f, key=lambda h: -h[0].score)[:nbest] for f in finished]
    if not alphas:                       # a model without attention
        return [[h for h, _, _ in f] for f in best_of]
    return [[h._replace(alpha=_trace(alphas, back, row, t)) for h, row, t in f]
            for f in best_of]


def _trace(alphas: list[np.ndarray], back: list[np.ndarray], row: int, t: int) -> np.ndarray:
    """The attention ``(t + 1, S)`` of steps 0 .. t of the hypothesis on ``row`` at step
    ``t``, following the back-pointers (``back[s][r]``: the row at step s that row r at step
    s + 1 extends) from step t to step 0."""
    out = np.empty((t + 1, alphas[0].shape[1]))
    for s in range(t, -1, -1):
        out[s] = alphas[s][row]
        if s:
            row = int(back[s - 1][row])
    return out


def _hypothesis(history: Sequence[int] | np.ndarray, log_prob: float, steps: int) -> Hypothesis:
    """A hypothesis of the tokens ``history``, ranked over ``steps`` tokens (its end token
    included, when it has one)."""
    return Hypothesis(tuple(int(x) for x in history), log_prob, log_prob / steps)
