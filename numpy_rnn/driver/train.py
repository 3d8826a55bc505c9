"""The training loop: one readable path from the data to a trained model, for every task and
both backends.

:func:`train` reads top to bottom: take the output directory's lock -> ask the task for its data
and vocabularies, its batches and its model's config -> check that a step fits in memory (the
task says what it holds) -> draw the initial weights from the seeded NumPy generator and load
them into whichever backend runs (one seed, one start, in both backends), or the checkpoint a
resumed run continues -> loop over steps (:class:`Run`) -> every ``eval_every`` steps validate,
save a checkpoint and log a few examples -> at the end plot the loss curve.

Every random number of a run is drawn here, by the driver, from generators seeded by ``--seed``:
the initial weights, the batches (the task's source, seeded by the run), and the dropout masks
(each with the drop probability its task declares), which go to the backend with each batch. A
backend computes and draws nothing, so both backends given one seed take the same steps.
Everything a step depends on (weights, optimizer state, the weights' moving average, the batch
and dropout generators, the carried recurrent state) goes into the checkpoint, so a resumed run
logs exactly the losses the uninterrupted run would have, in either backend.

Its parts live beside it: the settings (:mod:`.config`), what process 0 writes
(:mod:`.runfiles`), the checks of a resumed run (:mod:`.resume`), the collectives of a
data-parallel job (:mod:`.distributed`), the stops (:mod:`.stops`).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..tasks import get_task
from ..tasks.base import BatchSource, DropoutMask, Predictor, State, Task, tokens_of
from ..tasks.model import ModelConfig
from .backend import Backend, OptimConfig, StepResult, get_backend
from .checkpoint import CheckpointError, make_meta
from .config import TrainConfig, lr_at
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
from .memory import check_fits
from .resume import check_micro_batches, check_resume, previous_run, resume_config
from .runfiles import METRICS_NAME, PLOT_NAME, NoFiles, RunFiles, plot_losses
from .stops import StopRequest, deferred_stop

__all__ = ["METRICS_NAME", "PLOT_NAME", "TrainConfig", "TrainSummary", "TrainingDiverged",
           "draw_dropout_masks", "draw_masks", "lr_at", "plot_losses", "resume_config", "train"]

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



# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def train(config: TrainConfig, *, log: Callable[[str], None] | None = None) -> TrainSummary:
    """Train (or, with ``config.resume``, continue) a run; returns its :class:`TrainSummary`.

    Writes to ``config.out``: ``checkpoint.npz`` (the latest state, every ``eval_every`` steps
    and at the end), ``best.npz`` (the best value of the task's metric so far),
    ``metrics.jsonl`` (one JSON object per step: ``step``, ``loss``, ``lr``, ``elapsed_s`` (the
    run's wall-clock seconds so far, those of the runs it resumes included), ``grad_norm``,
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
                 corpus: Any, batches: BatchSource, model_config: ModelConfig,
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
        # Wall-clock seconds of the run: this process's, after those of the runs it resumes.
        self.t_start = time.perf_counter()
        self.elapsed_before = 0.0

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
        """The log's first lines: the data, the model, the batches."""
        c, m = self.config, self.model_config
        n_params = sum(int(np.prod(w.shape)) for w in self.backend.state_dict().values())
        split = ""
        if self.stepper.micro_batches > 1:
            micro = c.batch_size // self.stepper.micro_batches
            each = (f"{c.grad_accum} micro-batch{'es' if c.grad_accum > 1 else ''} of "
                    f"{micro}")
            split = (f", each step {self.engine.size} processes x {each}"
                     if self.engine.size > 1 else f", each step {each}")
        return [
            self.corpus.describe(),
            f"task {self.task.name}: {m.cell} {m.num_layers} x {m.hidden_size}, "
            f"{n_params:,} parameters, {m.dtype}, {c.backend} backend on {c.device}",
            f"training: {self.batches.describe()}{split}, steps {self.start_step + 1}-{c.steps}"
            + (f" (resumed from {self.files.checkpoint_path})" if self.resumed else "")]

    # -- what a checkpoint holds ----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """*Collective* (gathers every process's rows of the carried state). The training
        state a checkpoint's metadata holds under ``"train"``."""
        carried = self.stepper.full_state(self.carried)
        return {
            "config": self.config.to_json(),      # the loop's settings (the task's: its record)
            "backend": self.config.backend,
            "batches": self.batches.state_dict(),
            "dropout_rng": self.dropout_rng.bit_generator.state,
            "carried": list(carried) if carried is not None else None,
            "ema": self.backend.ema_state_dict(),    # the weights' moving average, or None
            **self.best.state_dict(),
            "processes": self.engine.size,
            "micro_batches": self.stepper.micro_batches,
            "elapsed_s": self.elapsed_s,
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
        if state.get("ema") is not None:
            try:
                self.backend.load_ema_state_dict(state["ema"])
            except (KeyError, TypeError, ValueError) as exc:
                why = " ".join(str(exc.args[0] if exc.args else exc).split())
                raise CheckpointError(f"{path}: bad moving average of the weights ({why})"
                                      ) from exc
        self.best.load_state_dict(state)
        self.elapsed_before = float(state.get("elapsed_s") or 0.0)
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
            self.task, self.model_config, self.corpus, step=step,
            source=_data_source(self.config.data, self.task), options=self.config.options,
            backend=self.config.backend, optimizer=self.backend.optimizer_state_dict(),
            optim_config=self.optim, train=train_state)), best=best)
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
                    with self.backend.averaged():
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

    @property
    def elapsed_s(self) -> float:
        """Wall-clock seconds of the whole run so far (set-up, steps, validation and
        checkpoints; a resumed run's include those of the runs before it)."""
        return self.elapsed_before + time.perf_counter() - self.t_start

    def record(self, step: int, result: StepResult) -> dict[str, Any]:
        """The step's line of ``metrics.jsonl`` (and the summary's loss)."""
        self.summary.step = step
        self.summary.losses.append(result.loss)
        return {"step": step, "loss": result.loss, "lr": lr_at(step, self.config),
                "elapsed_s": round(self.elapsed_s, 3),
                "grad_norm": result.grad_norm, **self.timing}

    def validate(self, step: int) -> dict[str, float]:
        """*Collective.* The task's validation metrics; updates the best. Raises
        :class:`TrainingDiverged` for a non-finite validation loss, or one over
        :data:`DIVERGED_FACTOR` times the run's first training loss."""
        with self.backend.averaged():      # the moving average of the weights, if kept
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
             ) -> tuple[Task, Any, BatchSource, ModelConfig, OptimConfig, Backend,
                        _Start | None]:
    """Every process: the task, its data, batches and model, and the backend. Process 0 also
    decides where the run starts: the seed's weights, or the checkpoint it resumes after
    checking that it continues this run (the others get None, and process 0's start)."""
    resumed = previous_run(config, ckpt_path) if lead else None
    # the task and its data: data -> vocabularies -> batches -> model
    task = get_task(config.task)
    corpus = task.load(config.data, config.options)
    batches = task.batches(config, corpus)
    model_config = task.model_config(config, corpus)
    check_fits(task.training_memory(model_config, config, corpus))   # before anything is built
    optim = OptimConfig(name=config.optimizer, lr=config.lr, clip=config.clip,
                        weight_decay=config.weight_decay, ema=config.ema)
    backend = get_backend(config.backend)(model_config, optim, config.device)
    start: _Start | None = None
    if lead and resumed is None:
        start = task.build(model_config, seed=config.seed).state_dict(), None
    elif lead:
        assert resumed is not None
        weights, meta = resumed
        state = check_resume(meta, config, task, model_config, corpus, ckpt_path)
        check_micro_batches(state, config, processes, ckpt_path)
        if meta["step"] >= config.steps:
            raise ValueError(f"the checkpoint in {config.out} is already at step "
                             f"{meta['step']}: pass --steps > {meta['step']} to train further")
        start = weights, meta
    return task, corpus, batches, model_config, optim, backend, start


def _check_same_corpus(engine: Engine, config: TrainConfig, corpus: Any) -> None:
    """*Collective.* Every process must have read process 0's data."""
    if engine.size == 1:
        return
    mine = corpus.fingerprint()
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
