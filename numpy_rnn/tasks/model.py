"""What every task's model is built from: the model config, the recurrent-stack factory, the
cells, and the flat view of a model's parameters.

* :class:`ModelConfig`, the shapes and arithmetic of a model (saved in checkpoints), and the
  base of every task's config;
* :func:`make_rnn`, the recurrent stack of every task's model;
* :func:`expose`, one flat view of a model's children's arrays, under the names torch gives the
  same model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from ..nn.module import Module, resolve_dtype
from ..nn.recurrent import GRU, LSTM, RNN, Recurrent

__all__ = ["CELLS", "ModelConfig", "expose", "make_rnn"]

CELLS = ("lstm", "gru", "rnn")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a model's shapes and arithmetic (saved in checkpoints).

    The other tasks' configs extend it with their own fields; ``task`` names the task whose
    model it describes.
    """

    task: ClassVar[str] = "lm"
    #: What the model's head writes, for the memory guard: "characters" (a distribution over
    #: the vocabulary at every step) or "labels" (one logit per label and sequence, pooled
    #: over its steps).
    head: ClassVar[str] = "characters"
    #: Whether a Linear maps a condition vector (``num_labels`` wide) to the initial states.
    conditioned: ClassVar[bool] = False

    vocab_size: int
    hidden_size: int = 512
    num_layers: int = 3
    cell: str = "lstm"
    embedding_dim: int | None = None   # None: the vocabulary size, as in the original notebook
    dropout: float = 0.0
    dtype: str = "float64"
    label_smoothing: float = 0.0       # of the training loss's targets, torch's definition

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
        if isinstance(self.label_smoothing, bool) or not isinstance(
                self.label_smoothing, (int, float)) or not 0.0 <= self.label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1], got "
                             f"{self.label_smoothing!r}")
        object.__setattr__(self, "dtype", np.dtype(resolve_dtype(self.dtype)).name)

    @property
    def input_size(self) -> int:
        """The embedding width fed to the recurrent stack."""
        return self.embedding_dim or self.vocab_size

    @property
    def num_directions(self) -> int:
        """1, or 2 for a bidirectional stack."""
        return 1

    def dropout_mask_shapes(self, T: int, B: int) -> list[tuple[int, ...]]:
        """The keep masks one training step over ``B`` sequences of ``T`` steps needs:
        ``num_layers - 1`` masks of ``(T, B, D*H)``, or none when there is no dropout to apply
        (``dropout = 0`` or a single layer)."""
        if self.dropout == 0 or self.num_layers == 1:
            return []
        return [(T, B, self.num_directions * self.hidden_size)] * (self.num_layers - 1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


def make_rnn(config: ModelConfig, seed: Any) -> Recurrent:
    """The recurrent stack of every task's model: ``config.cell`` x ``num_layers`` of
    ``hidden_size``, over inputs of ``config.input_size``, one or two directions."""
    cls = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[config.cell]
    # Dropout acts between layers only: with one layer it changes nothing (and would warn).
    dropout = config.dropout if config.num_layers > 1 else 0.0
    return cls(config.input_size, config.hidden_size, num_layers=config.num_layers,
               dropout=dropout, bidirectional=config.num_directions == 2, dtype=config.dtype,
               seed=seed)


def expose(model: Module, children: dict[str, Module]) -> None:
    """Give ``model`` one flat view of its children's arrays (the same objects, never copies),
    under ``prefix.name``, the names torch gives the same model; optimizers and state dicts
    work on these."""
    for prefix, child in children.items():
        for name in child.params:
            model.params[f"{prefix}.{name}"] = child.params[name]
            model.grads[f"{prefix}.{name}"] = child.grads[name]
