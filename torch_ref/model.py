"""The tasks' models in torch.nn, the oracles for numpy_rnn's: here the language model.

:class:`TorchTaskModel` is what the torch backend trains and evaluates, the counterpart of
:class:`numpy_rnn.tasks.base.TaskModel`: one training step's loss (``train_loss``, which autograd
differentiates) and the evaluation calls of :class:`numpy_rnn.tasks.base.Predictor`, all taking
and returning NumPy arrays, checked at the boundary with numpy_rnn's messages. Each task's model
has numpy_rnn's parameter names, so one state dict serves both.

:class:`CharRNN`: Embedding ``(V, E)`` -> ``nn.LSTM``/``nn.GRU``/``nn.RNN`` stack of
``num_layers`` x ``H`` -> ``nn.Linear(H, V)``, built from the same
:class:`numpy_rnn.tasks.model.ModelConfig`. The attribute names (``encoder``, ``rnn``,
``decoder``) make the state-dict keys identical to numpy_rnn's: ``encoder.weight``,
``rnn.weight_ih_l0`` ..., ``decoder.weight``, ``decoder.bias``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from numpy_rnn.nn.losses import IGNORE_INDEX
from numpy_rnn.nn.recurrent import LAYERS
from numpy_rnn.tasks import get_task
from numpy_rnn.tasks.base import State
from numpy_rnn.tasks.model import ModelConfig

TorchState = tuple[torch.Tensor, ...]  # (h, c) for the LSTM, (h,) otherwise; each (L*D, B, H)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: The torch.nn layer of each cell name: the class of the same name as numpy_rnn's
#: (:data:`numpy_rnn.nn.recurrent.LAYERS`: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``).
TORCH_LAYERS: dict[str, Any] = {cell: getattr(nn, layer.__name__)
                                 for cell, layer in LAYERS.items()}


def torch_dtype(config: ModelConfig) -> torch.dtype:
    """The torch dtype of ``config.dtype`` ("float32" or "float64")."""
    return _DTYPES[config.dtype]


def build_model(config: ModelConfig, device: str | torch.device = "cpu") -> TorchTaskModel:
    """The torch model of ``config``'s task (torch's default weights: load numpy_rnn's): the
    class its task names (``Task.torch_model``, "module:class", imported when first asked
    for)."""
    where = get_task(config.task).torch_model
    if where is None:
        raise ValueError(f"the {config.task} task has no torch model: train it with the numpy "
                         "backend")
    module, name = where.split(":")
    cls: type[TorchTaskModel] = getattr(importlib.import_module(module), name)
    return cls(config, device)


def make_rnn(config: ModelConfig, device: str | torch.device) -> nn.RNNBase:
    """The recurrent stack of every task's model, as numpy_rnn's ``make_rnn`` builds it; with
    ``dropout=0``: the driver's masks are applied by :class:`LayerwiseRNN` instead."""
    return TORCH_LAYERS[config.cell](config.input_size, config.hidden_size,
                              num_layers=config.num_layers, dropout=0.0,
                              bidirectional=config.num_directions == 2,
                              dtype=torch_dtype(config), device=device)


class TorchTaskModel(nn.Module):
    """Base of the tasks' torch models: the boundary between NumPy and torch.

    Subclasses build their layers (with ``self.rnn``, the recurrent stack, among them) and
    implement ``train_loss`` and the evaluation methods their task has.
    """

    rnn: nn.RNNBase

    def __init__(self, config: ModelConfig, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.config = config
        self.device = torch.device(device)
        self._np_dtype = np.dtype(config.dtype)

    @property
    def num_states(self) -> int:
        """2 for the LSTM (h, c), 1 otherwise (h)."""
        return 2 if self.config.cell == "lstm" else 1

    def train_loss(self, inputs: Any, targets: np.ndarray, state: State | None,
                   dropout_masks: Sequence[torch.Tensor] | None
                   ) -> tuple[torch.Tensor, TorchState | None]:
        """Training mode: the task's mean loss on a batch (NumPy in, a scalar tensor out, for
        autograd) and the final recurrent state (None when the task carries none)."""
        raise NotImplementedError

    def run_stack(self, x: Any, hx: Any, dropout_masks: Sequence[torch.Tensor] | None
                  ) -> tuple[Any, Any]:
        """The recurrent stack on ``x`` (a tensor or a PackedSequence) from ``hx``, with the
        driver's dropout masks between the layers when given."""
        if dropout_masks:
            return self.layerwise(x, hx, dropout_masks)
        return self.rnn(x, hx)

    @property
    def layerwise(self) -> LayerwiseRNN:
        """The stack run one layer at a time (a plain attribute: no parameters of its own)."""
        if "_layerwise" not in self.__dict__:
            self.__dict__["_layerwise"] = LayerwiseRNN(self.rnn)
        result: LayerwiseRNN = self.__dict__["_layerwise"]
        return result

    # -- crossing the boundary -------------------------------------------------------------------

    def tokens(self, inputs: Any) -> torch.Tensor:
        """``inputs (B, T)`` integers in ``[0, V)`` -> an int64 tensor on the device.

        Checked here, with numpy_rnn's messages: on CUDA an index out of range is a device-side
        assert that poisons the whole process instead of an exception."""
        a = np.asarray(inputs)
        if a.dtype.kind not in "iu":
            raise TypeError(f"idx must be an integer array, got dtype {a.dtype.name}")
        if a.ndim != 2:
            raise ValueError(f"tokens must be 2-D (B, T), got shape {a.shape}")
        V = self.config.vocab_size
        if a.size and (a.min() < 0 or a.max() >= V):
            bad = a.min() if a.min() < 0 else a.max()
            raise ValueError(f"index {bad} is out of range for an Embedding with {V} rows "
                             f"(valid: 0..{V - 1})")
        return torch.as_tensor(a.astype(np.int64, copy=False), device=self.device)

    def class_targets(self, targets: Any, shape: tuple[int, ...]) -> torch.Tensor:
        """Next-character targets of ``shape`` in ``[0, V)`` (or ``IGNORE_INDEX``) -> int64."""
        a = np.asarray(targets)
        if a.dtype.kind not in "iu":
            raise TypeError(f"targets must be integers, got dtype {a.dtype.name}")
        if a.shape != shape:
            raise ValueError(f"targets must have the inputs' shape {shape}, got {a.shape}")
        V = self.config.vocab_size
        valid = a != IGNORE_INDEX
        if not valid.any():
            raise ValueError("every target equals ignore_index: the mean loss is undefined")
        if ((a < 0) | (a >= V))[valid].any():
            raise ValueError(f"targets must lie in [0, {V}) (or be {IGNORE_INDEX}, ignored)")
        return torch.as_tensor(a.astype(np.int64, copy=False), device=self.device)

    def floats(self, name: str, a: Any, shape: tuple[int, ...]) -> torch.Tensor:
        """A float array of the model's dtype and ``shape`` -> a tensor on the device."""
        a = np.asarray(a)
        if a.dtype != self._np_dtype:
            raise TypeError(f"{name} has dtype {a.dtype.name} but the module's dtype is "
                            f"{self._np_dtype.name}; convert it explicitly (x.astype(...))")
        if a.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
        return torch.as_tensor(a, device=self.device)

    def state_in(self, state: State | None, B: int) -> TorchState | None:
        """NumPy ``(h,)``/``(h, c)`` (entries may be None: zeros) -> tensors on the device."""
        if state is None:
            return None
        n = self.num_states
        if not isinstance(state, tuple) or len(state) != n:
            names = "(h0, c0)" if n == 2 else "(h0,)"
            raise TypeError(f"initial state must be a tuple of {n} arrays {names} or None")
        if all(s is None for s in state):
            return None
        LD = self.config.num_layers * self.config.num_directions
        H = self.config.hidden_size
        out = []
        for name, s in zip(("h0", "c0"), state):
            if s is None:
                out.append(torch.zeros(LD, B, H, dtype=torch_dtype(self.config),
                                       device=self.device))
                continue
            if not isinstance(s, np.ndarray):
                raise TypeError(f"{name} must be a NumPy array, got {type(s).__name__}")
            out.append(self.floats(name, s, (LD, B, H)))
        return tuple(out)

    @staticmethod
    def state_out(final: TorchState) -> State:
        """Final states -> detached NumPy copies (the next batch starts a new graph)."""
        return tuple(s.detach().cpu().numpy().copy() for s in final)

    def hx(self, state: TorchState | None) -> Any:
        """Our state tuple -> what torch's stack takes: ``(h, c)`` for the LSTM, ``h`` else."""
        if state is None:
            return None
        return state if self.num_states == 2 else state[0]

    def as_state(self, final: Any) -> TorchState:
        """What torch's stack returns -> our state tuple."""
        return tuple(final) if self.num_states == 2 else (final,)


class CharRNN(TorchTaskModel):
    """``logits, state = model(tokens, state)``, the contract of numpy_rnn's CharRNN.

    ``tokens`` (B, T) int64 -> ``logits`` (B, T, V). The recurrent stack runs time-major, as
    numpy_rnn's does: the tokens are transposed to (T, B) before the embedding and the logits
    back to (B, T, V) at the end. ``state`` is a tuple ``(h, c)`` for the LSTM and ``(h,)`` for
    the GRU and RNN, each (L, B, H), or None for zeros; the final state comes back in the same
    form. The RNN cell uses tanh, as numpy_rnn's model does.

    Weights get torch's default initialisation; the backends overwrite them with numpy_rnn's
    seeded ones, so the same seed means the same start in both.

    Dropout: the stack is built with ``dropout=0`` and never draws masks of its own. In training
    the caller passes the keep masks between the layers (``dropout_masks``, drawn by the
    driver), and the stack runs one layer at a time with them in between (:class:`LayerwiseRNN`),
    under the same parameters and state-dict keys.
    """

    def __init__(self, config: ModelConfig, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        dtype = torch_dtype(config)
        self.encoder = nn.Embedding(config.vocab_size, config.input_size, dtype=dtype,
                                    device=device)
        self.rnn = make_rnn(config, device)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, dtype=dtype,
                                 device=device)

    def forward(self, tokens: torch.Tensor, state: TorchState | None = None,
                dropout_masks: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, TorchState]:
        """``tokens (B, T)`` -> ``logits (B, T, V)`` and the final states, each ``(L, B, H)``.

        ``dropout_masks``: ``L - 1`` scaled masks ``(T, B, H)`` multiplied into the outputs of
        layers ``0 .. L-2`` (training with dropout), or None for none."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be 2-D (B, T), got shape {tuple(tokens.shape)}")
        if state is not None and (not isinstance(state, tuple) or len(state) != self.num_states):
            names = "(h, c)" if self.num_states == 2 else "(h,)"
            raise TypeError(f"state must be a tuple {names} or None")
        x = self.encoder(tokens.t())                       # (T, B, E): the stack runs time-major
        out, final = self.run_stack(x, self.hx(state), dropout_masks)   # out (T, B, H)
        logits = self.decoder(out)                         # (T, B, V)
        return logits.transpose(0, 1), self.as_state(final)

    def train_loss(self, inputs: Any, targets: np.ndarray, state: State | None,
                   dropout_masks: Sequence[torch.Tensor] | None
                   ) -> tuple[torch.Tensor, TorchState | None]:
        """The mean cross-entropy of the next characters ``targets (B, T)``."""
        tokens = self.tokens(inputs)
        y = self.class_targets(targets, tuple(tokens.shape))
        logits, final = self(tokens, self.state_in(state, tokens.shape[0]), dropout_masks)
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=IGNORE_INDEX,
                               label_smoothing=self.config.label_smoothing)
        return loss, final

    def logits(self, inputs: np.ndarray, state: State | None) -> tuple[np.ndarray, State]:
        """Evaluation: ``inputs (B, T)`` -> float64 ``logits (B, T, V)`` and the final state."""
        tokens = self.tokens(inputs)
        with torch.no_grad():
            logits, final = self(tokens, self.state_in(state, tokens.shape[0]))
        return logits.cpu().numpy().astype(np.float64), self.state_out(final)


class LayerwiseRNN:
    """Run a multi-layer ``nn.LSTM``/``nn.GRU``/``nn.RNN`` one layer at a time, multiplying the
    output of every layer but the last by a given mask: dropout with the driver's masks
    instead of torch's own draws.

    The parameters stay the stack's own (same names, same state-dict keys, same gradients):
    :func:`torch.func.functional_call` lends layer ``l``'s weights to a one-layer module of the
    same kind, which runs torch's own fused kernel. That is what ``nn.LSTM`` does internally
    when it applies dropout, so this path is as fast as the built-in one.
    """

    _NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")

    def __init__(self, rnn: nn.RNNBase) -> None:
        self.rnn = rnn
        self._templates: dict[Any, nn.RNNBase] = {}

    def _template(self, layer: int) -> nn.RNNBase:
        """A one-layer module shaped like layer ``layer`` of the stack (its own weights unused)."""
        rnn = self.rnn
        key = (layer > 0, rnn.weight_ih_l0.device, rnn.weight_ih_l0.dtype)
        if key not in self._templates:
            D = 2 if rnn.bidirectional else 1
            width = rnn.input_size if layer == 0 else D * (rnn.proj_size or rnn.hidden_size)
            kw: dict[str, Any] = dict(num_layers=1, bias=rnn.bias, batch_first=rnn.batch_first,
                                      bidirectional=rnn.bidirectional,
                                      device=rnn.weight_ih_l0.device,
                                      dtype=rnn.weight_ih_l0.dtype)
            if isinstance(rnn, nn.LSTM):
                kw["proj_size"] = rnn.proj_size
            if type(rnn) is nn.RNN:
                kw["nonlinearity"] = rnn.nonlinearity
            with torch.random.fork_rng(devices=[]):   # its init must not move the generator
                # (nn.RNN/GRU/LSTM take (input_size, hidden_size, ...); RNNBase's stub types
                # the first argument as its mode string)
                self._templates[key] = type(rnn)(width, rnn.hidden_size,  # type: ignore[arg-type]
                                                 **kw)
        return self._templates[key]

    def __call__(self, x: Any, hx: Any, masks: Sequence[torch.Tensor]) -> tuple[Any, Any]:
        """``x`` as for the stack (a tensor or a PackedSequence), ``hx`` None, a tensor
        ``(L*D, B, H)`` or an LSTM pair, ``masks`` ``L - 1`` tensors shaped like the layer
        outputs; returns the stack's ``(output, h_n)`` (``(output, (h_n, c_n))`` for the LSTM)."""
        rnn = self.rnn
        L, D = rnn.num_layers, 2 if rnn.bidirectional else 1
        if len(masks) != L - 1:
            raise ValueError(f"expected {L - 1} dropout masks, got {len(masks)}")
        finals: list[list[torch.Tensor]] = []
        for layer in range(L):
            params = {}
            for d in range(D):
                suffix = "_reverse" if d else ""
                for name in self._NAMES:
                    full = f"{name}_l{layer}{suffix}"
                    if hasattr(rnn, full):
                        params[f"{name}_l0{suffix}"] = getattr(rnn, full)
            h_l = None
            if hx is not None:
                rows = slice(layer * D, (layer + 1) * D)
                h_l = tuple(h[rows] for h in hx) if isinstance(hx, tuple) else hx[rows]
            x, final = functional_call(self._template(layer), params, (x, h_l))
            finals.append(list(final) if isinstance(final, tuple) else [final])
            if layer < L - 1:
                x = _scale(x, masks[layer])
        stacked = [torch.cat([f[j] for f in finals]) for j in range(len(finals[0]))]
        return x, (tuple(stacked) if len(stacked) == 2 else stacked[0])


def _scale(x: Any, mask: torch.Tensor) -> Any:
    """``x * mask`` for a tensor, or for the data of a PackedSequence (mask already packed)."""
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return x._replace(data=x.data * mask)
    return x * mask
