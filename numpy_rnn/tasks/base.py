"""What a task is, for the driver: its data, batches, model, loss and metrics behind one interface.

The driver (:mod:`numpy_rnn.driver.train`) runs one loop for every task:

1. ``task.load(data, options)`` reads the corpus as the task's options say (:attr:`Task.options`,
   the dataclass of the task's own settings);
2. ``task.model_config(settings, data)`` fixes the model, ``task.build(config, seed)`` makes
   the NumPy model with the run's initial weights (both backends start from them);
3. ``task.batches(settings, data)`` yields :class:`Batch` es: what the model reads, what the
   loss compares it with, and whether the recurrent state carries over from the last batch;
4. a backend takes one optimizer step per batch (:meth:`TaskModel.loss_and_backward` in NumPy,
   the same computation in torch);
5. every ``eval_every`` steps ``task.validate(model, data)`` measures the validation metrics
   (:attr:`Task.best_metric` chooses the best checkpoint) and ``task.log_samples`` prints a few
   examples;
6. a checkpoint holds the task's part, written by :meth:`Task.record` and read back in one call
   by :meth:`Task.read_record`: the model's config, its vocabularies, the task's options.

A task never imports the driver: the settings it reads are the driver's ``TrainConfig`` (its
:attr:`options` are the task's own), named in annotations only, and it talks to a trained model
through :class:`Predictor`, which every backend satisfies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

import numpy as np

from ..nn.module import Module
from .corpus import TokenVocabulary, Vocabulary
from .options import Preset, RecurrentOptions, TaskOptions

if TYPE_CHECKING:  # annotations only: the tasks never import the driver at run time
    from argparse import ArgumentParser, Namespace

    from ..driver.config import TrainConfig
    from .commands import Command, Services
    from .model import ModelConfig
    from .sizes import MemoryEstimate

State = tuple[np.ndarray, ...]  # (h, c) for the LSTM, (h,) otherwise; each (L*D, B, H)

__all__ = ["Batch", "BatchSource", "Data", "DropoutMask", "Predictor", "RecordError", "Rows",
           "State", "Task", "TaskModel", "TaskRecord", "TrainedModel", "labels_problem",
           "tokens_of",
           "vocabulary_from_json", "vocabulary_to_json"]


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


class Data(Protocol):
    """What the driver reads of a task's data (a corpus, a set of pairs): where it came from,
    a line for the log, and a digest that every process of a data-parallel job compares. The
    rest of it only its task reads."""

    @property
    def source(self) -> Any:
        """The file (or the name) the data was read from."""
        ...

    def describe(self) -> str:
        """One line for the log: what was read, how much of it, its vocabularies."""
        ...

    def fingerprint(self) -> str:
        """A digest of everything a run reads of it (texts, vocabularies), to check that every
        process of a job read the same."""
        ...


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


class RecordError(ValueError):
    """A checkpoint's task part (model config, vocabularies, options) is missing, damaged or
    does not fit the data it is used with; the message is one line naming what."""


#: Vocabularies as a record holds them: a ``Vocabulary`` of characters (unit ``chars``), a
#: ``TokenVocabulary`` of words (``words``), or a tuple of tokens or labels (``tokens``).
_UNITS: dict[str, type[Vocabulary]] = {"chars": Vocabulary, "words": TokenVocabulary}


def vocabulary_to_json(vocabulary: Vocabulary | Sequence[str]) -> dict[str, Any]:
    """``{"unit": ..., "entries": [...]}``: a vocabulary as a checkpoint saves it."""
    if isinstance(vocabulary, Vocabulary):
        return {"unit": vocabulary.unit, "entries": vocabulary.to_json()}
    return {"unit": "tokens", "entries": list(vocabulary)}


def vocabulary_from_json(saved: Any, name: str) -> Vocabulary | tuple[str, ...]:
    """The vocabulary ``name`` a checkpoint saved (:func:`vocabulary_to_json`);
    ``RecordError`` naming it when it is not one."""
    if not isinstance(saved, Mapping) or not isinstance(saved.get("entries"), list) or not all(
            isinstance(e, str) for e in saved["entries"]):
        raise RecordError(f"the vocabulary {name!r} must be a unit and a list of strings")
    unit = saved.get("unit")
    try:
        if isinstance(unit, str) and unit in _UNITS:
            return _UNITS[unit].from_json(saved["entries"])
        if isinstance(unit, str) and unit == "tokens":
            entries = tuple(saved["entries"])
            if len(set(entries)) != len(entries):
                raise ValueError("its entries are not distinct")
            return entries
    except ValueError as exc:
        raise RecordError(f"the vocabulary {name!r} is damaged: {exc}") from None
    raise RecordError(f"the vocabulary {name!r} has an unknown unit {unit!r} (chars, words or "
                      "tokens)")


class TaskRecord(NamedTuple):
    """A checkpoint's task part, as its task reads it in one call (:meth:`Task.read_record`):
    the model's ``config``, its ``vocabularies`` by name (the language model's
    ``{"characters": Vocabulary}``, seq2seq's ``source`` and ``target``, ...; a
    :class:`Vocabulary` or a tuple of tokens each) and the ``options`` of the run that trained it
    (None for a checkpoint saved without them: converted, or written before options existed
    and without training state)."""

    config: ModelConfig
    vocabularies: dict[str, Vocabulary | tuple[str, ...]]
    options: TaskOptions | None


class TrainedModel:
    """A trained model of a task, ready for inference: what :func:`numpy_rnn.load` returns for a
    checkpoint. Each task's own subclass (:attr:`Task.trained`) adds its inference methods (the
    language model's ``sample``, the classifier's ``predict``, seq2seq's ``translate``), and the
    command line calls the same methods, so the two agree.

    ``model`` answers the task's inference calls (``model.infer(name, *args)``, NumPy in and out,
    whichever backend computes it); ``record`` is the checkpoint's task part (model config,
    vocabularies, options); ``meta`` its metadata; ``path`` the file. ``check_fits`` refuses
    (``MemoryLimitError``) a call that cannot fit in memory before it allocates (the driver's
    memory guard; None: no check).
    """

    def __init__(self, task: Task, model: Predictor, record: TaskRecord,
                 meta: Mapping[str, Any], path: Any = None,
                 check_fits: Callable[[MemoryEstimate], None] | None = None) -> None:
        self.task, self.model, self.record, self.meta, self.path = task, model, record, meta, path
        self._check_fits = check_fits

    @property
    def config(self) -> ModelConfig:
        """The model's config."""
        return self.record.config

    @property
    def vocabularies(self) -> dict[str, Vocabulary | tuple[str, ...]]:
        """The model's vocabularies by name."""
        return self.record.vocabularies

    def check_fits(self, estimate: MemoryEstimate) -> None:
        """Refuse, before allocating, what ``estimate`` says cannot fit in memory."""
        if self._check_fits is not None:
            self._check_fits(estimate)

    def __repr__(self) -> str:
        c = self.config
        where = f" from {self.path}" if self.path is not None else ""
        return (f"<{type(self).__name__} of a {self.task.name} model{where}: {c.cell} "
                f"{c.num_layers} x {c.hidden_size}, {c.dtype}>")


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
    #: The dataclass of this task's own settings (its ``train`` flags, defaults and checks):
    #: :class:`numpy_rnn.tasks.options.TaskOptions`; a run's are ``TrainConfig.options``.
    options: ClassVar[type[TaskOptions]] = RecurrentOptions
    #: Flags that stand for several settings at once (``--notebook``, ``--stress``).
    presets: ClassVar[tuple[Preset, ...]] = ()
    #: The training loop's settings (``TrainConfig`` fields) of this task's measured recipe,
    #: where they differ from the loop's defaults; its other settings are :attr:`options`'.
    train_defaults: ClassVar[dict[str, Any]] = {}
    #: Settings (the loop's or the task's) a resumed run must share with the checkpoint, since
    #: they fix what the saved batching state means.
    resume_keys: ClassVar[tuple[str, ...]] = ("batch_size",)
    #: The task's settings a checkpoint written before they existed is read with (instead of
    #: the options' defaults, which are today's recipe): the values that keep its run what it
    #: was (the language model's ``stream_groups=1``, the file order its runs streamed in).
    legacy_settings: ClassVar[dict[str, Any]] = {}
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
    #: Help texts of the loop's ``train`` flags that read otherwise for this task, by
    #: ``TrainConfig`` field; ``{default}`` stands for this task's default.
    flag_help: ClassVar[dict[str, str]] = {}
    #: What ``evaluate`` measures for this task, and the keys of its ``--json``, for its help.
    evaluation_help: ClassVar[str] = ""
    evaluation_json: ClassVar[str] = ""
    #: The inference commands this task serves (``evaluate`` serves every task).
    commands: ClassVar[tuple[Command, ...]] = ()
    #: What :func:`numpy_rnn.load` returns for this task's checkpoints: a
    #: :class:`TrainedModel` with the task's inference methods.
    trained: ClassVar[type[TrainedModel]] = TrainedModel

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

    # -- the data -------------------------------------------------------------------------

    @abstractmethod
    def load(self, data: str, options: TaskOptions | None = None) -> Data:
        """The data ``data`` (a corpus name or a file path), read as ``options`` (this task's
        :attr:`options`; None: their defaults) say and checked for what this task needs."""

    def load_for(self, record: TaskRecord, data: str) -> Data:
        """The data ``data`` read as the run of a checkpoint's ``record`` read its own (its
        options; the defaults when it saved none)."""
        return self.load(data, record.options or self.options())

    def vocabularies(self, data: Any) -> dict[str, Vocabulary | tuple[str, ...]]:
        """The vocabularies this task's model reads and writes, by name, as ``data`` has them
        (compared with a checkpoint's by :meth:`check_data`). Default: a corpus's characters,
        ``{"characters": data.vocab}``."""
        return {"characters": data.vocab}

    # -- the model ------------------------------------------------------------------------

    @abstractmethod
    def config_class(self) -> type[ModelConfig]:
        """The model config dataclass of this task (saved in its checkpoints)."""

    @abstractmethod
    def model_config(self, settings: TrainConfig, data: Any) -> ModelConfig:
        """The model the run trains, from its settings and the data's vocabularies."""

    @abstractmethod
    def build(self, config: ModelConfig, seed: int | None) -> TaskModel:
        """The NumPy model of ``config`` with the initial weights of ``seed``."""

    def parameter_count(self, config: ModelConfig) -> int:
        """How many parameters the model of ``config`` has, counted from its shapes without
        building it (the memory guard asks before anything is allocated). Default: the built
        model's count (the built-in tasks count from the shapes, tested equal to it)."""
        return sum(int(p.size) for p in self.build(config, 0).params.values())

    # -- what a checkpoint holds of the task -----------------------------------------------

    def record(self, config: ModelConfig, data: Any, options: TaskOptions | None
               ) -> dict[str, Any]:
        """The task's part of a checkpoint's metadata: the model's config, its vocabularies
        (:meth:`vocabularies` of ``data``) and the run's ``options`` (None: none)."""
        return {"model_config": config.to_json(),
                "vocabularies": {name: vocabulary_to_json(v)
                                 for name, v in self.vocabularies(data).items()},
                "options": options.to_json() if options is not None else None}

    def read_record(self, meta: Mapping[str, Any]) -> TaskRecord:
        """A checkpoint's task part (:meth:`record`), read and checked in one call: the model
        config of :meth:`config_class`, every vocabulary, the options. ``RecordError`` naming
        what is missing or damaged (a vocabulary whose size is not the model's, say).
        Checkpoints written before the tasks had records of their own (a ``vocab`` and
        ``labels``, the settings in the training config) are read as well
        (:meth:`legacy_vocabularies`)."""
        try:
            config = self.config_class().from_json(meta["model_config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"bad model config: {_one_line(exc)}") from exc
        saved = meta.get("vocabularies")
        if saved is None:
            vocabularies = self.legacy_vocabularies(meta)
        elif isinstance(saved, Mapping):
            vocabularies = {name: vocabulary_from_json(v, name) for name, v in saved.items()}
        else:
            raise RecordError(f"the vocabularies must be a mapping, got {type(saved).__name__}")
        problem = self.record_problem(config, vocabularies)
        if problem:
            raise RecordError(problem)
        return TaskRecord(config, vocabularies, self._saved_options(meta))

    def legacy_vocabularies(self, meta: Mapping[str, Any]
                            ) -> dict[str, Vocabulary | tuple[str, ...]]:
        """The vocabularies of a checkpoint written before the tasks recorded their own (its
        ``vocab``, read as ``vocab_unit`` says, and its ``labels``), under this task's names.
        Default: the characters (and ``labels`` when the model has a label axis)."""
        vocabularies: dict[str, Vocabulary | tuple[str, ...]] = {
            "characters": _legacy_vocab(meta)}
        labels = meta.get("labels")
        if "labels" in self.vocabulary_names() and labels is not None:
            vocabularies["labels"] = _labels(labels)
        return vocabularies

    def vocabulary_names(self) -> tuple[str, ...]:
        """The names of the vocabularies this task's checkpoints hold (default: the
        characters)."""
        return ("characters",)

    def record_problem(self, config: ModelConfig,
                       vocabularies: Mapping[str, Vocabulary | tuple[str, ...]]) -> str | None:
        """What keeps a checkpoint's ``config`` and ``vocabularies`` from fitting together (a
        missing vocabulary, a size that is not the model's), or None. Default: every one of
        :meth:`vocabulary_names` present, the characters ``vocab_size`` long."""
        missing = [n for n in self.vocabulary_names() if n not in vocabularies]
        if missing:
            return f"the vocabularies lack {', '.join(missing)}"
        chars = vocabularies.get("characters")
        if chars is not None and len(chars) != config.vocab_size:
            unit = "tokens" if isinstance(chars, TokenVocabulary) else "characters"
            return (f"the vocabulary has {len(chars)} {unit} but the model config says "
                    f"vocab_size={config.vocab_size}")
        return None

    def _saved_options(self, meta: Mapping[str, Any]) -> TaskOptions | None:
        """The options a checkpoint saved (``options``), or those of its training config when
        it predates them (every setting then sat in one flat config, other tasks' too)."""
        saved = meta.get("options")
        legacy = False
        if saved is None:
            train = meta.get("train")
            saved = train.get("config") if isinstance(train, Mapping) else None
            legacy = True
        if saved is None:
            return None
        if not isinstance(saved, Mapping):
            raise RecordError(f"the task's options must be a mapping, got "
                              f"{type(saved).__name__}")
        try:
            names = set(self.options.__dataclass_fields__)
            # A setting the checkpoint lacks (added since it was written) takes the value that
            # keeps its run what it was, not today's recipe.
            old = {k: v for k, v in self.legacy_settings.items() if k not in saved}
            if legacy:
                return self.options.from_json({**old, **{k: v for k, v in saved.items()
                                                         if k in names}})
            return self.options.from_json({**old, **saved})
        except (TypeError, ValueError) as exc:
            raise RecordError(f"bad {self.name} options: {_one_line(exc)}") from exc

    def check_data(self, record: TaskRecord, data: Any, path: Any) -> None:
        """``RecordError`` unless ``data`` has every vocabulary of the checkpoint ``path``'s
        ``record`` (other characters, tokens or labels would give the model's layers another
        meaning), naming the one that differs and how."""
        ours = self.vocabularies(data)
        for name, theirs in record.vocabularies.items():
            mine = ours.get(name)
            if mine is None or _entries(mine) == _entries(theirs):
                continue
            if isinstance(mine, Vocabulary) and isinstance(theirs, Vocabulary) \
                    and mine.unit != theirs.unit:
                raise RecordError(f"checkpoint {path} reads {_unit_name(theirs)}, this corpus is "
                                  f"read as {_unit_name(mine)}")
            only_ckpt = sorted(set(_entries(theirs)) - set(_entries(mine)))
            only_data = sorted(set(_entries(mine)) - set(_entries(theirs)))
            what = "vocabulary" if name == "characters" else f"{name} vocabulary"
            raise RecordError(
                f"checkpoint {path} was trained on another {what} ({len(theirs)} "
                f"{_unit_name(theirs)} vs {len(mine)} in this data; only in the checkpoint: "
                f"{only_ckpt[:10]}, only in the data: {only_data[:10]})")

    # -- training hooks that the driver calls ----------------------------------------------

    def training_state_problem(self, state: dict[str, Any], settings: TrainConfig) -> str | None:
        """What in a checkpoint's training state keeps it from continuing this task's
        batches under ``settings`` exactly (say, ``"training state lacks the stream
        position"``), or None when nothing does."""
        return None

    def training_memory(self, config: ModelConfig, settings: TrainConfig,
                        data: Any) -> MemoryEstimate:
        """What a training step of ``config``'s model on this task's batches of ``data`` holds
        at its peak, by part (the memory guard refuses a run that cannot fit before
        allocating). Default: a recurrent stack over windows of ``settings.options.seq_len``
        and a head over the vocabulary (:func:`numpy_rnn.tasks.sizes.training_estimate`)."""
        from .sizes import training_estimate

        return training_estimate(config, self.parameter_count(config), settings.batch_size,
                                 getattr(settings.options, "seq_len", 1))

    def evaluation_memory(self, config: ModelConfig, data: Any,
                          **options: Any) -> MemoryEstimate | None:
        """What ``evaluate`` of ``config``'s model on ``data`` (with the task's ``evaluate``
        ``options``) holds beyond loading the checkpoint, for the memory guard; None: nothing
        that depends on a flag (the default)."""
        return None

    @abstractmethod
    def batches(self, settings: TrainConfig, data: Any) -> BatchSource:
        """The training batches of a run, a deterministic function of the settings' seed."""

    @abstractmethod
    def validate(self, model: Predictor, data: Any) -> dict[str, float]:
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

    def log_samples(self, model: Predictor, data: Any, settings: TrainConfig,
                    step: int) -> list[str]:
        """A few lines of examples for the training log (none by default)."""
        return []

    def describe_validation(self, metrics: dict[str, float]) -> str:
        """The validation part of a progress line."""
        return f"validation {metrics['val_loss']:.4f}"

    def evaluate(self, model: Predictor, data: Any) -> dict[str, float]:
        """What ``evaluate`` reports: the validation metrics, and whatever else the task adds.
        A task with ``evaluate`` flags of its own takes them as keyword arguments here, with
        defaults (:meth:`evaluate_options`)."""
        return self.validate(model, data)

    def describe_evaluation(self, metrics: dict[str, float]) -> str:
        """What ``evaluate`` prints (without ``--json``)."""
        return self.describe_validation(metrics)


def labels_problem(config: ModelConfig,
                   vocabularies: Mapping[str, Vocabulary | tuple[str, ...]]) -> str | None:
    """What keeps a model with a label axis (``config.num_labels``) from fitting its checkpoint's
    ``labels`` vocabulary: it must be that many sorted, distinct, non-empty codes."""
    labels = vocabularies.get("labels")
    num_labels = getattr(config, "num_labels", None)
    if not isinstance(labels, tuple) or len(labels) != num_labels or not all(labels) \
            or list(labels) != sorted(set(labels)):
        return (f"a {config.task} model needs its label vocabulary ({num_labels} sorted, "
                f"distinct codes), got {labels!r}"[:300])
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _entries(vocabulary: Vocabulary | Sequence[str]) -> tuple[str, ...]:
    return tuple(vocabulary.chars) if isinstance(vocabulary, Vocabulary) else tuple(vocabulary)


def _unit_name(vocabulary: Vocabulary | Sequence[str]) -> str:
    if isinstance(vocabulary, TokenVocabulary):
        return "tokens"
    return "characters" if isinstance(vocabulary, Vocabulary) else "entries"


def _legacy_vocab(meta: Mapping[str, Any]) -> Vocabulary:
    """A checkpoint's ``vocab`` as its ``vocab_unit`` (characters when absent) says."""
    unit = meta.get("vocab_unit") or "chars"
    if unit not in _UNITS:
        raise RecordError(f"vocab_unit must be 'chars' or 'words' (or absent), got "
                          f"{' '.join(repr(unit).split())[:80]}")
    try:
        return _UNITS[unit].from_json(meta["vocab"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"bad vocabulary: {_one_line(exc)}") from exc


def _labels(labels: Any) -> tuple[str, ...]:
    """A checkpoint's ``labels`` list as a tuple; ``RecordError`` when it is not one of
    strings."""
    if not (isinstance(labels, list) and all(isinstance(c, str) for c in labels)):
        raise RecordError(f"labels must be a list of codes or null, got "
                          f"{' '.join(repr(labels).split())[:80]}")
    return tuple(labels)
