"""Sequence to sequence with attention: read one sequence, write another (Luong et al. 2015's
global attention, as OpenNMT builds it): the model, its config and inputs.

The encoder reads the source, the decoder writes the target one token at a time, attending over
the encoder's outputs at every step::

    source (B, S) -> Embedding -> bidirectional stack (H/2 per direction, run with the lengths)
        -> memory M (S, B, H), final states of both directions
    bridge: for each layer l and state kind (h; c for the LSTM):
        s0[l] = tanh([s_fwd[l]; s_bwd[l]] W_b^T + b_b)          bridge_h.{l}, bridge_c.{l}
    target_in (B, T) = BOS y_1 .. y_n -> Embedding -> x_t (Et)
    decoder input  u_t = [x_t; ã_{t-1}]  (input feeding, ã_{-1} = 0)   or  u_t = x_t
    h_t   = top output of the unidirectional decoder stack from s0
    c_t, α_t = attention(query h_t, keys and values M, source lengths)
    ã_t   = tanh([c_t; h_t] W_c^T)            combine.weight (H, 2H), no bias;  ã_t = h_t (none)
    logits_t = ã_t W_o^T + b_o                out.weight (Vt, H), out.bias (Vt,)
    loss  = mean over the valid target tokens of -log softmax(logits_t)[y_t]

Parameter names (the torch twin's, ``torch_ref.seq2seq.Seq2Seq``, state-dict keys are the same):
``encoder_embedding.weight``, ``encoder.*`` (torch's ``weight_ih_l0``, ``weight_ih_l0_reverse``
...), ``bridge_h.{l}.weight/bias`` (and ``bridge_c.{l}.*`` for the LSTM),
``decoder_embedding.weight``, ``decoder.*``, ``attention.*`` (the score's, see
:func:`numpy_rnn.nn.attention.score_param_shapes`; none with ``attention="none"``),
``combine.weight`` (not with ``"none"``), ``out.weight``, ``out.bias``.

Target ids: PAD 0, BOS 1, EOS 2; source PAD 0. Teacher forcing: ``target_in`` is BOS y_1 .. y_n
padded with PAD, the targets y_1 .. y_n EOS padded with ``IGNORE_INDEX``. A padded target position
comes after every valid one of its row and the decoder runs forward in time, so it reaches no
valid logit: the decoder runs over all T steps without lengths.
"""


from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ...nn.attention import (
    SCORES,
    AttendCache,
    Attention,
    Keys,
    attend_backward,
    attend_forward,
    keys_backward,
    prepare_keys,
)
from ...nn.dense import Embedding, Linear
from ...nn.losses import IGNORE_INDEX, cross_entropy, log_softmax
from ...nn.module import ShapeError, check_array, check_lengths
from ...nn.recurrent import GRU, LSTM, RNN, Recurrent, scale_dropout_mask
from ...nn.steps import Params, State, Step
from ..base import DropoutMask, TaskModel
from ..model import ModelConfig, expose

__all__ = ["ATTENTIONS", "BOS", "EOS", "PAD", "Seq2Seq", "Seq2SeqConfig", "Seq2SeqInputs"]

#: Token ids: source padding 0; target padding 0, start 1, end 2.
PAD, BOS, EOS = 0, 1, 2
#: The decoder's attention: a score of :mod:`numpy_rnn.nn.attention`, or none at all.
ATTENTIONS = (*SCORES, "none")

_RNNS: dict[str, Any] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def _positive_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


@dataclass(frozen=True)
class Seq2SeqConfig(ModelConfig):
    """The encoder-decoder's shapes. ``vocab_size`` is the SOURCE vocabulary (with PAD),
    ``embedding_dim`` the source embedding width; ``None`` widths mean ``hidden_size``.

    ``hidden_size`` H is the width of the memory and of the decoder: the encoder runs H/2 per
    direction, so it must be even.
    """

    task: ClassVar[str] = "seq2seq"

    target_vocab_size: int = field(kw_only=True)       # with PAD = 0, BOS = 1, EOS = 2
    target_embedding_dim: int | None = None
    attention: str = "general"
    attention_size: int = 64                             # the additive score's hidden width
    input_feeding: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int("target_vocab_size", self.target_vocab_size)
        if self.target_vocab_size < 3:
            raise ValueError(f"target_vocab_size counts PAD, BOS and EOS, so it is at least 3, "
                             f"got {self.target_vocab_size}")
        if self.target_embedding_dim is not None:
            _positive_int("target_embedding_dim", self.target_embedding_dim)
        _positive_int("attention_size", self.attention_size)
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even (the encoder runs hidden_size/2 per "
                             f"direction), got {self.hidden_size}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, "
                             f"got {self.attention!r}")
        if not isinstance(self.input_feeding, bool):
            raise TypeError(f"input_feeding must be a bool, got {self.input_feeding!r}")

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

    def seq2seq_mask_shapes(self, S: int, T: int, B: int) -> list[tuple[int, ...]]:
        """The keep masks of one training step over ``B`` pairs of ``S`` source and ``T``
        target steps: the encoder's ``(S, B, H)`` x (L-1), then the decoder's ``(T, B, H)``
        x (L-1); none when ``dropout == 0`` or ``num_layers == 1``. Mask ``l`` of each stack
        multiplies the output of its layer ``l``."""
        if self.dropout == 0 or self.num_layers == 1:
            return []
        H, n = self.hidden_size, self.num_layers - 1
        encoder: list[tuple[int, ...]] = [(S, B, H)] * n
        return encoder + [(T, B, H)] * n

    def dropout_masks(self, S: int, T: int, B: int) -> list[DropoutMask]:
        """The keep masks of one training step over ``B`` pairs of ``S`` source and ``T``
        target steps, as the driver draws them (rows on axis 1, the time-major batch axis):
        those of :meth:`seq2seq_mask_shapes`, each dropped with ``dropout``."""
        return [DropoutMask(shape, 1, self.dropout)
                for shape in self.seq2seq_mask_shapes(S, T, B)]


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
# One decoder layer driven one step at a time (the input-feeding path)
# --------------------------------------------------------------------------------------------

class _SteppedLayer:
    """One unidirectional layer of a :class:`Recurrent` stack whose time loop is driven from
    outside, one step at a time, because its input at step t depends on its own output at t-1
    (input feeding). The gate math is the layer's ``Step`` (:mod:`numpy_rnn.nn.steps`); this
    class does what :func:`numpy_rnn.nn.recurrent.run_forward`/``run_backward`` do around it
    (buffers over T, b_hh folded into gx for cells that share gate gradients, weight gradients
    after the backward loop), only step by step.

    Buffers (allocated once per forward): ``x (T, B, F)`` the input each step read, ``gx
    (T, B, G*H)`` its projection ``x W_ih^T + b_ih (+ b_hh)``, ``states[j] (T+1, B, size_j)``
    (``states[j][t]`` is read and ``states[j][t+1]`` written at step t) and the step's cache.
    """

    def __init__(self, step: Step, p: Params, g: dict[str, np.ndarray], init: State,
                 T: int, F: int, dtype: Any) -> None:
        self.step, self.g = step, g
        B = init[0].shape[0]
        p = dict(p)
        self.w_ih, self.b = p["weight_ih"], p["bias_ih"]       # (G*H, F), (G*H,) or None
        if p["bias_ih"] is not None and step.shares_gate_grads:
            # As run_forward: a cell that only uses gx + gh sees b_hh inside gx.
            self.b = p["bias_ih"] + p["bias_hh"]
            p["bias_hh"] = None
        p["weight_hh_T"] = p["weight_hh"].T      # a view: every step is a call of its own
        self.p = p
        self.x = np.empty((T, B, F), dtype)
        self.gx = np.empty((T, B, self.w_ih.shape[0]), dtype)
        self.states = tuple(np.empty((T + 1, B, n), dtype) for n in step.state_sizes())
        for s, s0 in zip(self.states, init):
            s[0] = s0
        self.cache = step.new_cache(T, B, dtype)

    def project(self, t: int | slice) -> None:
        """``gx[t] = x[t] W_ih^T + b`` (a slice of steps: one matrix product for them all)."""
        x = self.x[t]
        gx = self.gx[t]
        np.matmul(x, self.w_ih.T, out=gx)
        if self.b is not None:
            gx += self.b

    def forward(self, t: int) -> np.ndarray:
        """Step ``t`` from ``gx[t]`` (complete); returns the emitted ``h_t (B, Ho)``."""
        gx = self.gx[t]
        # The step's per-call preparation (the LSTM scales its gates), on this step's gx only.
        self.step.prepare_forward(self.p, gx[None], False)
        prev = tuple(s[t] for s in self.states)
        new = tuple(s[t + 1] for s in self.states)
        with np.errstate(over="ignore"):     # exp overflow in a sigmoid is harmless (σ = 0)
            self.step.forward(self.p, gx, prev, new, self.cache, t)
        return self.states[0][t + 1]

    def start_backward(self) -> None:
        """Before the backward loop: the gate-gradient buffers ``dgx``/``dgh (T, B, G*H)`` and
        the step's gradient-free factors of all T steps; zero gradient for the final state."""
        self.dgx = np.empty_like(self.gx)
        self.dgh = self.dgx if self.step.shares_gate_grads else np.empty_like(self.gx)
        self.bcache = self.step.prepare_backward(self.p, self.cache, self._prev(),
                                                 self._new(), self.dgx)
        self.dstate: State = tuple(np.zeros_like(s[0]) for s in self.states)

    def _prev(self) -> State:
        return tuple(s[:-1] for s in self.states)

    def _new(self) -> State:
        return tuple(s[1:] for s in self.states)

    def backward(self, t: int, dout: np.ndarray) -> np.ndarray:
        """Step ``t`` back, given ``dout (B, Ho)``, the gradient w.r.t. ``h_t`` from outside the
        layer; writes ``dgx[t]``/``dgh[t]`` and returns ``dgx[t] (B, G*H)``."""
        # The gradient reaching h_t is the sum of what comes from outside (the layer above, or
        # the attention and the output) and what comes back from step t+1 (in dstate[0]).
        dnew = (self.dstate[0] + dout,) + self.dstate[1:]
        prev = tuple(s[t] for s in self.states)
        new = tuple(s[t + 1] for s in self.states)
        self.dstate = self.step.backward(self.p, dnew, prev, new, self.bcache, t, self.dgx[t],
                                         self.dgh[t])
        return self.dgx[t]

    def finish_backward(self) -> None:
        """After the loop: the weight gradients of all T steps, one matrix product each (as
        ``run_backward``): ``dW_ih += dgx^T x``, ``dW_hh += dgh^T h_prev``, the biases."""
        T, B, GH = self.dgx.shape
        dgx2, dgh2 = self.dgx.reshape(T * B, GH), self.dgh.reshape(T * B, GH)
        h_prev = self.states[0][:-1]
        g = self.g
        g["weight_ih"] += dgx2.T @ self.x.reshape(T * B, -1)
        g["weight_hh"] += dgh2.T @ h_prev.reshape(T * B, -1)
        if self.p["bias_ih"] is not None:
            db_ih = dgx2.sum(axis=0)
            g["bias_ih"] += db_ih
            g["bias_hh"] += db_ih if self.dgh is self.dgx else dgh2.sum(axis=0)
        self.step.finish_backward(self.p, g, self.cache, self.dgx, self.dgh, self._prev(),
                                  self._new())


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class Seq2Seq(TaskModel):
    """The encoder-decoder with attention (see the module's docstring for the equations).

    ``loss, _ = model.loss_and_backward(inputs, targets, None, masks)`` in training;
    ``memory, state = model.encode(source, lengths)``, then ``log_probs, state, feed, alpha =
    model.decode_step(tokens, state, feed, memory, lengths)`` per output step in decoding;
    ``loss_sum, tokens = model.score(inputs, targets)`` for the validation loss.

    Shapes: B pairs, S source steps, T target steps, H = ``hidden_size``, L = ``num_layers``,
    Es/Et the embedding widths, Vs/Vt the vocabularies.

    Initial weights: torch's distributions (Embedding N(0, 1), recurrent and Linear uniform),
    drawn from independent streams of ``np.random.SeedSequence(seed)``.
    """

    config: Seq2SeqConfig

    def __init__(self, config: Seq2SeqConfig, seed: int | None = None) -> None:
        super().__init__(config.dtype)
        self.config = config
        H, L, dt = config.hidden_size, config.num_layers, config.dtype
        n_states = 2 if config.cell == "lstm" else 1
        streams = iter(np.random.SeedSequence(seed).spawn(8 + 2 * L))
        cls = _RNNS[config.cell]
        # Dropout acts between layers only: with one layer it changes nothing (and would warn).
        dropout = config.dropout if L > 1 else 0.0
        self.encoder_embedding = Embedding(config.vocab_size, config.input_size, dtype=dt,
                                           seed=next(streams))
        self.encoder = cls(config.input_size, H // 2, num_layers=L, dropout=dropout,
                           bidirectional=True, dtype=dt, seed=next(streams))
        self.bridges: dict[str, list[Linear]] = {}
        for kind in ("h", "c")[:n_states]:
            self.bridges[kind] = [Linear(H, H, dtype=dt, seed=next(streams)) for _ in range(L)]
        self.decoder_embedding = Embedding(config.target_vocab_size, config.target_input_size,
                                           dtype=dt, seed=next(streams))
        self.decoder = cls(config.decoder_input_size, H, num_layers=L, dropout=dropout,
                           dtype=dt, seed=next(streams))
        self.score_fn = config.attention
        self.attention: Attention | None = None
        self.combine: Linear | None = None
        s_att, s_comb = next(streams), next(streams)
        if config.attention != "none":
            size = config.attention_size if config.attention == "additive" else None
            self.attention = Attention(H, H, score=config.attention, attention_size=size,
                                       dtype=dt, seed=s_att)
            self.combine = Linear(2 * H, H, bias=False, dtype=dt, seed=s_comb)
        self.out = Linear(H, config.target_vocab_size, dtype=dt, seed=next(streams))
        children: dict[str, Any] = {"encoder_embedding": self.encoder_embedding,
                                    "encoder": self.encoder}
        for kind, layers in self.bridges.items():
            children.update({f"bridge_{kind}.{l}": b for l, b in enumerate(layers)})
        children.update(decoder_embedding=self.decoder_embedding, decoder=self.decoder)
        if self.attention is not None and self.combine is not None:
            children.update(attention=self.attention, combine=self.combine)
        children["out"] = self.out
        expose(self, children)
        # Draws dropout masks when the caller gives none (the driver always does).
        self._rng = np.random.default_rng(next(streams))
        self._ctx: dict[str, Any] | None = None
        # decode_step's key side of the last memory it attended over (see _keys)
        self._key_cache: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], Keys] | None = None

    def train(self, mode: bool = True) -> Seq2Seq:
        super().train(mode)
        self.encoder.train(mode)
        self.decoder.train(mode)
        return self

    # -- inputs ----------------------------------------------------------------------------

    @staticmethod
    def _tokens(name: str, a: Any, ndim: int) -> np.ndarray:
        a = np.asarray(a)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer array, got dtype {a.dtype.name}")
        if a.ndim != ndim or 0 in a.shape:
            raise ShapeError(f"{name} must be a non-empty {ndim}-D array, got shape {a.shape}")
        return a

    def _masks(self, S: int, T: int, B: int, given: Sequence[np.ndarray] | None
               ) -> tuple[list[np.ndarray] | None, list[np.ndarray] | None]:
        """The encoder's and the decoder's KEEP masks (L-1 each), or None where no dropout
        applies (evaluation, ``dropout = 0``, one layer). Drawn here when not given."""
        shapes = self.config.seq2seq_mask_shapes(S, T, B)
        if not (self.training and shapes):
            if given:
                raise ValueError("dropout_masks were given but this call applies no dropout "
                                 f"(training={self.training}, dropout={self.config.dropout}, "
                                 f"num_layers={self.config.num_layers})")
            return None, None
        if given is None:
            keep = [self._rng.random(s) >= self.config.dropout for s in shapes]
        else:
            keep = [np.asarray(m) for m in given]
            if [m.shape for m in keep] != shapes:
                raise ShapeError(f"dropout_masks must have the shapes {shapes} "
                                 f"(seq2seq_mask_shapes), got {[m.shape for m in keep]}")
        n = self.config.num_layers - 1
        return keep[:n], keep[n:]

    # -- encoder and bridge ----------------------------------------------------------------

    def _encode(self, source: np.ndarray, lengths: np.ndarray,
                masks: list[np.ndarray] | None) -> tuple[np.ndarray, State]:
        """``source (B, S)``, ``lengths (B,)`` -> memory ``M (S, B, H)`` (0 at padded steps)
        and the decoder's initial states (``(L, B, H)`` each, h then c)::

            u[l] = [s_n[2l]; s_n[2l+1]]          (B, H)  both directions' final states
            s0[l] = tanh(u[l] W_b^T + b_b)       bridge_{h,c}.{l}
        """
        source = self._tokens("source", source, 2)
        B, S = source.shape
        lengths = check_lengths(lengths, S, B)
        x = self.encoder_embedding(source.T)                                 # (S, B, Es)
        memory, finals = Recurrent.forward(self.encoder, x, None, lengths, dropout_masks=masks)
        L, H = self.config.num_layers, self.config.hidden_size
        init = []
        for kind, f in zip(self.bridges, finals):
            # (2L, B, H/2), rows 2l (forward) and 2l+1 (reverse) -> (L, B, H): [fwd; bwd]
            u = f.reshape(L, 2, B, H // 2).transpose(0, 2, 1, 3).reshape(L, B, H)
            init.append(np.stack([np.tanh(b(u[l])) for l, b in enumerate(self.bridges[kind])]))
        return memory, tuple(init)

    def _encode_backward(self, dmemory: np.ndarray | None, dinit: State,
                         init: State) -> None:
        """Back through the bridges (``du = (ds0 ⊙ (1 - s0^2)) W_b``), the encoder and its
        embedding, given ``dmemory (S, B, H)`` (or None) and ``dinit`` (``(L, B, H)`` each)."""
        L, H = self.config.num_layers, self.config.hidden_size
        dfinals = []
        for kind, ds, s0 in zip(self.bridges, dinit, init):
            du = np.stack([b.backward(ds[l] * (1.0 - s0[l] * s0[l]))
                           for l, b in enumerate(self.bridges[kind])])       # (L, B, H)
            B = du.shape[1]
            dfinals.append(du.reshape(L, B, 2, H // 2).transpose(0, 2, 1, 3)
                           .reshape(2 * L, B, H // 2))
        dx, _ = Recurrent.backward(self.encoder, dmemory, tuple(dfinals))
        self.encoder_embedding.backward(dx)

    # -- the training forward and backward ---------------------------------------------------

    def forward(self, inputs: Seq2SeqInputs,
                dropout_masks: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Teacher-forced logits ``(T, B, Vt)``, TIME-MAJOR, of ``inputs``; keeps what
        :meth:`backward` needs. ``dropout_masks``: the keep masks of
        ``config.seq2seq_mask_shapes(S, T, B)`` (training mode with dropout; None: drawn)."""
        source = self._tokens("source", inputs.source, 2)
        target_in = self._tokens("target_in", inputs.target_in, 2)
        B, S = source.shape
        if target_in.shape[0] != B:
            raise ShapeError(f"target_in has {target_in.shape[0]} rows but source has {B}")
        T = target_in.shape[1]
        lengths = check_lengths(inputs.source_lengths, S, B)
        enc_masks, dec_masks = self._masks(S, T, B, dropout_masks)
        memory, init = self._encode(source, lengths, enc_masks)
        keys = (prepare_keys(self.score_fn, self.attention.params, memory, lengths)
                if self.attention is not None else None)
        y = self.decoder_embedding(target_in.T)                              # (T, B, Et)
        ctx: dict[str, Any] = dict(init=init, keys=keys, T=T, B=B)
        # Where the two decoder paths part. Input feeding makes step t's input depend on
        # step t-1's attentional state, so the decoder, the attention and the combine run
        # inside one Python time loop: per step and layer one (B, F) x (F, G*H) input
        # projection (layer 0's embedding part is projected for all T steps at once), one
        # attention step over S memory steps and one (B, 2H) x (2H, H) combine; O(T*L) calls,
        # and the same again in backward. Without it the decoder is ONE call of the library's
        # layer (input projection of all T steps in one product, its own time loop), then the
        # attention of all T steps in one batched call, and the combine as one product.
        if self.config.input_feeding:
            feeds = self._decode_fed(y, init, keys, dec_masks, ctx)          # (T, B, H)
        else:
            feeds = self._decode_whole(y, init, keys, dec_masks, ctx)
        logits = self.out(feeds)                           # one product over all T steps
        self._ctx = ctx
        return logits

    def _attentional(self, c: np.ndarray, h: np.ndarray, ch: np.ndarray) -> np.ndarray:
        """``ã = tanh([c; h] W_c^T)``, with ``[c; h]`` written into ``ch (..., 2H)``."""
        assert self.combine is not None
        H = self.config.hidden_size
        ch[..., :H] = c
        ch[..., H:] = h
        return np.tanh(ch @ self.combine.params["weight"].T)

    def _decode_whole(self, y: np.ndarray, init: State, keys: Keys | None,
                      masks: list[np.ndarray] | None, ctx: dict[str, Any]) -> np.ndarray:
        """No input feeding: ``h = decoder(y) (T, B, H)`` as one layer call, then
        ``c, α = attention(h, M)`` for all T steps at once, ``ã = tanh([c; h] W_c^T)``."""
        h, _ = Recurrent.forward(self.decoder, y, init, dropout_masks=masks)
        if self.attention is None or self.combine is None or keys is None:
            return h
        c, _, cache = attend_forward(self.score_fn, self.attention.params, h, keys)
        feeds = np.tanh(self.combine(np.concatenate([c, h], axis=-1)))
        ctx.update(att_cache=cache, feeds=feeds)
        return feeds

    def _decode_fed(self, y: np.ndarray, init: State, keys: Keys | None,
                    masks: list[np.ndarray] | None, ctx: dict[str, Any]) -> np.ndarray:
        """Input feeding: step by step, ``u_t = [y_t; ã_{t-1}]`` (ã_{-1} = 0), each layer one
        step, then attention and combine; returns ``ã (T, B, H)``. Layer l's input at t is
        layer l-1's ``h_t ⊙ mask_{l-1}[t]`` (scaled keep masks)."""
        T, B, Et = y.shape
        H, L, dt = self.config.hidden_size, self.config.num_layers, self.dtype
        dec = self.decoder
        scaled = (None if masks is None else
                  [scale_dropout_mask(m, self.config.dropout, dt) for m in masks])
        layers = []
        for l in range(L):
            layers.append(_SteppedLayer(dec.step, dec._step_params(l), dec._step_grads(l),
                                        tuple(s[l] for s in init), T,
                                        Et + H if l == 0 else H, dt))
        first = layers[0]
        first.x[:, :, :Et] = y
        first.x[0, :, Et:] = 0.0                                     # ã_{-1} = 0
        w_feed = first.w_ih[:, Et:]                                  # (G*H, H): ã's columns
        # Layer 0's embedding part of the input projection, all T steps in one product:
        # gx = y W_y^T + b; the fed part ã_{t-1} W_a^T is added step by step.
        np.matmul(y, first.w_ih[:, :Et].T, out=first.gx)
        if first.b is not None:
            first.gx += first.b
        feeds = np.empty((T, B, H), dt)                              # ã_t
        attend = self.attention is not None and self.combine is not None and keys is not None
        ch = np.empty((T, B, 2 * H), dt) if attend else None         # [c_t; h_t]
        caches: list[AttendCache] = []
        for t in range(T):
            if t > 0:
                first.x[t, :, Et:] = feeds[t - 1]
                first.gx[t] += feeds[t - 1] @ w_feed.T
            h = first.forward(t)
            for l in range(1, L):
                layer = layers[l]
                if scaled is not None:
                    np.multiply(h, scaled[l - 1][t], out=layer.x[t])
                else:
                    layer.x[t] = h
                layer.project(t)
                h = layer.forward(t)
            if attend:
                assert self.attention is not None and ch is not None and keys is not None
                c, _, cache = attend_forward(self.score_fn, self.attention.params, h, keys)
                caches.append(cache)
                feeds[t] = self._attentional(c, h, ch[t])
            else:
                feeds[t] = h
        ctx.update(layers=layers, scaled=scaled, caches=caches, ch=ch, feeds=feeds)
        return feeds

    def backward(self, dlogits: np.ndarray) -> None:
        """``dlogits (T, B, Vt)`` (time-major) -> every parameter's gradient, ADDED into
        ``grads``. Consumes the last :meth:`forward`."""
        if self._ctx is None:
            raise RuntimeError("backward called before forward")
        ctx, self._ctx = self._ctx, None
        dfeeds = self.out.backward(dlogits)                          # dã (T, B, H), one product
        if self.config.input_feeding:
            dinit = self._decode_fed_backward(dfeeds, ctx)
        else:
            dinit = self._decode_whole_backward(dfeeds, ctx)
        dmemory = None
        if self.attention is not None:
            dmemory = keys_backward(self.score_fn, self.attention.params, self.attention.grads,
                                    ctx["keys"])                     # (S, B, H), once
        self._encode_backward(dmemory, dinit, ctx["init"])

    def _decode_whole_backward(self, da: np.ndarray, ctx: dict[str, Any]) -> State:
        """``dã (T, B, H)`` -> back through combine, attention (all steps at once) and the
        decoder layer; returns the gradients w.r.t. its initial states."""
        if self.attention is None or self.combine is None:
            dh = da
        else:
            H = self.config.hidden_size
            feeds = ctx["feeds"]
            dz = da * (1.0 - feeds * feeds)                          # ã = tanh(z)
            dch = self.combine.backward(dz)                          # (T, B, 2H)
            dq = attend_backward(self.score_fn, self.attention.params, self.attention.grads,
                                 dch[..., :H], None, ctx["att_cache"])
            assert dq is not None
            dh = dch[..., H:] + dq
        dy, dinit = Recurrent.backward(self.decoder, dh, None)
        self.decoder_embedding.backward(dy)
        return dinit

    def _decode_fed_backward(self, dfeeds: np.ndarray, ctx: dict[str, Any]) -> State:
        """Back through the input-feeding loop, ``t = T-1 .. 0``. The gradient reaching ã_t
        is what comes from its logits (``dfeeds[t]``) plus what comes back from step t+1's
        input (``dã_t += dgx0_{t+1} W_a``); per step: ``dz = dã ⊙ (1 - ã^2)``,
        ``[dc; dh] = dz W_c``, ``dh += attend_backward(dc)``, then each layer's step from the
        top (``dh_{l-1} = (dgx_l W_ih_l) ⊙ mask_{l-1}[t]``). Weight gradients after the loop."""
        layers: list[_SteppedLayer] = ctx["layers"]
        scaled, caches, ch, feeds = ctx["scaled"], ctx["caches"], ctx["ch"], ctx["feeds"]
        T, B, H = feeds.shape
        Et = self.config.target_input_size
        attend = self.attention is not None and self.combine is not None
        for layer in layers:
            layer.start_backward()
        w_feed = layers[0].w_ih[:, Et:]                              # (G*H, H)
        dz_all = np.empty_like(feeds) if attend else None            # dz of every step
        dfed = None                                                  # dã_t from step t+1
        for t in range(T - 1, -1, -1):
            da = dfeeds[t] if dfed is None else dfeeds[t] + dfed
            if attend:
                assert self.attention is not None and self.combine is not None
                assert dz_all is not None
                dz = dz_all[t]
                np.multiply(feeds[t], feeds[t], out=dz)
                np.subtract(1.0, dz, out=dz)
                dz *= da                                             # dz = dã ⊙ (1 - ã^2)
                dch = dz @ self.combine.params["weight"]             # [dc; dh] (B, 2H)
                dq = attend_backward(self.score_fn, self.attention.params,
                                     self.attention.grads, dch[:, :H], None, caches[t])
                dh = dch[:, H:] + dq
            else:
                dh = da
            for l in range(len(layers) - 1, 0, -1):
                dgx = layers[l].backward(t, dh)
                dh = dgx @ layers[l].w_ih                            # dx_l = dgx W_ih
                if scaled is not None:
                    dh *= scaled[l - 1][t]                           # the forward's mask
            dgx0 = layers[0].backward(t, dh)
            dfed = dgx0 @ w_feed                                     # to ã_{t-1}
        for layer in layers:
            layer.finish_backward()
        if attend:
            assert self.combine is not None and dz_all is not None and ch is not None
            # dW_c = Σ_t dz_t^T [c_t; h_t], one product for all steps.
            self.combine.grads["weight"] += dz_all.reshape(T * B, H).T @ ch.reshape(T * B,
                                                                                    2 * H)
        first = layers[0]
        dy = first.dgx @ first.w_ih[:, :Et]                          # (T, B, Et), one product
        self.decoder_embedding.backward(dy)
        # What reached each layer's initial state after step 0, as (L, B, H) per state kind.
        return tuple(np.stack([layer.dstate[j] for layer in layers])
                     for j in range(len(first.dstate)))

    def loss_and_backward(self, inputs: Any, targets: np.ndarray, state: State | None = None,
                          dropout_masks: Sequence[np.ndarray] | None = None
                          ) -> tuple[float, State | None]:
        """Training: the mean cross-entropy over the valid tokens of ``targets (B, T)``
        (``IGNORE_INDEX`` elsewhere); every gradient ADDED into ``grads``. Returns
        ``(loss, None)``: no state carries over."""
        logits = self.forward(inputs, dropout_masks)                 # (T, B, Vt)
        T, B, V = logits.shape
        targets = self._targets(targets, B, T)
        loss, dlogits = cross_entropy(logits.reshape(T * B, V), targets.T.reshape(-1),
                                      ignore_index=IGNORE_INDEX)
        self.backward(dlogits.reshape(T, B, V))
        return loss, None

    def _targets(self, targets: Any, B: int, T: int) -> np.ndarray:
        targets = self._tokens("targets", targets, 2)
        if targets.shape != (B, T):
            raise ShapeError(f"targets must have target_in's shape {(B, T)}, "
                             f"got {targets.shape}")
        return targets

    # -- evaluation ------------------------------------------------------------------------

    def score(self, inputs: Any, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Evaluation, teacher-forced: float64 ``loss_sum (B,)``, each row's summed
        cross-entropy over its valid target tokens, and ``tokens (B,)`` (float64), their
        number."""
        self.eval()
        logits = self.forward(inputs)
        self._ctx = None
        T, B, _ = logits.shape
        targets = self._targets(targets, B, T).T                     # (T, B)
        logp = log_softmax(logits.astype(np.float64), axis=-1)
        valid = targets != IGNORE_INDEX
        picked = np.take_along_axis(logp, np.where(valid, targets, 0)[..., None],
                                    axis=-1)[..., 0]
        return -np.where(valid, picked, 0.0).sum(axis=0), valid.sum(axis=0).astype(np.float64)

    def encode(self, source: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, State]:
        """Evaluation: ``source (B, S)``, ``lengths (B,)`` -> ``memory (B, S, H)`` and the
        decoder's initial state, a tuple of ``(L, B, H)`` (h, and c for the LSTM)."""
        self.eval()
        memory, init = self._encode(source, lengths, None)
        return np.ascontiguousarray(memory.transpose(1, 0, 2)), init

    def decode_step(self, tokens: np.ndarray, state: State, feed: np.ndarray,
                    memory: np.ndarray, lengths: np.ndarray
                    ) -> tuple[np.ndarray, State, np.ndarray, np.ndarray | None]:
        """Evaluation, one decoder step: ``tokens (B,)`` (the previous outputs), ``state``
        (``(L, B, H)`` each), ``feed (B, H)`` = ã_{t-1} (zeros at the first step; not read
        without input feeding), ``memory (B, S, H)``, ``lengths (B,)`` -> float64
        ``log_probs (B, Vt)``, the new state, ``ã_t (B, H)`` and float64 ``alpha (B, S)``
        (None without attention)."""
        self.eval()
        tokens = self._tokens("tokens", tokens, 1)
        x = self.decoder_embedding(tokens)                                   # (B, Et)
        if self.config.input_feeding:
            feed = check_array("feed", feed, self.dtype, (2,))
            if feed.shape != (len(tokens), self.config.hidden_size):
                raise ShapeError(f"feed must have shape {(len(tokens), self.config.hidden_size)}"
                                 f", got {feed.shape}")
            x = np.concatenate([x, feed], axis=-1)
        h, state = self._decoder_step(x, tuple(state))                      # (B, H)
        alpha = None
        if self.attention is not None and self.combine is not None:
            keys = self._keys(check_array("memory", memory, self.dtype, (3,)), lengths)
            c, a, _ = attend_forward(self.score_fn, self.attention.params, h, keys)
            feed = self._attentional(c, h, np.empty((len(h), 2 * len(h[0])), self.dtype))
            alpha = a.astype(np.float64)
        else:
            feed = h.copy()
        logits = self.out(feed)
        return log_softmax(logits.astype(np.float64), axis=-1), state, feed, alpha

    def _decoder_step(self, x: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One step of the decoder stack in evaluation: ``x (B, F)``, ``state`` (``(L, B, H)``
        each) -> the top layer's ``h (B, H)`` and the new state. The arithmetic of
        ``Recurrent.forward`` over one time step (``run_forward``: ``x W_ih^T + b_ih``, ``+
        b_hh`` where the cell folds it in, then the cell's step), in the same order, so the
        results are the same to the bit; without its machinery for sequences (buffers over
        time, lengths, dropout), about 50 µs per call, 7% of greedy decoding's time per word
        at batch 1 (one Xeon core, 2026-12-04). The states are checked as that call checks
        them."""
        dec, step = self.decoder, self.decoder.step
        L, B = self.config.num_layers, len(x)
        if len(state) != len(step.state_names):
            raise TypeError(f"the decoder state must be a tuple of {len(step.state_names)} "
                            f"arrays ({', '.join(step.state_names)}), got {len(state)}")
        state = tuple(dec._check_state(name, s, (L, B, size))
                      for name, size, s in zip(step.state_names, step.state_sizes(), state))
        news = []
        for l in range(L):
            p = dict(dec._step_params(l))
            gx = x @ p["weight_ih"].T                                        # (B, G*H)
            if p["bias_ih"] is not None:
                gx += p["bias_ih"]
            if step.shares_gate_grads and p["bias_hh"] is not None:
                gx += p["bias_hh"]
                p["bias_hh"] = None
            p["weight_hh_T"] = p["weight_hh"].T
            step.prepare_forward(p, gx[None], False)
            prev = tuple(s[l] for s in state)
            new = tuple(np.empty_like(s) for s in prev)
            with np.errstate(over="ignore"):     # exp overflow in a sigmoid is harmless (σ = 0)
                step.forward(p, gx, prev, new, step.new_cache(1, len(x), self.dtype), 0)
            news.append(new)
            x = new[0]
        return x, tuple(np.stack(s) for s in zip(*news))

    def _keys(self, memory: np.ndarray, lengths: np.ndarray) -> Keys:
        """The attention's key side of ``memory (B, S, H)``, computed once per memory: a search
        calls ``decode_step`` with the same memory at every step, and the key projection (a
        ``B*S x H x H`` product) would otherwise cost more than the step itself. Reused only
        for the same memory object (not modified in place in between, as the attention's
        contract asks), the same lengths and the same key weights."""
        assert self.attention is not None
        params = self.attention.params
        cached = self._key_cache
        if (cached is not None and cached[0] is memory and np.array_equal(cached[1], lengths)
                and all(np.array_equal(w, params[k]) for k, w in cached[2].items())):
            return cached[3]
        keys = prepare_keys(self.score_fn, params, memory.transpose(1, 0, 2), lengths)
        weights = {k: v.copy() for k, v in params.items() if k.startswith("key.")}
        self._key_cache = (memory, np.array(lengths, copy=True), weights, keys)
        return keys
