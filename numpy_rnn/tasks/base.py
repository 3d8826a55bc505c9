"""What a task is, for the driver: its data, batches, model, loss and metrics behind one interface.

The driver (:mod:`numpy_rnn.driver.train`) runs one loop for every task:

1. ``task.load(data)`` reads the corpus (and its labels, for the tasks that need them), with
   the settings of the run that say how (:attr:`Task.load_keys`, through ``load_as``);
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
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

import numpy as np

from ..nn.module import Module

if TYPE_CHECKING:  # annotations only: the tasks never import the driver at run time
    from argparse import ArgumentParser, Namespace

    from ..driver.train import TrainConfig
    from .commands import Command, Option, Services
    from .corpus import Corpus
    from .model import ModelConfig

State = tuple[np.ndarray, ...]  # (h, c) for the LSTM, (h,) otherwise; each (L*D, B, H)

__all__ = ["Batch", "BatchSource", "DropoutMask", "Predictor", "Rows", "State", "Task",
           "TaskModel", "tokens_of"]


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


class DropoutMask(NamedTuple):
    """One keep mask a training step needs: its ``shape``, the axis that holds the batch's
    ``rows`` (so a micro-batch gets its own rows of the mask), and ``p``, the probability of an
    element being dropped. The driver draws it (``rng.random(shape) >= p``) and the model
    scales it (:func:`numpy_rnn.nn.recurrent.scale_dropout_mask` with the same ``p``)."""

    shape: tuple[int, ...]
    rows: int
    p: float


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
    computes it (and however many processes share the work): one call, ``infer``, that runs a
    method of the task's model, the NumPy or the torch one, which have it under the same name
    (the methods a task's model offers are its :attr:`Task.inference`)."""

    @property
    def config(self) -> ModelConfig:
        """The model's config."""
        ...

    def infer(self, name: str, *args: Any) -> Any:
        """Evaluation mode, no gradients: the model's method ``name`` on NumPy ``args``;
        ``TypeError`` when the model has no such method."""
        ...


class Rows(NamedTuple):
    """Where an inference method's arguments and results hold their batch rows, so that a
    call can be split by rows over processes: an axis per argument and per result (0 for an
    array ``(B, ...)`` or a NamedTuple of them, 1 for a recurrent state, ``(L*D, B, H)`` each;
    None: not split, the same on every process). ``returns`` is a tuple for a method that
    returns a tuple of results, or one axis for a method that returns one value (a state)."""

    args: tuple[int | None, ...]
    returns: tuple[int | None, ...] | int


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
    #: ``TrainConfig`` fields that say how :meth:`load` reads a corpus (seq2seq's token units),
    #: given to it as keyword arguments by :meth:`load_as`: from the run's settings in
    #: training, from the settings its checkpoint saved afterwards (:meth:`load_for`).
    load_keys: ClassVar[tuple[str, ...]] = ()
    #: The evaluation methods of this task's models (NumPy and torch, same names and
    #: arguments), with where their batch rows are; called through ``Predictor.infer``.
    inference: ClassVar[dict[str, Rows]] = {}
    #: The corpora this task reads by name (``--data NAME``), recorded as such in checkpoints;
    #: any other ``--data`` is a file, recorded by its absolute path.
    corpus_names: ClassVar[tuple[str, ...]] = ("plants",)
    #: The torch twin of this task's model, "module:class" (``torch_ref``'s, or another
    #: package's), for the torch backend; None: the task trains with the NumPy backend only.
    torch_model: ClassVar[str | None] = None
    #: The validation metric that chooses ``best.npz``, and whether higher is better.
    best_metric: ClassVar[str] = "val_loss"
    higher_is_better: ClassVar[bool] = False
    #: What the training loss (and ``val_loss``) is, for the y axis of ``loss.png``.
    loss_label: ClassVar[str] = "cross-entropy (nats/char)"

    # -- the command line (numpy_rnn.tasks.commands): flags, defaults, commands --------------
    #: The article the name is read with in messages ("an lm", "a classify").
    article: ClassVar[str] = "a"
    #: What the task learns, in a line, for ``train --task``'s help.
    summary: ClassVar[str] = ""
    #: The ``train`` flags of this task's own (fields of :attr:`reads`), shown in ``train
    #: --task NAME --help`` with this task's defaults; another task's are refused.
    train_options: ClassVar[tuple[Option, ...]] = ()
    #: Help texts of common ``train`` flags that read otherwise for this task, by
    #: ``TrainConfig`` field; ``{default}`` stands for this task's default.
    flag_help: ClassVar[dict[str, str]] = {}
    #: What ``evaluate`` measures for this task, and the keys of its ``--json``, for its help.
    evaluation_help: ClassVar[str] = ""
    evaluation_json: ClassVar[str] = ""
    #: The inference commands this task serves (``evaluate`` serves every task).
    commands: ClassVar[tuple[Command, ...]] = ()

    def add_command_arguments(self, name: str, parser: ArgumentParser) -> None:
        """Add this task's own flags to command ``name``'s parser (one of :attr:`commands`, or
        ``evaluate``). A flag of another task's given (not None) is refused for this task's
        checkpoints."""
        return None

    def check_command_arguments(self, name: str, args: Namespace, services: Services) -> None:
        """Refuse (``ValueError``) arguments of command ``name`` that do not fit this task's
        checkpoint, before anything is computed."""
        return None

    def run_command(self, name: str, args: Namespace, services: Services) -> int:
        """Run command ``name`` (one of :attr:`commands`) on this task's checkpoint; returns
        the exit status."""
        raise ValueError(f"{self.name} does not serve the command {name}")

    def refusal(self, command: str, path: str, served_by: str) -> str | None:
        """The one-line error for this task's checkpoint ``path`` given to a ``command`` this
        task does not serve, ``served_by`` the tasks that do ("an lm or a conditional"); None:
        the driver's."""
        return None

    def evaluate_options(self, args: Namespace) -> dict[str, Any]:
        """The keyword arguments of :meth:`evaluate` that this task's own ``evaluate`` flags
        (:meth:`add_command_arguments`) ask for, from the parsed ``args`` (none by default:
        :meth:`evaluate` then runs as during training)."""
        return {}

    def extend_evaluation(self, args: Namespace, metrics: dict[str, Any],
                          services: Services) -> list[str]:
        """What ``evaluate`` adds with this task's flags: entries of ``metrics`` (its JSON),
        and the lines printed after :meth:`describe_evaluation`."""
        return []

    # -- training hooks that the driver calls ----------------------------------------------

    def training_state_problem(self, state: dict[str, Any], settings: TrainConfig) -> str | None:
        """What in a checkpoint's training state keeps it from continuing this task's
        batches under ``settings`` exactly (say, ``"training state lacks the stream
        position"``), or None when nothing does."""
        return None

    def batch_shape(self, settings: TrainConfig, corpus: Corpus) -> tuple[int, int, bool]:
        """The largest batch a training step reads, for the memory guard: rows, time steps,
        and whether the rows are padded sequences run with their lengths."""
        return settings.batch_size, settings.seq_len, False

    @abstractmethod
    def config_class(self) -> type[ModelConfig]:
        """The model config dataclass of this task (saved in its checkpoints)."""

    @abstractmethod
    def load(self, data: str) -> Corpus:
        """The corpus ``data`` ("plants" or a file path), checked for what this task needs.
        A task with :attr:`load_keys` takes them as keyword arguments, with defaults."""

    def load_as(self, data: str, settings: Mapping[str, Any] | None = None) -> Corpus:
        """The corpus ``data`` read as a run with ``settings`` reads it: :meth:`load` with the
        :attr:`load_keys` of ``settings`` (``TrainConfig`` fields by name, as
        ``TrainConfig.to_json`` gives them and a checkpoint saves them) as keyword arguments;
        those ``settings`` lacks (all, when None) keep ``load``'s defaults."""
        options = {k: settings[k] for k in self.load_keys if settings is not None and k in settings}
        return self.load(data, **options)

    def load_for(self, meta: Mapping[str, Any], data: str | None = None) -> Corpus:
        """The corpus of a checkpoint (its metadata ``meta``): ``data``, by default the one it
        was trained on, read as its run read it (:meth:`load_as` with the training settings
        it saved, ``meta["train"]["config"]``; a checkpoint without them: the defaults)."""
        train = meta.get("train")
        settings = train.get("config") if isinstance(train, Mapping) else None
        return self.load_as(meta["data"] if data is None else data,
                            settings if isinstance(settings, Mapping) else None)

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

    def loss_terms(self, targets: np.ndarray) -> int:
        """How many terms the task's mean loss over ``targets`` (some rows of a batch's)
        averages: the weight of those rows' gradient when a step's batch is cut into
        micro-batches (gradient accumulation, data parallel). Default: every entry."""
        return int(np.size(targets))

    def dropout_masks(self, config: ModelConfig, batch: Batch) -> list[DropoutMask]:
        """The keep masks a training step on ``batch`` needs, in the order the model reads
        them. Default: the model config's masks for the batch's tokens ``(B, T)``, time-major
        ``(T, B, ...)`` (rows on axis 1), each dropped with ``config.dropout``."""
        B, T = tokens_of(batch.inputs).shape
        return [DropoutMask(shape, 1, config.dropout)
                for shape in config.dropout_mask_shapes(T, B)]

    def log_samples(self, model: Predictor, corpus: Corpus, settings: TrainConfig,
                    step: int) -> list[str]:
        """A few lines of examples for the training log (none by default)."""
        return []

    def describe_validation(self, metrics: dict[str, float]) -> str:
        """The validation part of a progress line."""
        return f"validation {metrics['val_loss']:.4f}"

    def evaluate(self, model: Predictor, corpus: Corpus) -> dict[str, float]:
        """What ``evaluate`` reports: the validation metrics, and whatever else the task adds.
        A task with ``evaluate`` flags of its own takes them as keyword arguments here, with
        defaults (:meth:`evaluate_options`)."""
        return self.validate(model, corpus)

    def describe_evaluation(self, metrics: dict[str, float]) -> str:
        """What ``evaluate`` prints (without ``--json``)."""
        return self.describe_validation(metrics)
