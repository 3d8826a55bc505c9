"""The tasks: what is trained on what, built from the library (:mod:`numpy_rnn.nn`).

Each task keeps its parts in one module: its data and batches, its NumPy model, its loss, its
metrics, and what ``sample``, ``predict`` and ``evaluate`` do for it. The driver
(:mod:`numpy_rnn.driver`) trains any of them with one loop.
"""

from __future__ import annotations

from .base import Batch, BatchSource, Predictor, Task, TaskModel
from .classify import ClassifyTask
from .conditional import ConditionalTask
from .lm import LanguageModelTask

#: Every task, by the name ``train --task`` and the checkpoints use.
TASKS: dict[str, Task] = {task.name: task for task in (LanguageModelTask(), ClassifyTask(),
                                                       ConditionalTask())}


def get_task(name: str) -> Task:
    """The task registered under ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "Batch", "BatchSource", "Predictor", "Task", "TaskModel", "get_task"]
