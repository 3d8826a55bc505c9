"""``evaluate``: a checkpoint's metrics, measured as its task measures them.

Each task measures its own (:meth:`numpy_rnn.tasks.base.Task.evaluate`: the language model its
validation loss in nats and bits per character, the classifier its binary cross-entropy and
average precisions, the conditional generator its loss with and without the true regions,
seq2seq its loss, WER and PER on the test split with beam search). This module loads the
checkpoint and the data, checks that they belong together (every vocabulary of the model) and
that the evaluation fits in memory, and asks the task.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..tasks.base import RecordError
from .checkpoint import CheckpointError, backend_from_checkpoint, read_checkpoint
from .memory import check_fits

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(path: str | os.PathLike[str], *, backend: str = "numpy",
                        device: str = "cpu", data: str | None = None,
                        options: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The metrics of a checkpoint on ``data`` (default: the corpus it was trained on, read as
    its run read it), as its task measures them (``val_loss`` always among them).
    ``options``: keyword arguments of the task's ``evaluate`` (those its own ``evaluate``
    flags ask for, ``Task.evaluate_options``; default: none).

    The data must have every vocabulary of the checkpoint's model (its characters, labels,
    source and target tokens): ``CheckpointError`` otherwise, since other tokens would give the
    model's layers another meaning. ``MemoryLimitError`` when the evaluation cannot fit.
    """
    checkpoint = read_checkpoint(path)
    task, record = checkpoint.task, checkpoint.record
    corpus = task.load_for(record, checkpoint.meta["data"] if data is None else data)
    try:
        task.check_data(record, corpus, path)
    except RecordError as exc:
        raise CheckpointError(str(exc)) from None
    estimate = task.evaluation_memory(record.config, corpus, **(options or {}))
    if estimate is not None:
        check_fits(estimate)
    model = backend_from_checkpoint(checkpoint.weights, checkpoint.meta, backend, device)
    return task.evaluate(model, corpus, **(options or {}))
