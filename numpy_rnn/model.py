"""The character-level model: Embedding -> recurrent stack -> Linear, in NumPy.

Parameter names are torch's for the same model (``torch_ref.CharRNN``): ``encoder.weight``,
``rnn.<torch layer keys>``, ``decoder.weight``, ``decoder.bias``, so one state dict serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .dense import Embedding, Linear
from .module import Module, resolve_dtype
from .recurrent import GRU, LSTM, RNN, Recurrent

CELLS = ("lstm", "gru", "rnn")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a CharRNN's shapes and arithmetic (saved in checkpoints)."""

    vocab_size: int
    hidden_size: int = 512
    num_layers: int = 3
    cell: str = "lstm"
    embedding_dim: int | None = None   # None: the vocabulary size, as in the original notebook
    dropout: float = 0.0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.embedding_dim is not None and (isinstance(self.embedding_dim, bool) or not
                                               isinstance(self.embedding_dim, (int, np.integer))
                                               or self.embedding_dim < 1):
            raise ValueError(f"embedding_dim must be a positive integer or None, "
                             f"got {self.embedding_dim!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dtype", np.dtype(resolve_dtype(self.dtype)).name)

    @property
    def input_size(self) -> int:
        """The embedding width fed to the recurrent stack."""
        return self.embedding_dim or self.vocab_size

    def dropout_mask_shapes(self, T: int, B: int) -> list[tuple[int, int, int]]:
        """The keep masks one training step over ``B`` sequences of ``T`` steps needs:
        ``num_layers - 1`` masks of ``(T, B, H)``, or none when there is no dropout to apply
        (``dropout = 0`` or a single layer)."""
        if self.dropout == 0 or self.num_layers == 1:
            return []
        return [(T, B, self.hidden_size)] * (self.num_layers - 1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


def _make_rnn(config: ModelConfig, seed: Any) -> Recurrent:
    cls = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[config.cell]
    # Dropout acts between layers only: with one layer it changes nothing (and would warn).
    dropout = config.dropout if config.num_layers > 1 else 0.0
    return cls(config.input_size, config.hidden_size, num_layers=config.num_layers,
               dropout=dropout, dtype=config.dtype, seed=seed)


class CharRNN(Module):
    """Embedding ``(V, E)`` -> ``num_layers`` recurrent layers of ``H`` -> Linear ``(H -> V)``.

    ``logits, state = model(tokens, state)`` with ``tokens (B, T)`` integers and ``logits
    (B, T, V)``; ``state`` is a tuple of the recurrent stack's states (``(h, c)`` for the LSTM,
    ``(h,)`` otherwise), each ``(L, B, H)``, or None for zeros. ``model.backward(dlogits)`` adds
    every parameter's gradient into ``grads``.

    Initial weights: torch's distributions (Embedding N(0, 1), recurrent and Linear uniform),
    drawn from independent streams of ``np.random.SeedSequence(seed)``.
    """

    def __init__(self, config: ModelConfig, seed: int | None = None) -> None:
        super().__init__(config.dtype)
        self.config = config
        s_enc, s_rnn, s_dec = np.random.SeedSequence(seed).spawn(3)
        self.encoder = Embedding(config.vocab_size, config.input_size, dtype=config.dtype,
                                 seed=s_enc)
        self.rnn = _make_rnn(config, s_rnn)
        self.decoder = Linear(config.hidden_size, config.vocab_size, dtype=config.dtype,
                              seed=s_dec)
        # One flat view of the children's arrays (the same objects, never copies), under the
        # names torch gives the same model; optimizers and state dicts work on these.
        for prefix, child in (("encoder", self.encoder), ("rnn", self.rnn),
                              ("decoder", self.decoder)):
            for name in child.params:
                self.params[f"{prefix}.{name}"] = child.params[name]
                self.grads[f"{prefix}.{name}"] = child.grads[name]

    def train(self, mode: bool = True) -> CharRNN:
        super().train(mode)
        self.rnn.train(mode)
        return self

    def forward(self, tokens: np.ndarray, state: tuple[np.ndarray, ...] | None = None,
                dropout_masks: Sequence[np.ndarray] | None = None
                ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """``tokens (B, T)`` -> ``logits (B, T, V)`` and the final states ``(L, B, H)`` each.

        ``dropout_masks``: in training mode with dropout, the keep masks between the layers
        (``config.dropout_mask_shapes(T, B)``), drawn by the caller; None: the stack draws its
        own.
        """
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be 2-D (B, T), got shape {tokens.shape}")
        x = self.encoder(tokens.T)                       # (T, B, E): the stack runs time-major
        out, final = Recurrent.forward(self.rnn, x, state, dropout_masks=dropout_masks)
        logits = self.decoder(out)                       # (T, B, V)
        return logits.transpose(1, 0, 2), final

    def backward(self, dlogits: np.ndarray,
                 dstate: tuple | None = None) -> tuple[np.ndarray, ...]:
        """``dlogits (B, T, V)`` -> gradients w.r.t. the initial states; grads are added."""
        dout = self.decoder.backward(dlogits.transpose(1, 0, 2))
        dx, dinit = Recurrent.backward(self.rnn, dout, dstate)
        self.encoder.backward(dx)
        return dinit
