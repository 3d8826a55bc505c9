"""The gate math of one time step, forward and backward, for the Elman RNN, the GRU and the LSTM.

This is the only place in numpy_rnn where a gate is computed. Each cell is a class with a
``forward`` and a ``backward`` for ONE time step, whose docstrings state the equations in the same
symbols as the code below them, line by line. The layers in :mod:`numpy_rnn.nn.recurrent` run these
steps over time, depth and directions, and handle lengths and dropout; they never look inside a
gate. A new cell needs only its own ``Step`` subclass to get all of that (see ``README.md``).

Conventions (torch's, see ``docs``/the spec):

* Row vectors: ``x`` is ``(B, F)`` and the affine map is ``x W^T + b``; weights are stored as
  ``(out_features, in_features)``.
* Gate blocks are stacked along the rows of the weights in torch's order: LSTM ``i, f, g, o``;
  GRU ``r, z, n``; RNN one block. Each block has ``H`` rows, so ``G*H`` in total.
* The input projection ``gx = x W_ih^T + b_ih`` of ALL time steps is one matrix product done by the
  layer before the time loop; a step receives its ``(B, G*H)`` slice. The step adds the recurrent
  part ``gh = h W_hh^T + b_hh`` itself.
* In backward a step returns nothing for the weights: it writes ``dgx`` (the gradient w.r.t. ``gx``)
  and ``dgh`` (w.r.t. ``gh``) for its time step, and the layer turns the ``(T, B, G*H)`` buffers
  into ``dW_ih = dgx^T x``, ``dW_hh = dgh^T h``, the biases and ``dx = dgx W_ih`` with single matrix
  products after the loop. For RNN and LSTM ``dgx`` and ``dgh`` are the same numbers (the layer
  passes one buffer twice); for the GRU they differ in the ``n`` block.

Buffers: a step writes its results into arrays the layer allocated once per call (``new`` states
and the ``cache``), so the time loop allocates little. ``cache`` arrays have a leading time axis and
the step indexes them with ``t``. Sigmoids are computed as ``1 / (1 + exp(-a))`` like torch; for
very negative ``a`` ``exp`` overflows to ``inf`` and the result is the correct ``0`` (the layers
silence that harmless overflow warning). In float64 ``tanh`` is computed the same way, as
``2 σ(2a) - 1`` (see :func:`tanh`). The LSTM runs its four gates through ONE ``tanh`` call, with
``σ(a) = ½ + ½ tanh(a/2)`` (see :class:`LSTMStep`).

Two optional hooks let a step do work once per call instead of once per step:
``prepare_forward`` (before the forward loop, e.g. to rescale ``gx`` and the weight copy) and
``prepare_backward`` (before the backward loop, e.g. to compute the gradient-free factors of
all ``T`` steps with a few array operations).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np

from .module import check_size

Params = dict[str, Any]  # short name -> ndarray (None for an absent bias)
State = tuple[np.ndarray, ...]


def sigmoid(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = 1 / (1 + exp(-a))`` elementwise, written into ``out`` (may be ``a`` itself)."""
    # Not np.negative: NumPy 2.4's negative reads a one-column, non-contiguous in-place operand
    # as if it were contiguous (rows 16 bytes apart in float32), which broke the o gate of an
    # LSTM with H = 1. Multiplying by -1 is the same value, computed correctly.
    np.multiply(a, -1.0, out=out)
    np.exp(out, out=out)
    out += 1.0
    np.divide(1.0, out, out=out)             # (measured faster than np.reciprocal)
    return out


def tanh(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = tanh(a) = 2 σ(2a) - 1`` elementwise, written into ``out`` (may be ``a`` itself).

    float32 goes to ``np.tanh``. float64 is computed with ``exp``, the same function to a few
    units in the last place (absolute), because NumPy vectorizes its float64 ``exp`` on more CPUs
    than its float64 ``tanh``: without AVX-512 ``np.tanh`` is a scalar loop about twice as slow
    as this (see ``benchmarks/README.md``). Saturates to exactly ``±1`` like ``np.tanh``.
    """
    if out.dtype != np.float64:
        return np.tanh(a, out=out)
    np.multiply(a, -2.0, out=out)
    np.exp(out, out=out)                     # exp(-2a), inf for very negative a
    out += 1.0
    np.divide(2.0, out, out=out)             # 2 σ(2a)
    out -= 1.0
    return out


class Step(ABC):
    """One recurrent cell: its parameters, its per-step cache, its forward and backward step.

    Subclasses set ``num_gates`` (``G``) and ``state_names`` (``("h",)`` or ``("h", "c")``) and
    implement ``forward`` and ``backward``. ``h`` (the first state) is what the layer emits.

    The common parameters ``weight_ih (G*H, F)``, ``weight_hh (G*H, Ho)``, ``bias_ih (G*H,)`` and
    ``bias_hh (G*H,)`` are created and differentiated by the layer; a cell with more parameters
    lists them in ``extra_param_shapes`` and adds their gradients in ``finish_backward``.
    """

    num_gates: int = 1
    state_names: tuple[str, ...] = ("h",)
    #: True when dgx and dgh are always equal (no bias or gate acts on gh alone): the layer then
    #: passes ONE buffer as both and saves the copy. Leave False unless that holds.
    shares_gate_grads: bool = False

    def __init__(self, hidden_size: int) -> None:
        self.hidden_size = check_size("hidden_size", hidden_size)

    @property
    def output_size(self) -> int:
        """``Ho``: the size of the emitted ``h`` (``P`` for a projected LSTM, else ``H``)."""
        return self.hidden_size

    def state_sizes(self) -> tuple[int, ...]:
        """Trailing size of each state in ``state_names``: ``(Ho,)`` or ``(Ho, H)``."""
        return (self.output_size,)

    def extra_param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameters beyond ``weight_ih/weight_hh/bias_ih/bias_hh``: short name -> shape."""
        return {}

    def new_cache(self, T: int, B: int, dtype: Any) -> Any:
        """Buffers for everything ``backward`` needs, with a leading time axis of ``T``."""
        return None

    def prepare_forward(self, p: Params, gx: np.ndarray, own_copy: bool) -> None:  # noqa: B027
        # An optional hook, not abstract: most cells use gx and W_hh^T as they are.
        """Before the time loop: adapt ``gx (T, B, G*H)`` (the layer's own buffer) and ``p`` in
        place, for steps that want them in another form (the LSTM scales its gates).
        ``own_copy`` says that ``p["weight_hh_T"]`` is a per-call copy the step may change."""

    @abstractmethod
    def forward(self, p: Params, gx: np.ndarray, prev: State, new: State, cache: Any,
                t: int) -> None:
        """One step: read ``gx (B, G*H)`` and the ``prev`` states, write the ``new`` states.

        ``p`` maps short parameter names (``"weight_hh"``, ``"bias_hh"`` (or None), extras) to
        arrays, plus ``"weight_hh_T"``, a contiguous copy of ``W_hh^T`` made once per call. When
        ``shares_gate_grads`` is True the layer has already added ``b_hh`` into ``gx`` and
        ``p["bias_hh"]`` is None; ``prev`` and ``new`` hold one ``(B, size)`` array per state;
        ``cache`` is the object from ``new_cache`` and ``t`` the time index to store this step's
        values at.
        """

    @abstractmethod
    def backward(self, p: Params, dnew: State, prev: State, new: State, cache: Any, t: int,
                 dgx: np.ndarray, dgh: np.ndarray) -> State:
        """One step back: from ``dnew`` (the gradient w.r.t. each new state, ``(B, size)``) write
        ``dgx`` and ``dgh`` (``(B, G*H)``) and return the gradient w.r.t. each ``prev`` state.
        ``cache`` is what :meth:`prepare_backward` returned."""

    def prepare_backward(self, p: Params, cache: Any, prev: State, new: State,
                         dgx: np.ndarray) -> Any:
        """Before the backward time loop: what ``backward`` receives as its ``cache`` (by default
        the forward cache). A step may compute here, for all ``T`` steps at once, the factors
        that do not depend on the incoming gradients; it may fill ``dgx (T, B, G*H)``, which
        each step then finishes. ``prev``/``new`` are as in :meth:`finish_backward`."""
        return cache

    def finish_backward(self, p: Params, g: dict[str, np.ndarray], cache: Any,  # noqa: B027
                        dgx: np.ndarray, dgh: np.ndarray, prev: State, new: State) -> None:
        # An optional hook, not abstract: a cell without extra parameters has nothing to add.
        """After the time loop: add the gradients of ``extra_param_shapes`` into ``g``.

        ``dgx``/``dgh`` are the ``(T, B, G*H)`` buffers; ``prev``/``new`` hold, per state, the
        ``(T, B, size)`` values each step read and wrote, indexed by time. The common weights and
        biases are done by the layer.
        """


# --------------------------------------------------------------------------------------------
# Elman RNN
# --------------------------------------------------------------------------------------------

class RNNStep(Step):
    r"""Elman RNN step, ``φ = tanh`` or ``relu``.

    Forward::

        h' = φ(gx + h W_hh^T + b_hh)             gx = x W_ih^T + b_ih

    Backward (``dh'`` is the gradient w.r.t. ``h'``)::

        da     = dh' ⊙ φ'(a)       φ' = 1 - h'^2 (tanh),  [h' > 0] (relu; 0 at exactly 0)
        dgx    = dgh = da
        dh     = da W_hh
    """

    num_gates = 1
    shares_gate_grads = True

    def __init__(self, hidden_size: int, nonlinearity: str = "tanh") -> None:
        super().__init__(hidden_size)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}: use 'tanh' or 'relu'")
        self.nonlinearity = nonlinearity

    def forward(self, p: Params, gx: np.ndarray, prev: State, new: State, cache: Any,
                t: int) -> None:
        (h,), (h_new,) = prev, new
        a = h_new                                  # compute a in place in h' (no cache needed)
        np.matmul(h, p["weight_hh_T"], out=a)     # a = h W_hh^T
        a += gx                                    #   + x W_ih^T + b_ih (+ b_hh, see Step)
        if p["bias_hh"] is not None:
            a += p["bias_hh"]                      #   + b_hh
        if self.nonlinearity == "tanh":
            tanh(a, out=h_new)                     # h' = tanh(a)
        else:
            np.maximum(a, 0.0, out=h_new)          # h' = relu(a)

    def backward(self, p: Params, dnew: State, prev: State, new: State, cache: Any, t: int,
                 dgx: np.ndarray, dgh: np.ndarray) -> State:
        (dh_new,), (h_new,) = dnew, new
        da = dgx
        if self.nonlinearity == "tanh":
            np.multiply(h_new, h_new, out=da)      # h'^2
            np.subtract(1.0, da, out=da)           # φ' = 1 - h'^2
            da *= dh_new                           # da = dh' ⊙ φ'
        else:
            np.multiply(dh_new, h_new > 0, out=da)  # da = dh' ⊙ [h' > 0]
        if dgh is not dgx:
            dgh[...] = da                          # dgh = da
        return (da @ p["weight_hh"],)              # dh = da W_hh


# --------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------

class GRUCache(NamedTuple):
    """What the GRU backward needs, per time step ``t``."""

    rzn: np.ndarray  # (T, B, 3H): the gates r, z and the candidate n, side by side
    gh: np.ndarray   # (T, B, 3H): h W_hh^T + b_hh; its n block gh_n is what r multiplies


class GRUStep(Step):
    r"""GRU step (torch's variant: the reset gate multiplies ``h W_hn^T + b_hn``).

    Forward, with ``gx = [gx_r, gx_z, gx_n]`` and ``gh = h W_hh^T + b_hh = [gh_r, gh_z, gh_n]``::

        r  = σ(gx_r + gh_r)
        z  = σ(gx_z + gh_z)
        n  = tanh(gx_n + r ⊙ gh_n)             b_hn sits inside the reset product
        h' = n + z ⊙ (h - n)                  = (1 - z) ⊙ n + z ⊙ h: z weights the OLD state

    Backward (``dh'`` is the gradient w.r.t. ``h'``)::

        dn  = dh' ⊙ (1 - z)                 dz  = dh' ⊙ (h - n)
        dan = dn ⊙ (1 - n^2)
        dar = dan ⊙ gh_n ⊙ r ⊙ (1 - r)      daz = dz ⊙ z ⊙ (1 - z)
        dgx = [dar, daz, dan]               dgh = [dar, daz, r ⊙ dan]
        dh  = dgh W_hh + dh' ⊙ z            h reaches h' directly through z too
    """

    num_gates = 3

    def new_cache(self, T: int, B: int, dtype: Any) -> Any:
        H = self.hidden_size
        return GRUCache(rzn=np.empty((T, B, 3 * H), dtype), gh=np.empty((T, B, 3 * H), dtype))

    def forward(self, p: Params, gx: np.ndarray, prev: State, new: State, cache: Any,
                t: int) -> None:
        (h,), (h_new,) = prev, new
        H = self.hidden_size
        gh, rzn = cache.gh[t], cache.rzn[t]
        np.matmul(h, p["weight_hh_T"], out=gh)           # gh = h W_hh^T
        if p["bias_hh"] is not None:
            gh += p["bias_hh"]                           #    + b_hh
        rz = rzn[:, :2 * H]                              # r and z are adjacent: one sigmoid
        np.add(gx[:, :2 * H], gh[:, :2 * H], out=rz)
        sigmoid(rz, out=rz)                              # r, z = σ(gx_rz + gh_rz)
        r, z, n = rzn[:, :H], rzn[:, H:2 * H], rzn[:, 2 * H:]
        np.multiply(r, gh[:, 2 * H:], out=n)             # r ⊙ gh_n
        n += gx[:, 2 * H:]                               # gx_n + r ⊙ gh_n
        tanh(n, out=n)                                   # n = tanh(...)
        np.subtract(h, n, out=h_new)                     # h - n
        h_new *= z                                       # z ⊙ (h - n)
        h_new += n                                       # h' = n + z ⊙ (h - n)

    def backward(self, p: Params, dnew: State, prev: State, new: State, cache: Any, t: int,
                 dgx: np.ndarray, dgh: np.ndarray) -> State:
        (dh_new,), (h,) = dnew, prev
        H = self.hidden_size
        rzn, gh_n = cache.rzn[t], cache.gh[t][:, 2 * H:]
        r, z, n = rzn[:, :H], rzn[:, H:2 * H], rzn[:, 2 * H:]
        dar, daz, dan = dgx[:, :H], dgx[:, H:2 * H], dgx[:, 2 * H:]
        np.multiply(n, n, out=dan)
        np.subtract(1.0, dan, out=dan)                   # 1 - n^2
        dan *= dh_new
        dan *= 1.0 - z                                   # dan = dh' ⊙ (1 - z) ⊙ (1 - n^2)
        np.subtract(h, n, out=daz)
        daz *= dh_new                                    # dz  = dh' ⊙ (h - n)
        daz *= z * (1.0 - z)                             # daz = dz ⊙ z ⊙ (1 - z)
        np.multiply(dan, gh_n, out=dar)
        dar *= r * (1.0 - r)                             # dar = dan ⊙ gh_n ⊙ r ⊙ (1 - r)
        dgh[:, :2 * H] = dgx[:, :2 * H]                  # dgh = [dar, daz, r ⊙ dan]
        np.multiply(r, dan, out=dgh[:, 2 * H:])
        dh = dgh @ p["weight_hh"]                        # dh = dgh W_hh
        dh += dh_new * z                                 #    + dh' ⊙ z
        return (dh,)


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------

class LSTMCache(NamedTuple):
    """What the LSTM backward needs, per time step ``t``."""

    ifgo: np.ndarray              # (T, B, 4H): the gates i, f, g, o, side by side
    tanh_c: np.ndarray            # (T, B, H): tanh(c')
    m: np.ndarray | None          # (T, B, H): o ⊙ tanh(c') before the projection (P > 0 only)
    dh: np.ndarray | None         # (T, B, P): dh' of each step, for dW_hr after the loop (P > 0)
    work: np.ndarray              # (B, H): scratch for i ⊙ g, reused by every step


class LSTMBackwardCache(NamedTuple):
    """The gradient-free factors of the LSTM backward, for all ``T`` steps (``prepare_backward``).
    The ``(T, B, 4H)`` factors ``k = [k_i, k_f, k_g, k_o]`` are written into ``dgx`` itself."""

    f: np.ndarray                 # (T, B, H): the forget gate (a view of the forward cache)
    k_c: np.ndarray               # (T, B, H): o ⊙ (1 - tanh(c')^2)
    dh: np.ndarray | None         # (T, B, P): the forward cache's buffer for dh' (P > 0)


class LSTMStep(Step):
    r"""LSTM step, with torch's optional projection ``h' = m W_hr^T`` (``proj_size = P > 0``).

    Forward, with ``a = gx + h W_hh^T + b_hh = [a_i, a_f, a_g, a_o]``::

        i, f, g, o = σ(a_i), σ(a_f), tanh(a_g), σ(a_o)
        c' = f ⊙ c + i ⊙ g
        m  = o ⊙ tanh(c')
        h' = m                       (P = 0)
        h' = m W_hr^T                (P > 0; c' keeps size H, h' has size P)

    All four gates go through ONE tanh: ``σ(a) = ½ + ½ tanh(a/2)``, so with the block scale
    ``s = [½, ½, 1, ½]`` (``1`` for the ``g`` block)::

        [i, f, g, o] = s ⊙ tanh(s ⊙ a) + (1 - s)    ... ``(1 - s) = [½, ½, 0, ½]``

    ``s ⊙ a = gx ⊙ s + h (W_hh^T ⊙ s)``: for a sequence the layer's per-call copy of ``W_hh^T``
    and the input projection ``gx`` are scaled once (:meth:`prepare_forward`), so a step does no
    scaling of its own; ``½`` is a power of two, so the scaled numbers are exact.

    Backward (``dh'``, ``dc'`` are the gradients w.r.t. ``h'`` and ``c'``)::

        dm   = dh' W_hr  (P > 0),  else dm = dh'        and  dW_hr += dh'^T m
        dc'  = dc' + dm ⊙ k_c                           k_c = o ⊙ (1 - tanh(c')^2)
        da   = [dc' ⊙ k_i, dc' ⊙ k_f, dc' ⊙ k_g, dm ⊙ k_o]
        dc   = dc' ⊙ f
        dgx  = dgh = da
        dh   = da W_hh

    where the factors that do not depend on the gradients are computed for all ``T`` steps at
    once before the time loop (:meth:`prepare_backward`), from ``σ' = σ(1-σ)`` and
    ``tanh' = 1 - tanh^2``::

        k_i = g ⊙ i(1-i)    k_f = c ⊙ f(1-f)    k_g = i ⊙ (1-g^2)    k_o = tanh(c') ⊙ o(1-o)

    (``di = dc' ⊙ g``, ``df = dc' ⊙ c``, ``dg = dc' ⊙ i``, ``do = dm ⊙ tanh(c')``, each times its
    gate's derivative).
    """

    num_gates = 4
    state_names = ("h", "c")
    shares_gate_grads = True

    def __init__(self, hidden_size: int, proj_size: int = 0) -> None:
        super().__init__(hidden_size)
        if isinstance(proj_size, (bool, np.bool_)) or not isinstance(proj_size, (int, np.integer)):
            raise TypeError(f"proj_size should be of type int, got: {type(proj_size).__name__} "
                            f"({proj_size!r})")
        if proj_size < 0:
            raise ValueError(f"proj_size should be a positive integer or zero to disable "
                             f"projections, got {proj_size}")
        if proj_size >= self.hidden_size:
            raise ValueError(f"proj_size ({proj_size}) must be smaller than hidden_size "
                             f"({self.hidden_size})")
        self.proj_size = int(proj_size)
        self._gate_scales: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def state_sizes(self) -> tuple[int, ...]:
        return (self.output_size, self.hidden_size)

    def extra_param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight_hr": (self.proj_size, self.hidden_size)} if self.proj_size else {}

    def gate_scale(self, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        """``s = [½, ½, 1, ½]`` and ``1 - s``, each value repeated over its block: ``(4H,)``
        each, read-only, made once per dtype (sampling calls the layer once per character)."""
        key = np.dtype(dtype)
        if key not in self._gate_scales:
            H = self.hidden_size
            s = np.full(4 * H, 0.5, key)
            s[2 * H:3 * H] = 1.0
            shift = 1.0 - s
            s.flags.writeable = shift.flags.writeable = False
            self._gate_scales[key] = (s, shift)
        return self._gate_scales[key]

    def new_cache(self, T: int, B: int, dtype: Any) -> Any:
        H, P = self.hidden_size, self.proj_size
        return LSTMCache(ifgo=np.empty((T, B, 4 * H), dtype), tanh_c=np.empty((T, B, H), dtype),
                         m=np.empty((T, B, H), dtype) if P else None,
                         dh=np.empty((T, B, P), dtype) if P else None,
                         work=np.empty((B, H), dtype))

    def prepare_forward(self, p: Params, gx: np.ndarray, own_copy: bool) -> None:
        # s ⊙ a = gx ⊙ s + h (W_hh^T ⊙ s): scale the input projection of all T steps and, where
        # the layer made a per-call copy of W_hh^T (a sequence), that copy. Short calls (the
        # one-step calls of sampling and the cells) keep the weights and scale in the step.
        s, shift = self.gate_scale(gx.dtype)
        p["gate_scale"], p["gate_shift"] = s, shift
        gx *= s
        if own_copy:
            p["weight_hh_T"] *= s
            p["scale_a"] = None
        else:
            p["scale_a"] = s

    def forward(self, p: Params, gx: np.ndarray, prev: State, new: State, cache: Any,
                t: int) -> None:
        (h, c), (h_new, c_new) = prev, new
        H = self.hidden_size
        a = cache.ifgo[t]                        # pre-activations, overwritten by the gates
        np.matmul(h, p["weight_hh_T"], out=a)   # s ⊙ a = h (W_hh^T ⊙ s)
        if p["scale_a"] is not None:             #   (short calls: h W_hh^T, then ⊙ s)
            a *= p["scale_a"]
        a += gx                                  #   + (x W_ih^T + b_ih + b_hh) ⊙ s, see Step
        tanh(a, out=a)                           # tanh(s ⊙ a): all four gates in one call
        a *= p["gate_scale"]
        a += p["gate_shift"]                     # [i, f, g, o] = s ⊙ tanh(s ⊙ a) + (1 - s)
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        np.multiply(f, c, out=c_new)             # f ⊙ c
        ig = np.multiply(i, g, out=cache.work)
        c_new += ig                              # c' = f ⊙ c + i ⊙ g
        tanh_c = cache.tanh_c[t]
        tanh(c_new, out=tanh_c)                  # tanh(c')
        if self.proj_size:
            m = cache.m[t]
            np.multiply(o, tanh_c, out=m)        # m  = o ⊙ tanh(c')
            np.matmul(m, p["weight_hr"].T, out=h_new)  # h' = m W_hr^T
        else:
            np.multiply(o, tanh_c, out=h_new)    # h' = m = o ⊙ tanh(c')

    def prepare_backward(self, p: Params, cache: Any, prev: State, new: State,
                         dgx: np.ndarray) -> Any:
        H = self.hidden_size
        ifgo, tanh_c, c = cache.ifgo, cache.tanh_c, prev[1]
        i, f, g, o = (ifgo[..., k * H:(k + 1) * H] for k in range(4))
        k_i, k_f, k_g, k_o = (dgx[..., k * H:(k + 1) * H] for k in range(4))
        np.multiply(ifgo, ifgo, out=dgx)
        np.subtract(ifgo, dgx, out=dgx)          # σ(1-σ) for i, f, o (the g block is redone)
        np.multiply(g, g, out=k_g)
        np.subtract(1.0, k_g, out=k_g)           # 1 - g^2
        k_i *= g                                 # k_i = g ⊙ i(1-i)
        k_f *= c                                 # k_f = c ⊙ f(1-f)
        k_g *= i                                 # k_g = i ⊙ (1-g^2)
        k_o *= tanh_c                            # k_o = tanh(c') ⊙ o(1-o)
        k_c = np.multiply(tanh_c, tanh_c)
        np.subtract(1.0, k_c, out=k_c)
        k_c *= o                                 # k_c = o ⊙ (1 - tanh(c')^2)
        return LSTMBackwardCache(f=f, k_c=k_c, dh=cache.dh)

    def backward(self, p: Params, dnew: State, prev: State, new: State, cache: Any, t: int,
                 dgx: np.ndarray, dgh: np.ndarray) -> State:
        dh_new, dc_new = dnew
        H = self.hidden_size
        if self.proj_size:
            cache.dh[t] = dh_new                 # kept for dW_hr = dh'^T m after the loop
            dm = dh_new @ p["weight_hr"]         # dm = dh' W_hr
        else:
            dm = dh_new                          # dm = dh'
        # The gradient reaching c' is the sum of what comes back from c_{t+1} (dc', through the
        # next step's forget gate) and what comes from h' through o:
        dc = np.multiply(dm, cache.k_c[t])
        dc += dc_new                             # dc' = dc' + dm ⊙ k_c
        B = dgx.shape[0]                         # dgx holds k; da = k ⊙ [dc', dc', dc', dm]:
        da = dgx.reshape(B, 4, H)
        da[:, :3] *= dc[:, None, :]              # [di, df, dg] = dc' ⊙ [k_i, k_f, k_g]
        da[:, 3] *= dm                           # do = dm ⊙ k_o
        if dgh is not dgx:
            dgh[...] = dgx                       # dgh = dgx = da
        dc *= cache.f[t]                         # dc = dc' ⊙ f   (to the previous step)
        return (dgx @ p["weight_hh"], dc)        # dh = da W_hh

    def finish_backward(self, p: Params, g: dict[str, np.ndarray], cache: Any,
                        dgx: np.ndarray, dgh: np.ndarray, prev: State, new: State) -> None:
        if self.proj_size:                       # dW_hr = Σ_t dh'_t^T m_t, one matrix product
            P, H = self.proj_size, self.hidden_size
            g["weight_hr"] += cache.dh.reshape(-1, P).T @ cache.m.reshape(-1, H)
