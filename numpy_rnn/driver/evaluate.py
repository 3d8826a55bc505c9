"""``evaluate``: a checkpoint's validation metrics, measured as during its training.

Each task measures its own (:meth:`numpy_rnn.tasks.base.Task.validate`): the language model its
validation loss in nats and bits per character, the classifier its binary cross-entropy and
average precisions, the conditional generator its loss with and without the true regions. This
module only loads the checkpoint and the corpus, and checks that they belong together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..tasks import get_task
from ..tasks.lm import Validation, validation_loss
from .checkpoint import (
    CheckpointError,
    backend_from_checkpoint,
    check_compatible,
    labels_of,
    load_checkpoint,
    model_config_of,
    task_of,
)

__all__ = ["Validation", "evaluate_checkpoint", "validation_loss"]


def evaluate_checkpoint(path: str | os.PathLike[str], *, backend: str = "numpy",
                        device: str = "cpu", data: str | None = None,
                        options: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The validation metrics of a checkpoint on ``data`` (default: the corpus it was trained
    on), as its task measures them during training (``val_loss`` always among them).
    ``options``: keyword arguments of the task's ``evaluate`` (those its own ``evaluate``
    flags ask for, ``Task.evaluate_options``; default: none).

    The corpus must have the checkpoint's vocabulary (and label vocabulary, for a task with
    labels): ``CheckpointError`` otherwise, since other characters or labels would give the
    model's layers another meaning.
    """
    weights, meta = load_checkpoint(path)
    task = get_task(task_of(meta))
    corpus = task.load_for(meta, data)     # read as the run read it (Task.load_keys)
    check_compatible(meta, path, vocab=corpus.vocab)
    # Only a model with a label axis reads labels: a language model evaluates on the text of
    # a labelled corpus (plants) as well as on a plain one.
    has_labels = getattr(model_config_of(meta), "num_labels", None) is not None
    if has_labels and labels_of(meta) != corpus.labels:
        raise CheckpointError(f"checkpoint {path} was trained with other labels than the corpus "
                              f"has ({len(labels_of(meta) or ())} vs {len(corpus.labels or ())})")
    model = backend_from_checkpoint(weights, meta, backend, device)
    return task.evaluate(model, corpus, **(options or {}))
