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
from .options import TaskOptions
from .seq2seq import Seq2SeqTask

#: Every task, by the name ``train --task`` and the checkpoints use: the built-in ones, then
#: those added by :func:`register_task` or found in the ``numpy_rnn.tasks`` entry points.
TASKS: dict[str, Task] = {task.name: task for task in (LanguageModelTask(), ClassifyTask(),
                                                       ConditionalTask(), Seq2SeqTask())}
#: The task of ``train`` without ``--task``.
DEFAULT_TASK = LanguageModelTask.name
#: The task of a checkpoint that records none (saved before there were other tasks).
LEGACY_TASK = LanguageModelTask.name
#: The entry-point group through which another package adds its tasks: each entry point
#: names a :class:`Task` subclass or instance (``mytask = mypackage.module:MyTask``).
ENTRY_POINT_GROUP = "numpy_rnn.tasks"
_entry_points_loaded = False


class TaskRegistryError(ValueError):
    """A task that cannot be added: a duplicate name, not a Task, or a broken entry point."""


def register_task(task: Task | type[Task], options: type[TaskOptions] | None = None) -> Task:
    """Add ``task`` (a :class:`Task` instance, or a subclass to instantiate) to :data:`TASKS`,
    so that ``train --task NAME`` trains it and its checkpoints load; returns the instance.
    ``options``: the dataclass of the task's own settings (a
    :class:`~numpy_rnn.tasks.options.TaskOptions`), as fairseq's
    ``register_task(name, dataclass=...)`` takes it, when the class does not name it itself
    (:attr:`Task.options`). ``TaskRegistryError`` when another task has the name already."""
    if isinstance(task, type) and issubclass(task, Task):
        task = task()
    if not isinstance(task, Task):
        raise TaskRegistryError(f"register_task needs a numpy_rnn.tasks.Task, got {task!r}")
    if options is not None:
        if not (isinstance(options, type) and issubclass(options, TaskOptions)):
            raise TaskRegistryError(f"options must be a TaskOptions dataclass, got {options!r}")
        # The class's own attribute, as a subclass would declare it: this instance's only.
        object.__setattr__(task, "options", options)
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not name:
        raise TaskRegistryError(f"{type(task).__name__} has no name: set the class attribute "
                                "name to the task's name on the command line")
    if name in TASKS:
        raise TaskRegistryError(f"a task named {name!r} is registered already "
                                f"({type(TASKS[name]).__module__}."
                                f"{type(TASKS[name]).__qualname__}): choose another name")
    TASKS[name] = task
    return task


def load_entry_points() -> None:
    """Register the tasks of the ``numpy_rnn.tasks`` entry points (once; later calls do
    nothing). A broken entry point raises ``TaskRegistryError`` naming it."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            task = point.load()
        except Exception as exc:   # any error in another package's import
            raise TaskRegistryError(f"the task entry point {point.name} = {point.value} "
                                    f"({ENTRY_POINT_GROUP}) does not load: "
                                    f"{type(exc).__name__}: {exc}") from exc
        if isinstance(task, Task) and TASKS.get(task.name) is task:
            continue
        try:
            register_task(task)
        except TaskRegistryError as exc:
            raise TaskRegistryError(f"the task entry point {point.name} = {point.value} "
                                    f"({ENTRY_POINT_GROUP}): {exc}") from exc


def find_task(name: str) -> Task | None:
    """The task registered under ``name``, looking in the entry points when it is not yet
    registered; None when there is none."""
    if name not in TASKS:
        load_entry_points()
    return TASKS.get(name)


def get_task(name: str) -> Task:
    """The task registered under ``name``; ``ValueError`` naming the choices otherwise."""
    task = find_task(name)
    if task is None:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return task


def with_article(name: str) -> str:
    """"an lm", "a classify": a task's name with the article it is read with
    (:attr:`Task.article`)."""
    task = TASKS.get(name)
    return f"{task.article if task is not None else 'a'} {name}"


__all__ = ["DEFAULT_TASK", "ENTRY_POINT_GROUP", "LEGACY_TASK", "TASKS", "Batch", "BatchSource",
           "Predictor", "Task", "TaskModel", "TaskRegistryError", "find_task", "get_task",
           "load_entry_points", "register_task", "with_article"]
