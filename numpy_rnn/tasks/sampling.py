"""Sampling text from a trained model, one character at a time, for a whole batch at once.

The backend only supplies logits; every random choice is made here, in float64 NumPy, with the
caller's seeded generator. So the NumPy and torch backends given the same checkpoint and seed
write the same text: their float64 logits agree to rounding error, and each character is drawn
by inverse CDF from ONE uniform number per stream, which picks the same character unless the
number falls within rounding error of a boundary between two characters.

The original notebook starts every name from a newline and stops at the next one; that is the
default here (``prime="\\n"``, ``stop_at_newline=True``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .base import Predictor, State
from .corpus import Corpus, Vocabulary

__all__ = ["draw", "filter_logits", "label", "labels", "sample", "tag_name", "tag_names"]

# The prime is fed through the model this many characters per call (a prime file can be long).
_PRIME_CHUNK = 256


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or top_k < 1):
        raise ValueError(f"top-k must be an integer >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float,
                                                                                np.number))
                              or not 0 < top_p <= 1):
        raise ValueError(f"top-p must be in (0, 1], got {top_p!r}")


def filter_logits(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> np.ndarray:
    """The sampling distribution for each row of ``logits (B, V)``: probabilities ``(B, V)``.

    In order: divide by ``temperature`` (< 1 sharpens, > 1 flattens); keep the ``top_k`` largest
    logits (ties with the k-th are kept too); softmax; keep the smallest set of most likely
    characters whose probabilities sum to at least ``top_p`` (nucleus sampling; the most likely
    character always stays); renormalise. All in float64.

    The row maximum is subtracted before dividing, ``(logits - max) / temperature``, so the
    largest logit stays exactly 0 and the others only move further down: a temperature so small
    that they overflow to -inf (``1e-310``) is greedy decoding (every maximum of a row kept,
    equally likely), with no warning.
    """
    _check_sampling(temperature, top_k, top_p)
    z = np.asarray(logits, dtype=np.float64)
    with np.errstate(over="ignore"):
        z = (z - z.max(axis=-1, keepdims=True)) / float(temperature)
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.sort(z, axis=-1)[:, -top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        # Keep a character when the mass of the more likely ones is still below top_p.
        keep_sorted = (np.cumsum(sorted_p, axis=-1) - sorted_p) < top_p
        keep = np.empty_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def draw(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of ``probs (B, V)`` by inverse CDF, from exactly B uniforms of ``rng``.

    Row b picks the first index whose cumulative probability exceeds ``u_b * total``. Never an
    index of probability zero. Returns int64 ``(B,)``.
    """
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]     # the same B uniforms, as a column
    idx = np.sum(cdf <= u, axis=-1)
    return np.minimum(idx, probs.shape[-1] - 1).astype(np.int64)


def _condition(model: Predictor, ids: np.ndarray,
               state: State | None) -> tuple[np.ndarray, State]:
    """Run ``ids (N,)`` through the model from ``state`` (None: zeros): last logits ``(1, V)``
    and the state after them."""
    logits, state = model.infer("logits", ids[None, :_PRIME_CHUNK], state)
    for t0 in range(_PRIME_CHUNK, ids.shape[0], _PRIME_CHUNK):
        logits, state = model.infer("logits", ids[None, t0:t0 + _PRIME_CHUNK], state)
    return logits[:, -1, :], state


def sample(model: Predictor, vocab: Vocabulary, num_samples: int, rng: np.random.Generator, *,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           prime: str = "\n", max_length: int = 200, stop_at_newline: bool = True,
           state: State | None = None) -> list[str]:
    """Sample ``num_samples`` texts as one batch; returns them as strings.

    The prime text conditions the model once, from ``state`` (one sequence's recurrent state,
    batch size 1; None: zeros; a conditional model's :meth:`Predictor.initial_state`); its
    final state is copied to every stream, then all streams step together one character at a
    time (B = num_samples, T = 1).

    stop_at_newline=True (names): a stream stops at its first newline, or after ``max_length``
    generated characters. A prime that does not start with a newline gets one in front, as every
    name in training follows a newline, so ``prime="ros"`` asks for names starting with "ros".
    stop_at_newline=False (any text): every stream generates exactly ``max_length`` characters.

    Each result is the prime's text after its last newline followed by the generated characters
    (without the stopping newline). Raises ``ValueError`` for an empty prime, a prime with
    characters outside the vocabulary, a vocabulary without a newline when stopping at one,
    ``temperature <= 0``, ``top_k < 1``, ``top_p`` outside (0, 1], or counts < 1.
    """
    _check_sampling(temperature, top_k, top_p)
    for name, v in (("num_samples", num_samples), ("max_length", max_length)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not isinstance(prime, str) or not prime:
        raise ValueError("the prime text must be a non-empty string")
    newline = None
    if stop_at_newline:
        if "\n" not in vocab.chars:
            raise ValueError("the vocabulary has no newline, so samples cannot stop at one: "
                             "stop at a maximum length instead")
        newline = vocab.chars.index("\n")
        if not prime.startswith("\n"):
            prime = "\n" + prime
    try:
        prime_ids = vocab.encode(prime)
    except ValueError as exc:
        raise ValueError(f"the prime text has {exc}") from None

    last, state = _condition(model, prime_ids, state)
    last = np.repeat(last, num_samples, axis=0)                     # (N, V)
    state = tuple(np.repeat(s, num_samples, axis=1) for s in state)  # each (L, N, H)

    out = np.zeros((num_samples, max_length), dtype=np.int64)
    lengths = np.full(num_samples, max_length)
    done = np.zeros(num_samples, dtype=bool)
    for t in range(max_length):
        # Every stream draws every step, stopped or not, so stream b's uniforms do not depend
        # on when the other streams stopped.
        ids = draw(filter_logits(last, temperature, top_k, top_p), rng)
        out[:, t] = ids
        if newline is not None:
            stops = ~done & (ids == newline)
            lengths[stops] = t
            done |= stops
            if done.all():
                break
        if t + 1 < max_length:
            logits, state = model.infer("logits", ids[:, None], state)
            last = logits[:, -1, :]
    head = prime.rsplit("\n", 1)[-1]
    return [head + vocab.decode(out[b, :lengths[b]]) for b in range(num_samples)]


def tag_names(names: Sequence[str], corpus: Corpus) -> list[str]:
    """For each name: "train" if it is a training name, "val" if a validation name, else "new".

    For a plain-text corpus (no names), the lines of the training and validation text count as
    the names.
    """
    train = set(corpus.train_names if corpus.train_names is not None
                else corpus.train_text.split("\n"))
    val = set(corpus.val_names if corpus.val_names is not None else corpus.val_text.split("\n"))
    return ["train" if n in train else "val" if n in val else "new" for n in names]


def tag_name(name: str, corpus: Corpus) -> str:
    """``labels`` for one name: "train", "val" or "new"."""
    return tag_names([name], corpus)[0]


# The names before "labels" came to mean the regions of a name: these tags are train/val/new.
labels = tag_names
label = tag_name
