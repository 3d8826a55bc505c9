"""The encoder-decoder with attention in torch.nn: the oracle for
``numpy_rnn.tasks.seq2seq``'s model (Luong et al. 2015 global attention, as OpenNMT),
differentiated by autograd.

* ``encoder_embedding`` ``nn.Embedding(Vs, Es)`` (its outputs times the source's embedding
  dropout mask in training) -> ``encoder``, a bidirectional ``nn.LSTM``/``nn.GRU``/``nn.RNN``
  stack of ``num_layers`` x ``H/2`` per direction, run over ``pack_padded_sequence(source,
  lengths)``: the memory ``M (S, B, H)`` is its output (0 at the padded steps), the final states
  are those at each source's own last step.
* bridge: per layer ``l``, ``h0_l = tanh(bridge_h[l]([h_fwd; h_bwd]))`` (and ``c0_l`` with
  ``bridge_c`` for the LSTM), ``nn.Linear(H, H)`` each.
* ``decoder_embedding`` ``nn.Embedding(Vt, Et)`` (times the target's embedding dropout mask)
  -> ``decoder``, a unidirectional stack of ``num_layers`` x ``H`` over ``[embed(y_{t-1});
  f_{t-1}]`` with input feeding (``Et + H`` wide, run one step at a time: torch's own module
  called on ``(1, B, ·)``), over ``embed(y_{t-1})`` alone without it (``Et`` wide, one call over
  all ``T`` steps).
* ``attention`` (:class:`torch_ref.attention.Attention`, query = the decoder's top ``h_t``,
  keys and values = ``M``), ``ã_t = tanh(combine([c_t; h_t]))`` (``nn.Linear(2H, H,
  bias=False)``); with ``attention="none"``: ``ã_t = h_t`` and neither module exists.
* ``f_t = ã_t ⊙ m_hid[t]`` (the hidden dropout; ``f_t = ã_t`` in evaluation): what ``out``
  reads and what input feeding feeds to step ``t+1``.
* ``out`` ``nn.Linear(H, Vt)``: ``logits_t = out(f_t)``; the loss is the mean cross-entropy over
  the valid target tokens (``label_smoothing`` in training, torch's own).

The attribute names make the state-dict keys the NumPy model's parameter names. Dropout: the
driver's masks, in the order of ``Seq2SeqConfig.dropout_masks`` (``num_layers - 1`` for the
encoder ``(S, B, H)``, then ``num_layers - 1`` for the decoder ``(T, B, H)``, mask ``l``
multiplying the output of layer ``l`` (:class:`torch_ref.model.LayerwiseRNN`); then the source
and target embeddings' and the attentional vectors' when their rates are > 0), each scaled with
its own ``p``, grouped by where they act by the config
(:meth:`~numpy_rnn.tasks.seq2seq.Seq2SeqConfig.split_dropout_masks`).
Every input is checked by the functions the NumPy model calls, with its messages.
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
from numpy_rnn.tasks.base import State
from numpy_rnn.tasks.seq2seq.config import (
    KeyCache,
    Seq2SeqMasks,
    check_decode_step,
    check_inputs,
    check_source,
    check_state,
    check_targets,
    direction_size,
)

from .attention import Attention
from .model import TORCH_LAYERS, LayerwiseRNN, TorchState, TorchTaskModel, torch_dtype

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
        Es, Et = config.input_size, config.target_input_size
        rnn: Any = TORCH_LAYERS[config.cell]
        self.encoder_embedding = nn.Embedding(config.vocab_size, Es, **kw)
        self.encoder = rnn(Es, direction_size(H), num_layers=L, bidirectional=True, **kw)
        self.bridge_h = nn.ModuleList(nn.Linear(H, H, **kw) for _ in range(L))
        if config.cell == "lstm":
            self.bridge_c = nn.ModuleList(nn.Linear(H, H, **kw) for _ in range(L))
        self.decoder_embedding = nn.Embedding(config.target_vocab_size, Et, **kw)
        self.decoder = rnn(config.decoder_input_size, H, num_layers=L, **kw)
        self.attention: Attention | None = None
        self.combine: nn.Linear | None = None
        if config.attention != "none":
            self.attention = Attention(
                H, H, config.attention,
                config.attention_size if config.attention == "additive" else None, **kw)
            self.combine = nn.Linear(2 * H, H, bias=False, **kw)
        self.out = nn.Linear(H, config.target_vocab_size, **kw)
        # plain attributes (no parameters of their own): the stacks run one layer at a time,
        # and decode_step reuses the key side of a memory (the NumPy model's rule)
        self.__dict__["_layerwise_encoder"] = LayerwiseRNN(self.encoder)
        self.__dict__["_layerwise_decoder"] = LayerwiseRNN(self.decoder)
        self.__dict__["_key_cache"] = KeyCache(torch.equal, torch.clone)

    # -- the computation ---------------------------------------------------------------------

    def encode_tensors(self, source: torch.Tensor, lengths: torch.Tensor,
                       masks: Seq2SeqMasks | None = None) -> tuple[torch.Tensor, TorchState]:
        """``source (B, S)``, ``lengths (B,)`` (int64, CPU) -> the memory ``M (S, B, H)`` (0 at
        padded steps) and the decoder's initial states, each ``(L, B, H)``.

        ``masks``: the step's scaled masks (the encoder's ``L - 1`` ``(S, B, H)`` between its
        layers and the source embedding's ``(S, B, Es)`` are read), or None."""
        S = source.shape[1]
        x = self.encoder_embedding(source.t())                              # (S, B, Es)
        if masks is not None and masks.source_embedding is not None:
            x = x * masks.source_embedding
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        if masks is not None and masks.encoder:
            packed_masks = [pack_padded_sequence(m, lengths, enforce_sorted=False).data
                            for m in masks.encoder]
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
                       masks: Seq2SeqMasks | None = None) -> torch.Tensor:
        """Teacher forcing: ``target_in (B, T)`` -> ``logits (T, B, Vt)``.

        ``memory (S, B, H)``, ``valid (S, B)`` bool, ``init`` the decoder's initial states;
        ``masks``: the step's scaled masks (the decoder's ``L - 1`` ``(T, B, H)`` between its
        layers, the target embedding's ``(T, B, Et)`` and the hidden ``(T, B, H)`` are read),
        or None."""
        T = target_in.shape[1]
        emb = self.decoder_embedding(target_in.t())                         # (T, B, Et)
        between: list[torch.Tensor] | None = None
        hidden = None
        if masks is not None:
            between, hidden = masks.decoder or None, masks.hidden
            if masks.target_embedding is not None:
                emb = emb * masks.target_embedding
        keys = None if self.attention is None else self.attention.project_keys(memory, valid)
        if not self.config.input_feeding:
            # One stack call over all T steps, then attention, combine, the hidden dropout and
            # out over the whole (T, B, ·) block.
            out, _ = self._run_decoder(emb, init, between)                  # (T, B, H)
            att, _ = self.attend(out, memory, valid, keys)
            return self.out(att if hidden is None else att * hidden)
        # Input feeding: step t reads f_{t-1}, so the stack runs one step at a time with the
        # attention inside the loop (autograd takes the gradient back through f).
        B, H = emb.shape[1], self.config.hidden_size
        feed = emb.new_zeros(B, H)                                          # f_{-1} = 0
        state = init
        logits = []
        for t in range(T):
            x = torch.cat([emb[t], feed], dim=-1)[None]                     # (1, B, Et + H)
            step_masks = None if between is None else [m[t:t + 1] for m in between]
            out, state = self._run_decoder(x, state, step_masks)
            feed, _ = self.attend(out[0], memory, valid, keys)
            if hidden is not None:
                feed = feed * hidden[t]
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

        ``dropout_masks``: the scaled masks of ``config.dropout_masks(S, T, B)``, in its order
        (training mode), or None."""
        (B, S), T = source.shape, target_in.shape[1]
        masks = self.config.split_dropout_masks(dropout_masks, S, T, B, self.training)
        memory, init = self.encode_tensors(source, lengths, masks)
        valid = self._valid(lengths, S)
        return self.decode_tensors(target_in, memory, valid, init, masks).transpose(0, 1)

    def _valid(self, lengths: torch.Tensor, S: int) -> torch.Tensor:
        """``(S, B)`` bool: the source steps within each length."""
        return torch.arange(S, device=self.device)[:, None] < lengths.to(self.device)[None]

    # -- crossing the boundary ---------------------------------------------------------------

    def _ids(self, a: np.ndarray) -> torch.Tensor:
        """Checked token ids -> an int64 tensor on the device."""
        return torch.as_tensor(a.astype(np.int64, copy=False), device=self.device)

    def _batch(self, inputs: Any, targets: Any, training: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``inputs`` and ``targets`` checked as the NumPy model checks them, as tensors (the
        lengths on the CPU, where packing wants them)."""
        source, lengths, target_in = check_inputs(self.config, inputs)
        y = check_targets(self.config, targets, target_in.shape, training)
        return (self._ids(source), torch.as_tensor(lengths), self._ids(target_in),
                self._ids(y))

    def _device_masks(self, masks: Sequence[Any] | None, S: int, T: int, B: int
                      ) -> list[torch.Tensor] | None:
        """The masks of a training step as scaled tensors on the device: the driver's KEEP
        masks (NumPy) scaled here, each with its own ``p``, as the NumPy model scales them; or
        tensors already scaled so (the torch backend's, by the same function)."""
        if not masks:
            return None
        if all(isinstance(m, torch.Tensor) for m in masks):
            return [m.to(self.device) for m in masks]
        self.config.split_dropout_masks(masks, S, T, B, self.training)     # the same checks
        dt = np.dtype(self.config.dtype)
        return [torch.as_tensor(m, device=self.device)
                for m in self.config.scale_dropout_masks(masks, S, T, B, dt)]

    # -- training ----------------------------------------------------------------------------

    def train_loss(self, inputs: Any, targets: np.ndarray, state: State | None,
                   dropout_masks: Sequence[Any] | None
                   ) -> tuple[torch.Tensor, TorchState | None]:
        """The mean cross-entropy of the valid target tokens (a scalar tensor, for autograd),
        against targets smoothed by ``config.label_smoothing``; ``state`` is unused (every batch
        starts from the encoder). ``dropout_masks``: see :meth:`_device_masks`."""
        src, lengths, tgt, y = self._batch(inputs, targets, training=True)
        (B, S), T = src.shape, tgt.shape[1]
        masks = self._device_masks(dropout_masks, S, T, B)
        logits = self(src, lengths, tgt, masks)                             # (B, T, Vt)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               ignore_index=IGNORE_INDEX,
                               label_smoothing=self.config.label_smoothing)
        return loss, None

    def loss_and_backward(self, inputs: Any, targets: np.ndarray, state: State | None = None,
                          dropout_masks: Sequence[np.ndarray] | None = None
                          ) -> tuple[float, None]:
        """The NumPy model's call: the driver's KEEP masks (scaled here, each with its own
        ``p``, as the NumPy model scales them), the loss, and autograd's gradients added into
        each parameter's ``.grad``."""
        loss, _ = self.train_loss(inputs, targets, state, dropout_masks)
        loss.backward()
        return float(loss.item()), None

    # -- inference (eval mode, no gradients) -------------------------------------------------

    def encode(self, source: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, State]:
        """``source (B, S)``, ``lengths (B,)`` -> ``memory (B, S, H)`` and the decoder's initial
        states, a tuple of ``(L, B, H)`` (h, and c for the LSTM), in the model dtype."""
        source, lengths = check_source(self.config, source, lengths)
        with torch.no_grad():
            memory, init = self.encode_tensors(self._ids(source), torch.as_tensor(lengths))
        return memory.transpose(0, 1).cpu().numpy().copy(), self.state_out(init)

    def decode_step(self, tokens: np.ndarray, state: State, feed: np.ndarray,
                    memory: np.ndarray, lengths: np.ndarray
                    ) -> tuple[np.ndarray, State, np.ndarray, np.ndarray | None]:
        """One decoder step: ``tokens (B,)`` (the previous ones), ``state`` (of :meth:`encode`
        or the last step), ``feed (B, H)`` = ã_{t-1} (zeros at the first step; unused, and
        unchecked, without input feeding), ``memory (B, S, H)``, ``lengths (B,)`` -> float64
        ``log_probs (B, Vt)``, the new state, ``ã_t (B, H)`` and float64 ``alpha (B, S)``
        (None without attention). The memory's key side is computed once per memory, by the
        rule of the NumPy model's general step (:class:`~numpy_rnn.tasks.seq2seq.config.KeyCache`:
        the same memory object, lengths and key weights; the NumPy model's fast step reuses
        its keys while the memory and lengths objects and its weights' version are the
        same)."""
        tokens, fed, memory, lengths = check_decode_step(self.config, tokens, feed, memory,
                                                         lengths)
        state = check_state(self.config, state, len(tokens))
        m = torch.as_tensor(memory, device=self.device).transpose(0, 1)    # (S, B, H)
        valid = self._valid(torch.as_tensor(lengths), memory.shape[1])
        st = tuple(torch.as_tensor(s, device=self.device) for s in state)
        with torch.no_grad():
            keys = self._keys(memory, lengths, m, valid)
            x = self.decoder_embedding(self._ids(tokens))                   # (B, Et)
            if fed is not None:                                             # input feeding
                x = torch.cat([x, torch.as_tensor(fed, device=self.device)], dim=-1)
            out, new = self._run_decoder(x[None], st, None)
            att, alpha = self.attend(out[0], m, valid, keys)
            log_probs = F.log_softmax(self.out(att).to(torch.float64), dim=-1)
        return (log_probs.cpu().numpy(), self.state_out(new), att.cpu().numpy().copy(),
                None if alpha is None else alpha.to(torch.float64).cpu().numpy())

    def _keys(self, memory: np.ndarray, lengths: np.ndarray, m: torch.Tensor,
              valid: torch.Tensor) -> torch.Tensor | None:
        """The attention's key side of ``memory`` (``m (S, B, H)`` on the device), once per
        memory: the same memory object, lengths and key weights (None without attention)."""
        if self.attention is None:
            return None
        attention = self.attention
        weights = {name: w.detach() for name, w in attention.named_parameters()
                   if name.startswith("key.")}
        cache: KeyCache[torch.Tensor] = self.__dict__["_key_cache"]
        return cache.get(memory, lengths, weights, lambda: attention.project_keys(m, valid))

    def score(self, inputs: Any, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Teacher-forced validation: float64 ``loss_sum (B,)``, the summed cross-entropy of each
        row's valid target tokens (never smoothed), and ``tokens (B,)``, their number."""
        src, lengths, tgt, y = self._batch(inputs, targets, training=False)
        with torch.no_grad():
            logits = self(src, lengths, tgt).to(torch.float64)             # (B, T, Vt)
            nll = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE_INDEX,
                                  reduction="none")                         # (B, T)
        counts = (y != IGNORE_INDEX).sum(dim=1)
        return (nll.sum(dim=1).cpu().numpy(),
                counts.to(torch.float64).cpu().numpy())
