"""numpy_rnn: RNN, GRU and LSTM in NumPy with hand-written backpropagation through time.

Every layer and cell computes exactly what ``torch.nn`` computes (same parameter names, gate
order and shapes); the gate math of one time step lives in :mod:`numpy_rnn.steps`.
"""

from .cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from .gradcheck import GradcheckReport, check_function, gradcheck, numerical_gradient
from .module import Module
from .recurrent import GRU, LSTM, RNN, Recurrent
from .steps import GRUStep, LSTMStep, RNNStep, Step

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "GRUStep",
    "GradcheckReport",
    "LSTMCell",
    "LSTMStep",
    "Module",
    "RNNCell",
    "RNNStep",
    "Recurrent",
    "RecurrentCell",
    "Step",
    "check_function",
    "gradcheck",
    "numerical_gradient",
]
