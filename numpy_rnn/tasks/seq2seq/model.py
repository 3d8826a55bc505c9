"""Sequence to sequence with attention: read one sequence, write another (Luong et al. 2015's
global attention, as OpenNMT builds it): the model (its config, its inputs and the checks its
torch twin shares are :mod:`numpy_rnn.tasks.seq2seq.config`).

The encoder reads the source, the decoder writes the target one token at a time, attending over
the encoder's outputs at every step (``⊙ m`` marks a dropout, training only; ``m`` a keep mask
scaled by ``1 / (1 - p)``, each with its own ``p``)::

    source (B, S) -> Embedding -> e_s ⊙ m_src[s]  (Es)          embedding_dropout
        -> bidirectional stack (H/2 per direction, run with the lengths)      dropout between
        -> memory M (S, B, H), final states of both directions               its layers
    bridge: for each layer l and state kind (h; c for the LSTM):
        s0[l] = tanh([s_fwd[l]; s_bwd[l]] W_b^T + b_b)          bridge_h.{l}, bridge_c.{l}
    target_in (B, T) = BOS y_1 .. y_n -> Embedding -> x_t ⊙ m_tgt[t]  (Et)     embedding_dropout
    decoder input  u_t = [x_t; f_{t-1}]  (input feeding, f_{-1} = 0)   or  u_t = x_t
    h_t   = top output of the unidirectional decoder stack from s0          dropout between
    c_t, α_t = attention(query h_t, keys and values M, source lengths)      its layers
    ã_t   = tanh([c_t; h_t] W_c^T)            combine.weight (H, 2H), no bias;  ã_t = h_t (none)
    f_t   = ã_t ⊙ m_hid[t]                    hidden_dropout: what the output layer reads AND
                                              what input feeding feeds to step t+1 (f_t = ã_t
                                              in evaluation)
    logits_t = f_t W_o^T + b_o                out.weight (Vt, H), out.bias (Vt,)
    loss  = mean over the valid target tokens of -log softmax(logits_t)[y_t], against targets
            smoothed by label_smoothing in training (validation and ``score``: the plain NLL)

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

What both twins share is written once in :mod:`numpy_rnn.tasks.seq2seq.config`: the config,
the checks of every input, the split of the masks and the reuse of the attention's keys.

Decoding in NumPy (``encode`` and ``decode_step``) reads its embeddings' share of the input
projections from tables per token and checks a memory once, at its first step
(:mod:`numpy_rnn.tasks.seq2seq.inference`); the general path it is tested equal to is kept
(``_encode_general``, ``_decode_step_general``).
"""


from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...nn.attention import (
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
from ...nn.recurrent import LAYERS, Recurrent, StepRunner, scale_dropout_mask
from ...nn.steps import State
from ..base import TaskModel
from ..model import expose
from .config import (
    ATTENTIONS,
    BOS,
    EOS,
    PAD,
    KeyCache,
    Seq2SeqConfig,
    Seq2SeqInputs,
    Seq2SeqMasks,
    check_decode_step,
    check_inputs,
    check_source,
    check_state,
    check_step_inputs,
    check_targets,
    check_tokens,
    direction_size,
)
from .inference import Session, Tables, build_tables, table_sources

__all__ = ["ATTENTIONS", "BOS", "EOS", "PAD", "KeyCache", "Seq2Seq", "Seq2SeqConfig",
           "Seq2SeqInputs", "Seq2SeqMasks", "check_decode_step", "check_inputs",
           "check_source", "check_state", "check_step_inputs", "check_targets", "check_tokens",
           "direction_size"]

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
        cls = LAYERS[config.cell]
        # Dropout acts between layers only: with one layer it changes nothing (and would warn).
        dropout = config.dropout if L > 1 else 0.0
        self.encoder_embedding = Embedding(config.vocab_size, config.input_size, dtype=dt,
                                           seed=next(streams))
        self.encoder = cls(config.input_size, direction_size(H), num_layers=L, dropout=dropout,
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
        # Inference (see .inference): the per-token tables of the weights, the session of the
        # last memory decode_step attended over, and the weights' version, which
        # load_state_dict bumps.
        self._weights_version = 0
        self._tables: Tables | None = None
        self._session: Session | None = None
        self._encoded: tuple[np.ndarray, Tables] | None = None    # encode's last memory
        # The general decode step's key side of the last memory (the reference path's rule).
        self._key_cache: KeyCache[Keys] = KeyCache(np.array_equal, np.copy)
        self._key_weights = ([k for k in self.attention.params if k.startswith("key.")]
                             if self.attention is not None else [])

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy ``state`` into the parameters, in place (strict, see
        :meth:`~numpy_rnn.nn.module.Module.load_state_dict`); decoding uses them from the next
        call on (the weights' version changes, and with it the tables and keys)."""
        super().load_state_dict(state)
        self.weights_changed()

    def weights_changed(self) -> None:
        """Tell decoding that the weights changed (``load_state_dict`` does; an optimizer step
        is noticed without it, an edit by hand of a few elements of a matrix may not be, see
        :mod:`numpy_rnn.tasks.seq2seq.inference`): the next call rebuilds what it derived
        from them."""
        self._weights_version += 1

    def train(self, mode: bool = True) -> Seq2Seq:
        super().train(mode)
        self.encoder.train(mode)
        self.decoder.train(mode)
        return self

    def _masks(self, S: int, T: int, B: int, given: Sequence[np.ndarray] | None
               ) -> Seq2SeqMasks | None:
        """The KEEP masks of a step by where they act, or None where no dropout applies
        (evaluation, every rate 0). Drawn here, each with its own ``p``, when not given."""
        if given is None and self.training:
            given = [self._rng.random(mask.shape) >= mask.p
                     for mask in self.config.dropout_masks(S, T, B)]
        return self.config.split_dropout_masks(given, S, T, B, self.training)

    def _scaled(self, keep: np.ndarray | None, p: float) -> np.ndarray | None:
        """``keep / (1 - p)`` in the model's dtype (None for no mask)."""
        return None if keep is None else scale_dropout_mask(keep, p, self.dtype)

    # -- encoder and bridge ----------------------------------------------------------------

    def _encode(self, source: np.ndarray, lengths: np.ndarray, masks: Seq2SeqMasks | None,
                ctx: dict[str, Any] | None = None) -> tuple[np.ndarray, State]:
        """``source (B, S)``, ``lengths (B,)`` (checked) -> memory ``M (S, B, H)`` (0 at padded
        steps) and the decoder's initial states (``(L, B, H)`` each, h then c)::

            u[l] = [s_n[2l]; s_n[2l+1]]          (B, H)  both directions' final states
            s0[l] = tanh(u[l] W_b^T + b_b)       bridge_{h,c}.{l}
        """
        B = source.shape[0]
        x = self.encoder_embedding(source.T)                                 # (S, B, Es)
        if masks is not None:
            m_src = self._scaled(masks.source_embedding, self.config.embedding_dropout)
            if m_src is not None:
                x = x * m_src
            if ctx is not None:
                ctx["source_mask"] = m_src
        between = masks.encoder if masks is not None and masks.encoder else None
        memory, finals = Recurrent.forward(self.encoder, x, None, lengths, dropout_masks=between)
        return memory, self._bridge(finals, B)

    def _bridge(self, finals: State, B: int) -> State:
        """The encoder's final states ``(2L, B, H/2)`` each -> the decoder's initial states
        ``(L, B, H)`` each: ``tanh([s_fwd; s_bwd] W_b^T + b_b)`` per layer and state kind."""
        L, H = self.config.num_layers, self.config.hidden_size
        init = []
        for kind, f in zip(self.bridges, finals):
            # (2L, B, H/2), rows 2l (forward) and 2l+1 (reverse) -> (L, B, H): [fwd; bwd]
            u = f.reshape(L, 2, B, H // 2).transpose(0, 2, 1, 3).reshape(L, B, H)
            init.append(np.stack([np.tanh(b(u[l])) for l, b in enumerate(self.bridges[kind])]))
        return tuple(init)

    def _encode_backward(self, dmemory: np.ndarray | None, dinit: State,
                         ctx: dict[str, Any]) -> None:
        """Back through the bridges (``du = (ds0 ⊙ (1 - s0^2)) W_b``), the encoder, the source
        embedding's dropout and the embedding, given ``dmemory (S, B, H)`` (or None) and
        ``dinit`` (``(L, B, H)`` each)."""
        L, H = self.config.num_layers, self.config.hidden_size
        dfinals = []
        for kind, ds, s0 in zip(self.bridges, dinit, ctx["init"]):
            du = np.stack([b.backward(ds[l] * (1.0 - s0[l] * s0[l]))
                           for l, b in enumerate(self.bridges[kind])])       # (L, B, H)
            B = du.shape[1]
            dfinals.append(du.reshape(L, B, 2, H // 2).transpose(0, 2, 1, 3)
                           .reshape(2 * L, B, H // 2))
        dx, _ = Recurrent.backward(self.encoder, dmemory, tuple(dfinals))
        if ctx.get("source_mask") is not None:
            dx = dx * ctx["source_mask"]                                     # the same mask
        self.encoder_embedding.backward(dx)

    # -- the training forward and backward ---------------------------------------------------

    def forward(self, inputs: Seq2SeqInputs,
                dropout_masks: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Teacher-forced logits ``(T, B, Vt)``, TIME-MAJOR, of ``inputs``; keeps what
        :meth:`backward` needs. ``dropout_masks``: the keep masks of
        ``config.dropout_masks(S, T, B)`` (training mode with dropout; None: drawn)."""
        source, lengths, target_in = check_inputs(self.config, inputs)
        B, S = source.shape
        masks = self._masks(S, target_in.shape[1], B, dropout_masks)
        return self._forward(source, lengths, target_in, masks)

    def _forward(self, source: np.ndarray, lengths: np.ndarray, target_in: np.ndarray,
                 masks: Seq2SeqMasks | None) -> np.ndarray:
        """:meth:`forward` on checked inputs and the masks by where they act."""
        B, T = target_in.shape
        ctx: dict[str, Any] = dict(T=T, B=B)
        memory, init = self._encode(source, lengths, masks, ctx)
        keys = (prepare_keys(self.score_fn, self.attention.params, memory, lengths)
                if self.attention is not None else None)
        y = self.decoder_embedding(target_in.T)                              # (T, B, Et)
        target_mask = hidden = None
        if masks is not None:
            target_mask = self._scaled(masks.target_embedding, self.config.embedding_dropout)
            hidden = self._scaled(masks.hidden, self.config.hidden_dropout)
            if target_mask is not None:
                y = y * target_mask
        ctx.update(init=init, keys=keys, target_mask=target_mask, hidden=hidden)
        # Where the two decoder paths part. Input feeding makes step t's input depend on
        # step t-1's attentional state, so the decoder, the attention and the combine run
        # inside one Python time loop: per step and layer one (B, F) x (F, G*H) input
        # projection (layer 0's embedding part is projected for all T steps at once), one
        # attention step over S memory steps and one (B, 2H) x (2H, H) combine; O(T*L) calls,
        # and the same again in backward. Without it the decoder is ONE call of the library's
        # layer (input projection of all T steps in one product, its own time loop), then the
        # attention of all T steps in one batched call, and the combine as one product.
        decoder_masks = masks.decoder if masks is not None else []
        if self.config.input_feeding:
            feeds = self._decode_fed(y, init, keys, decoder_masks, hidden, ctx)   # (T, B, H)
        else:
            feeds = self._decode_whole(y, init, keys, decoder_masks, hidden, ctx)
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
                      masks: list[np.ndarray], hidden: np.ndarray | None,
                      ctx: dict[str, Any]) -> np.ndarray:
        """No input feeding: ``h = decoder(y) (T, B, H)`` as one layer call, then
        ``c, α = attention(h, M)`` for all T steps at once, ``ã = tanh([c; h] W_c^T)``; returns
        ``f = ã ⊙ m_hid``."""
        h, _ = Recurrent.forward(self.decoder, y, init, dropout_masks=masks or None)
        att = h
        if self.attention is not None and self.combine is not None and keys is not None:
            c, _, cache = attend_forward(self.score_fn, self.attention.params, h, keys)
            att = np.tanh(self.combine(np.concatenate([c, h], axis=-1)))
            ctx.update(att_cache=cache, att=att)
        return att if hidden is None else att * hidden

    def _decode_fed(self, y: np.ndarray, init: State, keys: Keys | None,
                    masks: list[np.ndarray], hidden: np.ndarray | None,
                    ctx: dict[str, Any]) -> np.ndarray:
        """Input feeding: step by step, ``u_t = [y_t; f_{t-1}]`` (f_{-1} = 0), each layer one
        step (a :class:`~numpy_rnn.nn.recurrent.StepRunner` per layer), then attention,
        combine and the hidden dropout; returns ``f (T, B, H)``. Layer l's input at t is layer
        l-1's ``h_t ⊙ mask_{l-1}[t]`` (scaled keep masks)."""
        T, B, Et = y.shape
        H, L, dt = self.config.hidden_size, self.config.num_layers, self.dtype
        dec = self.decoder
        between = [scale_dropout_mask(m, self.config.dropout, dt) for m in masks] or None
        runs = [StepRunner(dec.step, dec.step_params(l), np.empty((T, B, Et + H if l == 0
                                                                   else H), dt),
                           tuple(s[l] for s in init), stepwise=True) for l in range(L)]
        first = runs[0]
        # Layer 0's embedding part of the input projection, all T steps in one product:
        # gx = y W_y^T + b; the fed part f_{t-1} W_f^T is added step by step.
        first.project_part(y, slice(0, Et))
        first.x[0, :, Et:] = 0.0                               # f_{-1} = 0: nothing to add
        feeds = np.empty((T, B, H), dt)                        # f_t: read by out and step t+1
        atts = feeds if hidden is None else np.empty_like(feeds)    # ã_t (the same, undropped)
        attend = self.attention is not None and self.combine is not None and keys is not None
        ch = np.empty((T, B, 2 * H), dt) if attend else None   # [c_t; h_t]
        caches: list[AttendCache] = []
        for t in range(T):
            if t > 0:
                first.add_input(t, feeds[t - 1], slice(Et, None))
            h = self._stack_step(runs, t, between)
            if attend:
                assert self.attention is not None and ch is not None and keys is not None
                c, _, cache = attend_forward(self.score_fn, self.attention.params, h, keys)
                caches.append(cache)
                atts[t] = self._attentional(c, h, ch[t])
            else:
                atts[t] = h
            if hidden is not None:
                np.multiply(atts[t], hidden[t], out=feeds[t])
        ctx.update(runs=runs, between=between, caches=caches, ch=ch, feeds=feeds, atts=atts)
        return feeds

    @staticmethod
    def _stack_step(runs: list[StepRunner], t: int, between: list[np.ndarray] | None
                    ) -> np.ndarray:
        """Step ``t`` of each decoder layer, bottom to top (layer 0's input complete): layer l
        reads layer l-1's ``h_t ⊙ mask_{l-1}[t]``; returns the top layer's ``h_t (B, H)``."""
        with np.errstate(over="ignore"):     # exp overflow in a sigmoid is harmless (σ = 0)
            h = runs[0].forward_step(t)
            for l in range(1, len(runs)):
                run = runs[l]
                if between is not None:
                    np.multiply(h, between[l - 1][t], out=run.x[t])
                else:
                    run.x[t] = h
                run.project(t)
                h = run.forward_step(t)
        return h

    def backward(self, dlogits: np.ndarray) -> None:
        """``dlogits (T, B, Vt)`` (time-major) -> every parameter's gradient, ADDED into
        ``grads``. Consumes the last :meth:`forward`."""
        if self._ctx is None:
            raise RuntimeError("backward called before forward")
        ctx, self._ctx = self._ctx, None
        dfeeds = self.out.backward(dlogits)                          # df (T, B, H), one product
        if self.config.input_feeding:
            dy, dinit = self._decode_fed_backward(dfeeds, ctx)
        else:
            dy, dinit = self._decode_whole_backward(dfeeds, ctx)
        if ctx["target_mask"] is not None:
            dy = dy * ctx["target_mask"]                             # the same mask
        self.decoder_embedding.backward(dy)
        dmemory = None
        if self.attention is not None:
            dmemory = keys_backward(self.score_fn, self.attention.params, self.attention.grads,
                                    ctx["keys"])                     # (S, B, H), once
        self._encode_backward(dmemory, dinit, ctx)

    def _decode_whole_backward(self, df: np.ndarray, ctx: dict[str, Any]
                               ) -> tuple[np.ndarray, State]:
        """``df (T, B, H)`` -> back through the hidden dropout, combine, attention (all steps
        at once) and the decoder layer; returns the gradients w.r.t. the embedded targets
        ``(T, B, Et)`` and the decoder's initial states."""
        da = df if ctx["hidden"] is None else df * ctx["hidden"]     # dã = df ⊙ m_hid
        if self.attention is None or self.combine is None:
            dh = da
        else:
            H = self.config.hidden_size
            att = ctx["att"]
            dz = da * (1.0 - att * att)                              # ã = tanh(z)
            dch = self.combine.backward(dz)                          # (T, B, 2H)
            dq = attend_backward(self.score_fn, self.attention.params, self.attention.grads,
                                 dch[..., :H], None, ctx["att_cache"])
            assert dq is not None
            dh = dch[..., H:] + dq
        dy, dinit = Recurrent.backward(self.decoder, dh, None)
        return dy, dinit

    def _decode_fed_backward(self, dfeeds: np.ndarray, ctx: dict[str, Any]
                             ) -> tuple[np.ndarray, State]:
        """Back through the input-feeding loop, ``t = T-1 .. 0``; per step: ``dã = df ⊙
        m_hid[t]``, ``dz = dã ⊙ (1 - ã^2)``, ``[dc; dh] = dz W_c``, ``dh += attend_backward(dc)``,
        then each layer's step from the top (``dh_{l-1} = (dgx_l W_ih_l) ⊙ mask_{l-1}[t]``).
        Weight gradients after the loop. Returns the gradients w.r.t. the embedded targets
        ``(T, B, Et)`` and the decoder's initial states."""
        runs: list[StepRunner] = ctx["runs"]
        between, caches, ch, feeds = ctx["between"], ctx["caches"], ctx["ch"], ctx["feeds"]
        atts, hidden = ctx["atts"], ctx["hidden"]
        T, B, H = feeds.shape
        Et = self.config.target_input_size
        attend = self.attention is not None and self.combine is not None
        for run in runs:
            run.start_backward()
        dz_all = np.empty_like(feeds) if attend else None            # dz of every step
        dfed = None                                                  # df_t from step t+1
        for t in range(T - 1, -1, -1):
            # The gradient reaching f_t is the sum of what comes from its logits (dfeeds[t])
            # and what comes back from step t+1, whose input it was (dfed).
            df = dfeeds[t] if dfed is None else dfeeds[t] + dfed
            da = df if hidden is None else df * hidden[t]            # dã = df ⊙ m_hid
            if attend:
                assert self.attention is not None and self.combine is not None
                assert dz_all is not None
                dz = dz_all[t]
                np.multiply(atts[t], atts[t], out=dz)
                np.subtract(1.0, dz, out=dz)
                dz *= da                                             # dz = dã ⊙ (1 - ã^2)
                dch = dz @ self.combine.params["weight"]             # [dc; dh] (B, 2H)
                dq = attend_backward(self.score_fn, self.attention.params,
                                     self.attention.grads, dch[:, :H], None, caches[t])
                dh = dch[:, H:] + dq
            else:
                dh = da
            for l in range(len(runs) - 1, 0, -1):
                dgx = runs[l].backward_step(t, dh)
                dh = dgx @ runs[l].w_ih                              # dx_l = dgx W_ih
                if between is not None:
                    dh *= between[l - 1][t]                          # the forward's mask
            dgx0 = runs[0].backward_step(t, dh)
            dfed = dgx0 @ runs[0].w_ih[:, Et:]                       # to f_{t-1}
        for l, run in enumerate(runs):
            run.finish_backward(self.decoder.step_grads(l))
        if attend:
            assert self.combine is not None and dz_all is not None and ch is not None
            # dW_c = Σ_t dz_t^T [c_t; h_t], one product for all steps.
            self.combine.grads["weight"] += dz_all.reshape(T * B, H).T @ ch.reshape(T * B,
                                                                                    2 * H)
        first = runs[0]
        dy = first.dgx @ first.w_ih[:, :Et]                          # (T, B, Et), one product
        # What reached each layer's initial state after step 0, as (L, B, H) per state kind.
        dinit = [run.end_backward() for run in runs]
        return dy, tuple(np.stack(d) for d in zip(*dinit))

    def loss_and_backward(self, inputs: Any, targets: np.ndarray, state: State | None = None,
                          dropout_masks: Sequence[np.ndarray] | None = None
                          ) -> tuple[float, State | None]:
        """Training: the mean cross-entropy over the valid tokens of ``targets (B, T)``
        (``IGNORE_INDEX`` elsewhere), against targets smoothed by ``config.label_smoothing``;
        every gradient ADDED into ``grads``. ``dropout_masks``: the driver's keep masks of
        ``config.dropout_masks(S, T, B)`` (None: drawn here). Returns ``(loss, None)``: no
        state carries over."""
        source, lengths, target_in = check_inputs(self.config, inputs)
        targets = check_targets(self.config, targets, target_in.shape, training=True)
        B, S = source.shape
        T = target_in.shape[1]
        masks = self._masks(S, T, B, dropout_masks)
        logits = self._forward(source, lengths, target_in, masks)    # (T, B, Vt)
        V = logits.shape[2]
        smoothing = self.config.label_smoothing
        loss, dlogits = cross_entropy(logits.reshape(T * B, V), targets.T.reshape(-1),
                                      ignore_index=IGNORE_INDEX,
                                      **({"label_smoothing": smoothing} if smoothing else {}))
        self.backward(dlogits.reshape(T, B, V))
        return loss, None

    # -- evaluation ------------------------------------------------------------------------

    def score(self, inputs: Any, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Evaluation, teacher-forced: float64 ``loss_sum (B,)``, each row's summed
        cross-entropy over its valid target tokens (never smoothed), and ``tokens (B,)``
        (float64), their number."""
        self.eval()
        source, lengths, target_in = check_inputs(self.config, inputs)
        targets = check_targets(self.config, targets, target_in.shape, training=False).T
        logits = self._forward(source, lengths, target_in, None)    # (T, B, Vt)
        self._ctx = None
        logp = log_softmax(logits.astype(np.float64), axis=-1)
        valid = targets != IGNORE_INDEX
        picked = np.take_along_axis(logp, np.where(valid, targets, 0)[..., None],
                                    axis=-1)[..., 0]
        return -np.where(valid, picked, 0.0).sum(axis=0), valid.sum(axis=0).astype(np.float64)

    def encode(self, source: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, State]:
        """Evaluation: ``source (B, S)``, ``lengths (B,)`` -> ``memory (B, S, H)`` and the
        decoder's initial state, a tuple of ``(L, B, H)`` (h, and c for the LSTM).

        Layer 0 of the encoder reads its input projection from the per-token tables
        (:mod:`~numpy_rnn.tasks.seq2seq.inference`): the general path's arithmetic
        (:meth:`_encode_general`, the training forward's encoder) to float rounding."""
        self.eval()
        source, lengths = check_source(self.config, source, lengths)
        tables = self._current_tables()
        B, S = source.shape
        ids = source.T                                           # (S, B)
        gx = [table[ids] for table in tables.source]             # (S, B, G*H/2) per direction
        # Where no source is padded (a single word never is), no step needs masking.
        padded = lengths if int(lengths.min()) < S else None
        memory, finals = self.encoder.forward_projected(gx, padded)
        out = np.ascontiguousarray(memory.transpose(1, 0, 2))
        self._encoded = (out, tables)          # a session over `out` starts with these tables
        return out, self._bridge(finals, B)

    def _encode_general(self, source: np.ndarray, lengths: np.ndarray
                        ) -> tuple[np.ndarray, State]:
        """:meth:`encode` through the embedding and the layer's own forward (the training
        forward's encoder in evaluation), kept as the reference the tables are tested
        against."""
        self.eval()
        source, lengths = check_source(self.config, source, lengths)
        memory, init = self._encode(source, lengths, None)
        return np.ascontiguousarray(memory.transpose(1, 0, 2)), init

    def _current_tables(self) -> Tables:
        """The per-token tables of the current weights: the last ones while their fingerprint
        matches, else new ones."""
        tables = self._tables
        sources = table_sources(self.encoder, self.decoder,
                                self.encoder_embedding.params["weight"],
                                self.decoder_embedding.params["weight"])
        if tables is None or not tables.fingerprint.matches(sources, self._weights_version):
            tables = self._tables = build_tables(
                self.encoder, self.decoder, self.encoder_embedding.params["weight"],
                self.decoder_embedding.params["weight"], self.config.target_input_size,
                self.config.input_feeding, self._weights_version)
        return tables

    def _session_for(self, memory: Any, lengths: Any) -> Session | None:
        """The session of ``memory`` and ``lengths`` (the same objects as the last step's, at
        the same weights version), or None."""
        session = self._session
        if (session is not None and session.memory is memory and session.lengths is lengths
                and session.version == self._weights_version):
            return session
        return None

    def decode_step(self, tokens: np.ndarray, state: State, feed: np.ndarray,
                    memory: np.ndarray, lengths: np.ndarray
                    ) -> tuple[np.ndarray, State, np.ndarray, np.ndarray | None]:
        """Evaluation, one decoder step: ``tokens (B,)`` (the previous outputs), ``state``
        (``(L, B, H)`` each), ``feed (B, H)`` = ã_{t-1} (zeros at the first step; not read
        without input feeding), ``memory (B, S, H)``, ``lengths (B,)`` -> float64
        ``log_probs (B, Vt)``, the new state, ``ã_t (B, H)`` and float64 ``alpha (B, S)``
        (None without attention).

        The memory and its lengths are checked, and the attention's keys computed, at the
        first step over them; later steps that pass the same two objects reuse that (a
        :class:`~numpy_rnn.tasks.seq2seq.inference.Session`: do not change them in place in
        between, as the attention's contract asks; the weights are those of the session's
        start, unless ``load_state_dict`` comes in between). The decoder's layer 0 reads the
        embedding's share of its input projection from a table per token, then adds the fed
        part ``f_{t-1} W_ih[:, Et:]^T`` (the training forward's split), and its stack's step
        is the library's (:class:`~numpy_rnn.nn.recurrent.StackStep`, ``forward_step``
        prepared once per session): the general step's arithmetic
        (:meth:`_decode_step_general`) to float rounding."""
        if self.training:
            self.eval()
        session = self._session_for(memory, lengths)
        if session is None:
            tokens, fed, checked, lengths_ok = check_decode_step(self.config, tokens, feed,
                                                                 memory, lengths)
            session = self._start_session(memory, lengths, checked, lengths_ok)
        else:
            tokens, fed = check_step_inputs(self.config, tokens, feed, session.memory.shape)
        tables = session.tables
        gx = tables.target[tokens]                         # (B, G*H): y_{t-1}'s share, + b
        if fed is not None:                                # + f_{t-1} W_f^T (input feeding)
            assert tables.fed_weight_t is not None
            gx += fed @ tables.fed_weight_t
        h, state = session.decoder(None, state, projected=gx)   # checks the state
        alpha = None
        if session.keys is not None and self.attention is not None:
            c, a, _ = attend_forward(self.score_fn, self.attention.params, h, session.keys)
            assert self.combine is not None                # ã = tanh([c; h] W_c^T)
            att = np.tanh(np.concatenate([c, h], axis=-1) @ self.combine.params["weight"].T)
            alpha = a.astype(np.float64)
        else:
            att = h.copy()
        logits = att @ self.out.params["weight"].T         # Linear.forward's arithmetic
        logits += self.out.params["bias"]
        return log_softmax(logits.astype(np.float64), axis=-1), state, att, alpha

    def _start_session(self, memory: Any, lengths: Any, checked: np.ndarray,
                       lengths_ok: np.ndarray) -> Session:
        """A new session over the ``checked`` memory ``(B, S, H)`` and lengths: the current
        tables and the attention's keys (the ``valid`` mask only where a source is padded:
        without one every step's masking changes nothing)."""
        keys = None
        if self.attention is not None:
            S = checked.shape[1]
            padded = lengths_ok if int(lengths_ok.min()) < S else None
            keys = prepare_keys(self.score_fn, self.attention.params,
                                checked.transpose(1, 0, 2), padded)
        encoded = self._encoded
        if (encoded is not None and encoded[0] is memory
                and encoded[1].fingerprint.version == self._weights_version):
            tables = encoded[1]                # checked by the encode that made this memory
        else:
            tables = self._current_tables()
        session = Session(memory=memory, lengths=lengths, version=self._weights_version,
                          tables=tables, keys=keys, decoder=self.decoder.stepper())
        self._session = session
        return session

    def _decode_step_general(self, tokens: np.ndarray, state: State, feed: np.ndarray,
                             memory: np.ndarray, lengths: np.ndarray
                             ) -> tuple[np.ndarray, State, np.ndarray, np.ndarray | None]:
        """:meth:`decode_step` through the embedding, ``Recurrent.forward_step`` over
        ``[x; f]`` and the attention's checked forward, every input checked at every step
        and the keys reused under :class:`KeyCache`'s rule; kept as the reference the fast
        step is tested against."""
        self.eval()
        tokens, fed, memory, lengths = check_decode_step(self.config, tokens, feed, memory,
                                                         lengths)
        # (B, Et): the embedding's rows (the tokens are checked; nothing is kept for backward)
        x = self.decoder_embedding.params["weight"][tokens]
        if fed is not None:                                                  # input feeding
            x = np.concatenate([x, fed], axis=-1)
        h, state = self.decoder.forward_step(x, state)      # (B, H); checks state (check_state)
        alpha = None
        if self.attention is not None and self.combine is not None:
            keys = self._keys(memory, lengths)
            c, a, _ = attend_forward(self.score_fn, self.attention.params, h, keys)
            att = self._attentional(c, h, np.empty((len(h), 2 * len(h[0])), self.dtype))
            alpha = a.astype(np.float64)
        else:
            att = h.copy()
        logits = self.out(att)
        return log_softmax(logits.astype(np.float64), axis=-1), state, att, alpha

    def _keys(self, memory: np.ndarray, lengths: np.ndarray) -> Keys:
        """The attention's key side of ``memory (B, S, H)``, once per memory (:class:`KeyCache`:
        the same memory object, lengths and key weights)."""
        assert self.attention is not None
        params = self.attention.params
        return self._key_cache.get(
            memory, lengths, {k: params[k] for k in self._key_weights},
            lambda: prepare_keys(self.score_fn, params, memory.transpose(1, 0, 2), lengths))
