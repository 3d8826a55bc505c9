"""numpy_rnn: RNN, GRU and LSTM in NumPy with hand-written backpropagation through time.

Every layer and cell computes exactly what ``torch.nn`` computes (same parameter names, gate
order and shapes). The package has three parts, each depending only on those before it:

* :mod:`numpy_rnn.nn`, the library: cells and layers (the gate math in ``nn.steps``),
  attention pooling, Embedding and Linear, the losses, the optimizers, gradient checking;
* :mod:`numpy_rnn.tasks`, the three shapes of recurrent network trained on one corpus: the
  character language model (many-to-many), the name classifier (many-to-one) and the
  conditional name generator (one-to-many), each with its data, model, loss and metrics;
* :mod:`numpy_rnn.driver`, one training loop for every task and both backends, checkpoints and
  the command line (``python -m numpy_rnn``).

Everything a model is composed from is exported here.
"""

import importlib
import sys

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

__version__ = "0.1.0"

__all__ = [
    "Module", "ShapeError", "DTypeError",
    "Step", "RNNStep", "GRUStep", "LSTMStep",
    "Recurrent", "RNN", "GRU", "LSTM",
    "RecurrentCell", "RNNCell", "GRUCell", "LSTMCell",
    "AttentionPooling", "Embedding", "Linear",
    "cross_entropy", "binary_cross_entropy_with_logits", "softmax", "log_softmax",
    "Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm",
    "gradcheck", "check_function", "numerical_gradient", "GradcheckReport",
]

# The modules' homes before the library, the tasks and the driver had folders of their own:
# `numpy_rnn.recurrent`, `from numpy_rnn import train`, ... still import, as the same module
# objects as their new paths.
_MOVED = {
    "module": "nn.module", "steps": "nn.steps", "recurrent": "nn.recurrent",
    "cells": "nn.cells", "attention": "nn.attention", "dense": "nn.dense",
    "losses": "nn.losses", "optim": "nn.optim", "gradcheck": "nn.gradcheck",
    "data": "tasks.data", "model": "tasks.lm", "sampling": "tasks.sampling",
    "backend": "driver.backend", "checkpoint": "driver.checkpoint", "train": "driver.train",
    "evaluate": "driver.evaluate", "cli": "driver.cli", "rundir": "driver.rundir",
}
for _old, _new in _MOVED.items():
    sys.modules[f"{__name__}.{_old}"] = importlib.import_module(f"{__name__}.{_new}")
    # `numpy_rnn.gradcheck` stays the function, as before (the module: import it by name).
    globals().setdefault(_old, sys.modules[f"{__name__}.{_old}"])
del _old, _new
