"""Recurrent layers: a ``Step`` (the gate math of one time step) run over time, depth, directions.

The layers here know nothing about gates. They

* project the input of all ``T`` time steps with one matrix product before the time loop,
* run the step over ``t = 0 .. T-1`` (and ``T-1 .. 0`` for the reverse direction),
* freeze the state of sequences that have ended (``lengths``), like torch's packed sequences,
* stack layers, concatenate directions and apply dropout between layers,
* and in backward run the steps back in time, then turn the per-step gate gradients into the
  weight gradients and the input gradient with single matrix products after the loop.

One class does the per-direction part of that, :class:`StepRunner`, driven one time step at a
time by every loop that runs a step: the layers' own (:func:`run_forward`,
:func:`run_backward`), a decoder whose input at ``t`` is its own output at ``t-1`` (input
feeding, :mod:`numpy_rnn.tasks.seq2seq.model`), and one-step decoding
(:meth:`Recurrent.forward_step`). :meth:`Recurrent.step_params` and :meth:`Recurrent.step_grads`
lend it one layer's parameters and gradients; :data:`LAYERS` names the layer of each cell.

Shapes (torch's): ``T`` steps, ``B`` batch, ``F`` input features, ``H`` hidden size, ``Ho`` the size
of the emitted ``h`` (``proj_size`` if set, else ``H``), ``L`` layers, ``D`` directions.

Memory held for backward, per layer and direction: the states ``(T+1, B, Ho)`` (and
``(T+1, B, H)`` for ``c``) and the step's cache (LSTM: ``(T, B, 5H)`` and a ``(B, H)`` scratch,
plus ``(T, B, H+P)`` with a projection; GRU ``(T, B, 6H)``; RNN nothing); plus each layer's input
(a view of the layer below's states, unless directions are concatenated or steps masked) and,
with dropout, its mask.
:func:`held_for_backward` counts it from the shapes (the driver's memory guard uses it).
The input projection ``(T, B, G*H)`` is a forward-time transient: the peak is what is held plus
one direction's projection. Backward allocates ``(T, B, G*H)`` gate gradients (twice for the GRU;
the LSTM also its ``(T, B, H)`` factor ``k_c``, see ``steps.py``).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .module import Module, ShapeError, check_array, check_bool, check_lengths, check_size
from .steps import GRUStep, LSTMStep, Params, RNNStep, State, Step

# --------------------------------------------------------------------------------------------
# One direction of one layer, one time step at a time: the runner every time loop drives
# --------------------------------------------------------------------------------------------

def input_biases(step: Step, params: Params, stepwise: bool
                 ) -> tuple[tuple[np.ndarray, ...], Params]:
    """What a run adds to the input projection ``gx = x W_ih^T``, and the parameters its step
    then reads (a new dict; the arrays are the layer's).

    The biases are ``b_ih``, and ``b_hh`` too for a step that only ever uses ``gx + gh``
    (``Step.shares_gate_grads``): it sees ``b_hh`` the same way at every step, so it is added
    once to ``gx`` instead of once per step, and the step's ``bias_hh`` is None. A stepwise run
    adds them as one summed vector (one addition per step, not two); a whole-sequence run one
    after the other (``gx += b_ih; gx += b_hh``). Whoever computes ``gx`` elsewhere (a table
    per token) adds exactly these, in this order, to get the runner's numbers."""
    p = dict(params)
    biases: tuple[np.ndarray, ...] = () if p["bias_ih"] is None else (p["bias_ih"],)
    if step.shares_gate_grads and p["bias_hh"] is not None:
        biases += (p["bias_hh"],)
        p["bias_hh"] = None
    if stepwise and len(biases) == 2:
        biases = (biases[0] + biases[1],)
    return biases, p


@dataclass(init=False, eq=False)
class StepRunner:
    """One direction of one recurrent layer over ``T`` steps, driven one time step at a time.

    Everything a loop does around a :class:`~numpy_rnn.nn.steps.Step`'s gate math is here,
    written once: the input projection, the buffers over time, the ended sequences of
    ``lengths``, the backward steps and the weight gradients after them. Three loops drive it:

    * the layers' own time loop (:func:`run_forward`, :func:`run_backward`): every input is
      known before the loop, so ``project()`` projects all ``T`` steps in one product;
    * a decoder whose input at step ``t`` depends on its own output at ``t-1`` (input feeding,
      :mod:`numpy_rnn.tasks.seq2seq.model`): ``stepwise=True``, each step's input projected
      when it is known (:meth:`project` with ``t``, :meth:`project_part`, :meth:`add_input`);
    * one-step decoding (:meth:`Recurrent.forward_step`): a run of ``T = 1``.

    A loop calls, in this order::

        project()                  gx = x W_ih^T + b         all T steps, ONE matrix product
        forward_step(t)            states[t] -> states[t+1]  the Step's gate math, for each t
        start_backward(dfinal)     the gate-gradient buffers, dstate = dL/d(final states)
        backward_step(t, dout_t)   dgx[t], dgh[t]; dstate = dL/d(states step t read), t reversed
        finish_backward(grads)     dW_ih += Σ_t dgx_t^T x_t,  dW_hh += Σ_t dgh_t^T h_{t-1},
                                   the biases                one matrix product each
        input_grad()               dx = dgx W_ih             ONE matrix product
        end_backward()             -> dL/d(initial states); the backward buffers are let go

    ``forward_step`` leaves NumPy's error state to its caller: run the loop inside
    ``np.errstate(over="ignore")`` (a sigmoid's ``exp(-a)`` overflows to ``inf`` for very
    negative ``a`` and gives the correct 0; once around the loop, not once per step).

    Buffers, each allocated once per run and reused by every step on purpose (shapes for
    ``T`` steps, ``B`` sequences, ``F`` input features, ``G*H`` gate rows):

    * ``x (T, B, F)``: the input each step reads; the caller's array (a layer's input) or, for
      a stepwise run, a buffer the caller fills step by step (the weight gradient reads it);
    * ``gx (T, B, G*H)``: its projection; a forward-time transient of a whole-sequence run;
    * ``states[j] (T+1, B, size_j)``: the forward direction reads ``states[j][t]`` and writes
      ``states[j][t+1]`` at step ``t``, the reverse direction reads ``[t+1]`` and writes
      ``[t]``; :meth:`prev` and :meth:`new` are the ``(T, B, size)`` slices either way;
    * the step's ``cache`` (leading axis ``T``);
    * in backward ``dgx`` and ``dgh (T, B, G*H)`` (ONE buffer for a step that shares them).

    The dataclass fields are what a run keeps for backward (:func:`held_for_backward` counts
    them; the memory benchmark walks them); the other attributes are the parameters, views
    and per-call buffers.
    """

    x: np.ndarray                 # (T, B, F) the input the direction read
    states: tuple[np.ndarray, ...]
    cache: Any
    reverse: bool
    valid: np.ndarray | None      # (T, B, 1) bool, True where t < length (not a dropout mask)

    def __init__(self, step: Step, params: Params, x: np.ndarray | None, init: State | None,
                 *, reverse: bool = False, valid: np.ndarray | None = None,
                 stepwise: bool = False, states: State | None = None,
                 projected: np.ndarray | None = None) -> None:
        """``params``: the layer's short names (``weight_ih``, ``weight_hh``, ``bias_ih``,
        ``bias_hh``, None for an absent bias, and the step's extras), e.g.
        :meth:`Recurrent.step_params`; ``x (T, B, F)``; ``init``: the initial states, ``(B,
        size)`` each; ``valid (T, B, 1)`` bool or None; ``stepwise``: the input of step ``t``
        is known only when step ``t`` comes (see :meth:`project`). ``states``: the caller's
        buffers to run in, ``(T+1, B, size)`` each, with the initial states already in their
        slot (``init`` None), instead of new ones (one-step decoding runs every layer in rows
        of one buffer).

        ``projected``: inference only, the input projection of every step computed elsewhere,
        ``gx (T, B, G*H) = x W_ih^T`` plus the biases :func:`input_biases` names (e.g. rows
        gathered from a per-token table, see :mod:`numpy_rnn.tasks.seq2seq.inference`); it is
        the runner's ``gx``, prepared for the step here (it is changed in place); ``x`` is
        None (the run keeps an empty ``(T, B, 0)`` one): such a run goes forward only."""
        if projected is not None:
            if stepwise or x is not None:
                raise ValueError("projected replaces x and project(): a whole-sequence run "
                                 "without x")
            # No input: an empty (T, B, 0) x keeps the shapes (the run goes forward only).
            x = np.empty(projected.shape[:2] + (0,), projected.dtype)
        assert x is not None
        T, B, _ = x.shape
        dtype = x.dtype
        self.step, self.params, self.stepwise = step, params, stepwise
        self.x, self.reverse, self.valid = x, reverse, valid
        self.w_ih: np.ndarray = params["weight_ih"]            # (G*H, F)
        if states is None:
            if init is None:
                raise ValueError("StepRunner needs the initial states (init), or the buffers "
                                 "that hold them (states)")
            states = tuple([np.empty((T + 1, B, n), dtype) for n in step.state_sizes()])
            first = T if reverse else 0                         # the initial state's slot
            for s, s0 in zip(states, init):
                s[first] = s0
        self.states = states
        self.cache = step.new_cache(T, B, dtype)
        self.gx_bias, self._forward_params = input_biases(step, params, stepwise)
        p = self._forward_params
        # Every step multiplies by W_hh^T. OpenBLAS is faster with a contiguous copy, which pays
        # for itself over a long sequence but not for short or stepwise runs.
        self._own_copy = T >= 16 and not stepwise
        w_hh_t = p["weight_hh"].T
        p["weight_hh_T"] = np.ascontiguousarray(w_hh_t) if self._own_copy else w_hh_t
        self.gx: np.ndarray | None = (np.empty((T, B, self.w_ih.shape[0]), dtype)
                                      if stepwise else None)
        # Slot k's states as a tuple of (B, size) views, built once for all steps: step t
        # reads slot t and writes slot t+1 (the reverse direction: reads t+1, writes t).
        self._slots = list(zip(*self.states))
        if projected is not None:
            self.gx = projected
            step.prepare_forward(p, projected, self._own_copy)

    # -- the buffers over time -------------------------------------------------------------

    def times(self) -> range:
        """The order of the forward steps: ``0 .. T-1``, or ``T-1 .. 0`` for the reverse
        direction (``reversed(run.times())`` is backward's)."""
        T = self.x.shape[0]
        return range(T - 1, -1, -1) if self.reverse else range(T)

    def prev(self, j: int) -> np.ndarray:
        """The state ``j`` each step read, ``(T, B, size_j)``, indexed by time."""
        return self.states[j][1:] if self.reverse else self.states[j][:-1]

    def new(self, j: int) -> np.ndarray:
        """The state ``j`` each step wrote, ``(T, B, size_j)``, indexed by time."""
        return self.states[j][:-1] if self.reverse else self.states[j][1:]

    def final(self) -> State:
        """The states after the direction's last step, ``(B, size)`` each."""
        return self._slots[0] if self.reverse else self._slots[-1]

    # -- forward ---------------------------------------------------------------------------

    def project(self, t: int | None = None) -> None:
        """The input projection ``gx[t] = x[t] W_ih^T + b`` of step ``t`` (a stepwise run, once
        ``x[t]`` is written), or with ``t=None`` of every step in ONE matrix product over the
        ``T*B`` rows (before the loop; a whole-sequence run then lets the step prepare all of
        ``gx`` at once, e.g. the LSTM scales its gates)."""
        if t is not None:
            gx = self._gx()[t]
            np.matmul(self.x[t], self.w_ih.T, out=gx)
            for b in self.gx_bias:
                gx += b
            return
        T, B, F = self.x.shape
        gx2 = self.x.reshape(T * B, F) @ self.w_ih.T
        for b in self.gx_bias:
            gx2 += b
        self.gx = gx2.reshape(T, B, gx2.shape[1])
        if not self.stepwise:
            self.step.prepare_forward(self._forward_params, self.gx, self._own_copy)

    def project_part(self, part: np.ndarray, cols: slice) -> None:
        """Stepwise: the columns ``cols`` of every step's input, known before the loop (a
        decoder's embedded targets): ``x[:, :, cols] = part (T, B, F_part)`` and ``gx = part
        W_ih[:, cols]^T + b``, one product for all ``T`` steps. :meth:`add_input` adds the
        other columns' share at each step."""
        self.x[:, :, cols] = part
        gx = self._gx()
        np.matmul(part, self.w_ih[:, cols].T, out=gx)
        for b in self.gx_bias:
            gx += b

    def add_input(self, t: int, part: np.ndarray, cols: slice) -> None:
        """Stepwise: the columns ``cols`` of step ``t``'s input, known only now (input feeding:
        the previous attentional state): ``x[t, :, cols] = part (B, F_part)`` and ``gx[t] +=
        part W_ih[:, cols]^T``."""
        self.x[t, :, cols] = part
        self._gx()[t] += part @ self.w_ih[:, cols].T

    def forward_step(self, t: int) -> np.ndarray:
        """Step ``t``, from its complete projection ``gx[t]``: reads the states before it,
        writes those after it (sequences that have ended keep theirs); returns the emitted
        ``h_t (B, Ho)``, a view of the state buffer."""
        gx = self._gx()[t]
        prev, new = self._step_states(t)
        p = self._forward_params
        if self.stepwise:
            # The step's per-call preparation (the LSTM scales its gates), this step's gx only.
            self.step.prepare_forward(p, gx[None], False)
        self.step.forward(p, gx, prev, new, self.cache, t)
        if self.valid is not None:                 # ended sequences keep their state
            keep = ~self.valid[t]
            for sn, sp in zip(new, prev):
                np.copyto(sn, sp, where=keep)
        return new[0]

    def end_forward(self) -> None:
        """After a whole-sequence forward: let go of the forward-time transients (``gx`` and the
        copy of ``W_hh^T``), which backward does not read."""
        self.gx = None
        self._forward_params = {}

    def _step_states(self, t: int) -> tuple[State, State]:
        """The states step ``t`` reads and those it writes, ``(B, size)`` views each."""
        slots = self._slots
        return (slots[t + 1], slots[t]) if self.reverse else (slots[t], slots[t + 1])

    def _gx(self) -> np.ndarray:
        assert self.gx is not None, "project() first"
        return self.gx

    # -- backward --------------------------------------------------------------------------

    def start_backward(self, dfinal: Sequence[np.ndarray | None] | None = None) -> None:
        """Before the backward loop: the gate-gradient buffers ``dgx``/``dgh (T, B, G*H)`` (one
        buffer for a step that shares them), the step's gradient-free factors of all ``T``
        steps (``Step.prepare_backward``), and ``dstate``: the gradients w.r.t. the final
        states (``(B, size)`` each, copied; zeros for None, or for each None entry)."""
        T, B, _ = self.x.shape
        self.dgx = np.empty((T, B, self.w_ih.shape[0]), self.x.dtype)
        self.dgh = self.dgx if self.step.shares_gate_grads else np.empty_like(self.dgx)
        self._backward_cache = self.step.prepare_backward(self.params, self.cache,
                                                          self._all(self.prev),
                                                          self._all(self.new), self.dgx)
        given = (None,) * len(self.states) if dfinal is None else dfinal
        self.dstate: State = tuple(np.zeros_like(s[0]) if d is None else np.array(d, copy=True)
                                   for s, d in zip(self.states, given))

    def backward_step(self, t: int, dout: np.ndarray | None = None) -> np.ndarray:
        """Step ``t`` back (steps in ``reversed(run.times())`` order). ``dout (B, Ho)``: the
        gradient w.r.t. ``h_t`` from outside the direction (the layer above, or a decoder's
        attention and output layer), None for none. Writes ``dgx[t]``/``dgh[t]``, leaves in
        ``dstate`` the gradients w.r.t. the states step ``t`` read, returns ``dgx[t] (B,
        G*H)``."""
        # The gradient reaching h_t is the sum of what comes from the output at t (dout) and
        # what comes back from step t+1 (already in dstate[0]); c_t's comes from step t+1 alone.
        dh = self.dstate[0] if dout is None else self.dstate[0] + dout
        dnew = (dh,) + self.dstate[1:]
        p, cache, dgx = self.params, self._backward_cache, self.dgx[t]
        prev, new = self._step_states(t)
        if self.valid is None:
            self.dstate = self.step.backward(p, dnew, prev, new, cache, t, dgx, self.dgh[t])
        else:
            # Every gradient of a step is linear in dnew, so zeroing the rows of ended sequences
            # makes their contribution to dgx, dgh and the weights exactly 0; their state
            # gradient passes through the step unchanged, as their state did.
            m = self.valid[t]
            dpass = self.step.backward(p, tuple(d * m for d in dnew), prev, new, cache, t,
                                       dgx, self.dgh[t])
            self.dstate = tuple(np.where(m, dp, dn) for dp, dn in zip(dpass, dnew))
        return dgx

    def finish_backward(self, grads: dict[str, np.ndarray]) -> None:
        """After the backward loop: the weight gradients of all ``T`` steps, ONE matrix
        product each, ADDED into ``grads`` (short names, as ``params``)."""
        T, B, F = self.x.shape
        GH = self.dgx.shape[2]
        dgx2 = self.dgx.reshape(T * B, GH)
        dgh2 = self.dgh.reshape(T * B, GH)
        h_prev = self.prev(0)
        grads["weight_ih"] += dgx2.T @ self.x.reshape(T * B, F)
        grads["weight_hh"] += dgh2.T @ h_prev.reshape(T * B, h_prev.shape[2])
        if self.params["bias_ih"] is not None:
            db_ih = dgx2.sum(axis=0)
            grads["bias_ih"] += db_ih
            grads["bias_hh"] += db_ih if self.dgh is self.dgx else dgh2.sum(axis=0)
        self.step.finish_backward(self.params, grads, self.cache, self.dgx, self.dgh,
                                  self._all(self.prev), self._all(self.new))

    def input_grad(self) -> np.ndarray:
        """``dx = dgx W_ih (T, B, F)``: the gradient w.r.t. every step's input, one product."""
        T, B, GH = self.dgx.shape
        return (self.dgx.reshape(T * B, GH) @ self.w_ih).reshape(T, B, self.x.shape[2])

    def end_backward(self) -> State:
        """The gradients w.r.t. the initial states (``(B, size)`` each); lets go of the
        backward buffers (a layer keeps its runs until its next forward)."""
        dinit = self.dstate
        del self.dgx, self.dgh, self._backward_cache, self.dstate
        return dinit

    def _all(self, states: Any) -> State:
        return tuple(states(j) for j in range(len(self.states)))


def run_forward(step: Step, p: Params, x: np.ndarray | None, init: State,
                valid: np.ndarray | None, reverse: bool,
                projected: np.ndarray | None = None) -> StepRunner:
    """The layers' time loop, forward: run ``step`` over the time steps of ``x (T, B, F)`` from
    the states ``init`` ((B, size) each), the input projection of all steps first (or, x
    None, the ``projected`` one given, see :class:`StepRunner`).

    Where ``valid[t, b]`` is False (the sequence has ended, or in the reverse direction has not
    started yet) the state is carried unchanged, which is how torch runs packed sequences.
    """
    run = StepRunner(step, p, x, init, reverse=reverse, valid=valid, projected=projected)
    if projected is None:
        # Input projection of every time step in one matrix product: gx = x W_ih^T + b_ih.
        run.project()
    with np.errstate(over="ignore"):  # exp(-a) -> inf in sigmoid is harmless: σ = 0 exactly
        for t in run.times():
            run.forward_step(t)
    run.end_forward()
    return run


def run_backward(run: StepRunner, grads: dict[str, np.ndarray], dout: np.ndarray | None,
                 dfinal: State) -> tuple[np.ndarray, State]:
    """The layers' time loop, backward: backpropagate one direction through time.

    ``dout (T, B, Ho)`` is the gradient w.r.t. the direction's outputs (None for none) and
    ``dfinal`` the gradients w.r.t. its final states. Adds the parameter gradients into ``grads``
    (short names) and returns ``(dx (T, B, F), dinit)``.
    """
    run.start_backward(dfinal)
    for t in reversed(run.times()):
        run.backward_step(t, None if dout is None else dout[t])
    # Weight gradients of all time steps, one matrix product each; then dx, one more.
    run.finish_backward(grads)
    dx = run.input_grad()
    return dx, run.end_backward()


# --------------------------------------------------------------------------------------------
# The multi-layer, bidirectional layer
# --------------------------------------------------------------------------------------------

def check_states(names: Sequence[str], sizes: Sequence[int], hx: Any, lead: tuple[int, ...],
                 dtype: Any) -> list[np.ndarray]:
    """``hx`` as the states of a stack: a tuple (or list) of one array per state name, each of
    shape ``lead + (size,)`` (``(L, B, size)``) and of exactly ``dtype``; ``TypeError``,
    ``DTypeError`` or :class:`ShapeError` naming the state otherwise. (Torch's twin of the
    seq2seq model checks its decoder states with this function too, so both say the same.)"""
    if not isinstance(hx, (tuple, list)) or len(hx) != len(names):
        shape = ", ".join([*map(str, lead), "size"])
        raise TypeError(f"the state must be a tuple of {len(names)} arrays "
                        f"({', '.join(names)}), each of shape ({shape})")
    states = []
    for name, size, s in zip(names, sizes, hx):
        s = check_array(name, s, dtype, (len(lead) + 1,))
        if s.shape != lead + (size,):
            raise ShapeError(f"{name} must have shape {lead + (size,)}, got {s.shape}")
        states.append(s)
    return states


def check_dropout(p: Any) -> float:
    """``p`` as a float if it is a probability in ``[0, 1]``, else ``ValueError`` (torch's rule:
    bools, strings, NaN and numbers outside the range are refused; 1 zeroes every element)."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real) \
            or math.isnan(float(p)) or not 0 <= float(p) <= 1:
        raise ValueError(f"dropout must be a number in [0, 1] (the probability of an element "
                         f"being zeroed), got {p!r}")
    return float(p)


def scale_dropout_mask(keep: np.ndarray, p: float, dtype: Any) -> np.ndarray:
    """Inverted dropout's factor for each element: ``keep / (1 - p)`` in ``dtype``.

    ``keep`` is a 0/1 (or bool) array, 1 where the element is kept. With ``p = 1`` every
    element is dropped and the factor is 0 everywhere, as in torch. Both backends scale the
    driver's masks with this one function, so they multiply by exactly the same numbers.
    """
    if p >= 1.0:
        return np.zeros(keep.shape, dtype)
    return np.asarray(keep).astype(dtype) * np.dtype(dtype).type(1.0 / (1.0 - p))


#: Per cell: the states a step carries, the step cache's width in multiples of ``H`` per
#: ``(t, b)``, and its per-step scratch in multiples of ``H`` per ``b`` (see ``steps.py``).
_STATES = {"lstm": 2, "gru": 1, "rnn": 1}
_CACHE_WIDTH = {"lstm": 5, "gru": 6, "rnn": 0}
_WORK_WIDTH = {"lstm": 1, "gru": 0, "rnn": 0}


def held_for_backward(cell: str, seq_len: int, batch: int, input_size: int, hidden_size: int,
                      num_layers: int = 1, dtype: Any = np.float64, bidirectional: bool = False,
                      proj_size: int = 0, dropout: bool = False, masked: bool = False
                      ) -> dict[str, int]:
    """Bytes a :class:`Recurrent` stack keeps from one forward call for backward, by component,
    counted from the shapes as the module docstring documents them (parameters excluded).

    ``cell`` is "lstm", "gru" or "rnn"; ``T = seq_len``, ``B = batch``, ``F = input_size``,
    ``H = hidden_size``, ``P = proj_size`` (LSTM only; ``Ho = P or H``), ``L = num_layers``,
    ``D = 2 if bidirectional else 1``; ``dropout``: the call applies dropout between layers;
    ``masked``: it was given ``lengths``. Returns ``{component: bytes}``:

    * ``input``: layer 0's ``x (T, B, F)`` (kept by reference; both directions read it).
    * ``states``: per layer and direction ``h (T+1, B, Ho)`` and, LSTM, ``c (T+1, B, H)``.
    * ``cache``: the step's cache, LSTM ``(T, B, 5H)`` (and ``(T, B, H+P)`` with a
      projection), GRU ``(T, B, 6H)``, RNN nothing.
    * ``work``: the LSTM cache's ``(B, H)`` scratch.
    * ``layer_inputs``: the inputs of layers 1..L-1, ``(T, B, D*Ho)`` each, when they are not a
      view of the layer below's states (directions concatenated, steps masked, or dropout).
    * ``dropout_masks``: ``L-1`` scaled masks ``(T, B, D*Ho)``; ``valid``: the bool ``(T, B, 1)``.

    ``held_for_backward(...)`` sums to what ``layer._ctx`` holds after forward
    (``benchmarks/memory.py`` measures it); the forward-time peak adds one input projection
    ``(T, B, G*H)``, backward allocates ``(T, B, G*H)`` gate gradients (twice for the GRU).
    """
    if cell not in _STATES:
        raise ValueError(f"cell must be one of {', '.join(_STATES)}, got {cell!r}")
    T, B, F, H, L = seq_len, batch, input_size, hidden_size, num_layers
    P = proj_size if cell == "lstm" else 0
    Ho, D, n = P or H, 2 if bidirectional else 1, np.dtype(dtype).itemsize
    per_state = (T + 1) * B * (Ho + (H if cell == "lstm" else 0))
    cache_width = _CACHE_WIDTH[cell] * H + (H + P if P else 0)
    upper = L - 1                                # layers whose input is the layer below's output
    copied_inputs = upper if (dropout or D == 2 or masked) else 0
    return dict(
        input=n * T * B * F,
        states=n * L * D * per_state,
        cache=n * L * D * T * B * cache_width,
        work=n * L * D * B * _WORK_WIDTH[cell] * H,
        layer_inputs=n * copied_inputs * T * B * D * Ho,
        dropout_masks=n * (upper if dropout else 0) * T * B * D * Ho,
        valid=T * B if masked else 0,
    )


class Recurrent(Module):
    """A stack of ``num_layers`` recurrent layers of any ``Step``, torch's ``nn.RNN`` contract.

    ``make_step()`` returns a fresh ``Step`` (one per layer and direction; they are stateless,
    so one object is enough, but a factory keeps the door open). Parameters use torch's names:
    ``weight_ih_l{l}{_reverse}``, ``weight_hh_...``, ``bias_ih_...``, ``bias_hh_...`` and the
    step's extras (``weight_hr_...`` for a projected LSTM), in torch's registration order.
    """

    #: The gradient-check contract (:func:`numpy_rnn.gradcheck`): ``backward`` takes the
    #: gradient of each forward output as its own argument, ``backward(dout, dstates)``.
    backward_unpacks_outputs = True

    def __init__(self, step: Step, input_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: Any = np.float64, seed: int | None = None) -> None:
        super().__init__(dtype)
        self.step = step
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = step.hidden_size
        self.num_layers = check_size("num_layers", num_layers)
        self.dropout = dropout                   # checked by the property below
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={self.dropout} and num_layers=1", UserWarning, stacklevel=3)
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        self.num_directions = 2 if self.bidirectional else 1
        self._rng = np.random.default_rng(seed)
        self._ctx: dict[str, Any] | None = None
        self._frozen_masks: list[list[np.ndarray]] | None = None  # inside fixed_dropout_masks()

        # Names and shapes in torch's registration order; draws from U(-1/sqrt(H), 1/sqrt(H)).
        H, Ho, G, D = self.hidden_size, step.output_size, step.num_gates, self.num_directions
        k = 1.0 / np.sqrt(H)
        self._keys: list[dict[str, str]] = []   # per (layer, direction): short name -> full name
        for layer in range(self.num_layers):
            f_in = self.input_size if layer == 0 else D * Ho
            for d in range(D):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                shapes: dict[str, tuple[int, ...]] = {"weight_ih": (G * H, f_in),
                                                      "weight_hh": (G * H, Ho)}
                if self.bias:
                    shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
                shapes.update(step.extra_param_shapes())
                keys = {}
                for short, shape in shapes.items():
                    keys[short] = short + suffix
                    self._add_param(short + suffix, self._rng.uniform(-k, k, size=shape))
                self._keys.append(keys)

    # -- one layer's parameters, by the step's short names ----------------------------------

    def step_params(self, layer: int, direction: int = 0) -> Params:
        """The parameters of one layer and direction under the step's short names
        (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, None for an absent bias, and
        the step's extras such as ``weight_hr``): the layer's own arrays, not copies. What a
        :class:`StepRunner` runs on."""
        keys = self._keys[self._index(layer, direction)]
        p: Params = {short: self.params[full] for short, full in keys.items()}
        p.setdefault("bias_ih", None)
        p.setdefault("bias_hh", None)
        return p

    def step_grads(self, layer: int, direction: int = 0) -> dict[str, np.ndarray]:
        """The gradient arrays of one layer and direction under the same short names (what
        :meth:`StepRunner.finish_backward` adds into)."""
        return {short: self.grads[full]
                for short, full in self._keys[self._index(layer, direction)].items()}

    def _index(self, layer: int, direction: int) -> int:
        if not (0 <= layer < self.num_layers and 0 <= direction < self.num_directions):
            raise IndexError(f"no layer {layer}, direction {direction} in a stack of "
                             f"{self.num_layers} layers x {self.num_directions} directions")
        return layer * self.num_directions + direction

    @property
    def dropout(self) -> float:
        """The probability of zeroing each element between layers, in ``[0, 1]``; checked
        whenever it is set, in the constructor or later (``layer.dropout = 0.3``)."""
        return self._dropout

    @dropout.setter
    def dropout(self, p: float) -> None:
        self._dropout = check_dropout(p)

    @property
    def applies_dropout(self) -> bool:
        """True when a forward call now drops elements: training mode, ``dropout > 0`` and
        more than one layer."""
        return self.training and self.dropout > 0 and self.num_layers > 1

    def dropout_mask_shape(self, T: int, B: int) -> tuple[int, int, int]:
        """The shape ``(T, B, D*Ho)`` of each of the ``num_layers - 1`` dropout masks of a
        forward call over ``T`` steps of ``B`` sequences (time-major, whatever ``batch_first``)."""
        return (T, B, self.num_directions * self.step.output_size)

    @contextmanager
    def fixed_dropout_masks(self) -> Iterator[None]:
        """Inside this block every forward call reuses the dropout masks of the first one.

        Finite-difference checks need the same function at every evaluation; this makes a layer
        in training mode with dropout a deterministic function of its inputs and parameters.
        """
        self._frozen_masks = []
        try:
            yield
        finally:
            self._frozen_masks = None

    def _check_state(self, name: str, s: Any, shape: tuple[int, ...]) -> np.ndarray:
        s = check_array(name, s, self.dtype, (len(shape),))
        if s.shape != shape:
            raise ShapeError(f"{name} must have shape {shape}, got {s.shape}")
        return s

    # -- forward ---------------------------------------------------------------------------

    def forward(self, x: np.ndarray, hx: Any = None, lengths: Any = None, *,
                dropout_masks: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, State]:
        """Run the stack. Shapes as torch's (``batch_first`` never applies to states).

        Args:
            x: ``(T, B, F)``, ``(B, T, F)`` if ``batch_first``, or unbatched ``(T, F)``.
            hx: tuple of initial states, one per ``step.state_names`` (each may be None = zeros):
                ``h0 (L*D, B, Ho)`` (``(L*D, Ho)`` unbatched), ``c0 (L*D, B, H)`` for the LSTM.
            lengths: ``(B,)`` integer valid lengths in ``[1, T]``; as torch's packed sequences.
            dropout_masks: the dropout masks to use instead of drawing them from the layer's
                own generator: ``num_layers - 1`` keep masks (bool or 0/1), each of
                :meth:`dropout_mask_shape` ``(T, B, D*Ho)``, time-major whatever
                ``batch_first``; mask ``l`` multiplies the output of layer ``l`` (scaled by
                ``1 / (1 - dropout)``). Only when the layer :attr:`applies_dropout`.

        Returns:
            ``out`` ``(T, B, D*Ho)`` (layout of ``x``) and the tuple of final states, shaped like
            ``hx``. Padded outputs are 0 and final states come from each sequence's last step.
        """
        x = check_array("input", x, self.dtype, (2, 3))
        unbatched = x.ndim == 2
        if x.shape[-1] != self.input_size:
            raise ShapeError(f"input has {x.shape[-1]} features, expected input_size="
                             f"{self.input_size}")
        if unbatched:
            if lengths is not None:
                raise ValueError("lengths needs batched input (T, B, F) or (B, T, F)")
            xt = x[:, None, :]
        else:
            xt = x.transpose(1, 0, 2) if self.batch_first else x
        T, B, _ = xt.shape
        if T == 0:                               # B = 0 is fine: empty outputs, as in torch
            raise ShapeError(f"input must have at least one time step, got shape {x.shape}")
        LD, names = self.num_layers * self.num_directions, self.step.state_names
        if hx is None:
            hx = (None,) * len(names)
        elif not isinstance(hx, tuple) or len(hx) != len(names):
            raise TypeError(f"initial state must be a tuple of {len(names)} arrays "
                            f"({', '.join(n + '0' for n in names)}) or None")
        init = []
        for name, size, s in zip(names, self.step.state_sizes(), hx):
            shape = (LD, size) if unbatched else (LD, B, size)
            if s is None:
                init.append(np.zeros((LD, B, size), self.dtype))
            else:
                s = self._check_state(name + "0", s, shape)
                init.append(s[:, None, :] if unbatched else s)
        valid = None
        if lengths is not None:
            lens = check_lengths(lengths, T, B)
            valid = (np.arange(T)[:, None] < lens[None, :])[:, :, None]  # (T, B, 1)
        masks = self._dropout_masks(T, B, dropout_masks)  # may raise: nothing changed yet

        xt = np.ascontiguousarray(xt)
        layer_in, runs = xt, []
        per_layer: list[list[np.ndarray]] = [[] for _ in names]   # per state: (B, size) each
        for layer in range(self.num_layers):
            dirs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                run = run_forward(self.step, self.step_params(layer, d), layer_in,
                                  tuple(s[k] for s in init), valid, reverse=bool(d))
                dirs.append(run)
                for j, s in enumerate(run.final()):
                    per_layer[j].append(s)
            out = self._layer_output(dirs, valid)
            runs.append(dirs)
            if layer < self.num_layers - 1 and masks is not None:
                out = out * masks[layer]         # inverted dropout; h_n was taken before it
            layer_in = out
        self._ctx = dict(runs=runs, dropout_masks=masks, valid=valid, unbatched=unbatched, T=T,
                         B=B)
        out = layer_in
        finals = tuple(np.stack(f) for f in per_layer)
        if unbatched:
            out, finals = out[:, 0, :], tuple(f[:, 0, :] for f in finals)
        elif self.batch_first:
            out = out.transpose(1, 0, 2)
        return out, finals

    def forward_projected(self, projected: Sequence[np.ndarray], lengths: Any = None
                          ) -> tuple[np.ndarray, State]:
        """Evaluation: :meth:`forward` from zero initial states, time-major, with layer 0's
        input projection given instead of its input: one ``gx (T, B, G*H)`` per direction,
        ``x W_ih^T`` plus the biases :func:`input_biases` names for a whole-sequence run
        (an encoder gathers them from a table per token). The same arithmetic as
        :meth:`forward`, the same results; nothing is kept for backward and nothing dropped.
        The arrays given are overwritten (each run prepares its ``gx`` in place).

        Returns ``out (T, B, D*Ho)`` (0 at padded steps) and the final states ``(L*D, B,
        size)`` each."""
        D, L = self.num_directions, self.num_layers
        width = self.step.num_gates * self.hidden_size
        if len(projected) != D:
            raise ValueError(f"projected needs one array per direction ({D}), got "
                             f"{len(projected)}")
        gx = [check_array("projected", g, self.dtype, (3,)) for g in projected]
        T, B, _ = gx[0].shape
        if T == 0 or any(g.shape != (T, B, width) for g in gx):
            raise ShapeError(f"projected must be {D} arrays of one shape (T >= 1, B, "
                             f"num_gates * hidden_size = {width}), got "
                             f"{[g.shape for g in gx]}")
        valid = None
        if lengths is not None:
            lens = check_lengths(lengths, T, B)
            valid = (np.arange(T)[:, None] < lens[None, :])[:, :, None]  # (T, B, 1)
        zeros = tuple([np.zeros((B, size), self.dtype) for size in self.step.state_sizes()])
        per_layer: list[list[np.ndarray]] = [[] for _ in zeros]   # per state: (B, size) each
        layer_in = None
        for layer in range(L):
            dirs = []
            for d in range(D):
                run = run_forward(self.step, self.step_params(layer, d), layer_in, zeros, valid,
                                  reverse=bool(d), projected=gx[d] if layer == 0 else None)
                dirs.append(run)
                for j, s in enumerate(run.final()):
                    per_layer[j].append(s)
            layer_in = self._layer_output(dirs, valid)
        assert layer_in is not None
        return layer_in, tuple(np.stack(f) for f in per_layer)

    def forward_step(self, x: np.ndarray | None, hx: Sequence[np.ndarray], *,
                     projected: np.ndarray | None = None) -> tuple[np.ndarray, State]:
        """One time step of a unidirectional stack, for decoding one token at a time.

        Args:
            x: ``(B, F)``, the step's input (None when ``projected`` is given).
            hx: the states before the step, one per ``step.state_names``: ``h (L, B, Ho)`` (and
                ``c (L, B, H)`` for the LSTM).
            projected: instead of ``x``, layer 0's input projection ``gx (B, G*H)``, computed
                elsewhere: ``x W_ih^T`` plus the biases :func:`input_biases` names (a decoder
                gathers its embedding's part from a table per token). Overwritten (the step
                prepares it in place).

        Returns:
            The top layer's output ``h (B, Ho)`` and the states after the step, shaped like
            ``hx`` (views of the buffers the step ran in, never of ``hx``).

        The arithmetic of :meth:`forward` over one time step (each layer's step as a
        :class:`StepRunner` of ``T = 1`` runs it), so the results are the same to the bit,
        without what a sequence needs (lengths, dropout, ``batch_first``, what backward reads):
        nothing is kept and nothing is dropped, whatever the mode. The inputs are checked here,
        then a :class:`StackStep` runs the step; :meth:`stepper` keeps one for many steps.
        """
        if self.bidirectional:
            raise ValueError("forward_step runs a unidirectional stack: a bidirectional layer "
                             "reads the whole sequence")
        if projected is None:
            x = check_array("input", x, self.dtype, (2,))
            if x.shape[1] != self.input_size:
                raise ShapeError(f"input has {x.shape[1]} features, expected input_size="
                                 f"{self.input_size}")
        else:
            projected = check_array("projected", projected, self.dtype, (2,))
            width = self.step.num_gates * self.hidden_size
            if projected.shape[1] != width:
                raise ShapeError(f"projected has {projected.shape[1]} columns, expected "
                                 f"num_gates * hidden_size = {width}")
        return StackStep(self)(x, hx, projected=projected)

    def stepper(self) -> StackStep:
        """:meth:`forward_step` prepared once for the many steps of a search: a
        :class:`StackStep` of this stack."""
        return StackStep(self)

    def _layer_output(self, dirs: list[StepRunner], valid: np.ndarray | None) -> np.ndarray:
        """Concatenate the directions' emitted ``h`` into ``(T, B, D*Ho)``; 0 at padded steps."""
        if len(dirs) == 1 and valid is None:
            return dirs[0].new(0)                # a view of the state buffer, no copy
        out = np.concatenate([r.new(0) for r in dirs], axis=-1)
        if valid is not None:
            out *= valid
        return out

    def _dropout_masks(self, T: int, B: int, given: Sequence[np.ndarray] | None
                       ) -> list[np.ndarray] | None:
        """Scaled masks ``keep / (1-p)``, ``(T, B, D*Ho)``, one per layer but the last, or None
        when no dropout applies. ``given`` keep masks are checked and used instead of drawing."""
        if not self.applies_dropout:
            if given is not None:
                raise ValueError("dropout_masks were given but this forward call applies no "
                                 f"dropout (training={self.training}, dropout={self.dropout}, "
                                 f"num_layers={self.num_layers})")
            return None
        shape = self.dropout_mask_shape(T, B)
        if self._frozen_masks:
            frozen = self._frozen_masks[0]
            if frozen[0].shape != shape:
                raise ShapeError(f"fixed_dropout_masks: input shape changed, masks are "
                                 f"{frozen[0].shape}, need {shape}")
            return frozen
        if given is not None:
            keep = [np.asarray(m) for m in given]
            if len(keep) != self.num_layers - 1 or any(m.shape != shape for m in keep):
                raise ShapeError(f"dropout_masks must be {self.num_layers - 1} arrays of shape "
                                 f"{shape}, got shapes {[m.shape for m in keep]}")
            if any(m.dtype.kind not in "biuf" for m in keep):
                raise TypeError("dropout_masks must be bool or 0/1 arrays")
        else:
            keep = [self._rng.random(shape) >= self.dropout for _ in range(self.num_layers - 1)]
        masks = [scale_dropout_mask(m, self.dropout, self.dtype) for m in keep]
        if self._frozen_masks is not None:
            self._frozen_masks.append(masks)
        return masks

    # -- backward --------------------------------------------------------------------------

    def backward(self, dout: np.ndarray | None, dstates: Any = None) -> tuple[np.ndarray, State]:
        """Backpropagate through the last forward call; ADD parameter gradients into ``grads``.

        Args:
            dout: gradient w.r.t. ``out`` (same shape), or None for zeros.
            dstates: tuple of gradients w.r.t. the final states (each may be None = zeros),
                or None.

        Returns:
            ``dx`` (shape of ``x``) and the tuple of gradients w.r.t. the initial states
            (shape of ``h0``/``c0``, also when they were not given: w.r.t. the zeros used).
        """
        if self._ctx is None:
            raise RuntimeError("backward called before forward")
        ctx = self._ctx
        runs, T, B, unbatched = ctx["runs"], ctx["T"], ctx["B"], ctx["unbatched"]
        D, L, Ho = self.num_directions, self.num_layers, self.step.output_size
        names, sizes = self.step.state_names, self.step.state_sizes()
        out_shape = (T, D * Ho) if unbatched else ((B, T, D * Ho) if self.batch_first
                                                   else (T, B, D * Ho))
        if dout is not None:
            dout = check_array("dout", dout, self.dtype, (len(out_shape),))
            if dout.shape != out_shape:
                raise ShapeError(f"dout must have the output's shape {out_shape}, "
                                 f"got {dout.shape}")
        if dstates is None:
            dstates = (None,) * len(names)
        elif not isinstance(dstates, tuple) or len(dstates) != len(names):
            raise TypeError(f"final-state gradients must be a tuple of {len(names)} arrays "
                            f"(or None)")
        dfin = []
        for name, size, ds in zip(names, sizes, dstates):
            shape = (L * D, size) if unbatched else (L * D, B, size)
            if ds is None:
                dfin.append(np.zeros((L * D, B, size), self.dtype))
            else:
                ds = self._check_state(f"d{name}_n", ds, shape)
                dfin.append(ds[:, None, :] if unbatched else ds)

        if dout is None:
            dy = None
        elif unbatched:
            dy = dout[:, None, :]
        else:
            dy = dout.transpose(1, 0, 2) if self.batch_first else dout
        if dy is not None and ctx["valid"] is not None:
            dy = dy * ctx["valid"]               # padded outputs are constants: no gradient
        dinit = [np.empty((L * D, B, s), self.dtype) for s in sizes]
        dx: np.ndarray | None = None
        for layer in range(L - 1, -1, -1):
            dx = None
            for d, run in enumerate(runs[layer]):
                k = layer * D + d
                dy_d = None if dy is None else dy[:, :, d * Ho:(d + 1) * Ho]
                dx_d, d0 = run_backward(run, self.step_grads(layer, d), dy_d,
                                        tuple(f[k] for f in dfin))
                dx = dx_d if dx is None else dx + dx_d   # both directions read the same input
                for j, s in enumerate(d0):
                    dinit[j][k] = s
            if layer > 0 and ctx["dropout_masks"] is not None:
                dx *= ctx["dropout_masks"][layer - 1]    # the same mask as forward
            dy = dx
        assert dx is not None                    # the bottom layer's input gradient
        if unbatched:
            return dx[:, 0, :], tuple(s[:, 0, :] for s in dinit)
        if self.batch_first:
            dx = dx.transpose(1, 0, 2)
        return dx, tuple(dinit)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}, "
                f"bidirectional={self.bidirectional}, dtype={np.dtype(self.dtype).name}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class StackStep:
    """One time step of a unidirectional stack, prepared once and called at every step of a
    search (one-step decoding at batch 1, where each small call counts): what
    :meth:`Recurrent.forward_step` runs after its checks, the arithmetic of a
    :class:`StepRunner` of ``T = 1`` to the bit, with each layer's step parameters and input
    biases (:func:`input_biases`) looked up once and the step's scratch buffers kept per batch
    size. The parameters are the layer's own arrays,
    so it follows their in-place updates; make a new one when the layer's arrays are
    replaced.

    ``h, states = stack_step(x, hx)`` or ``stack_step(None, hx, projected=gx)``, with the
    arguments and results of :meth:`Recurrent.forward_step` (the states are checked; ``x`` and
    ``projected`` are taken as given: ``(B, F)`` and ``(B, G*H)`` of the layer's dtype)."""

    def __init__(self, layer: Recurrent) -> None:
        if layer.bidirectional:
            raise ValueError("a StackStep runs a unidirectional stack")
        self.layer = layer
        self.layers: list[tuple[tuple[np.ndarray, ...], Params]] = []
        for l in range(layer.num_layers):
            biases, p = input_biases(layer.step, layer.step_params(l), stepwise=False)
            p["weight_hh_T"] = p["weight_hh"].T            # a view, as a T = 1 run has it
            self.layers.append((biases, p))
        # The step's scratch buffers by batch size: written and read within one step only.
        self._caches: dict[int, list[Any]] = {}

    def __call__(self, x: np.ndarray | None, hx: Sequence[np.ndarray], *,
                 projected: np.ndarray | None = None) -> tuple[np.ndarray, State]:
        layer, step = self.layer, self.layer.step
        L, dtype = layer.num_layers, layer.dtype
        given = projected if projected is not None else x
        assert given is not None
        B = given.shape[0]
        states = check_states(step.state_names, step.state_sizes(), hx, (L, B), dtype)
        new = [np.empty((L, B, size), dtype) for size in step.state_sizes()]
        caches = self._caches.get(B)
        if caches is None:
            caches = self._caches[B] = [step.new_cache(1, B, dtype) for _ in range(L)]
        with np.errstate(over="ignore"):     # exp overflow in a sigmoid is harmless (σ = 0)
            for l, (biases, p) in enumerate(self.layers):
                if l == 0 and projected is not None:
                    gx = projected
                else:
                    assert x is not None
                    gx = x @ p["weight_ih"].T                    # as StepRunner.project
                    for b in biases:
                        gx += b
                step.prepare_forward(p, gx[None], False)
                step.forward(p, gx, tuple([s[l] for s in states]),
                             tuple([n[l] for n in new]), caches[l], 0)
                x = new[0][l]
        assert x is not None
        return x, tuple(new)


class RNN(Recurrent):
    """Elman RNN stack, equal to ``torch.nn.RNN``: ``h' = φ(x W_ih^T + b_ih + h W_hh^T + b_hh)``.

    ``out, h_n = rnn(x, h0=None, lengths=None)``; ``dx, dh0 = rnn.backward(dout, dh_n=None)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, dtype: Any = np.float64,
                 seed: int | None = None) -> None:
        super().__init__(RNNStep(hidden_size, nonlinearity), input_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype, seed)
        self.nonlinearity = nonlinearity

    # torch's API: an RNN/GRU takes and returns h as one array, where the generic Recurrent
    # (and the LSTM) use a tuple of states, so these signatures narrow the base class's.
    def forward(  # type: ignore[override]
            self, x: np.ndarray, h0: np.ndarray | None = None, lengths: Any = None, *,
            dropout_masks: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``x (T, B, F)`` -> ``out (T, B, D*H)``, ``h_n (L*D, B, H)``; see Recurrent.forward."""
        out, (h_n,) = super().forward(x, (h0,), lengths, dropout_masks=dropout_masks)
        return out, h_n

    def backward(  # type: ignore[override]
            self, dout: np.ndarray | None,
            dh_n: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``dx`` (shape of ``x``) and ``dh0`` (shape of ``h0``)."""
        dx, (dh0,) = super().backward(dout, (dh_n,))
        return dx, dh0


class GRU(RNN):
    """GRU stack, equal to ``torch.nn.GRU`` (reset gate applied to ``h W_hn^T + b_hn``).

    ``out, h_n = gru(x, h0=None, lengths=None)``; ``dx, dh0 = gru.backward(dout, dh_n=None)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: Any = np.float64, seed: int | None = None) -> None:
        Recurrent.__init__(self, GRUStep(hidden_size), input_size, num_layers, bias,
                           batch_first, dropout, bidirectional, dtype, seed)


class LSTM(Recurrent):
    """LSTM stack, equal to ``torch.nn.LSTM``, with the optional projection ``proj_size``.

    ``out, (h_n, c_n) = lstm(x, hx=None, lengths=None)``;
    ``dx, (dh0, dc0) = lstm.backward(dout, (dh_n, dc_n))``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, dtype: Any = np.float64, seed: int | None = None) -> None:
        super().__init__(LSTMStep(hidden_size, proj_size), input_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype, seed)
        self.proj_size = self.step.proj_size if isinstance(self.step, LSTMStep) else 0

    def forward(self, x: np.ndarray, hx: tuple[Any, Any] | None = None, lengths: Any = None, *,
                dropout_masks: Sequence[np.ndarray] | None = None
                ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``x (T, B, F)`` -> ``out (T, B, D*Ho)``, ``(h_n (L*D, B, Ho), c_n (L*D, B, H))``."""
        out, (h_n, c_n) = super().forward(x, hx, lengths, dropout_masks=dropout_masks)
        return out, (h_n, c_n)

    def backward(self, dout: np.ndarray | None,
                 dstates: tuple | None = None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Returns ``dx`` and ``(dh0, dc0)``."""
        dx, (dh0, dc0) = super().backward(dout, dstates)
        return dx, (dh0, dc0)


#: The layer of each cell name, as the tasks' configs name cells (torch.nn's classes have the
#: same names: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``).
LAYERS: dict[str, type[RNN] | type[LSTM]] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
