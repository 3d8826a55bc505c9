"""The seq2seq model's config and inputs, and what its two twins share, written once: the
shapes (the rule that H is even), the dropout masks a step needs, in their order, and their
split by where they act (:meth:`Seq2SeqConfig.split_dropout_masks`); the checks of every input
(:func:`check_inputs`, :func:`check_targets`, :func:`check_decode_step`: the same exceptions
with the same messages in both); and the reuse of the attention's key side across decoding
steps (:class:`KeyCache`). The model itself, its equations and its parameter names are
:mod:`numpy_rnn.tasks.seq2seq.model`; its torch twin is ``torch_ref.seq2seq``.
"""



from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import numpy as np

from ...nn.attention import SCORES
from ...nn.losses import IGNORE_INDEX
from ...nn.module import ShapeError, check_array, check_lengths
from ...nn.recurrent import check_states, scale_dropout_mask
from ...nn.steps import State
from ..base import DropoutMask
from ..model import ModelConfig

__all__ = ["ATTENTIONS", "BOS", "EOS", "PAD", "KeyCache", "Seq2SeqConfig", "Seq2SeqInputs",
           "Seq2SeqMasks", "check_decode_step", "check_inputs", "check_source", "check_state",
           "check_step_inputs", "check_targets", "check_tokens", "direction_size"]

#: Token ids: source padding 0; target padding 0, start 1, end 2.
PAD, BOS, EOS = 0, 1, 2
#: The decoder's attention: a score of :mod:`numpy_rnn.nn.attention`, or none at all.
ATTENTIONS = (*SCORES, "none")


def _positive_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _rate(name: str, v: Any, what: str, closed: bool) -> float:
    """``v`` as a float in ``[0, 1)`` (``[0, 1]`` when ``closed``), else ``ValueError``: bools,
    strings and NaN are refused."""
    if (isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real)
            or math.isnan(float(v)) or not 0.0 <= float(v) <= 1.0
            or (not closed and float(v) == 1.0)):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"{name} must be a number in {interval} ({what}), got {v!r}")
    return float(v)


def direction_size(hidden_size: int) -> int:
    """``H/2``, the width of each direction of the bidirectional encoder, whose outputs side by
    side are the ``H``-wide memory; ``ValueError`` unless ``hidden_size`` is even."""
    if hidden_size % 2:
        raise ValueError(f"hidden_size must be even (the encoder runs hidden_size/2 per "
                         f"direction), got {hidden_size}")
    return hidden_size // 2


class Seq2SeqMasks(NamedTuple):
    """One training step's dropout masks by where they act (keep masks as the driver draws them,
    or the same scaled; NumPy arrays or torch tensors); ``[]`` or None where that dropout is
    off. Shapes for ``B`` pairs of ``S`` source and ``T`` target steps."""

    encoder: list[Any]           # L-1 (S, B, H): the outputs of the encoder's layers 0..L-2
    decoder: list[Any]           # L-1 (T, B, H): the outputs of the decoder's layers 0..L-2
    source_embedding: Any        # (S, B, Es): the embedded source tokens
    target_embedding: Any        # (T, B, Et): the embedded target tokens
    hidden: Any                  # (T, B, H): the attentional vectors ã_t


@dataclass(frozen=True)
class Seq2SeqConfig(ModelConfig):
    """The encoder-decoder's shapes. ``vocab_size`` is the SOURCE vocabulary (with PAD),
    ``embedding_dim`` the source embedding width; ``None`` widths mean ``hidden_size``.

    ``hidden_size`` H is the width of the memory and of the decoder: the encoder runs H/2 per
    direction, so it must be even (:func:`direction_size`).

    Regularisation, in training only (each 0 by default, and then nothing changes): ``dropout``
    between the stacked layers of the encoder and of the decoder, ``embedding_dropout`` on the
    embedded source and target tokens, ``hidden_dropout`` on the attentional vectors ã_t
    (dropout rates in ``[0, 1)``), and ``label_smoothing`` of the training loss's targets (in
    ``[0, 1]``, torch's ``F.cross_entropy(..., label_smoothing=)``).
    """

    task: ClassVar[str] = "seq2seq"

    target_vocab_size: int = field(kw_only=True)       # with PAD = 0, BOS = 1, EOS = 2
    target_embedding_dim: int | None = None
    attention: str = "general"
    attention_size: int = 64                             # the additive score's hidden width
    input_feeding: bool = True
    embedding_dropout: float = 0.0
    hidden_dropout: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int("target_vocab_size", self.target_vocab_size)
        if self.target_vocab_size < 3:
            raise ValueError(f"target_vocab_size counts PAD, BOS and EOS, so it is at least 3, "
                             f"got {self.target_vocab_size}")
        if self.target_embedding_dim is not None:
            _positive_int("target_embedding_dim", self.target_embedding_dim)
        _positive_int("attention_size", self.attention_size)
        direction_size(self.hidden_size)
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, "
                             f"got {self.attention!r}")
        if not isinstance(self.input_feeding, bool):
            raise TypeError(f"input_feeding must be a bool, got {self.input_feeding!r}")
        dropped = "the probability of an element being zeroed, in training"
        for name in ("embedding_dropout", "hidden_dropout"):
            object.__setattr__(self, name, _rate(name, getattr(self, name), dropped, False))
        object.__setattr__(self, "label_smoothing", _rate(
            "label_smoothing", self.label_smoothing,
            "the weight of the uniform distribution in the training targets", True))

    @property
    def input_size(self) -> int:
        """Es: the source embedding width (``embedding_dim``, else ``hidden_size``)."""
        return self.embedding_dim or self.hidden_size

    @property
    def target_input_size(self) -> int:
        """Et: the target embedding width (``target_embedding_dim``, else ``hidden_size``)."""
        return self.target_embedding_dim or self.hidden_size

    @property
    def decoder_input_size(self) -> int:
        """The decoder stack's input width: Et + H with input feeding, Et without."""
        return self.target_input_size + (self.hidden_size if self.input_feeding else 0)

    # -- the dropout masks of a training step --------------------------------------------------

    def dropout_mask_shapes(self, T: int, B: int) -> list[tuple[int, ...]]:
        """The shapes of the masks of a step over ``B`` pairs whose sources and targets are
        both ``T`` long (the one-sequence form every model config answers); a step reads two
        sequences, so the seq2seq task declares its masks with :meth:`dropout_masks`
        ``(S, T, B)``."""
        return [m.shape for m in self.dropout_masks(T, T, B)]

    def _mask_layout(self, S: int, T: int, B: int) -> list[tuple[str, DropoutMask]]:
        """Each mask of a step with the :class:`Seq2SeqMasks` field it belongs to, in order."""
        H, n = self.hidden_size, self.num_layers - 1
        layout: list[tuple[str, DropoutMask]] = []
        if self.dropout > 0 and n > 0:
            layout += [("encoder", DropoutMask((S, B, H), 1, self.dropout))] * n
            layout += [("decoder", DropoutMask((T, B, H), 1, self.dropout))] * n
        if self.embedding_dropout > 0:
            p = self.embedding_dropout
            layout += [("source_embedding", DropoutMask((S, B, self.input_size), 1, p)),
                       ("target_embedding", DropoutMask((T, B, self.target_input_size), 1, p))]
        if self.hidden_dropout > 0:
            layout.append(("hidden", DropoutMask((T, B, H), 1, self.hidden_dropout)))
        return layout

    def dropout_masks(self, S: int, T: int, B: int) -> list[DropoutMask]:
        """The keep masks of one training step over ``B`` pairs of ``S`` source and ``T``
        target steps, in the order the model reads them, each with its own ``p`` (rows on axis
        1, the time-major batch axis): the encoder's ``(S, B, H)`` x (L-1) then the decoder's
        ``(T, B, H)`` x (L-1), each dropped with ``dropout`` (none when it is 0 or L = 1);
        then, only when its rate is > 0, the source embedding's ``(S, B, Es)`` and the target
        embedding's ``(T, B, Et)`` (``embedding_dropout``) and the attentional vectors'
        ``(T, B, H)`` (``hidden_dropout``). Mask ``l`` of a stack multiplies the output of its
        layer ``l``."""
        return [mask for _, mask in self._mask_layout(S, T, B)]

    def seq2seq_mask_shapes(self, S: int, T: int, B: int) -> list[tuple[int, ...]]:
        """The shapes of :meth:`dropout_masks`, in its order."""
        return [mask.shape for mask in self.dropout_masks(S, T, B)]

    def split_dropout_masks(self, masks: Sequence[Any] | None, S: int, T: int, B: int,
                            training: bool = True) -> Seq2SeqMasks | None:
        """``masks`` (those of :meth:`dropout_masks`, in its order: NumPy arrays or tensors,
        keep masks or scaled) grouped by where they act; None when none are given.

        Raises ``ValueError`` when masks are given to a call that drops nothing (``training``
        False, or every rate 0 and no masks declared), :class:`ShapeError` when they are not
        as many, or not of the shapes, that :meth:`dropout_masks` declares."""
        layout = self._mask_layout(S, T, B)
        if not masks:
            return None
        if not (training and layout):
            raise ValueError(f"dropout_masks were given but this call applies no dropout "
                             f"(training={training}, dropout={self.dropout}, embedding_dropout="
                             f"{self.embedding_dropout}, hidden_dropout={self.hidden_dropout}, "
                             f"num_layers={self.num_layers})")
        want = [mask.shape for _, mask in layout]
        got = [tuple(m.shape) for m in masks]
        if got != want:
            raise ShapeError(f"dropout_masks must have the shapes {want} (seq2seq_mask_shapes), "
                             f"got {got}")
        parts: dict[str, list[Any]] = {name: [] for name in Seq2SeqMasks._fields}
        for (name, _), m in zip(layout, masks):
            parts[name].append(m)
        one = {name: (parts[name][0] if parts[name] else None)
               for name in ("source_embedding", "target_embedding", "hidden")}
        return Seq2SeqMasks(encoder=parts["encoder"], decoder=parts["decoder"], **one)

    def scale_dropout_masks(self, keep: Sequence[Any], S: int, T: int, B: int,
                            dtype: Any) -> list[np.ndarray]:
        """The driver's keep masks (in :meth:`dropout_masks`'s order) scaled by inverted
        dropout's factor, each with its own ``p``
        (:func:`numpy_rnn.nn.recurrent.scale_dropout_mask`), in ``dtype``."""
        return [scale_dropout_mask(np.asarray(m), mask.p, dtype)
                for m, mask in zip(keep, self.dropout_masks(S, T, B))]


class Seq2SeqInputs(NamedTuple):
    """What the model reads: ``source (B, S)`` int64 padded with PAD, ``source_lengths (B,)``
    int64 in ``[1, S]``, ``target_in (B, T)`` int64 = BOS y_1 .. y_n padded with PAD. The
    targets that go with it are ``(B, T)`` int64 = y_1 .. y_n EOS padded with IGNORE_INDEX."""

    source: np.ndarray
    source_lengths: np.ndarray
    target_in: np.ndarray

    @property
    def tokens(self) -> np.ndarray:
        """The batch's rows as the driver counts them: the sources ``(B, S)``."""
        return self.source


# --------------------------------------------------------------------------------------------
# The checks of every input, shared by the two twins (the same exceptions, the same messages)
# --------------------------------------------------------------------------------------------

def check_tokens(name: str, a: Any, ndim: int, vocab: int) -> np.ndarray:
    """``a`` as a non-empty integer array of ``ndim`` dimensions with every id in ``[0,
    vocab)``: ``TypeError`` for another dtype, :class:`ShapeError` for another shape,
    ``ValueError`` for an id out of range."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype.name}")
    if a.ndim != ndim or 0 in a.shape:
        raise ShapeError(f"{name} must be a non-empty {ndim}-D array, got shape {a.shape}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= vocab:
        raise ValueError(f"{name}: index {lo if lo < 0 else hi} is out of range for an "
                         f"Embedding with {vocab} rows (valid: 0..{vocab - 1})")
    return a


def check_source(config: Seq2SeqConfig, source: Any, lengths: Any
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``source (B, S)`` (ids of the source vocabulary) and ``lengths (B,)`` (int64, in ``[1,
    S]``), checked."""
    source = check_tokens("source", source, 2, config.vocab_size)
    B, S = source.shape
    return source, check_lengths(lengths, S, B)


def check_inputs(config: Seq2SeqConfig, inputs: Seq2SeqInputs
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch's ``source (B, S)``, ``source_lengths (B,)`` and ``target_in (B, T)``, checked
    (:func:`check_source`, and ``target_in`` of the target vocabulary with B rows)."""
    source, lengths = check_source(config, inputs.source, inputs.source_lengths)
    target_in = check_tokens("target_in", inputs.target_in, 2, config.target_vocab_size)
    if target_in.shape[0] != source.shape[0]:
        raise ShapeError(f"target_in has {target_in.shape[0]} rows but source has "
                         f"{source.shape[0]}")
    return source, lengths, target_in


def check_targets(config: Seq2SeqConfig, targets: Any, shape: tuple[int, ...],
                  training: bool) -> np.ndarray:
    """``targets`` of ``target_in``'s ``shape``, each an id of the target vocabulary or
    ``IGNORE_INDEX``; in ``training`` at least one not ignored (the mean is over them)."""
    a = np.asarray(targets)
    if a.dtype.kind not in "iu":
        raise TypeError(f"targets must be an integer array, got dtype {a.dtype.name}")
    if a.shape != shape:
        raise ShapeError(f"targets must have target_in's shape {shape}, got {a.shape}")
    valid = a != IGNORE_INDEX
    V = config.target_vocab_size
    if ((a < 0) | (a >= V))[valid].any():
        raise ValueError(f"targets must lie in [0, {V}) (or be {IGNORE_INDEX}, ignored)")
    if training and not valid.any():
        raise ValueError("every target equals ignore_index: the mean loss is undefined")
    return a


def check_decode_step(config: Seq2SeqConfig, tokens: Any, feed: Any, memory: Any, lengths: Any
                      ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """The arguments of ``decode_step`` but its state, checked: ``tokens (B,)`` of the target
    vocabulary, ``feed (B, H)`` (with input feeding; None without, unread), ``memory (B, S,
    H)`` and ``lengths (B,)`` in ``[1, S]``; the floats of the model's dtype, never cast. The
    state is checked after them, by the decoder stack's own check (:func:`check_state`)."""
    tokens = check_tokens("tokens", tokens, 1, config.target_vocab_size)
    B, H, dtype = len(tokens), config.hidden_size, np.dtype(config.dtype).type
    memory = check_array("memory", memory, dtype, (3,))
    if memory.shape[0] != B or memory.shape[2] != H or memory.shape[1] == 0:
        raise ShapeError(f"memory must have shape (B={B}, S >= 1, H={H}), got {memory.shape}")
    lengths = check_lengths(lengths, memory.shape[1], B)
    if not config.input_feeding:
        return tokens, None, memory, lengths
    feed = check_array("feed", feed, dtype, (2,))
    if feed.shape != (B, H):
        raise ShapeError(f"feed must have shape {(B, H)}, got {feed.shape}")
    return tokens, feed, memory, lengths


def check_step_inputs(config: Seq2SeqConfig, tokens: Any, feed: Any,
                      memory_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """A later step over a memory ``(B, S, H)`` that :func:`check_decode_step` checked at its
    first step: ``tokens (B,)`` and ``feed (B, H)`` (None without input feeding), checked as
    that function checks them (the same errors)."""
    B = memory_shape[0]
    a = tokens
    # The common case in one reduction: int64 ids, whose unsigned view puts the negative
    # ones above every vocabulary; anything else gets check_tokens's own checks and messages.
    if not (isinstance(a, np.ndarray) and a.dtype == np.int64 and a.shape == (B,)
            and int(a.view(np.uint64).max()) < config.target_vocab_size):
        a = check_tokens("tokens", tokens, 1, config.target_vocab_size)
    tokens = a
    if len(tokens) != B:
        raise ShapeError(f"memory must have shape (B={len(tokens)}, S >= 1, "
                         f"H={config.hidden_size}), got {memory_shape}")
    if not config.input_feeding:
        return tokens, None
    feed = check_array("feed", feed, np.dtype(config.dtype).type, (2,))
    if feed.shape != (B, config.hidden_size):
        raise ShapeError(f"feed must have shape {(B, config.hidden_size)}, got {feed.shape}")
    return tokens, feed


def check_state(config: Seq2SeqConfig, state: Any, B: int) -> State:
    """The decoder's state, checked as :meth:`~numpy_rnn.nn.recurrent.Recurrent.forward_step`
    checks it (the same function): a tuple of ``(L, B, H)`` arrays (h, and c for the LSTM) of
    the model's dtype."""
    names = ("h", "c") if config.cell == "lstm" else ("h",)
    return tuple(check_states(names, (config.hidden_size,) * len(names), state,
                              (config.num_layers, B), np.dtype(config.dtype).type))


K = TypeVar("K")


class KeyCache(Generic[K]):
    """The attention's key side of the last memory ``decode_step`` attended over, computed once
    per memory: a search calls ``decode_step`` with the same memory at every step, and the key
    projection (a ``B*S x H x H`` product) would otherwise cost more than the step itself.

    Reused only for the same memory object (not modified in place in between, as the
    attention's contract asks), the same lengths and the same key weights (an optimizer step
    changes them in place); ``equal`` and ``copy`` compare and copy a weight (NumPy's or
    torch's), so both twins reuse keys under one rule."""

    def __init__(self, equal: Callable[[Any, Any], bool], copy: Callable[[Any], Any]) -> None:
        self._equal, self._copy = equal, copy
        self._last: tuple[Any, np.ndarray, dict[str, Any], K] | None = None

    def get(self, memory: Any, lengths: np.ndarray, weights: Mapping[str, Any],
            compute: Callable[[], K]) -> K:
        """The keys of ``memory``: the cached ones while the rule holds, else ``compute()``."""
        last = self._last
        if (last is not None and last[0] is memory and np.array_equal(last[1], lengths)
                and all(self._equal(w, weights[k]) for k, w in last[2].items())):
            return last[3]
        keys = compute()
        self._last = (memory, np.array(lengths, copy=True),
                      {k: self._copy(w) for k, w in weights.items()}, keys)
        return keys
