"""Training a CharRNN, one readable path from the corpus to sampled names.

:func:`train` reads top to bottom: load the corpus and its vocabulary -> draw the initial weights
from the seeded NumPy generator and load them into whichever backend runs (one seed, one start, in
both backends) -> loop over steps, each a batch of B windows of T characters -> every
``eval_every`` steps measure the validation loss, save a checkpoint and sample a few names -> at
the end plot the loss curve.

Two batching schedules:

* ``random``: B windows at random offsets, each from a zero hidden state (the notebook's, with
  B=1, T=150);
* ``stream``: the text as B contiguous streams walked T characters at a time (truncated BPTT),
  the hidden state carried from one batch to the next so each stream reads as one long sequence.
  For plant names the text of each epoch is the training names dealt into ``stream_groups``
  random groups (``NameStreamBatcher``), so that consecutive names are as far apart in the
  sorted file as consecutive validation names are; a plain text file streams in its own order.

Every random number of a run is drawn here, by the driver, from generators seeded by ``--seed``:
the initial weights, the random windows, the name deals, and the dropout masks, which go to the
backend with each batch. A backend computes and draws nothing, so both backends given one seed
take the same steps. Everything a step depends on (weights, optimizer state, the batch and
dropout generators or the stream position, the carried hidden state) goes into the checkpoint,
so a resumed run logs exactly the losses the uninterrupted run would have, in either backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np

from .._install import install_hint
from ..tasks import DEFAULT_TASK, TASKS, find_task, get_task
from ..tasks.base import BatchSource, DropoutMask, Predictor, State, Task, tokens_of
from ..tasks.classify import POOLINGS
from ..tasks.corpus import Corpus
from ..tasks.lm import NOTEBOOK, SCHEDULES
from ..tasks.model import CELLS, ModelConfig
from ..tasks.pairs import TokenUnit
from .backend import Backend, OptimConfig, StepResult, get_backend
from .checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    CheckpointError,
    atomic_write,
    check_compatible,
    labels_of,
    load_checkpoint,
    make_meta,
    read_meta,
    save_checkpoint,
    task_of,
)
from .distributed import (
    DistributedError,
    Engine,
    FollowerExit,
    PlainStep,
    SplitPredictor,
    SplitStep,
    agree_on_stop,
    broadcast_object,
    collectively,
    get_engine,
)
from .memory import check_training_fits
from .rundir import run_lock
from .stops import StopRequest, deferred_stop

__all__ = ["METRICS_NAME", "NOTEBOOK", "PLOT_NAME", "TrainConfig", "TrainSummary",
           "TrainingDiverged", "draw_dropout_masks", "draw_masks", "lr_at", "plot_losses",
           "resume_config", "train"]

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"
LR_DECAYS = ("none", "cosine", "linear")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("adam", "adamw", "sgd")
# Mixed into the seed of the dropout generator, so its draws are not those of any other
# generator seeded with the run's seed (the batches) or with (seed, step) (the samples).
_DROPOUT_TAG = 0x64726F70
# Where a run starts, as process 0 sends it to every process: the weights, and the checkpoint's
# metadata on resume (None for a new run).
_Start = tuple[dict[str, np.ndarray], dict[str, Any] | None]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite, or the validation loss rose over
    :data:`DIVERGED_FACTOR` times the run's first training loss; the last good checkpoint was
    kept."""


#: A validation loss this many times the run's first training loss (about the loss of a
#: uniform guess, for a new run) means the run diverged (a learning rate far too high, say),
#: even while the numbers stay finite.
DIVERGED_FACTOR = 10.0


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run (the ``train`` command's flags, same names).

    The defaults are the recipe that trains best in 20 minutes on 2 CPU cores (measured, see
    ``README.md``): a 2 x 256 LSTM with an embedding as wide as the vocabulary, float32, batches
    of 32 streams x 150 characters over the training names dealt into 10 random groups each
    epoch, dropout 0.1 between the layers, Adam at 0.003 decayed (cosine) to 0.0003 over 2200
    steps. The notebook's 3 x 512 LSTM sees too few characters in that time on 2 cores (1.44
    nats/char against 1.01 for 2 x 256, both on the file-order stream); ``NOTEBOOK`` holds its
    settings (``train --notebook`` on the command line).

    ``grad_accum`` K cuts each step's batch into K micro-batches of ``batch_size / K`` and takes
    one optimizer step on their summed gradients (each weighted by its share of the batch's
    loss terms), which is the step on the whole batch, to rounding, in less memory; with P
    processes (mpiexec, torchrun) each process computes K of the P*K micro-batches.

    ``task`` chooses what is trained (``lm``, ``classify``, ``conditional``; see
    :mod:`numpy_rnn.tasks`). The defaults above are the language model's; each other task has
    its own measured recipe, which :meth:`for_task` applies (the command line does). Fields that
    only some tasks read say so; the others ignore them.
    """

    task: str = DEFAULT_TASK
    # the model
    cell: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 2
    embedding_dim: int | None = None    # None: the vocabulary size, as in the notebook
    dropout: float = 0.1                # between the two LSTM layers: the runs overfit without
    dtype: str = "float32"
    bidirectional: bool = True          # classify: a bidirectional stack
    pooling: str = "attention"          # classify: attention | last
    attention_size: int = 64            # classify, seq2seq: the additive score's hidden width
    attention: str = "general"          # seq2seq: additive | general | dot | none
    input_feeding: bool = True          # seq2seq: the attentional state fed back
    # the data and how it is batched
    data: str = "plants"
    seq_len: int = 150
    batch_size: int = 32
    schedule: str = "stream"
    stream_groups: int = 10             # stream over names: random groups dealt each epoch
    label_dropout: float = 0.1          # conditional: the share of names trained unconditioned
    length_buckets: int = 0             # seq2seq: batches cut from pools of this many sorted by
                                        # length (0: plain random batches)
    source_tokens: str = "chars"        # seq2seq, a source<TAB>target file: each side read as
    target_tokens: str = "words"        # its characters or its space-separated words
    # the optimisation
    steps: int = 2200                   # total optimizer steps of the run (resume included)
    optimizer: str = "adam"             # adam | adamw | sgd (torch.optim's, in both backends)
    weight_decay: float = 0.0           # adam: an L2 term; adamw: decoupled decay
    lr: float = 3e-3
    lr_decay: str = "cosine"            # none | cosine | linear, from lr to lr * lr_final
    lr_final: float = 0.1
    lr_decay_steps: int = 2200          # the decay reaches lr * lr_final here, then stays
    clip: float | None = 5.0            # max global gradient norm; None: no clipping
    grad_accum: int = 1                 # micro-batches per step (per process), summed
    # the run
    backend: str = "numpy"
    device: str = "cpu"
    seed: int = 1337
    out: str = "out"
    eval_every: int = 275
    sample_every: int = 275
    num_eval_samples: int = 5
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")

        for name in ("hidden_size", "num_layers", "seq_len", "batch_size", "stream_groups",
                     "steps", "eval_every", "sample_every", "attention_size", "grad_accum"):
            positive_int(name)
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} does not split into grad_accum "
                             f"{self.grad_accum} micro-batches of equal size: give a batch "
                             f"size divisible by {self.grad_accum}")
        if find_task(self.task) is None:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be attention or last, got {self.pooling!r}")
        if not isinstance(self.bidirectional, bool):
            raise TypeError(f"bidirectional must be a bool, got {self.bidirectional!r}")
        if not (isinstance(self.label_dropout, (int, float)) and 0 <= self.label_dropout < 1):
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout!r}")
        if self.embedding_dim is not None:
            positive_int("embedding_dim")
        if isinstance(self.length_buckets, bool) or not isinstance(
                self.length_buckets, (int, np.integer)) or self.length_buckets < 0:
            raise ValueError(f"length_buckets must be an integer >= 0, got {self.length_buckets!r}")
        for name in ("source_tokens", "target_tokens"):
            if getattr(self, name) not in get_args(TokenUnit):
                raise ValueError(f"{name} must be 'chars' or 'words', got "
                                 f"{getattr(self, name)!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be random or stream, got {self.schedule!r}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {', '.join(LR_DECAYS)}, "
                             f"got {self.lr_decay!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if isinstance(self.lr_decay_steps, bool) or not isinstance(
                self.lr_decay_steps, (int, np.integer)) or self.lr_decay_steps < 1:
            raise ValueError(f"lr_decay_steps must be a positive integer, "
                             f"got {self.lr_decay_steps!r}")
        if not 0 < self.lr_final <= 1:
            raise ValueError(f"lr_final must be in (0, 1] (a fraction of lr), "
                             f"got {self.lr_final!r}")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be > 0, or None for no clipping, got {self.clip!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.num_eval_samples, bool) or self.num_eval_samples < 0:
            raise ValueError(f"num_eval_samples must be >= 0, got {self.num_eval_samples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, "
                             f"got {self.weight_decay!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: resume continues the "
                             "checkpoint that overwrite would discard")

    @classmethod
    def for_task(cls, task: str = DEFAULT_TASK, **fields: Any) -> TrainConfig:
        """The config of a ``task`` run: its measured recipe (``Task.train_defaults``), then
        ``fields`` on top. ``TrainConfig.for_task(name, steps=100)``."""
        return cls(**{"task": task, **get_task(task).train_defaults, **fields})

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The language model's config for a vocabulary of ``vocab_size`` characters."""
        return ModelConfig(vocab_size=vocab_size, hidden_size=self.hidden_size,
                           num_layers=self.num_layers, cell=self.cell,
                           embedding_dim=self.embedding_dim, dropout=self.dropout,
                           dtype=self.dtype)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)




@dataclass
class TrainSummary:
    """What a run did, returned by :func:`train`."""

    out: str
    start_step: int                       # the checkpoint's step on resume, else 0
    step: int                             # the last step taken
    val_loss: float | None = None         # the last validation loss (LM: nats/char)
    val_bpc: float | None = None          # the LM's in bits/char
    val_metrics: dict[str, float] = field(default_factory=dict)  # the last validation, all
    best_metric: str = "val_loss"         # the task's metric that chooses best.npz
    best_value: float | None = None       # its best value (the classifier's: micro-AP)
    best_step: int | None = None          # the step of the best value
    wall_time_s: float = 0.0              # the whole call, evaluation and checkpoints included
    chars_per_s: float = 0.0              # characters trained on per second of training steps
    stop_signal: int | None = None        # the signal that stopped it early (checkpoint saved)
    losses: list[float] = field(default_factory=list)   # training loss of each step taken

    @property
    def best_val_loss(self) -> float | None:
        """The old name of :attr:`best_value` (a loss for the language model and the generator,
        the micro average precision for the classifier)."""
        return self.best_value

    @property
    def interrupted(self) -> bool:
        """Whether a signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run before ``--steps``."""
        return self.stop_signal is not None


def lr_at(step: int, config: TrainConfig) -> float:
    """The learning rate of ``step`` (1-based): ``lr`` at step 1, then decayed towards
    ``lr * lr_final`` at step ``lr_decay_steps`` (cosine or linear) and constant after it, or
    constant throughout.

    The horizon is its own setting, not ``--steps``, so a run resumed to a larger ``--steps``
    uses exactly the rates of the uninterrupted run.
    """
    if config.lr_decay == "none" or config.lr_decay_steps == 1:
        return config.lr
    progress = min(max((step - 1) / (config.lr_decay_steps - 1), 0.0), 1.0)
    final = config.lr * config.lr_final
    if config.lr_decay == "cosine":
        return final + (config.lr - final) * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr + (final - config.lr) * progress


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def train(config: TrainConfig, *, log: Callable[[str], None] | None = None) -> TrainSummary:
    """Train (or, with ``config.resume``, continue) a run; returns its :class:`TrainSummary`.

    Writes to ``config.out``: ``checkpoint.npz`` (the latest state, every ``eval_every`` steps
    and at the end), ``best.npz`` (the best value of the task's metric so far),
    ``metrics.jsonl`` (one JSON object per step: ``step``, ``loss``, ``lr``, ``grad_norm``,
    ``chars_per_s``, plus the validation metrics where validation ran, and ``allreduce_s``
    with several processes) and ``loss.png``.

    ``log`` receives the progress lines (default: print to stdout, nothing when ``quiet``).
    Raises ``ValueError``/``DataError`` for a bad corpus or option, ``CheckpointError`` for a bad
    or mismatching checkpoint on resume, and :class:`TrainingDiverged` when a loss becomes
    NaN or infinite (nothing is saved then: the last good checkpoint stays).

    One run per output directory: the run holds ``OUT/.lock`` from start to end, and a second
    run on the same directory is refused at once with
    :class:`numpy_rnn.driver.rundir.RunLockedError` naming the process that holds it.

    A stop signal (SIGINT, SIGTERM, SIGHUP) ends the run after its current step, with the
    checkpoint of that step (:mod:`numpy_rnn.driver.stops`); ``TrainSummary.stop_signal`` says
    which.

    ``config.grad_accum`` K > 1 cuts each step's batch into K micro-batches and takes one step
    on their weighted gradients (:mod:`numpy_rnn.driver.distributed`). Launched by ``mpiexec``
    or ``torchrun`` with P processes, every process calls this function and each computes K of
    the P*K micro-batches; process 0 alone holds the lock, logs and writes; an error before the
    work starts is raised on process 0 and the others leave quietly
    (:class:`~numpy_rnn.driver.distributed.FollowerExit`).
    """
    engine = get_engine()
    files = RunFiles(config, log) if engine.rank == 0 else NoFiles()
    try:
        # The stop signals are read between steps from the start: one that arrives while the
        # run sets up stops it before its first step.
        with deferred_stop() as stop_request, files:
            run = Run.set_up(config, engine, files)
            return run.train(stop_request)
    except TrainingDiverged:
        if engine.rank != 0:  # every process found the same non-finite value: rank 0 reports it
            raise FollowerExit from None
        raise


class Run:
    """A training run in progress: the trainer's state and one short method per thing it does.

    What a step depends on, and so what a checkpoint holds (:meth:`state_dict`): the backend's
    weights and optimizer state, the batch source's state, the dropout generator, the carried
    recurrent state (the language model's streams) and the best validation so far.

    Under mpiexec or torchrun every process runs every method; the methods marked
    *collective* talk to the other processes, so every process must call them, in the same
    order. Process 0 alone writes, through :class:`RunFiles` (the others hold a
    :class:`NoFiles`, which does nothing).
    """

    def __init__(self, config: TrainConfig, engine: Engine, files: RunFiles, task: Task,
                 corpus: Corpus, batches: BatchSource, model_config: ModelConfig,
                 optim: OptimConfig, backend: Backend) -> None:
        self.config, self.engine, self.files = config, engine, files
        self.task, self.corpus, self.batches = task, corpus, batches
        self.model_config, self.optim, self.backend = model_config, optim, backend
        self.stepper: PlainStep | SplitStep = (
            SplitStep(backend, engine, config.grad_accum, task)
            if engine.size * config.grad_accum > 1 else PlainStep(backend))
        self.predictor: Predictor = (SplitPredictor(backend, engine, task.inference)
                                     if engine.size > 1 else backend)
        self.dropout_rng = np.random.default_rng([config.seed, _DROPOUT_TAG])  # every mask
        self.carried: State | None = None   # the streams' hidden state: this process's rows
        self.best = Best(task.best_metric, task.higher_is_better)
        self.step = self.start_step = 0
        self.resumed = False
        self.first_loss: float | None = None  # of this process's run: the divergence scale
        self.last_saved: int | None = None
        self.chars = 0                       # trained on by this process's steps
        self.step_time = 0.0                 # seconds in those steps
        self.timing: dict[str, float] = {}   # the last step's speed (and all-reduce time)
        self.summary = TrainSummary(out=str(config.out), start_step=0, step=0)

    # -- set up ---------------------------------------------------------------------------------

    @classmethod
    def set_up(cls, config: TrainConfig, engine: Engine, files: RunFiles) -> Run:
        """*Collective.* Check the launch and take the lock (process 0); read the corpus and
        build the backend (every process); process 0 decides where the run starts (the seed's
        weights, or the checkpoint it resumes) and every process loads that."""
        def start() -> None:
            _check_launch(config, engine)
            files.lock()

        collectively(engine, start)
        parts = collectively(engine, lambda: _prepare(config, files.checkpoint_path,
                                                      engine.rank == 0, engine.size))
        run = cls(config, engine, files, *parts[:-1])
        _check_same_corpus(engine, config, run.corpus)
        weights, meta = broadcast_object(engine, parts[-1])   # process 0's start
        collectively(engine, lambda: run.load_state_dict(weights, meta))
        files.begin(run.start_step if run.resumed else None)
        files.log_setup(run.describe())
        return run

    def describe(self) -> list[str]:
        """The log's first lines: the corpus, the model, the batches."""
        c, corpus, vocab = self.config, self.corpus, self.corpus.vocab
        n_params = sum(int(np.prod(w.shape)) for w in self.backend.state_dict().values())
        split = ""
        if self.stepper.micro_batches > 1:
            micro = c.batch_size // self.stepper.micro_batches
            each = (f"{c.grad_accum} micro-batch{'es' if c.grad_accum > 1 else ''} of "
                    f"{micro}")
            split = (f", each step {self.engine.size} processes x {each}"
                     if self.engine.size > 1 else f", each step {each}")
        return [
            f"corpus {corpus.source}: {len(corpus.train_text):,} training and "
            f"{len(corpus.val_text):,} validation characters, vocabulary of {len(vocab)}"
            + (f", {len(corpus.labels)} labels" if corpus.labels is not None else ""),
            f"task {self.task.name}: {c.cell} {c.num_layers} x {c.hidden_size}, "
            f"{n_params:,} parameters, {c.dtype}, {c.backend} backend on {c.device}",
            f"training: {self.batches.describe()}{split}, steps {self.start_step + 1}-{c.steps}"
            + (f" (resumed from {self.files.checkpoint_path})" if self.resumed else "")]

    # -- what a checkpoint holds ----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """*Collective* (gathers every process's rows of the carried state). The training
        state a checkpoint's metadata holds under ``"train"``."""
        carried = self.stepper.full_state(self.carried)
        return {
            "config": self.config.to_json(),
            "backend": self.config.backend,
            "batches": self.batches.state_dict(),
            "dropout_rng": self.dropout_rng.bit_generator.state,
            "carried": list(carried) if carried is not None else None,
            **self.best.state_dict(),
            "processes": self.engine.size,
            "micro_batches": self.stepper.micro_batches,
        }

    def load_state_dict(self, weights: dict[str, np.ndarray],
                        meta: dict[str, Any] | None) -> None:
        """Start from ``weights``, and, resuming, from the checkpoint metadata ``meta`` (None for
        a new run)."""
        self.backend.load_state_dict(weights)
        if meta is None:
            return
        path, state = self.files.checkpoint_path, meta["train"]
        if meta.get("optimizer"):
            try:
                self.backend.load_optimizer_state_dict(meta["optimizer"])
            except (KeyError, TypeError, ValueError) as exc:
                why = " ".join(str(exc.args[0] if exc.args else exc).split())
                raise CheckpointError(f"{path}: bad optimizer state ({why})") from exc
        try:
            # Saved before the tasks had batch sources of their own: the LM's two keys.
            self.batches.load_state_dict(state.get("batches") or {
                "data_rng": state["data_rng"], "batcher": state.get("batcher")})
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: bad batching state ({exc})") from exc
        if state.get("carried") is not None:
            # The whole run's state (every stream); each process carries its own rows.
            self.carried = self.stepper.local_state(tuple(
                np.asarray(s, dtype=self.model_config.dtype) for s in state["carried"]))
        self.best.load_state_dict(state)
        self.step = self.start_step = self.last_saved = int(meta["step"])
        self.summary.start_step = self.summary.step = self.step
        self.resumed = True
        if state.get("dropout_rng") is not None:
            self.dropout_rng.bit_generator.state = state["dropout_rng"]
        else:
            # Saved before the driver drew the masks (each backend drew its own, from a state
            # the other could not read). From here on the masks come from a generator seeded
            # by (seed, step): deterministic, the same in both backends, but not the masks the
            # old run would have drawn.
            self.dropout_rng = np.random.default_rng([self.config.seed, self.step,
                                                      _DROPOUT_TAG])
            if self.model_config.dropout > 0 and self.model_config.num_layers > 1:
                self.files.log(f"note: {path} predates dropout masks drawn by the driver; the "
                               f"masks of steps {self.step + 1}- come from a new generator, so "
                               "these losses differ from those the old run would have logged")

    def save(self, step: int, best: bool = False) -> None:
        """*Collective.* The checkpoint of ``step`` (and ``best.npz``): process 0 writes."""
        train_state = self.state_dict()
        self.files.save(lambda: (self.backend.state_dict(), make_meta(
            self.model_config, self.corpus.vocab, step=step,
            data=_data_source(self.config.data, self.task), backend=self.config.backend,
            optimizer=self.backend.optimizer_state_dict(), optim_config=self.optim,
            train=train_state, labels=self.corpus.labels)), best=best)
        self.last_saved = step

    # -- the loop -------------------------------------------------------------------------------

    def train(self, stop_request: StopRequest) -> TrainSummary:
        """Step to ``config.steps``; every ``eval_every`` steps validate and save; stop early,
        saved, when any process receives a stop signal."""
        def received() -> int:
            return stop_request.signum or 0

        stop = agree_on_stop(self.engine, received())            # collective
        try:
            for step in range(self.step + 1, self.config.steps + 1):
                if stop:
                    break
                result, stop = self.take_step(step, received)      # collective: the all-reduce
                record = self.record(step, result)
                due = step % self.config.eval_every == 0 or step == self.config.steps
                if due:
                    record.update(self.validate(step))             # collective: split rows
                self.files.write_metrics(record, result.loss, self.chars_per_s)
                if due:
                    self.files.say(self.progress_line(step, result.loss))
                if due or stop:
                    self.save(step, best=due and self.best.step == step)   # collective
                if self.config.num_eval_samples and (step % self.config.sample_every == 0
                                                     or step == self.config.steps):
                    self.files.say_lines(lambda: self.task.log_samples(
                        self.backend, self.corpus, self.config, self.step))
        finally:
            self.files.finish(self.step > self.start_step, self.task.loss_label)
        self.engine.barrier()   # collective: nobody leaves before process 0 has written
        return self.finish(stop)

    def take_step(self, step: int, received: Callable[[], int]) -> tuple[StepResult, int]:
        """*Collective.* One optimizer step on the next batch; returns its result and the stop
        signal the processes agree on (0: go on). Raises :class:`TrainingDiverged` on a
        non-finite loss or gradient."""
        lr = lr_at(step, self.config)
        self.backend.set_lr(lr)
        batch = next(self.batches)
        # The LM's streams carry the hidden state from one batch to the next; every other
        # batch starts from zeros.
        init = None if batch.reset else self.carried
        masks = draw_masks(self.dropout_rng, self.task.dropout_masks(self.model_config, batch))
        reduced_before = self.stepper.allreduce_s
        t0 = time.perf_counter()
        result, stop = self.stepper(batch, init, masks, received)
        dt = time.perf_counter() - t0
        self.step_time += dt
        tokens = tokens_of(batch.inputs).size
        self.chars += tokens
        self.timing = {"chars_per_s": tokens / max(dt, 1e-9)}
        if self.engine.size > 1:
            self.timing["allreduce_s"] = self.stepper.allreduce_s - reduced_before
        if not (math.isfinite(result.loss) and math.isfinite(result.grad_norm)):
            raise TrainingDiverged(_diverged_message(step, result.loss, result.grad_norm,
                                                     self.files.checkpoint_path,
                                                     self.last_saved))
        self.carried = result.state
        self.step = step
        if self.first_loss is None:
            self.first_loss = result.loss
        return result, stop

    def record(self, step: int, result: StepResult) -> dict[str, Any]:
        """The step's line of ``metrics.jsonl`` (and the summary's loss)."""
        self.summary.step = step
        self.summary.losses.append(result.loss)
        return {"step": step, "loss": result.loss, "lr": lr_at(step, self.config),
                "grad_norm": result.grad_norm, **self.timing}

    def validate(self, step: int) -> dict[str, float]:
        """*Collective.* The task's validation metrics; updates the best. Raises
        :class:`TrainingDiverged` for a non-finite validation loss, or one over
        :data:`DIVERGED_FACTOR` times the run's first training loss."""
        metrics = self.task.validate(self.predictor, self.corpus)
        val_loss = metrics["val_loss"]
        scale = self.first_loss if self.first_loss is not None else math.inf
        if not math.isfinite(val_loss) or val_loss > DIVERGED_FACTOR * scale:
            what = ("validation loss" if not math.isfinite(val_loss) else
                    f"validation loss (over {DIVERGED_FACTOR:g} times the first training loss,"
                    f" {scale:.4g})")
            raise TrainingDiverged(_diverged_message(step, val_loss, None,
                                                     self.files.checkpoint_path,
                                                     self.last_saved, what=what))
        self.summary.val_loss, self.summary.val_bpc = val_loss, metrics.get("val_bpc")
        self.summary.val_metrics = dict(metrics)
        self.best.offer(metrics, step)
        return metrics

    @property
    def chars_per_s(self) -> float:
        """Characters trained on per second of training steps, so far in this process."""
        return self.chars / self.step_time if self.step_time > 0 else 0.0

    def progress_line(self, step: int, loss: float) -> str:
        return (f"step {step}/{self.config.steps}: train loss {loss:.4f}, "
                f"{self.task.describe_validation(self.summary.val_metrics)}, "
                f"{self.chars_per_s:,.0f} chars/s")

    def finish(self, stop: int) -> TrainSummary:
        """The summary, and its last log line."""
        s = self.summary
        s.wall_time_s = time.perf_counter() - self.files.t_start
        s.chars_per_s = self.chars_per_s
        s.best_metric, s.best_value, s.best_step = self.best.metric, self.best.value, \
            self.best.step
        if stop and s.step < self.config.steps:
            s.stop_signal = stop
            name = signal.Signals(stop).name
            self.files.say(f"stopped by {name} after step {s.step}: checkpoint saved to "
                           f"{self.files.checkpoint_path}; continue with --resume"
                           if s.step > self.start_step else
                           f"stopped by {name} before the first step: nothing new to save")
        elif s.val_loss is not None:
            self.files.log(f"done: step {s.step}, {self.task.describe_validation(s.val_metrics)}"
                           f", best {self.best.metric} {s.best_value:.4f} at step "
                           f"{s.best_step}, {s.chars_per_s:,.0f} chars/s, "
                           f"{s.wall_time_s:.1f} s")
        else:
            self.files.log(f"stopped at step {s.step}")
        return s


class Best:
    """The best value so far of the task's validation ``metric`` and its step; ``higher``
    says which way is better (the classifier's average precision: up; losses: down)."""

    def __init__(self, metric: str, higher: bool) -> None:
        self.metric, self.higher = metric, higher
        self.value: float | None = None
        self.step: int | None = None

    def offer(self, metrics: dict[str, float], step: int) -> bool:
        """Take ``metrics[metric]`` of ``step`` if it beats the best; whether it did."""
        value = metrics[self.metric]
        if self.value is not None and not (value > self.value if self.higher
                                           else value < self.value):
            return False
        self.value, self.step = value, step
        return True

    def state_dict(self) -> dict[str, Any]:
        # "best_val_loss": the checkpoint's name for the field (kept, so that checkpoints
        # stay readable both ways), whatever the metric
        return {"best_val_loss": self.value, "best_step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        value = state.get("best_val_loss")
        self.value = float(value) if value is not None else None
        self.step = state.get("best_step")


def _prepare(config: TrainConfig, ckpt_path: Path, lead: bool, processes: int
             ) -> tuple[Task, Corpus, BatchSource, ModelConfig, OptimConfig, Backend,
                        _Start | None]:
    """Every process: the task, its corpus, batches and model, and the backend. Process 0
    also decides where the run starts: the seed's weights, or the checkpoint it resumes after
    checking that it continues this run (the others get None, and process 0's start)."""
    resumed = _previous_run(config, ckpt_path) if lead else None
    # the task and its data: corpus -> vocabulary (and labels) -> batches -> model
    task = get_task(config.task)
    corpus = task.load_as(config.data, config.to_json())
    batches = task.batches(config, corpus)
    model_config = task.model_config(config, corpus)
    check_training_fits(task, config, corpus, model_config)   # before anything is built
    optim = OptimConfig(name=config.optimizer, lr=config.lr, clip=config.clip,
                        weight_decay=config.weight_decay)
    backend = get_backend(config.backend)(model_config, optim, config.device)
    start: _Start | None = None
    if lead and resumed is None:
        start = task.build(model_config, seed=config.seed).state_dict(), None
    elif lead:
        assert resumed is not None
        weights, meta = resumed
        state = _check_resume(meta, config, model_config, corpus, ckpt_path)
        _check_micro_batches(state, config, processes, ckpt_path)
        if meta["step"] >= config.steps:
            raise ValueError(f"the checkpoint in {config.out} is already at step "
                             f"{meta['step']}: pass --steps > {meta['step']} to train further")
        start = weights, meta
    return task, corpus, batches, model_config, optim, backend, start


def _previous_run(config: TrainConfig, ckpt_path: Path
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """A previous run in OUT: the checkpoint to continue (``resume``), or a refusal to
    overwrite it by accident."""
    if config.resume:
        if not ckpt_path.is_file():
            raise CheckpointError(f"cannot resume: no checkpoint at {ckpt_path}")
        resumed = load_checkpoint(ckpt_path)
        if not resumed[1].get("train"):
            raise CheckpointError(f"cannot resume from {ckpt_path}: it holds no training "
                                  "state (converted or foreign checkpoint); train a new run "
                                  "instead")
        return resumed
    if ckpt_path.exists() and not config.overwrite:
        raise ValueError(f"{config.out} already holds a run ({ckpt_path}): pass --resume to "
                         "continue it or --overwrite to start over")
    return None


def _check_same_corpus(engine: Engine, config: TrainConfig, corpus: Corpus) -> None:
    """*Collective.* Every process must have read process 0's corpus."""
    if engine.size == 1:
        return
    mine = _fingerprint(corpus)
    theirs = broadcast_object(engine, mine)

    def same() -> None:
        if mine != theirs:
            raise DistributedError(f"process {engine.rank} read another corpus "
                                   f"({config.data!r}) than process 0: give every process the "
                                   "same data")

    collectively(engine, same)


def _check_launch(config: TrainConfig, engine: Engine) -> None:
    """Refuse, before any work, a launch that cannot run: mpiexec with the torch backend (or
    torchrun with the numpy backend), a batch that does not split into the micro-batches."""
    if engine.name == "mpi" and config.backend != "numpy":
        raise DistributedError("mpiexec runs the numpy backend; launch the torch backend with "
                               "torchrun --nproc-per-node P -m numpy_rnn train --backend torch")
    if engine.name == "torch" and config.backend != "torch":
        raise DistributedError("torchrun runs the torch backend; launch the numpy backend with "
                               "mpiexec -n P python -m mpi4py -m numpy_rnn train")
    parts = engine.size * config.grad_accum
    if config.batch_size % parts:
        raise DistributedError(
            f"--batch-size {config.batch_size} does not split into {engine.size} processes x "
            f"--grad-accum {config.grad_accum} = {parts} micro-batches of equal size: give a "
            f"batch size divisible by {parts}")


# --------------------------------------------------------------------------------------------
# What process 0 writes: the output directory and the log
# --------------------------------------------------------------------------------------------


class RunFiles:
    """Process 0's side of a run: the output directory's lock, ``metrics.jsonl``, the
    checkpoints, ``loss.png``, the log lines and the progress bar. A context manager: the
    lock and the metrics file are released on exit, however the run ends."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None] | None = None) -> None:
        self.t_start = time.perf_counter()
        self.config = config
        self.out = Path(config.out)
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        self.log: Callable[[str], None] = (_no_log if log is None and config.quiet
                                           else log or print)
        self._stack = contextlib.ExitStack()
        self._metrics: _MetricsLog | None = None
        self._bar: Any = None

    def __enter__(self) -> RunFiles:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def lock(self) -> None:
        """Hold the output directory's lock until the run ends."""
        self._stack.enter_context(run_lock(self.out, self.log))

    def begin(self, resumed_at: int | None) -> None:
        """Open the metrics log (kept up to ``resumed_at`` when resuming) and the progress
        bar. A new run (with --overwrite) first removes the old one's files rather than leaving
        its checkpoints beside the new metrics."""
        if resumed_at is None:
            for name in (CHECKPOINT_NAME, BEST_NAME, PLOT_NAME):
                with contextlib.suppress(FileNotFoundError):
                    (self.out / name).unlink()
        self._metrics = self._stack.enter_context(
            _MetricsLog(self.out / METRICS_NAME, keep_through=resumed_at))
        self._bar = _progress_bar(self.config, resumed_at or 0)
        if self._bar is not None:
            self._stack.callback(self._bar.close)

    def log_setup(self, lines: list[str]) -> None:
        for line in lines:
            self.log(line)

    def say(self, line: str) -> None:
        """A log line, above the progress bar when there is one."""
        (self._bar.write if self._bar is not None else self.log)(line)

    def say_lines(self, lines: Callable[[], list[str]]) -> None:
        """The lines ``lines()`` makes (computed on process 0 only)."""
        for line in lines():
            self.say(line)

    def write_metrics(self, record: dict[str, Any], loss: float, chars_per_s: float) -> None:
        assert self._metrics is not None
        self._metrics.write(record)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.3f}", chars_s=f"{chars_per_s:,.0f}",
                                  refresh=False)
            self._bar.update(1)

    def save(self, checkpoint: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
             best: bool) -> None:
        """Write ``checkpoint()`` (weights, metadata) to checkpoint.npz, and best.npz."""
        weights, meta = checkpoint()
        save_checkpoint(self.checkpoint_path, weights, meta)
        if best:
            save_checkpoint(self.out / BEST_NAME, weights, meta)

    def finish(self, stepped: bool, ylabel: str) -> None:
        """Close the progress bar; draw the loss curve of the whole run (resumed parts
        included) when this run took a step."""
        if self._bar is not None:
            self._bar.close()
        if stepped:
            try:
                plot_losses(self.out / METRICS_NAME, self.out / PLOT_NAME, log=self.log,
                            ylabel=ylabel)
            except Exception as exc:  # a plotting problem must not hide the run's own outcome
                self.log(f"could not draw the loss curve: {exc}")


class NoFiles(RunFiles):
    """The other processes' side: nothing to write, nothing to say."""

    def __init__(self) -> None:
        self.t_start = time.perf_counter()
        self.checkpoint_path = Path(".")     # named in messages only process 0 prints
        self.log = _no_log

    def __exit__(self, *exc: Any) -> None:
        pass

    def lock(self) -> None:
        pass

    def begin(self, resumed_at: int | None) -> None:
        pass

    def log_setup(self, lines: list[str]) -> None:
        pass

    def say(self, line: str) -> None:
        pass

    def say_lines(self, lines: Callable[[], list[str]]) -> None:
        pass

    def write_metrics(self, record: dict[str, Any], loss: float, chars_per_s: float) -> None:
        pass

    def save(self, checkpoint: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
             best: bool) -> None:
        pass

    def finish(self, stepped: bool, ylabel: str) -> None:
        pass


def _no_log(msg: str) -> None:
    pass


def draw_masks(rng: np.random.Generator, masks: Sequence[DropoutMask]
               ) -> list[np.ndarray] | None:
    """The keep masks a task asks for (``Task.dropout_masks``), in its order: each ``True``
    with probability ``1 - p`` (``rng.random(shape) >= p``, float64 draws whatever the model's
    dtype); None when there are none. The model scales and applies them
    (:func:`numpy_rnn.nn.recurrent.scale_dropout_mask`, with the same ``p``)."""
    if not masks:
        return None
    return [rng.random(m.shape) >= m.p for m in masks]


def draw_dropout_masks(rng: np.random.Generator, p: float,
                       shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray] | None:
    """One keep mask per shape, all dropped with ``p``: :func:`draw_masks` of
    ``DropoutMask(shape, 1, p)`` for each shape."""
    return draw_masks(rng, [DropoutMask(tuple(shape), 1, p) for shape in shapes])


def _data_source(data: str, task: Task) -> str:
    """What the checkpoint records as its corpus: a name the task knows (``--data plants``),
    or the file's absolute path (so ``evaluate`` and ``sample --label`` find it from any
    directory)."""
    return data if data in task.corpus_names else os.path.abspath(data)


def _diverged_message(step: int, loss: float, grad_norm: float | None, ckpt_path: Path,
                      last_saved: int | None, what: str = "training loss") -> str:
    value = loss if not math.isfinite(loss) or grad_norm is None else grad_norm
    name = what if not math.isfinite(loss) or grad_norm is None else "gradient norm"
    kept = (f"the last good checkpoint (step {last_saved}) is kept in {ckpt_path}"
            if last_saved is not None else "no checkpoint was written")
    return (f"step {step}: the {name} is {value}; training stopped and nothing was saved: "
            f"{kept}. Try a lower --lr or a --clip")


def _check_resume(meta: dict[str, Any], config: TrainConfig, model_config: ModelConfig,
                  corpus: Corpus, path: Path) -> dict[str, Any]:
    """The checkpoint's training state, after checking it continues THIS run: same model and
    vocabulary, same batching (another batch shape would make the stream position mean other
    characters). Raises ``CheckpointError`` naming what differs."""
    saved_task = task_of(meta)
    if saved_task != config.task:
        raise CheckpointError(f"cannot resume {path}: it is a {saved_task} run, not "
                              f"{config.task}")
    check_compatible(meta, path, config=model_config, vocab=corpus.vocab)
    if corpus.labels is not None and labels_of(meta) != corpus.labels:
        raise CheckpointError(f"cannot resume {path}: it was trained with other labels than "
                              "the corpus has")
    state = meta["train"]
    saved = dict(state.get("config") or {})
    saved.setdefault("stream_groups", 1)    # saved before the option existed: file order
    diffs = [f"{k} {saved[k]!r} (asked for {getattr(config, k)!r})"
             for k in get_task(config.task).resume_keys
             if k in saved and saved[k] != getattr(config, k)]
    if diffs:
        raise CheckpointError(f"cannot resume {path} with other batching: it was trained with "
                              + ", ".join(diffs))
    if "batches" not in state and "data_rng" not in state:
        raise CheckpointError(f"{path}: training state lacks the batching state")
    problem = get_task(config.task).training_state_problem(state, config)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return state


def _check_micro_batches(state: dict[str, Any], config: TrainConfig, processes: int,
                         path: Path) -> None:
    """Refuse to resume a run with another number of micro-batches per step than it was saved
    with (processes x ``grad_accum``): the same count continues it exactly, another would sum
    the gradients in another order. A run saved by P processes resumes in one with
    ``--grad-accum P``."""
    saved_processes = int(state.get("processes", 1))
    saved_accum = int((state.get("config") or {}).get("grad_accum", 1))
    saved = int(state.get("micro_batches", saved_processes * saved_accum))
    now = processes * config.grad_accum
    if now == saved:
        return
    how = (f"{saved} micro-batch{'es' if saved > 1 else ''} per step ({saved_processes} "
           f"process{'es' if saved_processes > 1 else ''} x --grad-accum {saved_accum})")
    if saved % processes == 0:
        fix = (f"with {processes} process{'es' if processes > 1 else ''} pass --grad-accum "
               f"{saved // processes}")
    else:
        fix = f"run it on a number of processes that divides {saved}"
    raise CheckpointError(f"cannot resume {path} with {now} micro-batch"
                          f"{'es' if now > 1 else ''} per step: it was trained with {how}; "
                          f"{fix} to continue it exactly")


def _fingerprint(corpus: Corpus) -> str:
    """A digest of what a run reads from its corpus (text, vocabulary, labels), to check
    that every process of a job reads the same."""
    h = hashlib.sha256()
    for part in (corpus.train_text, corpus.val_text, "\x00".join(corpus.vocab.chars),
                 "\x00".join(corpus.labels or ())):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def resume_config(out: str | os.PathLike[str], overrides: dict[str, Any] | None = None
                  ) -> TrainConfig:
    """The :class:`TrainConfig` of the run saved in ``out``, with ``overrides`` applied and
    ``resume=True``: what ``train --resume`` runs, so a resume needs only the flags it changes
    (typically ``--steps``). Raises ``CheckpointError`` when there is no checkpoint.

    In a data-parallel job process 0 reads the checkpoint and sends its settings to the
    others: only process 0 needs to see ``out``."""
    path = Path(out) / CHECKPOINT_NAME
    engine = get_engine()

    def read() -> dict[str, Any] | None:
        if engine.rank != 0:
            return None
        if not path.is_file():
            raise CheckpointError(f"cannot resume: no checkpoint at {path}")
        meta = read_meta(path)
        saved = ((meta.get("train") or {}).get("config")) if isinstance(meta.get("train"),
                                                                          dict) else None
        if not isinstance(saved, dict):
            raise CheckpointError(f"cannot resume from {path}: it holds no training state")
        return saved

    saved: dict[str, Any] = broadcast_object(engine, collectively(engine, read))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    # Everything that defines the run carries over; how it reports (quiet) does not.
    base = {k: v for k, v in saved.items() if k in fields and k != "quiet"}
    base.setdefault("stream_groups", 1)     # saved before the option existed: file order
    base.update(overrides or {})
    base.update(out=str(out), resume=True, overwrite=False)

    def build() -> TrainConfig:
        try:
            return TrainConfig(**base)
        except TypeError as exc:
            raise CheckpointError(f"{path}: bad saved training config ({exc})") from exc

    return collectively(engine, build)


# --------------------------------------------------------------------------------------------
# Metrics, progress, the loss curve
# --------------------------------------------------------------------------------------------


class _MetricsLog:
    """``metrics.jsonl``: one JSON object per step, appended and flushed as it happens.

    A fresh run starts the file empty. A resumed run keeps the lines up to the checkpoint's step
    and drops the later ones (steps taken after the last checkpoint of an interrupted run),
    which the resumed run logs again.
    """

    def __init__(self, path: Path, keep_through: int | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep_through is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line)["step"] <= keep_through:
                        kept.append(line + "\n")
                except (ValueError, KeyError, TypeError):
                    continue   # a line cut short by a kill: dropped
        atomic_write(path, "w", lambda f: f.write("".join(kept)))
        self.path = path
        # Held open for the run and closed by __exit__: this class is the context manager.
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def __enter__(self) -> _MetricsLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()


def _progress_bar(config: TrainConfig, start_step: int) -> Any:
    """A tqdm bar on stderr (loss and characters/s), or None when quiet, when stderr is not a
    terminal (logs and CI get the per-evaluation lines instead) or without tqdm."""
    if config.quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=config.steps, initial=start_step, desc="train", unit="step",
                file=sys.stderr, dynamic_ncols=True)


def plot_losses(metrics_path: Path, png_path: Path,
                log: Callable[[str], None] = print,
                ylabel: str = "cross-entropy (nats/char)") -> Path | None:
    """Draw the training loss per step (and its running mean) and the validation loss from
    ``metrics.jsonl`` into a PNG, the y axis labelled ``ylabel`` (the task's ``loss_label``).
    Returns the path, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")   # files only: no display needed (servers, CI)
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"matplotlib is not installed: no loss curve ({install_hint('train')})")
        return None
    steps, losses, val_steps, val_losses = [], [], [], []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        steps.append(rec["step"])
        losses.append(rec["loss"])
        if "val_loss" in rec:
            val_steps.append(rec["step"])
            val_losses.append(rec["val_loss"])
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="training (step)")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="tab:blue",
                label=f"training (mean of {window})")
    if val_steps:
        ax.plot(val_steps, val_losses, "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
