"""Single-step cells, equal to ``torch.nn.RNNCell``, ``GRUCell`` and ``LSTMCell``.

A cell is one step of :mod:`numpy_rnn.nn.steps` run over a sequence of length one: it uses the
layers' own time loop (:func:`~numpy_rnn.nn.recurrent.run_forward` and ``run_backward``, over a
:class:`~numpy_rnn.nn.recurrent.StepRunner`), so there is no second copy of the gate math or of
the bookkeeping around it here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .module import Module, ShapeError, check_array, check_bool, check_size
from .recurrent import StepRunner, run_backward, run_forward
from .steps import GRUStep, LSTMStep, Params, RNNStep, State, Step


class RecurrentCell(Module):
    """One time step of any ``Step`` with torch's cell parameters ``weight_ih (G*H, F)``,
    ``weight_hh (G*H, H)``, ``bias_ih (G*H,)``, ``bias_hh (G*H,)``, drawn from
    U(-1/sqrt(H), 1/sqrt(H)).
    """

    #: The gradient-check contract (:func:`numpy_rnn.gradcheck`): ``backward`` takes ONE
    #: argument shaped like forward's result (an array, or the tuple ``(dh, dc)``).
    backward_unpacks_outputs = False

    def __init__(self, step: Step, input_size: int, bias: bool = True, dtype: Any = np.float64,
                 seed: int | None = None) -> None:
        super().__init__(dtype)
        self.step = step
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = H = step.hidden_size
        self.bias = check_bool("bias", bias)
        G = step.num_gates
        shapes: dict[str, tuple[int, ...]] = {"weight_ih": (G * H, self.input_size),
                                              "weight_hh": (G * H, step.output_size)}
        if self.bias:
            shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
        shapes.update(step.extra_param_shapes())
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(H)
        for name, shape in shapes.items():
            self._add_param(name, rng.uniform(-k, k, size=shape))
        self._run: StepRunner | None = None
        self._unbatched = False

    def _params(self) -> Params:
        p: Params = dict(self.params)
        p.setdefault("bias_ih", None)
        p.setdefault("bias_hh", None)
        return p

    def _forward(self, x: Any, state: tuple) -> State:
        x = check_array("input", x, self.dtype, (1, 2))
        if x.shape[-1] != self.input_size:
            raise ShapeError(f"input has {x.shape[-1]} features, expected input_size="
                             f"{self.input_size}")
        unbatched = x.ndim == 1
        B = 1 if unbatched else x.shape[0]     # B = 0 is fine: an empty batch, as in torch
        init = []
        for name, size, s in zip(self.step.state_names, self.step.state_sizes(), state):
            if s is None:
                init.append(np.zeros((B, size), self.dtype))
                continue
            s = check_array(name, s, self.dtype, (x.ndim,))
            want = (size,) if unbatched else (B, size)
            if s.shape != want:
                raise ShapeError(f"{name} must have shape {want}, got {s.shape}")
            init.append(s.reshape(B, size))
        run = run_forward(self.step, self._params(), x.reshape(1, B, self.input_size),
                          tuple(init), None, reverse=False)
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
                raise ShapeError(f"d{name} must have shape {want}, got {d.shape}")
            dnew.append(d.reshape(B, size))
        dx, dprev = run_backward(run, self.grads, None, tuple(dnew))
        if unbatched:
            return dx[0, 0], tuple(d[0] for d in dprev)
        return dx[0], dprev


    def forward(self, x: np.ndarray, hx: Any = None) -> Any:
        """One step. ``x (B, F)`` or ``(F,)``; ``hx`` the previous state: an array ``(B, Ho)``
        for a one-state cell, a tuple ``(h, c)`` for a two-state cell, or None for zeros.

        Returns the new state in the same structure.
        """
        n = len(self.step.state_names)
        if n == 1:
            return self._forward(x, (hx,))[0]
        if hx is None:
            hx = (None,) * n
        elif not isinstance(hx, tuple) or len(hx) != n:
            raise TypeError(f"the state must be a tuple of {n} arrays "
                            f"({', '.join(self.step.state_names)}) or None")
        return self._forward(x, hx)

    def backward(self, dstate: Any) -> tuple[np.ndarray, Any]:
        """Gradient w.r.t. the new state (structure of forward's result; None entries = zeros)
        -> ``(dx, gradient w.r.t. the previous state)``; parameter gradients add into ``grads``."""
        n = len(self.step.state_names)
        if n == 1:
            dx, (dprev,) = self._backward((dstate,))
            return dx, dprev
        if dstate is None:
            dstate = (None,) * n
        elif not isinstance(dstate, tuple) or len(dstate) != n:
            raise TypeError(f"backward takes a tuple of {n} gradients "
                            f"({', '.join('d' + k for k in self.step.state_names)})")
        return self._backward(dstate)


class RNNCell(RecurrentCell):
    """``h' = φ(x W_ih^T + b_ih + h W_hh^T + b_hh)``: ``h = cell(x, h)``,
    ``dx, dh = cell.backward(dh)``.

    ``x`` is ``(B, F)`` or ``(F,)``, ``h`` is ``(B, H)`` or ``(H,)`` (None means zeros).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", dtype: Any = np.float64,
                 seed: int | None = None) -> None:
        super().__init__(RNNStep(hidden_size, nonlinearity), input_size, bias, dtype, seed)
        self.nonlinearity = nonlinearity


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
