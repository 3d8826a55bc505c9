"""The library: recurrent cells and layers, attention, Embedding and Linear, losses, optimizers
and gradient checking, each forward with a hand-written backward, equal to ``torch.nn``.

It depends on NumPy alone; the tasks (:mod:`numpy_rnn.tasks`) build their models from it and the
driver (:mod:`numpy_rnn.driver`) trains them. The gate math of one time step lives in
:mod:`numpy_rnn.nn.steps`, and nowhere else.
"""

from .attention import (
    AttendCache,
    Attention,
    AttentionPooling,
    Keys,
    attend_backward,
    attend_forward,
    keys_backward,
    prepare_keys,
)
from .cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from .dense import Embedding, Linear
from .gradcheck import GradcheckReport, check_function, gradcheck, numerical_gradient
from .losses import binary_cross_entropy_with_logits, cross_entropy, log_softmax, softmax
from .module import DTypeError, Module, ShapeError
from .optim import SGD, Adam, AdamW, ExponentialMovingAverage, Optimizer, clip_grad_norm
from .recurrent import GRU, LSTM, RNN, Recurrent, held_for_backward
from .steps import GRUStep, LSTMStep, RNNStep, Step

__all__ = [
    "Module", "ShapeError", "DTypeError",
    "Step", "RNNStep", "GRUStep", "LSTMStep",
    "Recurrent", "RNN", "GRU", "LSTM", "held_for_backward",
    "RecurrentCell", "RNNCell", "GRUCell", "LSTMCell",
    "AttentionPooling", "Attention", "Keys", "AttendCache",
    "prepare_keys", "attend_forward", "attend_backward", "keys_backward",
    "Embedding", "Linear",
    "cross_entropy", "binary_cross_entropy_with_logits", "softmax", "log_softmax",
    "Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm", "ExponentialMovingAverage",
    "gradcheck", "check_function", "numerical_gradient", "GradcheckReport",
]
