"""The classifier in torch.nn: the oracle for ``numpy_rnn.tasks.classify.Classifier``.

Embedding -> ``nn.LSTM``/``GRU``/``RNN`` over ``pack_padded_sequence(enforce_sorted=False)``
(the recurrence never runs over padding) -> attention pooling written with torch ops (or the
final states of both directions) -> ``nn.Linear`` -> one logit per label, trained with
``nn.BCEWithLogitsLoss``. The module names make the state-dict keys numpy_rnn's:
``encoder.weight``, ``rnn.*``, ``attention.proj.{weight,bias}``, ``attention.score.weight``,
``decoder.{weight,bias}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from numpy_rnn.tasks.base import State
from numpy_rnn.tasks.classify import ClassifierConfig

from .model import TorchState, TorchTaskModel, make_rnn, torch_dtype


class AttentionPooling(nn.Module):
    """``e_t = score(tanh(proj(o_t)))``, ``α = softmax(e)`` over each sequence's valid steps,
    ``context = Σ_t α_t o_t``: numpy_rnn's :class:`~numpy_rnn.nn.AttentionPooling` in torch ops,
    differentiated by autograd."""

    def __init__(self, input_size: int, attention_size: int, dtype: torch.dtype,
                 device: str | torch.device) -> None:
        super().__init__()
        self.proj = nn.Linear(input_size, attention_size, dtype=dtype, device=device)
        self.score = nn.Linear(attention_size, 1, bias=False, dtype=dtype, device=device)

    def forward(self, outputs: torch.Tensor,
                valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``outputs (T, B, F)``, ``valid (T, B)`` bool -> ``context (B, F)``, ``α (T, B)``."""
        e = self.score(torch.tanh(self.proj(outputs))).squeeze(-1)         # (T, B)
        e = e.masked_fill(~valid, float("-inf"))                            # exp(-inf) = 0
        alpha = torch.softmax(e, dim=0)
        return (alpha.unsqueeze(-1) * outputs).sum(dim=0), alpha


class Classifier(TorchTaskModel):
    """``logits, weights = model(tokens, lengths, masks)``, numpy_rnn's Classifier in torch."""

    config: ClassifierConfig

    def __init__(self, config: ClassifierConfig, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        dtype = torch_dtype(config)
        width = config.num_directions * config.hidden_size
        self.encoder = nn.Embedding(config.vocab_size, config.input_size, dtype=dtype,
                                    device=device)
        self.rnn = make_rnn(config, device)
        self.attention = (AttentionPooling(width, config.attention_size, dtype, device)
                          if config.pooling == "attention" else None)
        self.decoder = nn.Linear(width, config.num_labels, dtype=dtype, device=device)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor,
                dropout_masks: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``tokens (B, T)``, ``lengths (B,)`` (int64, CPU) -> ``logits (B, R)``, ``α (T, B)``.

        ``dropout_masks``: the scaled masks of ``config.dropout_mask_shapes(T, B)``: the embedded
        input's ``(T, B, E)``, then the stack's ``(T, B, D*H)`` in the padded layout (packed
        here the way the outputs are)."""
        T = tokens.shape[1]
        x = self.encoder(tokens.t())                                        # (T, B, E)
        masks = None
        if dropout_masks:
            keep, *between = dropout_masks       # the input's, then the stack's
            x = x * keep                         # inverted dropout on the embedded input
            masks = [pack_padded_sequence(m, lengths, enforce_sorted=False).data
                     for m in between] or None
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out_packed, final = self.run_stack(packed, None, masks)
        if self.attention is not None:
            out, _ = pad_packed_sequence(out_packed, total_length=T)        # (T, B, D*H)
            valid = torch.arange(T, device=out.device)[:, None] < lengths.to(out.device)[None]
            context, alpha = self.attention(out, valid)
        else:
            h_n = self.as_state(final)[0]                                   # (L*D, B, H)
            D = self.config.num_directions
            context = torch.cat(list(h_n[-D:]), dim=-1)                     # (B, D*H)
            alpha = None
        return self.decoder(context), alpha

    def _lengths(self, lengths: Any, tokens: torch.Tensor) -> torch.Tensor:
        a = np.asarray(lengths)
        B, T = tokens.shape
        if a.dtype.kind not in "iu" or a.shape != (B,):
            raise ValueError(f"lengths must be {B} integers, got {a.dtype.name} {a.shape}")
        if B and (a.min() < 1 or a.max() > T):
            raise ValueError(f"lengths must lie in [1, T={T}], got min {a.min()}, max {a.max()}")
        return torch.as_tensor(a.astype(np.int64, copy=False))             # on the CPU, as
        # pack_padded_sequence wants them

    def train_loss(self, inputs: Any, targets: np.ndarray, state: State | None,
                   dropout_masks: Sequence[torch.Tensor] | None
                   ) -> tuple[torch.Tensor, TorchState | None]:
        tokens = self.tokens(inputs.tokens)
        lengths = self._lengths(inputs.lengths, tokens)
        y = self.floats("targets", targets, (tokens.shape[0], self.config.num_labels))
        logits, _ = self(tokens, lengths, dropout_masks)
        return nn.functional.binary_cross_entropy_with_logits(logits, y), None

    def classify(self, tokens: np.ndarray,
                 lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        t = self.tokens(tokens)
        with torch.no_grad():
            logits, alpha = self(t, self._lengths(lengths, t))
        return (logits.cpu().numpy().astype(np.float64),
                None if alpha is None else alpha.t().cpu().numpy().astype(np.float64))
