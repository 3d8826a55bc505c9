"""``numpy_rnn.load``: a trained model of any task, from its checkpoint, ready for inference.

The object returned is the task's :class:`~numpy_rnn.tasks.base.TrainedModel` (``Task.trained``):
the language model's ``sample``, the classifier's ``predict``, the conditional generator's
``sample(condition=...)``, seq2seq's ``translate``. The command line's ``sample``, ``predict``
and ``translate`` call the same methods, so the two agree.
"""

from __future__ import annotations

import os

from ..tasks.base import TrainedModel
from .checkpoint import backend_from_checkpoint, read_checkpoint
from .memory import check_fits

__all__ = ["load"]


def load(path: str | os.PathLike[str], backend: str = "numpy",
         device: str = "cpu") -> TrainedModel:
    """The trained model of the checkpoint at ``path``, computed by ``backend`` (``"numpy"``,
    or ``"torch"`` with torch installed) on ``device`` (``"cpu"``, or ``"cuda"`` for the torch
    backend): its weights, or their moving average when its run kept one (``train --ema``).
    :func:`numpy_rnn.load` is this function.

    Raises ``CheckpointError`` (a ``ValueError``) for a missing, damaged or foreign file; every
    call of the model refuses what cannot fit in memory (``MemoryLimitError``) before
    allocating it.
    """
    checkpoint = read_checkpoint(path)
    model = backend_from_checkpoint(checkpoint.weights, checkpoint.meta, backend, device)
    return checkpoint.task.trained(checkpoint.task, model, checkpoint.record, checkpoint.meta,
                                   path=path, check_fits=check_fits)
