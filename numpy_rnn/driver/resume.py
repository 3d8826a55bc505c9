"""Continuing a run: the settings it was saved with (:func:`resume_config`), and the checks that
a checkpoint continues THIS run exactly (the same task, model, vocabularies, batching and number
of micro-batches per step), each refusal one line naming what differs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..tasks.base import RecordError, Task
from ..tasks.model import ModelConfig
from .checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, read_meta, record_of
from .config import LOOP_FIELDS, TrainConfig
from .distributed import broadcast_object, collectively, get_engine

__all__ = ["check_micro_batches", "check_resume", "check_task", "previous_run",
           "resume_config"]


def check_task(meta: dict[str, Any], task: str, path: Path) -> None:
    """``CheckpointError`` when the checkpoint at ``path`` is another task's run than ``task``
    (said before anything of the run is read, its data included)."""
    saved = meta.get("task") or task
    if saved != task:
        raise CheckpointError(f"cannot resume {path}: it is a {saved} run, not {task}; leave "
                              f"out --task (or give --task {saved}) to continue it")


def resume_config(out: str | os.PathLike[str], overrides: dict[str, Any] | None = None
                  ) -> TrainConfig:
    """The :class:`TrainConfig` of the run saved in ``out``, with ``overrides`` (settings of
    the loop or of the task, by name) applied and ``resume=True``: what ``train --resume``
    runs, so a resume needs only the flags it changes (typically ``--steps``). Raises
    ``CheckpointError`` when there is no checkpoint, when it holds no training state, and when
    ``overrides`` name another task than the run's.

    The loop's settings come from the checkpoint's training state, the task's from its
    options (a checkpoint written before the tasks had options of their own kept both in one
    flat config; the task picks its own out of it). In a data-parallel job process 0 reads the
    checkpoint and sends its settings to the others: only process 0 needs to see ``out``."""
    path = Path(out) / CHECKPOINT_NAME
    engine = get_engine()
    overrides = dict(overrides or {})

    def read() -> tuple[str, dict[str, Any], dict[str, Any] | None] | None:
        if engine.rank != 0:
            return None
        if not path.is_file():
            raise CheckpointError(f"cannot resume: no checkpoint at {path}")
        meta = read_meta(path)
        if "task" in overrides:
            check_task(meta, overrides["task"], path)
        train = meta.get("train")
        saved = train.get("config") if isinstance(train, dict) else None
        if not isinstance(saved, dict):
            raise CheckpointError(f"cannot resume from {path}: it holds no training state")
        task, record = record_of(meta, path)
        options = record.options.to_json() if record.options is not None else None
        return task.name, saved, options

    got = broadcast_object(engine, collectively(engine, read))
    assert got is not None
    task_name, saved, options = got

    def build() -> TrainConfig:
        # Everything that defines the run carries over; how it reports (quiet) does not.
        loop = {k: v for k, v in saved.items() if k in LOOP_FIELDS and k != "quiet"}
        loop.update({k: v for k, v in overrides.items() if k != "task"})
        loop.update(out=str(out), resume=True, overwrite=False)
        try:
            from ..tasks import get_task

            kind = get_task(task_name).options
            saved_options = kind.from_json(options) if options is not None else None
            return TrainConfig(task_name, saved_options, **loop)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: bad saved training config ({exc})") from exc

    return collectively(engine, build)


def previous_run(config: TrainConfig, path: Path
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """A previous run in OUT (its checkpoint at ``path``): the checkpoint to continue
    (``resume``), or a refusal to overwrite it by accident."""
    if config.resume:
        if not path.is_file():
            raise CheckpointError(f"cannot resume: no checkpoint at {path}")
        check_task(read_meta(path), config.task, path)
        resumed = load_checkpoint(path)
        if not resumed[1].get("train"):
            raise CheckpointError(f"cannot resume from {path}: it holds no training "
                                  "state (converted or foreign checkpoint); train a new run "
                                  "instead")
        return resumed
    if path.exists() and not config.overwrite:
        raise ValueError(f"{config.out} already holds a run ({path}): pass --resume "
                         "(resume=True) to continue it or --overwrite (overwrite=True) to start "
                         "over")
    return None


def check_resume(meta: dict[str, Any], config: TrainConfig, task: Task,
                 model_config: ModelConfig, data: Any, path: Path) -> dict[str, Any]:
    """The checkpoint's training state, after checking it continues THIS run: same model and
    vocabularies, same batching (another batch shape would make the stream position mean other
    characters). Raises ``CheckpointError`` naming what differs."""
    check_task(meta, config.task, path)
    _, record = record_of(meta, path)
    try:
        task.check_data(record, data, path)
    except RecordError as exc:
        raise CheckpointError(str(exc)) from None
    theirs, ours = record.config.to_json(), model_config.to_json()
    diffs = [f"{k}={theirs.get(k)!r} (asked for {ours[k]!r})" for k in ours
             if theirs.get(k) != ours[k]]
    if diffs:
        raise CheckpointError(f"checkpoint {path} is for another model: " + ", ".join(diffs))
    state = meta["train"]
    saved = {**(state.get("config") or {}), **(record.options.to_json()
                                               if record.options is not None else {})}
    now = {**config.to_json(), **config.options.to_json()}
    # The batching (the task's keys) and the moving average (kept in the checkpoint, or not).
    saved.setdefault("ema", 0.0)           # saved before the option existed: none
    diffs = [f"{k} {saved[k]!r} (asked for {now[k]!r})"
             for k in (*task.resume_keys, "ema")
             if k in saved and k in now and saved[k] != now[k]]
    if diffs:
        raise CheckpointError(f"cannot resume {path} with other batching or averaging: it was "
                              "trained with " + ", ".join(diffs))
    if "batches" not in state and "data_rng" not in state:
        raise CheckpointError(f"{path}: training state lacks the batching state")
    problem = task.training_state_problem(state, config)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return state


def check_micro_batches(state: dict[str, Any], config: TrainConfig, processes: int,
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
