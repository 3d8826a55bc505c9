"""The language model's batches: a text's characters as the integer arrays it trains on.

``random_windows`` draws independent windows, ``StreamBatcher`` walks the text as B parallel
streams for truncated BPTT with the hidden state carried across batches, ``NameStreamBatcher``
does the same over a list of names dealt afresh into random groups every epoch, and
``validation_segments`` lays the validation text out as one deterministic batch.

Every batch is a pair ``(inputs, targets)`` of int64 arrays of shape (B, T) with
``targets[b, t]`` the character that follows ``inputs[b, t]`` in the text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["NameStreamBatcher", "StreamBatch", "StreamBatcher", "random_windows",
           "validation_segments"]

# Mixed into the seed of ``NameStreamBatcher``'s per-epoch generator, so its draws are not
# those of any other generator seeded with the run's seed and a step or epoch number.
_NAME_STREAM_TAG = 0x6E616D65


def _check_encoded(encoded: Any) -> np.ndarray:
    arr = np.asarray(encoded)
    if arr.ndim != 1:
        raise ValueError(f"encoded text must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"encoded text must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def random_windows(
    encoded: np.ndarray, batch_size: int, seq_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """B independent windows of the text at uniformly random offsets.

    encoded: the text as indices, (N,).
    Returns ``(inputs, targets)``, each int64 (B, T): row b is ``encoded[s_b : s_b + T]`` and
    ``encoded[s_b + 1 : s_b + T + 1]`` with ``s_b`` uniform in ``[0, N - T - 1]``.
    Raises ``ValueError`` ("corpus shorter than one window") when N < T + 1.
    """
    data = _check_encoded(encoded)
    B = _check_positive("batch_size", batch_size)
    T = _check_positive("seq_len", seq_len)
    n = data.shape[0]
    if n < T + 1:
        raise ValueError(
            f"corpus shorter than one window: {n} characters, need seq_len + 1 = {T + 1}"
        )
    starts = rng.integers(0, n - T, size=B)  # high is exclusive: starts in [0, N - T - 1]
    window = data[starts[:, None] + np.arange(T + 1)]  # (B, T + 1)
    return np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, 1:])


class StreamBatch(NamedTuple):
    """One chunk from ``StreamBatcher``.

    inputs:  int64 (B, T).
    targets: int64 (B, T), the character after each input.
    reset:   True when this chunk starts at the beginning of the streams (the first chunk and
             the first after every wraparound): the caller must start it from a zero hidden
             state instead of carrying the previous one over.
    """

    inputs: np.ndarray
    targets: np.ndarray
    reset: bool


class StreamBatcher:
    """The text as B contiguous streams, walked T characters at a time, for truncated BPTT.

    With N characters, each stream predicts ``L = ((N - 1) // B) // T * T`` characters: stream b
    has inputs ``encoded[b*L : (b+1)*L]`` and targets ``encoded[b*L + 1 : (b+1)*L + 1]``. The
    streams tile the text without gaps; the last ``N - 1 - B*L`` predictions (the tail) are
    never used. Chunk k of an epoch is columns ``[k*T, (k+1)*T)`` of every stream, so row b of
    consecutive chunks concatenates to stream b and a caller can carry the hidden state from
    one chunk to the next. After the last of the ``chunks_per_epoch`` chunks it wraps to the
    start and flags the chunk with ``reset=True``.

    The whole state is ``position``, the number of chunks handed out so far: saving it
    (``state_dict()``) and restoring it (``load_state_dict()``) resumes exactly.
    """

    def __init__(self, encoded: np.ndarray, batch_size: int, seq_len: int) -> None:
        data = _check_encoded(encoded)
        self.batch_size = _check_positive("batch_size", batch_size)
        self.seq_len = _check_positive("seq_len", seq_len)
        self.num_chars = int(data.shape[0])
        B, T = self.batch_size, self.seq_len
        self.chunks_per_epoch = max(self.num_chars - 1, 0) // B // T
        if self.chunks_per_epoch < 1:
            raise ValueError(
                f"corpus too short for one ({B}, {T}) chunk: {self.num_chars} characters, "
                f"need batch_size * seq_len + 1 = {B * T + 1}"
            )
        L = self.chunks_per_epoch * T
        self.stream_len = L
        self._inputs = data[: B * L].reshape(B, L)  # views of ``data``, no copy
        self._targets = data[1 : B * L + 1].reshape(B, L)
        self.position = 0

    @property
    def epochs_completed(self) -> int:
        """Full passes over the streams handed out so far."""
        return self.position // self.chunks_per_epoch

    def __iter__(self) -> Iterator[StreamBatch]:
        return self

    def __next__(self) -> StreamBatch:
        """The next chunk; the iterator never ends (it wraps around)."""
        k = self.position % self.chunks_per_epoch
        cols = slice(k * self.seq_len, (k + 1) * self.seq_len)
        self.position += 1
        return StreamBatch(
            inputs=np.ascontiguousarray(self._inputs[:, cols]),
            targets=np.ascontiguousarray(self._targets[:, cols]),
            reset=k == 0,
        )

    def state_dict(self) -> dict[str, int]:
        """Plain ints: the position and what it is relative to (checked on load)."""
        return {
            "position": self.position,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "num_chars": self.num_chars,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from ``state_dict()``. Raises ``ValueError`` if it was saved for another text
        length, batch size or sequence length, where the position would mean other chunks."""
        for key in ("batch_size", "seq_len", "num_chars"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"StreamBatcher state was saved with {key}={state[key]}, "
                    f"this batcher has {key}={getattr(self, key)}"
                )
        position = state["position"]
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise ValueError(f"position must be an integer, got {position!r}")
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        self.position = int(position)


class NameStreamBatcher(StreamBatcher):
    """``StreamBatcher`` over names that are dealt afresh into ``groups`` random groups each epoch.

    Epoch e (0-based) reads the names in this order: a generator seeded with ``(seed, e)``
    deals every name into one of the K groups uniformly at random, and the text of the epoch
    is group 0, then group 1, ... up to group K-1, each group keeping the names in their given
    order. Within a group consecutive names are about K apart in the original list, with the
    same geometric spread of gaps as a random 1-in-K subsample.

    Why: ``plants.data`` is sorted, and validation is one name in ten (by hash), read in file
    order. Consecutive validation names share a third of their characters with the name before
    them; consecutive names of the file share over half. A model trained on the file order
    learns to copy more than validation lets it, and sees each neighbourhood of the alphabet
    the same way every epoch. With ``groups=10`` training reads names spaced as validation's
    are, and every epoch pairs each name with other neighbours. ``groups=1`` is the names in
    their given order, exactly ``StreamBatcher`` over their concatenation.

    encoded_names: each name with its terminator (e.g. ``vocab.encode(name + "\\n")``), as a 1-D
        integer array, in the order to keep within a group.

    Every epoch has the same characters, so chunk shapes, ``chunks_per_epoch`` and the tail
    rule are those of ``StreamBatcher``. The state is still the position alone: an epoch's order
    is a function of ``(seed, epoch)``, so ``load_state_dict`` resumes exactly.
    """

    def __init__(self, encoded_names: Sequence[np.ndarray], batch_size: int, seq_len: int,
                 groups: int = 10, seed: int = 0) -> None:
        names = [_check_encoded(n) for n in encoded_names]
        if not names:
            raise ValueError("NameStreamBatcher needs at least one name")
        self.groups = _check_positive("groups", groups)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        self._names = names
        super().__init__(np.concatenate(names), batch_size, seq_len)
        self._epoch = 0     # the epoch whose order _inputs/_targets hold
        if self.groups > 1:
            self._deal(0)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The indices of the names in the order epoch ``epoch`` reads them, (num_names,)."""
        if self.groups == 1:
            return np.arange(len(self._names))
        rng = np.random.default_rng([self.seed, epoch, _NAME_STREAM_TAG])
        group = rng.integers(0, self.groups, size=len(self._names))
        return np.argsort(group, kind="stable")  # stable: file order within each group

    def _deal(self, epoch: int) -> None:
        data = np.concatenate([self._names[i] for i in self.epoch_order(epoch)])
        B, L = self.batch_size, self.stream_len
        self._inputs = data[: B * L].reshape(B, L)
        self._targets = data[1 : B * L + 1].reshape(B, L)
        self._epoch = epoch

    def __next__(self) -> StreamBatch:
        epoch = self.position // self.chunks_per_epoch
        if epoch != self._epoch and self.groups > 1:
            self._deal(epoch)
        return super().__next__()

    def state_dict(self) -> dict[str, int]:
        """``StreamBatcher``'s state plus the groups and seed the order depends on."""
        return {**super().state_dict(), "groups": self.groups, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from ``state_dict()``; raises ``ValueError`` if it was saved with other
        groups or another seed, as well as for ``StreamBatcher``'s reasons."""
        for key in ("groups", "seed"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"NameStreamBatcher state was saved with {key}={state[key]}, "
                    f"this batcher has {key}={getattr(self, key)}"
                )
        super().load_state_dict(state)


def validation_segments(
    encoded_val: np.ndarray, max_segments: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """The validation text as one deterministic batch of S contiguous segments.

    encoded_val: the validation text as indices, (N,) with N >= 2 (for plants, the validation
    names in file order, each followed by "\\n").

    With ``S = min(max_segments, N - 1)`` and ``L = (N - 1) // S``, segment s has inputs
    ``encoded_val[s*L : (s+1)*L]`` and targets ``encoded_val[s*L + 1 : (s+1)*L + 1]``.
    The predicted characters are exactly ``encoded_val[1 : S*L + 1]``, each once. Dropped:
    ``encoded_val[0]`` (nothing precedes it) and the tail ``encoded_val[S*L + 1 :]``, which
    is ``(N - 1) % S < S`` characters. The mean cross-entropy over ``targets`` is thus the mean
    over those ``S*L`` characters. Run it as one batch from a zero hidden state: each segment
    starts without the context of the one before, which makes the estimate deterministic and
    a little pessimistic at the S segment starts.

    Returns ``(inputs, targets)``, each int64 (S, L).
    """
    data = _check_encoded(encoded_val)
    max_segments = _check_positive("max_segments", max_segments)
    n = data.shape[0]
    if n < 2:
        raise ValueError(f"validation text too short: {n} characters, need at least 2")
    S = min(max_segments, n - 1)
    L = (n - 1) // S
    inputs = data[: S * L].reshape(S, L).copy()
    targets = data[1 : S * L + 1].reshape(S, L).copy()
    return inputs, targets
