"""Single-step cells, equal to ``torch.nn.RNNCell``, ``GRUCell`` and ``LSTMCell``.

A cell is one step of :mod:`numpy_rnn.steps` run over a sequence of length one: it uses the same
direction runner as the layers, so there is no second copy of the gate math here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .module import Module, check_array
from .recurrent import DirectionRun, _positive_int, run_backward, run_forward
from .steps import GRUStep, LSTMStep, RNNStep, State, Step


class RecurrentCell(Module):
    """One time step of any ``Step`` with torch's cell parameters ``weight_ih (G*H, F)``,
    ``weight_hh (G*H, H)``, ``bias_ih (G*H,)``, ``bias_hh (G*H,)``, drawn from U(-1/sqrt(H), 1/sqrt(H)).
    """

    def __init__(self, step: Step, input_size: int, bias: bool = True, dtype: Any = np.float64,
                 seed: int | None = None) -> None:
        super().__init__(dtype)
        self.step = step
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = H = step.hidden_size
        self.bias = bool(bias)
        G = step.num_gates
        shapes = {"weight_ih": (G * H, self.input_size), "weight_hh": (G * H, step.output_size)}
        if self.bias:
            shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
        shapes.update(step.extra_param_shapes())
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(H)
        for name, shape in shapes.items():
            self._add_param(name, rng.uniform(-k, k, size=shape))
        self._run: DirectionRun | None = None
        self._unbatched = False

    def _params(self) -> dict:
        p = dict(self.params)
        p.setdefault("bias_ih", None)
        p.setdefault("bias_hh", None)
        return p

    def _forward(self, x: Any, state: tuple) -> State:
        x = check_array("input", x, self.dtype, (1, 2))
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input has {x.shape[-1]} features, expected input_size="
                             f"{self.input_size}")
        unbatched = x.ndim == 1
        B = 1 if unbatched else x.shape[0]
        if B == 0:
            raise ValueError("input must hold at least one sequence")
        init = []
        for name, size, s in zip(self.step.state_names, self.step.state_sizes(), state):
            if s is None:
                init.append(np.zeros((B, size), self.dtype))
                continue
            s = check_array(name, s, self.dtype, (x.ndim,))
            want = (size,) if unbatched else (B, size)
            if s.shape != want:
                raise ValueError(f"{name} must have shape {want}, got {s.shape}")
            init.append(s.reshape(B, size))
        run = run_forward(self.step, self._params(), x.reshape(1, B, -1), tuple(init), None,
                          reverse=False)
        self._run, self._unbatched = run, unbatched
        new = run.final()
        return tuple(s[0] if unbatched else s for s in new)

    def _backward(self, dstate: tuple) -> tuple[np.ndarray, State]:
        if self._run is None:
            raise RuntimeError("backward called before forward")
        run, unbatched = self._run, self._unbatched
        B = run.x.shape[1]
        dnew = []
        for name, size, d in zip(self.step.state_names, self.step.state_sizes(), dstate):
            if d is None:
                dnew.append(np.zeros((B, size), self.dtype))
                continue
            want = (size,) if unbatched else (B, size)
            d = check_array("d" + name, d, self.dtype, (len(want),))
            if d.shape != want:
                raise ValueError(f"d{name} must have shape {want}, got {d.shape}")
            dnew.append(d.reshape(B, size))
        dx, dprev = run_backward(self.step, self._params(), self.grads, run, None, tuple(dnew))
        if unbatched:
            return dx[0, 0], tuple(d[0] for d in dprev)
        return dx[0], dprev


class RNNCell(RecurrentCell):
    """``h' = φ(x W_ih^T + b_ih + h W_hh^T + b_hh)``: ``h = cell(x, h)``, ``dx, dh = cell.backward(dh)``.

    ``x`` is ``(B, F)`` or ``(F,)``, ``h`` is ``(B, H)`` or ``(H,)`` (None means zeros).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", dtype: Any = np.float64,
                 seed: int | None = None) -> None:
        super().__init__(RNNStep(hidden_size, nonlinearity), input_size, bias, dtype, seed)
        self.nonlinearity = nonlinearity

    def forward(self, x: np.ndarray, h: np.ndarray | None = None) -> np.ndarray:
        """Returns ``h'``, the shape of ``h``."""
        return self._forward(x, (h,))[0]

    def backward(self, dh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``dh`` w.r.t. ``h'`` -> ``(dx, dh_prev)``; parameter gradients add into ``grads``."""
        dx, (dh_prev,) = self._backward((dh,))
        return dx, dh_prev


class GRUCell(RNNCell):
    """GRU step (see :class:`numpy_rnn.steps.GRUStep`): ``h = cell(x, h)``,
    ``dx, dh = cell.backward(dh)``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 dtype: Any = np.float64, seed: int | None = None) -> None:
        RecurrentCell.__init__(self, GRUStep(hidden_size), input_size, bias, dtype, seed)


class LSTMCell(RecurrentCell):
    """LSTM step (see :class:`numpy_rnn.steps.LSTMStep`): ``h, c = cell(x, (h, c))``,
    ``dx, (dh, dc) = cell.backward((dh, dc))``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 dtype: Any = np.float64, seed: int | None = None) -> None:
        super().__init__(LSTMStep(hidden_size), input_size, bias, dtype, seed)

    def forward(self, x: np.ndarray,
                hx: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``x (B, F)``, ``hx = (h (B, H), c (B, H))`` or None -> ``(h', c')``."""
        if hx is None:
            hx = (None, None)
        elif not isinstance(hx, tuple) or len(hx) != 2:
            raise TypeError("hx must be a tuple (h, c) or None")
        h, c = self._forward(x, hx)
        return h, c

    def backward(self, dstates: tuple) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``(dh, dc)`` w.r.t. ``(h', c')`` (either may be None) -> ``(dx, (dh_prev, dc_prev))``."""
        if dstates is None:
            dstates = (None, None)
        elif not isinstance(dstates, tuple) or len(dstates) != 2:
            raise TypeError("backward takes a tuple (dh, dc)")
        dx, (dh, dc) = self._backward(dstates)
        return dx, (dh, dc)
