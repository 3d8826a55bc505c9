"""numpy_rnn: RNN, GRU and LSTM in NumPy with hand-written backpropagation through time.

Every layer and cell computes exactly what ``torch.nn`` computes (same parameter names, gate
order and shapes). The package has three parts, each depending only on those before it:

* :mod:`numpy_rnn.nn`, the library: cells and layers (the gate math in ``nn.steps``),
  attention pooling, Embedding and Linear, the losses, the optimizers, gradient checking;
* :mod:`numpy_rnn.tasks`, the shapes of recurrent network: the character language model
  (many-to-many), the name classifier (many-to-one), the conditional name generator
  (one-to-many) and sequence to sequence with attention, each with its options, data, model,
  loss and metrics;
* :mod:`numpy_rnn.driver`, one training loop for every task and both backends, checkpoints and
  the command line (``python -m numpy_rnn``).

Everything a model is composed from is exported here, and :func:`load`, a trained model of any
task ready for inference (``numpy_rnn.load("best.npz").translate("hello")``); the tasks and the
driver are imported when first used.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .nn import (
    GRU,
    LSTM,
    RNN,
    SGD,
    Adam,
    AdamW,
    AttentionPooling,
    DTypeError,
    Embedding,
    ExponentialMovingAverage,
    GradcheckReport,
    GRUCell,
    GRUStep,
    Linear,
    LSTMCell,
    LSTMStep,
    Module,
    Optimizer,
    Recurrent,
    RecurrentCell,
    RNNCell,
    RNNStep,
    ShapeError,
    Step,
    binary_cross_entropy_with_logits,
    check_function,
    clip_grad_norm,
    cross_entropy,
    gradcheck,
    log_softmax,
    numerical_gradient,
    softmax,
)

if TYPE_CHECKING:
    from .tasks.base import TrainedModel

__version__ = "0.1.0"

__all__ = [
    "Module", "ShapeError", "DTypeError",
    "Step", "RNNStep", "GRUStep", "LSTMStep",
    "Recurrent", "RNN", "GRU", "LSTM",
    "RecurrentCell", "RNNCell", "GRUCell", "LSTMCell",
    "AttentionPooling", "Embedding", "Linear",
    "cross_entropy", "binary_cross_entropy_with_logits", "softmax", "log_softmax",
    "Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm", "ExponentialMovingAverage",
    "gradcheck", "check_function", "numerical_gradient", "GradcheckReport",
    "load",
]


def load(path: "str | os.PathLike[str]", backend: str = "numpy",
         device: str = "cpu") -> "TrainedModel":
    """The trained model of the checkpoint at ``path``, ready for its task's inference.

    The object is the task's :class:`~numpy_rnn.tasks.base.TrainedModel`: a language model's
    :class:`~numpy_rnn.tasks.lm.Generator` (``sample``), a classifier's
    :class:`~numpy_rnn.tasks.classify.TrainedClassifier` (``predict``), a conditional
    generator's :class:`~numpy_rnn.tasks.conditional.ConditionalGenerator`
    (``sample(condition=...)``), a seq2seq model's
    :class:`~numpy_rnn.tasks.seq2seq.translate.Translator` (``translate``)::

        import numpy_rnn
        names = numpy_rnn.load("runs/plants/best.npz")
        names.sample(5, temperature=0.8, seed=0)        # five plant names
        g2p = numpy_rnn.load("runs/g2p/best.npz")
        g2p.translate("hello")                          # ['HH', 'EH', 'L', 'OW']

    Args:
        path: a checkpoint written by training (``best.npz``, ``checkpoint.npz``), by the
            command line or by :func:`numpy_rnn.driver.train.train`.
        backend: ``"numpy"`` (this package's layers) or ``"torch"`` (the same model in
            torch.nn; needs torch).
        device: ``"cpu"``, or ``"cuda"`` with the torch backend.

    Returns:
        The trained model, with the checkpoint's weights (or their moving average, when its run
        kept one: ``train --ema``).

    Raises:
        CheckpointError: a ``ValueError``, for a missing, damaged or foreign file.

    Imports the tasks and the driver on first use (:func:`numpy_rnn.driver.inference.load`).
    """
    from .driver.inference import load as _load

    return _load(path, backend=backend, device=device)

# The modules' homes before the library, the tasks and the driver had folders of their own:
# `import numpy_rnn.recurrent`, `from numpy_rnn.train import train`, `numpy_rnn.cli`, ... still
# work, as the same module objects as their new paths. `import numpy_rnn` loads the library
# only: an old path is imported when it is first asked for (by `__getattr__` below for an
# attribute, by `_MovedFinder` for an import statement). `numpy_rnn.gradcheck` stays the
# function (import the module by name: `import numpy_rnn.gradcheck` binds it nowhere).
_MOVED = {
    "module": "nn.module", "steps": "nn.steps", "recurrent": "nn.recurrent",
    "cells": "nn.cells", "attention": "nn.attention", "dense": "nn.dense",
    "losses": "nn.losses", "optim": "nn.optim", "gradcheck": "nn.gradcheck",
    "data": "tasks.corpus", "model": "tasks.lm", "sampling": "tasks.sampling",
    "backend": "driver.backend", "checkpoint": "driver.checkpoint", "train": "driver.train",
    "evaluate": "driver.evaluate", "cli": "driver.cli", "rundir": "driver.rundir",
}


def __getattr__(name: str) -> types.ModuleType:
    """``numpy_rnn.train`` and the other old paths (:data:`_MOVED`): the module at its new
    path, imported on first use (PEP 562)."""
    if name in _MOVED:
        return importlib.import_module(f"{__name__}.{_MOVED[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``numpy_rnn.<old>`` for ``import`` statements and loads it as the module at its
    new path (the same object, not a copy); its code runs once, under its new name."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != __name__ or old not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        old = spec.name.rpartition(".")[2]
        return importlib.import_module(f"{__name__}.{_MOVED[old]}")

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the module ran when :meth:`create_module` imported it."""


if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedFinder())


class _Package(types.ModuleType):
    """This package's module type: after ``import numpy_rnn.gradcheck`` the import system binds
    the module to the package's attribute ``gradcheck``; the function keeps the name."""

    def __setattr__(self, name: str, value: object) -> None:
        if (name in _MOVED and isinstance(value, types.ModuleType)
                and not isinstance(self.__dict__.get(name, value), types.ModuleType)):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
