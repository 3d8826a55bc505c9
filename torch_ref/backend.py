"""The torch backend: the same CharRNN and training step as ``numpy_rnn.backend.NumpyBackend``,
computed by torch.nn and torch.optim.

Everything crosses the boundary as NumPy arrays, exactly as with the NumPy backend: weights under
torch's state-dict names, recurrent states ``(L, B, H)`` in the model dtype, optimizer state in
:meth:`numpy_rnn.optim.Optimizer.state_dict` format keyed by parameter NAME. So a checkpoint
written by either backend loads into the other, and in float64 the two train along the same
trajectory to rounding error (tests/test_torch_backend.py).

The optimizers are torch's defaults (``foreach``/``fused`` left at None: the per-parameter loop on
CPU, the foreach kernels on CUDA; never the fused ones), with the hyperparameters of
:class:`numpy_rnn.backend.OptimConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from numpy_rnn.backend import (
    Backend,
    OptimConfig,
    State,
    StepResult,
    check_dropout_masks,
    make_optimizer,
)
from numpy_rnn.model import CharRNN as NumpyCharRNN
from numpy_rnn.model import ModelConfig
from numpy_rnn.recurrent import scale_dropout_mask

from .convert import load_numpy_state, to_numpy_state
from .model import CharRNN

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
# The numpy_rnn optimizer class name for each config name, as written in optimizer state dicts.
_OPTIM_NAMES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}
_HYPERPARAMS = {"adam": ("lr", "betas", "eps", "weight_decay"),
                "adamw": ("lr", "betas", "eps", "weight_decay"),
                "sgd": ("lr", "momentum", "dampening", "nesterov", "weight_decay")}
_IGNORE_INDEX = -100  # cross-entropy targets equal to this are skipped (both backends)


def _make_torch_optimizer(optim: OptimConfig, params: list[torch.nn.Parameter]
                          ) -> torch.optim.Optimizer:
    """torch.optim's Adam / AdamW / SGD with the hyperparameters of ``optim``."""
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum,
                               weight_decay=optim.weight_decay)
    return _OPTIMIZERS[optim.name](params, lr=optim.lr, betas=optim.betas, eps=optim.eps,
                                   weight_decay=optim.weight_decay)


class TorchBackend(Backend):
    """The CharRNN in torch.nn, trained with torch.optim; interface and semantics of
    :class:`numpy_rnn.backend.NumpyBackend`.

    ``device``: "cpu", or "cuda" when torch sees a GPU; anything else is a ``ValueError``.
    """

    name = "torch"

    def __init__(self, config: ModelConfig, optim: OptimConfig, device: str = "cpu") -> None:
        if device == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("--device cuda requested but torch sees no GPU "
                                 "(torch.cuda.is_available() is False); use --device cpu")
        elif device != "cpu":
            raise ValueError(f"the torch backend runs on 'cpu' or 'cuda', got device={device!r}")
        super().__init__(config, optim, device)
        self._np_dtype = np.dtype(config.dtype)
        # Built on the CPU inside fork_rng so that torch's own initialisation leaves the
        # caller's global generator alone; then given numpy_rnn's seed-0 weights, the NumPy
        # backend's placeholder, so the two backends start out identical.
        with torch.random.fork_rng(devices=[]):
            model = CharRNN(config)
        load_numpy_state(model, NumpyCharRNN(config, seed=0).state_dict())
        self.model = model.to(device)
        # named_parameters order = the order the optimizer holds them = torch's integer ids.
        self._named = list(self.model.named_parameters())
        self._params = [p for _, p in self._named]
        self.optimizer = _make_torch_optimizer(optim, self._params)

    # -- weights ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        return to_numpy_state(self.model)

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of name -> array, got {type(state).__name__}")
        for k, v in state.items():
            kind = np.asarray(v).dtype.kind
            if kind not in "fiu":
                raise TypeError(f"load_state_dict refused (nothing was changed): {k} has "
                                f"non-real dtype {np.asarray(v).dtype.name}")
        load_numpy_state(self.model, {k: np.asarray(v) for k, v in state.items()})

    # -- optimizer state -------------------------------------------------------------------------

    def optimizer_state_dict(self) -> dict[str, Any]:
        """torch's optimizer state translated to numpy_rnn's format: parameter names instead of
        integer ids, ``step`` as a Python int, every array as a NumPy copy in the model dtype."""
        group = self.optimizer.param_groups[0]
        hyper: dict[str, Any] = {}
        for k in _HYPERPARAMS[self.optim.name]:
            v = group[k]
            if k == "betas":
                hyper[k] = tuple(float(b) for b in v)
            elif k == "nesterov":
                hyper[k] = bool(v)
            else:
                hyper[k] = float(v)
        states: dict[str, dict[str, Any]] = {}
        for name, p in self._named:
            st = self.optimizer.state.get(p)
            if not st:
                continue
            entry: dict[str, Any] = {}
            for k, v in st.items():
                if k == "step":
                    entry[k] = int(v.item() if isinstance(v, torch.Tensor) else v)
                elif v is not None:
                    entry[k] = v.detach().cpu().numpy().copy()
            if self.optim.name == "sgd" and "momentum_buffer" not in entry:
                continue  # torch keeps no buffer without momentum, nor does numpy_rnn
            states[name] = entry
        return {"optimizer": _OPTIM_NAMES[self.optim.name], "hyperparams": hyper,
                "state": states}

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a numpy_rnn-format optimizer state (from either backend).

        Validated by numpy_rnn's own ``Optimizer.load_state_dict`` on a stand-in with this
        model's parameter names and shapes, so a bad state raises the same
        ``KeyError``/``ValueError``/``TypeError`` as the NumPy backend and changes nothing.
        """
        stand_in = {name: np.zeros(tuple(p.shape), dtype=self._np_dtype)
                    for name, p in self._named}
        checked = make_optimizer(self.optim, stand_in, {})
        checked.load_state_dict(state)
        index = {name: i for i, (name, _) in enumerate(self._named)}
        torch_sd = self.optimizer.state_dict()
        torch_sd["param_groups"][0].update(checked.hyperparams)
        # torch keeps a non-fused, non-capturable step count as a CPU scalar tensor of this dtype
        step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        torch_sd["state"] = {
            index[name]: {k: (torch.tensor(float(v), dtype=step_dtype) if k == "step"
                              else torch.from_numpy(v))
                          for k, v in st.items()}
            for name, st in checked.state.items()}
        self.optimizer.load_state_dict(torch_sd)  # copies onto each parameter's device and dtype

    def set_lr(self, lr: float) -> None:
        if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, (int, float, np.integer,
                                                                   np.floating)):
            raise TypeError(f"lr must be a real number, got {lr!r}")
        if math.isnan(lr) or lr < 0:
            raise ValueError(f"Invalid learning rate lr={lr}: must be >= 0")
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    # -- the two computations --------------------------------------------------------------------

    def train_step(self, inputs: np.ndarray, targets: np.ndarray, state: State | None,
                   dropout_masks: Sequence[np.ndarray] | None = None) -> StepResult:
        tokens = self._tokens(inputs)
        y = self._targets(targets, tuple(tokens.shape))
        hx = self._state_in(state, tokens.shape[0])
        check_dropout_masks(self.config, tuple(tokens.shape), dropout_masks)
        masks = None
        if dropout_masks:
            # The driver's keep masks, scaled by the same function as the NumPy backend's, so
            # both multiply by exactly the same numbers.
            masks = [torch.as_tensor(scale_dropout_mask(m, self.config.dropout, self._np_dtype),
                                     device=self.device) for m in dropout_masks]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits, final = self.model(tokens, hx, masks)
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=_IGNORE_INDEX)
        loss.backward()
        if self.optim.clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self._params, self.optim.clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self._params
                                                  if p.grad is not None])
        self.optimizer.step()
        # The returned state is a detached NumPy copy: the next batch starts a new graph
        # (truncated BPTT), whichever backend it is fed to.
        return StepResult(float(loss.item()), float(norm.item()), self._state_out(final))

    def logits(self, inputs: np.ndarray, state: State | None) -> tuple[np.ndarray, State]:
        tokens = self._tokens(inputs)
        hx = self._state_in(state, tokens.shape[0])
        self.model.eval()
        with torch.no_grad():
            logits, final = self.model(tokens, hx)
        return logits.cpu().numpy().astype(np.float64), self._state_out(final)

    # -- crossing the boundary -------------------------------------------------------------------

    def _tokens(self, inputs: Any) -> torch.Tensor:
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

    def _targets(self, targets: Any, shape: tuple[int, ...]) -> torch.Tensor:
        a = np.asarray(targets)
        if a.dtype.kind not in "iu":
            raise TypeError(f"targets must be integers, got dtype {a.dtype.name}")
        if a.shape != shape:
            raise ValueError(f"targets must have the inputs' shape {shape}, got {a.shape}")
        V = self.config.vocab_size
        valid = a != _IGNORE_INDEX
        if not valid.any():
            raise ValueError("every target equals ignore_index: the mean loss is undefined")
        if ((a < 0) | (a >= V))[valid].any():
            raise ValueError(f"targets must lie in [0, {V}) (or be {_IGNORE_INDEX}, ignored)")
        return torch.as_tensor(a.astype(np.int64, copy=False), device=self.device)

    def _state_in(self, state: State | None, B: int) -> tuple[torch.Tensor, ...] | None:
        """NumPy ``(h,)``/``(h, c)`` (entries may be None: zeros) -> tensors on the device."""
        if state is None:
            return None
        n = self.model.num_states
        if not isinstance(state, tuple) or len(state) != n:
            names = "(h0, c0)" if n == 2 else "(h0,)"
            raise TypeError(f"initial state must be a tuple of {n} arrays {names} or None")
        if all(s is None for s in state):
            return None
        L, H = self.config.num_layers, self.config.hidden_size
        out = []
        for name, s in zip(("h0", "c0"), state):
            if s is None:
                out.append(torch.zeros(L, B, H, dtype=self.model.decoder.weight.dtype,
                                       device=self.device))
                continue
            if not isinstance(s, np.ndarray):
                raise TypeError(f"{name} must be a NumPy array, got {type(s).__name__}")
            if s.dtype != self._np_dtype:
                raise TypeError(f"{name} has dtype {s.dtype.name} but the module's dtype is "
                                f"{self._np_dtype.name}; convert it explicitly (x.astype(...))")
            if s.shape != (L, B, H):
                raise ValueError(f"{name} must have shape {(L, B, H)}, got {s.shape}")
            out.append(torch.as_tensor(s, device=self.device))
        return tuple(out)

    @staticmethod
    def _state_out(final: tuple[torch.Tensor, ...]) -> State:
        return tuple(s.detach().cpu().numpy().copy() for s in final)
