"""The character-level model in torch.nn: the oracle for ``numpy_rnn.model.CharRNN``.

Embedding ``(V, E)`` -> ``nn.LSTM``/``nn.GRU``/``nn.RNN`` stack of ``num_layers`` x ``H`` ->
``nn.Linear(H, V)``, built from the same :class:`numpy_rnn.model.ModelConfig`. The attribute
names (``encoder``, ``rnn``, ``decoder``) make the state-dict keys identical to numpy_rnn's:
``encoder.weight``, ``rnn.weight_ih_l0`` ..., ``decoder.weight``, ``decoder.bias``.
"""

from __future__ import annotations

import torch
from torch import nn

from numpy_rnn.model import ModelConfig

TorchState = tuple[torch.Tensor, ...]  # (h, c) for the LSTM, (h,) otherwise; each (L, B, H)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_RNNS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def torch_dtype(config: ModelConfig) -> torch.dtype:
    """The torch dtype of ``config.dtype`` ("float32" or "float64")."""
    return _DTYPES[config.dtype]


class CharRNN(nn.Module):
    """``logits, state = model(tokens, state)``, the contract of numpy_rnn's CharRNN.

    ``tokens`` (B, T) int64 -> ``logits`` (B, T, V). The recurrent stack runs time-major, as
    numpy_rnn's does: the tokens are transposed to (T, B) before the embedding and the logits
    back to (B, T, V) at the end. ``state`` is a tuple ``(h, c)`` for the LSTM and ``(h,)`` for
    the GRU and RNN, each (L, B, H), or None for zeros; the final state comes back in the same
    form. The RNN cell uses tanh, as numpy_rnn's model does.

    Weights get torch's default initialisation; the backends overwrite them with numpy_rnn's
    seeded ones, so the same seed means the same start in both.
    """

    def __init__(self, config: ModelConfig, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.config = config
        kw = dict(dtype=torch_dtype(config), device=device)
        self.encoder = nn.Embedding(config.vocab_size, config.input_size, **kw)
        # Dropout acts between layers only: with one layer it changes nothing, but torch warns.
        dropout = config.dropout if config.num_layers > 1 else 0.0
        self.rnn = _RNNS[config.cell](config.input_size, config.hidden_size,
                                      num_layers=config.num_layers, dropout=dropout, **kw)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, **kw)

    @property
    def num_states(self) -> int:
        """2 for the LSTM (h, c), 1 otherwise (h)."""
        return 2 if self.config.cell == "lstm" else 1

    def forward(self, tokens: torch.Tensor,
                state: TorchState | None = None) -> tuple[torch.Tensor, TorchState]:
        """``tokens (B, T)`` -> ``logits (B, T, V)`` and the final states, each ``(L, B, H)``."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be 2-D (B, T), got shape {tuple(tokens.shape)}")
        if state is not None and (not isinstance(state, tuple) or len(state) != self.num_states):
            names = "(h, c)" if self.num_states == 2 else "(h,)"
            raise TypeError(f"state must be a tuple {names} or None")
        x = self.encoder(tokens.t())                       # (T, B, E): the stack runs time-major
        if state is None:
            hx = None
        else:
            hx = state if self.num_states == 2 else state[0]
        out, final = self.rnn(x, hx)                       # out (T, B, H)
        logits = self.decoder(out)                         # (T, B, V)
        final = tuple(final) if self.num_states == 2 else (final,)
        return logits.transpose(0, 1), final
