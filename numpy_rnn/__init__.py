"""numpy_rnn: RNN, GRU and LSTM in NumPy with hand-written backpropagation through time.

Every layer and cell computes exactly what ``torch.nn`` computes (same parameter names, gate
order and shapes); the gate math of one time step lives in :mod:`numpy_rnn.steps`. Everything a
model is composed from is exported here: the recurrent layers and cells, attention pooling,
Embedding and Linear, the losses, the optimizers and gradient clipping, and gradient checking.
"""

from .attention import AttentionPooling
from .cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from .dense import Embedding, Linear
from .gradcheck import GradcheckReport, check_function, gradcheck, numerical_gradient
from .losses import binary_cross_entropy_with_logits, cross_entropy, log_softmax, softmax
from .module import DTypeError, Module, ShapeError
from .optim import SGD, Adam, AdamW, Optimizer, clip_grad_norm
from .recurrent import GRU, LSTM, RNN, Recurrent
from .steps import GRUStep, LSTMStep, RNNStep, Step

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
