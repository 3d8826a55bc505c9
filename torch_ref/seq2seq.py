"""The encoder-decoder with attention in torch.nn: the oracle for
``numpy_rnn.tasks.seq2seq``'s model (Luong et al. 2015 global attention, as OpenNMT),
differentiated by autograd.

* ``encoder_embedding`` ``nn.Embedding(Vs, Es)`` -> ``encoder``, a bidirectional
  ``nn.LSTM``/``nn.GRU``/``nn.RNN`` stack of ``num_layers`` x ``H/2`` per direction, run over
  ``pack_padded_sequence(source, lengths)``: the memory ``M (S, B, H)`` is its output (0 at the
  padded steps), the final states are those at each source's own last step.
* bridge: per layer ``l``, ``h0_l = tanh(bridge_h[l]([h_fwd; h_bwd]))`` (and ``c0_l`` with
  ``bridge_c`` for the LSTM), ``nn.Linear(H, H)`` each.
* ``decoder_embedding`` ``nn.Embedding(Vt, Et)`` -> ``decoder``, a unidirectional stack of
  ``num_layers`` x ``H`` over ``[embed(y_{t-1}); ã_{t-1}]`` with input feeding (``Et + H`` wide,
  run one step at a time: torch's own module called on ``(1, B, ·)``), over ``embed(y_{t-1})``
  alone without it (``Et`` wide, one call over all ``T`` steps).
* ``attention`` (:class:`torch_ref.attention.Attention`, query = the decoder's top ``h_t``,
  keys and values = ``M``), ``ã_t = tanh(combine([c_t; h_t]))`` (``nn.Linear(2H, H,
  bias=False)``); with ``attention="none"``: ``ã_t = h_t`` and neither module exists.
* ``out`` ``nn.Linear(H, Vt)``: ``logits_t = out(ã_t)``; the loss is the mean cross-entropy over
  the valid target tokens.

The attribute names make the state-dict keys the NumPy model's parameter names. Dropout: the
driver's scaled masks, ``num_layers - 1`` for the encoder ``(S, B, H)`` then ``num_layers - 1``
for the decoder ``(T, B, H)``, mask ``l`` multiplying the output of layer ``l``
(:class:`torch_ref.model.LayerwiseRNN`); nothing else is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from numpy_rnn.nn.losses import IGNORE_INDEX
from numpy_rnn.nn.recurrent import scale_dropout_mask
from numpy_rnn.tasks.base import State

from .attention import Attention
from .model import _RNNS, LayerwiseRNN, TorchState, TorchTaskModel, torch_dtype

if TYPE_CHECKING:
    from numpy_rnn.tasks.seq2seq import Seq2SeqConfig

__all__ = ["Seq2Seq"]


class Seq2Seq(TorchTaskModel):
    """numpy_rnn's seq2seq model in torch.nn: ``train_loss`` for the torch backend, and the
    inference methods ``encode``, ``decode_step`` and ``score`` (NumPy in, NumPy out)."""

    config: Seq2SeqConfig

    def __init__(self, config: Seq2SeqConfig, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        dtype = torch_dtype(config)
        kw: dict[str, Any] = dict(dtype=dtype, device=device)
        H, L = config.hidden_size, config.num_layers
        if H % 2:
            raise ValueError(f"hidden_size must be even (H/2 per encoder direction), got {H}")
        Es = config.embedding_dim or H
        Et = config.target_embedding_dim or H
        rnn = _RNNS[config.cell]
        self.encoder_embedding = nn.Embedding(config.vocab_size, Es, **kw)
        self.encoder = rnn(Es, H // 2, num_layers=L, bidirectional=True, **kw)
        self.bridge_h = nn.ModuleList(nn.Linear(H, H, **kw) for _ in range(L))
        if config.cell == "lstm":
            self.bridge_c = nn.ModuleList(nn.Linear(H, H, **kw) for _ in range(L))
        self.decoder_embedding = nn.Embedding(config.target_vocab_size, Et, **kw)
        self.decoder = rnn(Et + H if config.input_feeding else Et, H, num_layers=L, **kw)
        self.attention: Attention | None = None
        self.combine: nn.Linear | None = None
        if config.attention != "none":
            self.attention = Attention(
                H, H, config.attention,
                config.attention_size if config.attention == "additive" else None, **kw)
            self.combine = nn.Linear(2 * H, H, bias=False, **kw)
        self.out = nn.Linear(H, config.target_vocab_size, **kw)
        # plain attributes (no parameters of their own): the stacks run one layer at a time
        self.__dict__["_layerwise_encoder"] = LayerwiseRNN(self.encoder)
        self.__dict__["_layerwise_decoder"] = LayerwiseRNN(self.decoder)

    # -- the computation ---------------------------------------------------------------------

    def encode_tensors(self, source: torch.Tensor, lengths: torch.Tensor,
                       masks: Sequence[torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, TorchState]:
        """``source (B, S)``, ``lengths (B,)`` (int64, CPU) -> the memory ``M (S, B, H)`` (0 at
        padded steps) and the decoder's initial states, each ``(L, B, H)``.

        ``masks``: ``L - 1`` scaled masks ``(S, B, H)`` between the encoder's layers, or None."""
        S = source.shape[1]
        x = self.encoder_embedding(source.t())                              # (S, B, Es)
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        if masks:
            packed_masks = [pack_padded_sequence(m, lengths, enforce_sorted=False).data
                            for m in masks]
            out, final = self.__dict__["_layerwise_encoder"](packed, None, packed_masks)
        else:
            out, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, total_length=S)                # (S, B, H)
        states = []
        for kind, bridge in zip(self.as_state(final), self._bridges()):
            # kind (2L, B, H/2): rows 2l, 2l+1 = layer l's forward and backward final states
            both = torch.cat([kind[0::2], kind[1::2]], dim=-1)              # (L, B, H)
            states.append(torch.stack([torch.tanh(lin(both[layer]))
                                       for layer, lin in enumerate(bridge)]))
        return memory, tuple(states)

    def _bridges(self) -> list[nn.ModuleList]:
        return [self.bridge_h, self.bridge_c] if self.num_states == 2 else [self.bridge_h]

    def attend(self, h: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor,
               keys: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attentional state ``ã = tanh(combine([c; h]))`` of decoder outputs ``h (B, H)``
        (or ``(T, B, H)``) and the attention weights ``(B, S)`` (``(T, B, S)``); ``ã = h`` and
        no weights without attention."""
        if self.attention is None or self.combine is None:
            return h, None
        context, alpha = self.attention.step(h, memory, valid, keys)
        return torch.tanh(self.combine(torch.cat([context, h], dim=-1))), alpha

    def decode_tensors(self, target_in: torch.Tensor, memory: torch.Tensor,
                       valid: torch.Tensor, init: TorchState,
                       masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Teacher forcing: ``target_in (B, T)`` -> ``logits (T, B, Vt)``.

        ``memory (S, B, H)``, ``valid (S, B)`` bool, ``init`` the decoder's initial states;
        ``masks``: ``L - 1`` scaled masks ``(T, B, H)`` between the decoder's layers, or None."""
        T = target_in.shape[1]
        emb = self.decoder_embedding(target_in.t())                         # (T, B, Et)
        keys = None if self.attention is None else self.attention.project_keys(memory, valid)
        if not self.config.input_feeding:
            # One stack call over all T steps, then attention, combine and out over the whole
            # (T, B, ·) block.
            out, _ = self._run_decoder(emb, init, masks)                    # (T, B, H)
            att, _ = self.attend(out, memory, valid, keys)
            return self.out(att)
        # Input feeding: step t reads ã_{t-1}, so the stack runs one step at a time with the
        # attention inside the loop (autograd takes the gradient back through ã).
        B, H = emb.shape[1], self.config.hidden_size
        feed = emb.new_zeros(B, H)                                          # ã_0 = 0
        state = init
        logits = []
        for t in range(T):
            x = torch.cat([emb[t], feed], dim=-1)[None]                     # (1, B, Et + H)
            step_masks = None if not masks else [m[t:t + 1] for m in masks]
            out, state = self._run_decoder(x, state, step_masks)
            feed, _ = self.attend(out[0], memory, valid, keys)
            logits.append(self.out(feed))
        return torch.stack(logits)

    def _run_decoder(self, x: torch.Tensor, state: TorchState,
                     masks: Sequence[torch.Tensor] | None) -> tuple[torch.Tensor, TorchState]:
        if masks:
            out, final = self.__dict__["_layerwise_decoder"](x, self.hx(state), masks)
        else:
            out, final = self.decoder(x, self.hx(state))
        return out, self.as_state(final)

    def forward(self, source: torch.Tensor, lengths: torch.Tensor, target_in: torch.Tensor,
                dropout_masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``source (B, S)``, ``lengths (B,)``, ``target_in (B, T)`` -> ``logits (B, T, Vt)``.

        ``dropout_masks``: the encoder's ``L - 1`` scaled masks ``(S, B, H)`` then the decoder's
        ``L - 1`` ``(T, B, H)``, or None."""
        enc_masks = dec_masks = None
        if dropout_masks:
            n = self.config.num_layers - 1
            if len(dropout_masks) != 2 * n:
                raise ValueError(f"expected {2 * n} dropout masks (encoder's, then decoder's), "
                                 f"got {len(dropout_masks)}")
            enc_masks, dec_masks = list(dropout_masks[:n]), list(dropout_masks[n:])
        memory, init = self.encode_tensors(source, lengths, enc_masks)
        valid = self._valid(lengths, source.shape[1])
        return self.decode_tensors(target_in, memory, valid, init, dec_masks).transpose(0, 1)

    def _valid(self, lengths: torch.Tensor, S: int) -> torch.Tensor:
        """``(S, B)`` bool: the source steps within each length."""
        return torch.arange(S, device=self.device)[:, None] < lengths.to(self.device)[None]

    # -- crossing the boundary ---------------------------------------------------------------

    def _ids(self, name: str, a: Any, ndim: int, vocab: int) -> torch.Tensor:
        a = np.asarray(a)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer array, got dtype {a.dtype.name}")
        if a.ndim != ndim:
            raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= vocab):
            bad = a.min() if a.min() < 0 else a.max()
            raise ValueError(f"{name}: index {bad} is out of range for an Embedding with "
                             f"{vocab} rows (valid: 0..{vocab - 1})")
        return torch.as_tensor(a.astype(np.int64, copy=False), device=self.device)

    def _source(self, source: Any, lengths: Any) -> tuple[torch.Tensor, torch.Tensor]:
        src = self._ids("source", source, 2, self.config.vocab_size)
        B, S = src.shape
        a = np.asarray(lengths)
        if a.dtype.kind not in "iu" or a.shape != (B,):
            raise ValueError(f"lengths must be {B} integers, got {a.dtype.name} {a.shape}")
        if B and (a.min() < 1 or a.max() > S):
            raise ValueError(f"lengths must lie in [1, S={S}], got min {a.min()}, max {a.max()}")
        return src, torch.as_tensor(a.astype(np.int64, copy=False))   # lengths on the CPU

    def _targets(self, targets: Any, shape: tuple[int, ...]) -> torch.Tensor:
        a = np.asarray(targets)
        if a.dtype.kind not in "iu":
            raise TypeError(f"targets must be integers, got dtype {a.dtype.name}")
        if a.shape != shape:
            raise ValueError(f"targets must have target_in's shape {shape}, got {a.shape}")
        V = self.config.target_vocab_size
        valid = a != IGNORE_INDEX
        if ((a < 0) | (a >= V))[valid].any():
            raise ValueError(f"targets must lie in [0, {V}) (or be {IGNORE_INDEX}, ignored)")
        return torch.as_tensor(a.astype(np.int64, copy=False), device=self.device)

    def _batch(self, inputs: Any, targets: Any
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        src, lengths = self._source(inputs.source, inputs.source_lengths)
        tgt = self._ids("target_in", inputs.target_in, 2, self.config.target_vocab_size)
        if tgt.shape[0] != src.shape[0] or tgt.shape[1] < 1:
            raise ValueError(f"target_in must be (B={src.shape[0]}, T >= 1), got "
                             f"{tuple(tgt.shape)}")
        return src, lengths, tgt, self._targets(targets, tuple(tgt.shape))

    # -- training ----------------------------------------------------------------------------

    def train_loss(self, inputs: Any, targets: np.ndarray, state: State | None,
                   dropout_masks: Sequence[torch.Tensor] | None
                   ) -> tuple[torch.Tensor, TorchState | None]:
        """The mean cross-entropy of the valid target tokens (a scalar tensor, for autograd);
        ``state`` is unused (every batch starts from the encoder)."""
        src, lengths, tgt, y = self._batch(inputs, targets)
        if not (y != IGNORE_INDEX).any():
            raise ValueError("every target equals ignore_index: the mean loss is undefined")
        logits = self(src, lengths, tgt, dropout_masks)                     # (B, T, Vt)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               ignore_index=IGNORE_INDEX)
        return loss, None

    def loss_and_backward(self, inputs: Any, targets: np.ndarray, state: State | None = None,
                          dropout_masks: Sequence[np.ndarray] | None = None
                          ) -> tuple[float, None]:
        """The NumPy model's call: the driver's KEEP masks (scaled here as the backends do),
        the loss, and autograd's gradients added into each parameter's ``.grad``."""
        masks = None
        if dropout_masks:
            dt = np.dtype(self.config.dtype)
            masks = [torch.as_tensor(scale_dropout_mask(np.asarray(m), self.config.dropout, dt),
                                     device=self.device) for m in dropout_masks]
        loss, _ = self.train_loss(inputs, targets, state, masks)
        loss.backward()
        return float(loss.item()), None

    # -- inference (eval mode, no gradients) -------------------------------------------------

    def encode(self, source: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, State]:
        """``source (B, S)``, ``lengths (B,)`` -> ``memory (B, S, H)`` and the decoder's initial
        states, a tuple of ``(L, B, H)`` (h, and c for the LSTM), in the model dtype."""
        src, lens = self._source(source, lengths)
        with torch.no_grad():
            memory, init = self.encode_tensors(src, lens)
        return memory.transpose(0, 1).cpu().numpy().copy(), self.state_out(init)

    def decode_step(self, tokens: np.ndarray, state: State, feed: np.ndarray,
                    memory: np.ndarray, lengths: np.ndarray
                    ) -> tuple[np.ndarray, State, np.ndarray, np.ndarray | None]:
        """One decoder step: ``tokens (B,)`` (the previous ones), ``state`` (of :meth:`encode`
        or the last step), ``feed (B, H)`` = ã_{t-1} (zeros at the first step; unused, and
        unchecked, without input feeding), ``memory (B, S, H)``, ``lengths (B,)`` -> float64
        ``log_probs (B, Vt)``, the new state, ``ã_t (B, H)`` and float64 ``alpha (B, S)``
        (None without attention)."""
        tok = self._ids("tokens", tokens, 1, self.config.target_vocab_size)
        B, H = tok.shape[0], self.config.hidden_size
        mem = np.asarray(memory)
        if mem.ndim != 3:
            raise ValueError(f"memory must be (B, S, H), got shape {mem.shape}")
        S = mem.shape[1]
        m = self.floats("memory", mem, (B, S, H)).transpose(0, 1)          # (S, B, H)
        L = self.config.num_layers
        if not isinstance(state, tuple) or len(state) != self.num_states:
            raise TypeError(f"state must be a tuple of {self.num_states} arrays (L, B, H)")
        st = tuple(self.floats(n, s, (L, B, H)) for n, s in zip(("h", "c"), state))
        lengths_a = np.asarray(lengths)
        if lengths_a.shape != (B,) or lengths_a.dtype.kind not in "iu":
            raise ValueError(f"lengths must be {B} integers, got {lengths_a.dtype.name} "
                             f"{lengths_a.shape}")
        if B and (lengths_a.min() < 1 or lengths_a.max() > S):
            raise ValueError(f"lengths must lie in [1, S={S}]")
        valid = self._valid(torch.as_tensor(lengths_a.astype(np.int64)), S)
        with torch.no_grad():
            x = self.decoder_embedding(tok)                                 # (B, Et)
            if self.config.input_feeding:
                x = torch.cat([x, self.floats("feed", feed, (B, H))], dim=-1)
            out, new = self._run_decoder(x[None], st, None)
            att, alpha = self.attend(out[0], m, valid, None)
            log_probs = F.log_softmax(self.out(att).to(torch.float64), dim=-1)
        return (log_probs.cpu().numpy(), self.state_out(new), att.cpu().numpy().copy(),
                None if alpha is None else alpha.to(torch.float64).cpu().numpy())

    def score(self, inputs: Any, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Teacher-forced validation: float64 ``loss_sum (B,)``, the summed cross-entropy of each
        row's valid target tokens, and ``tokens (B,)``, their number."""
        src, lengths, tgt, y = self._batch(inputs, targets)
        with torch.no_grad():
            logits = self(src, lengths, tgt).to(torch.float64)             # (B, T, Vt)
            nll = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE_INDEX,
                                  reduction="none")                         # (B, T)
        counts = (y != IGNORE_INDEX).sum(dim=1)
        return (nll.sum(dim=1).cpu().numpy(),
                counts.to(torch.float64).cpu().numpy())
