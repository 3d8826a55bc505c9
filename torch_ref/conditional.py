"""The conditional generator in torch.nn: the oracle for
``numpy_rnn.tasks.conditional.ConditionalCharRNN``.

The language model (``torch_ref.model.CharRNN``) with one more layer, ``condition``
(``nn.Linear(R, L*H)``): ``h0 = tanh(condition(regions))`` starts every layer (``c0 = 0`` for
the LSTM). Trained over ``pack_padded_sequence(enforce_sorted=False)`` with the cross-entropy of
the valid characters only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from numpy_rnn.nn.losses import IGNORE_INDEX
from numpy_rnn.tasks.base import State
from numpy_rnn.tasks.conditional import ConditionalConfig

from .model import CharRNN, TorchState, torch_dtype


class ConditionalCharRNN(CharRNN):
    """numpy_rnn's ConditionalCharRNN in torch: ``initial_state(regions)``, then the LM."""

    config: ConditionalConfig

    def __init__(self, config: ConditionalConfig, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        self.condition = nn.Linear(config.num_labels, config.num_layers * config.hidden_size,
                                   dtype=torch_dtype(config), device=device)

    def _initial(self, conditions: torch.Tensor) -> TorchState:
        """``h0 = tanh(conditions W_c^T + b_c)`` as ``(L, B, H)`` (and ``c0 = 0``)."""
        L, H = self.config.num_layers, self.config.hidden_size
        B = conditions.shape[0]
        h0 = torch.tanh(self.condition(conditions)).view(B, L, H).transpose(0, 1).contiguous()
        return (h0, torch.zeros_like(h0)) if self.num_states == 2 else (h0,)

    def _conditions(self, conditions: Any) -> torch.Tensor:
        a = np.asarray(conditions)
        if a.ndim != 2:
            raise ValueError(f"conditions must be 2-D (B, R), got shape {a.shape}")
        return self.floats("conditions", a, (a.shape[0], self.config.num_labels))

    def train_loss(self, inputs: Any, targets: np.ndarray, state: State | None,
                   dropout_masks: Sequence[torch.Tensor] | None
                   ) -> tuple[torch.Tensor, TorchState | None]:
        tokens = self.tokens(inputs.tokens)
        B, T = tokens.shape
        y = self.class_targets(targets, (B, T))
        lengths = torch.as_tensor(np.asarray(inputs.lengths, dtype=np.int64))
        h0 = self._initial(self._conditions(inputs.conditions))
        x = self.encoder(tokens.t())                                        # (T, B, E)
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        masks = None
        if dropout_masks:
            masks = [pack_padded_sequence(m, lengths, enforce_sorted=False).data
                     for m in dropout_masks]
        out_packed, _ = self.run_stack(packed, self.hx(h0), masks)
        out, _ = pad_packed_sequence(out_packed, total_length=T)            # (T, B, H)
        logits = self.decoder(out).transpose(0, 1)                          # (B, T, V)
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=IGNORE_INDEX,
                               label_smoothing=self.config.label_smoothing)
        return loss, None

    def initial_state(self, conditions: np.ndarray) -> State:
        with torch.no_grad():
            return self.state_out(self._initial(self._conditions(conditions)))
