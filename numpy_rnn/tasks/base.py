"""What a task is, for the driver: its data, batches, model, loss and metrics behind one interface.

The driver (:mod:`numpy_rnn.driver.train`) runs one loop for every task:

1. ``task.load(data)`` reads the corpus (and its labels, for the tasks that need them);
2. ``task.model_config(settings, corpus)`` fixes the model, ``task.build(config, seed)`` makes
   the NumPy model with the run's initial weights (both backends start from them);
3. ``task.batches(settings, corpus)`` yields :class:`Batch` es: what the model reads, what the
   loss compares it with, and whether the recurrent state carries over from the last batch;
4. a backend takes one optimizer step per batch (:meth:`TaskModel.loss_and_backward` in NumPy,
   the same computation in torch);
5. every ``eval_every`` steps ``task.validate(model, corpus)`` measures the validation metrics
   (``val_loss`` is the one the best checkpoint is chosen by) and ``task.log_samples`` prints a
   few examples.

A task never imports the driver: the settings it reads are the driver's ``TrainConfig``, named
in annotations only, and it talks to a trained model through :class:`Predictor`, which every
backend satisfies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

import numpy as np

from ..nn.module import Module

if TYPE_CHECKING:  # annotations only: the tasks never import the driver at run time
    from ..driver.train import TrainConfig
    from .data import Corpus
    from .lm import ModelConfig

State = tuple[np.ndarray, ...]  # (h, c) for the LSTM, (h,) otherwise; each (L*D, B, H)

__all__ = ["Batch", "BatchSource", "Predictor", "State", "Task", "TaskModel", "tokens_of"]


class Batch(NamedTuple):
    """One training batch.

    inputs:  what the model reads: the tokens ``(B, T)`` (int64), or a NamedTuple of arrays
             that holds them as ``tokens`` (with lengths, conditions, ...).
    targets: what the loss compares the model's output with.
    reset:   True when the recurrent state starts from zeros; False when it carries over from
             the previous batch's final state (the language model's streams).
    """

    inputs: Any
    targets: np.ndarray
    reset: bool = True


def tokens_of(inputs: Any) -> np.ndarray:
    """The ``(B, T)`` token array of a batch's inputs (the inputs, or their ``tokens``)."""
    return inputs if isinstance(inputs, np.ndarray) else inputs.tokens


class BatchSource(Protocol):
    """An endless iterator of batches whose whole state is a JSON-able dict (exact resume)."""

    def __next__(self) -> Batch: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def describe(self) -> str:
        """One line for the log: how the batches are made."""
        ...


class Predictor(Protocol):
    """What evaluation, sampling and prediction need from a trained model, whichever backend
    computes it. Each task uses the methods its model has; the others raise ``TypeError``."""

    def logits(self, inputs: np.ndarray, state: State | None) -> tuple[np.ndarray, State]:
        """Evaluation mode: tokens ``(B, T)`` -> logits ``(B, T, V)`` (float64), final state."""
        ...

    def initial_state(self, conditions: np.ndarray) -> State:
        """The recurrent state a conditional model starts from, for conditions ``(B, R)``."""
        ...

    def classify(self, tokens: np.ndarray,
                 lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Evaluation mode: padded tokens ``(B, T)`` and their lengths -> logits ``(B, R)``
        (float64) and the attention weights ``(B, T)`` (None without attention)."""
        ...


class TaskModel(Module):
    """A task's model in NumPy: one training step's computation, and evaluation methods.

    The NumPy backend calls :meth:`loss_and_backward` and then clips and steps the optimizer;
    the torch backend computes the same thing with torch.nn and autograd.
    """

    config: ModelConfig

    @abstractmethod
    def loss_and_backward(self, inputs: Any, targets: np.ndarray, state: State | None,
                          dropout_masks: Sequence[np.ndarray] | None) -> tuple[float, State | None]:
        """Training mode: forward, the task's mean loss, backward (ADDING into ``grads``).

        Returns the loss and the final recurrent state (None when the task carries none)."""


class Task(ABC):
    """One shape of recurrent network on a corpus: its data, batches, model and metrics."""

    #: The name on the command line (``train --task NAME``) and in checkpoints.
    name: ClassVar[str]
    #: ``TrainConfig`` fields whose defaults differ for this task (the measured recipe).
    train_defaults: ClassVar[dict[str, Any]] = {}
    #: ``TrainConfig`` fields only some tasks read; a flag for one this task does not read is
    #: refused on the command line.
    reads: ClassVar[frozenset[str]] = frozenset()
    #: ``TrainConfig`` fields a resumed run must share with the checkpoint (the batching).
    resume_keys: ClassVar[tuple[str, ...]] = ("batch_size",)
    #: The validation metric that chooses ``best.npz``, and whether higher is better.
    best_metric: ClassVar[str] = "val_loss"
    higher_is_better: ClassVar[bool] = False
    #: What the training loss (and ``val_loss``) is, for the y axis of ``loss.png``.
    loss_label: ClassVar[str] = "cross-entropy (nats/char)"

    @abstractmethod
    def config_class(self) -> type[ModelConfig]:
        """The model config dataclass of this task (saved in its checkpoints)."""

    @abstractmethod
    def load(self, data: str) -> Corpus:
        """The corpus ``data`` ("plants" or a file path), checked for what this task needs."""

    @abstractmethod
    def model_config(self, settings: TrainConfig, corpus: Corpus) -> ModelConfig:
        """The model the run trains, from its settings and the corpus' vocabulary (and labels)."""

    @abstractmethod
    def build(self, config: ModelConfig, seed: int | None) -> TaskModel:
        """The NumPy model of ``config`` with the initial weights of ``seed``."""

    @abstractmethod
    def batches(self, settings: TrainConfig, corpus: Corpus) -> BatchSource:
        """The training batches of a run, a deterministic function of the settings' seed."""

    @abstractmethod
    def validate(self, model: Predictor, corpus: Corpus) -> dict[str, float]:
        """The validation metrics: ``val_loss`` always, and :attr:`best_metric` (which chooses
        the best checkpoint)."""

    def log_samples(self, model: Predictor, corpus: Corpus, settings: TrainConfig,
                    step: int) -> list[str]:
        """A few lines of examples for the training log (none by default)."""
        return []

    def describe_validation(self, metrics: dict[str, float]) -> str:
        """The validation part of a progress line."""
        return f"validation {metrics['val_loss']:.4f}"

    def evaluate(self, model: Predictor, corpus: Corpus) -> dict[str, float]:
        """What ``evaluate`` reports: the validation metrics, and whatever else the task adds."""
        return self.validate(model, corpus)

    def describe_evaluation(self, metrics: dict[str, float]) -> str:
        """What ``evaluate`` prints (without ``--json``)."""
        return self.describe_validation(metrics)
