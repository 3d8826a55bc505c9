"""The training loop's settings (:class:`TrainConfig`) and the learning-rate schedule.

A run's settings come in two parts, as Joey NMT keeps its ``training`` section apart from its
``model`` and ``data`` ones: the loop's (how long, how fast, which backend, where to write),
which are :class:`TrainConfig`'s own fields, and the task's (the model's shape, how its data is
read and batched, its loss), which are the fields of the task's options dataclass
(:attr:`numpy_rnn.tasks.base.Task.options`), held in :attr:`TrainConfig.options`. A checkpoint
saves the two apart. Each field carries its ``train`` flag's help and parsing
(:func:`numpy_rnn.tasks.options.option`): the command line is built from the dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..tasks import DEFAULT_TASK, TASKS, find_task, get_task
from ..tasks.commands import (
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from ..tasks.options import (
    TaskOptions,
    option,
    require_choice,
    require_int,
    require_number,
)

__all__ = ["LOOP_FIELDS", "LR_DECAYS", "OPTIMIZERS", "TrainConfig", "lr_at"]

LR_DECAYS = ("none", "cosine", "linear")
OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass(frozen=True, init=False)
class TrainConfig:
    """Every setting of a training run: the loop's, as fields, and the task's, as
    :attr:`options` (an instance of the task's options dataclass).

    ``TrainConfig(task, steps=100, hidden_size=64)`` takes the settings of both parts by
    name: those of the loop set its fields, the task's set its options (the others keep the
    dataclass's defaults); a name that is neither is a ``TypeError``.
    :meth:`for_task` starts from the task's measured recipe instead (``Task.train_defaults``
    for the loop, the options dataclass's defaults for the rest), as the command line does.

    The defaults are the language model's recipe, the one that trains best in 20 minutes on 2
    CPU cores (measured, see ``README.md``): batches of 32 streams, Adam at 0.003 decayed
    (cosine) to 0.0003 over 2200 steps, clipping at 5.

    ``grad_accum`` K cuts each step's batch into K micro-batches of ``batch_size / K`` and takes
    one optimizer step on their summed gradients (each weighted by its share of the batch's
    loss terms), which is the step on the whole batch, to rounding, in less memory; with P
    processes (mpiexec, torchrun) each process computes K of the P*K micro-batches.

    ``ema`` > 0 keeps an exponential moving average of the weights, updated after every step
    (``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(ema)``), which
    validation, ``best.npz`` and evaluation use.
    """

    task: str
    options: TaskOptions
    # the data
    data: str = option("plants", "'plants' for the plant-name corpus (found in "
                       "$NUMPY_RNN_DATA_DIR or data/, downloaded once if missing), or the path "
                       "of any UTF-8 text file (default: {default})", group="data and batching")
    batch_size: int = option(32, "windows per step (default: {default})",
                             group="data and batching", type=positive_int)
    # the optimisation
    steps: int = option(2200, "total optimizer steps of the run; with --resume, the step to "
                              "continue up to (default: {default})", group="optimisation",
                        type=positive_int)
    optimizer: str = option("adam", "adam, adamw (decoupled weight decay) or sgd, as "
                                    "torch.optim's, in both backends (default: {default})",
                            group="optimisation", choices=OPTIMIZERS)
    weight_decay: float = option(0.0, "weight decay: an L2 term with adam and sgd, decoupled "
                                      "with adamw (default: {default})", group="optimisation",
                                 type=nonnegative_float)
    lr: float = option(3e-3, "learning rate (default: {default})", group="optimisation",
                       type=positive_float)
    lr_decay: str = option("cosine", "learning-rate schedule from --lr at the first step to "
                                     "--lr x --lr-final at step --lr-decay-steps, constant "
                                     "after it: none, cosine or linear (default: {default})",
                           group="optimisation", choices=LR_DECAYS)
    lr_decay_steps: int = option(2200, "the step at which the decay reaches --lr x --lr-final; "
                                       "independent of the run length, so a run resumed to more "
                                       "steps stays exact (default: {default})",
                                 group="optimisation", type=positive_int)
    lr_final: float = option(0.1, "final learning rate as a fraction of --lr, with --lr-decay "
                                  "(default: {default})", group="optimisation",
                             type=unit_interval)
    clip: float | None = option(5.0, "clip the global gradient norm to this value; 0 turns "
                                     "clipping off (default: {default})", group="optimisation",
                                type=nonnegative_float)
    grad_accum: int = option(1, "cut each step's batch into K micro-batches of --batch-size / "
                                "K, add their gradients (each weighted by its share of the loss "
                                "terms) and take one step: the same step in less memory. Under "
                                "mpiexec or torchrun, micro-batches per process; a run saved by "
                                "P processes resumes in one with --grad-accum P "
                                "(default: {default})", group="optimisation",
                             type=positive_int, metavar="K")
    ema: float = option(0.0, "keep an exponential moving average of the weights with this "
                             "decay (e.g. 0.999), updated after every step, and validate, "
                             "choose best.npz and evaluate with it; 0: none "
                             "(default: {default})", group="optimisation",
                        type=nonnegative_float, metavar="DECAY")
    # the run
    backend: str = "numpy"
    device: str = "cpu"
    seed: int = option(1337, "seed of the initial weights, the batches, the dropout masks and "
                             "the sampled examples; the same seed is the same start in both "
                             "backends (default: {default})", group="run", type=nonnegative_int)
    out: str = option("out", "output directory of the run (default: {default})", group="run")
    eval_every: int = option(275, "measure the validation metrics and save a checkpoint every "
                                  "N steps (and at the last) (default: {default})", group="run",
                             type=positive_int)
    sample_every: int = option(275, "print a few examples every N steps (and at the last) "
                                    "(default: {default})", group="run", type=positive_int)
    num_eval_samples: int = 5
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False

    def __init__(self, task: str = DEFAULT_TASK, options: TaskOptions | None = None,
                 **settings: Any) -> None:
        found = find_task(task) if isinstance(task, str) else None
        if found is None:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        kind = found.options
        own = {k: v for k, v in settings.items() if k in LOOP_FIELDS}
        theirs = {k: v for k, v in settings.items() if k not in LOOP_FIELDS}
        names = {f.name for f in dataclasses.fields(kind)}
        unknown = sorted(set(theirs) - names)
        if unknown:
            raise TypeError(f"unknown setting{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(unknown)}: neither the training loop's (TrainConfig) "
                            f"nor task {task}'s ({kind.__name__})")
        if options is None:
            options = kind(**theirs)
        elif not isinstance(options, kind):
            raise TypeError(f"options of task {task} must be a {kind.__name__}, got "
                            f"{type(options).__name__}")
        elif theirs:
            options = dataclasses.replace(options, **theirs)
        object.__setattr__(self, "task", task)
        object.__setattr__(self, "options", options)
        for f in dataclasses.fields(self):
            if f.name in LOOP_FIELDS:
                object.__setattr__(self, f.name, own.get(f.name, f.default))
        self.validate()

    def validate(self) -> None:
        """``ValueError`` naming the first setting of the loop that is not allowed (the
        task's options check their own)."""
        for name in ("batch_size", "steps", "eval_every", "sample_every", "grad_accum",
                     "lr_decay_steps"):
            require_int(name, getattr(self, name))
        require_int("num_eval_samples", self.num_eval_samples, minimum=0)
        require_int("seed", self.seed, minimum=0)
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} does not split into grad_accum "
                             f"{self.grad_accum} micro-batches of equal size: give a batch "
                             f"size divisible by {self.grad_accum}")
        require_choice("lr_decay", self.lr_decay, LR_DECAYS)
        require_choice("optimizer", self.optimizer, OPTIMIZERS)
        require_number("lr", self.lr, low=0.0, low_open=True)
        require_number("lr_final", self.lr_final, low=0.0, high=1.0, low_open=True,
                       high_open=False)
        if self.clip is not None:
            require_number("clip", self.clip, low=0.0, low_open=True)
        require_number("weight_decay", self.weight_decay, low=0.0)
        require_number("ema", self.ema, low=0.0, high=1.0)
        for name in ("data", "out", "backend", "device"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("resume", "overwrite", "quiet"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: resume continues the "
                             "checkpoint that overwrite would discard")

    @classmethod
    def for_task(cls, task: str = DEFAULT_TASK, **settings: Any) -> TrainConfig:
        """The config of a ``task`` run: its measured recipe (``Task.train_defaults`` for the
        loop, its options' defaults), then ``settings`` on top.
        ``TrainConfig.for_task(name, steps=100)``."""
        return cls(task, **{**get_task(task).train_defaults, **settings})

    def to_json(self) -> dict[str, Any]:
        """The loop's settings (the task's name included, its options not: see
        :meth:`TaskOptions.to_json`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "options"}


#: The names of the loop's own settings (every field but ``task`` and ``options``).
LOOP_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - {"task", "options"}


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
