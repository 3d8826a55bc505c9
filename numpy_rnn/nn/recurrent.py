"""Recurrent layers: a ``Step`` (the gate math of one time step) run over time, depth, directions.

The layers here know nothing about gates. They

* project the input of all ``T`` time steps with one matrix product before the time loop,
* run the step over ``t = 0 .. T-1`` (and ``T-1 .. 0`` for the reverse direction),
* freeze the state of sequences that have ended (``lengths``), like torch's packed sequences,
* stack layers, concatenate directions and apply dropout between layers,
* and in backward run the steps back in time, then turn the per-step gate gradients into the
  weight gradients and the input gradient with single matrix products after the loop.

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
# One direction of one layer over time. Shared with the cells (which are runs of T = 1).
# --------------------------------------------------------------------------------------------

@dataclass
class DirectionRun:
    """Everything one direction of one layer keeps from forward for backward.

    ``states[j]`` is ``(T+1, B, size_j)``. The forward direction reads ``states[j][t]`` and writes
    ``states[j][t+1]`` at time ``t``; the reverse direction reads ``states[j][t+1]`` and writes
    ``states[j][t]``. Either way ``prev`` and ``new`` are contiguous ``(T, B, size)`` slices.
    """

    x: np.ndarray                 # (T, B, F) the input the direction read
    states: tuple[np.ndarray, ...]
    cache: Any
    reverse: bool
    valid: np.ndarray | None      # (T, B, 1) bool, True where t < length (not a dropout mask)

    def prev(self, j: int) -> np.ndarray:
        """The state each step read, ``(T, B, size_j)``, indexed by time."""
        return self.states[j][1:] if self.reverse else self.states[j][:-1]

    def new(self, j: int) -> np.ndarray:
        """The state each step wrote, ``(T, B, size_j)``, indexed by time."""
        return self.states[j][:-1] if self.reverse else self.states[j][1:]

    def final(self) -> State:
        """The state after the direction's last step, ``(B, size)`` each."""
        return tuple(s[0] if self.reverse else s[-1] for s in self.states)


def run_forward(step: Step, p: dict, x: np.ndarray, init: State, valid: np.ndarray | None,
                reverse: bool) -> DirectionRun:
    """Run ``step`` over the time steps of ``x (T, B, F)`` from the states ``init`` ((B, size)).

    Where ``valid[t, b]`` is False (the sequence has ended, or in the reverse direction has not
    started yet) the state is carried unchanged, which is how torch runs packed sequences.
    """
    T, B, _ = x.shape
    dtype = x.dtype
    # Input projection of every time step in one matrix product: gx = x W_ih^T + b_ih.
    gx = x.reshape(T * B, x.shape[2]) @ p["weight_ih"].T
    if p["bias_ih"] is not None:
        gx += p["bias_ih"]
    gx = gx.reshape(T, B, gx.shape[1])
    p = dict(p)
    if step.shares_gate_grads and p["bias_hh"] is not None:
        # A cell that only ever uses gx + gh sees b_hh the same way at every step: add it to
        # gx once for all T steps instead of once per step.
        gx += p["bias_hh"]
        p["bias_hh"] = None
    # Every step multiplies by W_hh^T. OpenBLAS is faster with a contiguous copy, which pays for
    # itself over a long sequence but not for the one-step calls of sampling and cells.
    w_hh_t = p["weight_hh"].T
    own_copy = T >= 16
    p["weight_hh_T"] = np.ascontiguousarray(w_hh_t) if own_copy else w_hh_t
    step.prepare_forward(p, gx, own_copy)
    states = tuple(np.empty((T + 1, B, n), dtype) for n in step.state_sizes())
    first = T if reverse else 0   # slot of the initial state
    for s, s0 in zip(states, init):
        s[first] = s0
    run = DirectionRun(x=x, states=states, cache=step.new_cache(T, B, dtype), reverse=reverse,
                       valid=valid)
    cache, forward = run.cache, step.forward
    # The states each step reads and writes, as tuples of (B, size) views, built once per call.
    prevs = list(zip(*(run.prev(j) for j in range(len(states)))))
    news = list(zip(*(run.new(j) for j in range(len(states)))))
    with np.errstate(over="ignore"):  # exp(-a) -> inf in sigmoid is harmless: σ = 0 exactly
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            forward(p, gx[t], prevs[t], news[t], cache, t)
            if valid is not None:                 # ended sequences keep their state
                keep = ~valid[t]
                for sn, sp in zip(news[t], prevs[t]):
                    np.copyto(sn, sp, where=keep)
    return run


def run_backward(step: Step, p: dict, g: dict, run: DirectionRun, dout: np.ndarray | None,
                 dfinal: State) -> tuple[np.ndarray, State]:
    """Backpropagate one direction through time.

    ``dout (T, B, Ho)`` is the gradient w.r.t. the direction's outputs (None for none) and
    ``dfinal`` the gradients w.r.t. its final states. Adds the parameter gradients into ``g``
    (short names) and returns ``(dx (T, B, F), dinit)``.
    """
    x, valid = run.x, run.valid
    T, B, F = x.shape
    GH = p["weight_ih"].shape[0]
    dgx = np.empty((T, B, GH), x.dtype)
    # For RNN and LSTM dgh == dgx, so one buffer serves both; the GRU needs its own.
    dgh = dgx if step.shares_gate_grads else np.empty_like(dgx)
    dstate = tuple(np.array(d, copy=True) for d in dfinal)
    n_states = len(run.states)
    prev_all = tuple(run.prev(j) for j in range(n_states))
    new_all = tuple(run.new(j) for j in range(n_states))
    cache, backward = step.prepare_backward(p, run.cache, prev_all, new_all, dgx), step.backward
    prevs, news = list(zip(*prev_all)), list(zip(*new_all))
    for t in (range(T) if run.reverse else range(T - 1, -1, -1)):
        # The gradient reaching h_t is the sum of what comes from the output at t and what comes
        # back from step t+1 (already in dstate[0]); c_t's comes from step t+1 alone.
        dh = dstate[0] + dout[t] if dout is not None else dstate[0]
        dnew = (dh,) + dstate[1:]
        if valid is None:
            dstate = backward(p, dnew, prevs[t], news[t], cache, t, dgx[t], dgh[t])
        else:
            # Every gradient of a step is linear in dnew, so zeroing the rows of ended sequences
            # makes their contribution to dgx, dgh and the weights exactly 0; their state
            # gradient passes through the step unchanged, as their state did.
            m = valid[t]
            dpass = backward(p, tuple(d * m for d in dnew), prevs[t], news[t], cache, t,
                             dgx[t], dgh[t])
            dstate = tuple(np.where(m, dp, dn) for dp, dn in zip(dpass, dnew))
    # Weight gradients of all time steps, one matrix product each.
    dgx2 = dgx.reshape(T * B, GH)
    dgh2 = dgh.reshape(T * B, GH)
    h_prev = run.prev(0)
    g["weight_ih"] += dgx2.T @ x.reshape(T * B, F)
    g["weight_hh"] += dgh2.T @ h_prev.reshape(T * B, h_prev.shape[2])
    if p["bias_ih"] is not None:
        db_ih = dgx2.sum(axis=0)
        g["bias_ih"] += db_ih
        g["bias_hh"] += db_ih if dgh is dgx else dgh2.sum(axis=0)
    step.finish_backward(p, g, run.cache, dgx, dgh, prev_all, new_all)
    dx = (dgx2 @ p["weight_ih"]).reshape(T, B, F)
    return dx, dstate


# --------------------------------------------------------------------------------------------
# The multi-layer, bidirectional layer
# --------------------------------------------------------------------------------------------

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

    # -- helpers ---------------------------------------------------------------------------

    def _step_params(self, k: int) -> Params:
        keys = self._keys[k]
        p: Params = {short: self.params[full] for short, full in keys.items()}
        p.setdefault("bias_ih", None)
        p.setdefault("bias_hh", None)
        return p

    def _step_grads(self, k: int) -> dict[str, np.ndarray]:
        return {short: self.grads[full] for short, full in self._keys[k].items()}

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
                run = run_forward(self.step, self._step_params(k), layer_in,
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

    def _layer_output(self, dirs: list[DirectionRun], valid: np.ndarray | None) -> np.ndarray:
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
                dx_d, d0 = run_backward(self.step, self._step_params(k), self._step_grads(k),
                                        run, dy_d, tuple(f[k] for f in dfin))
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
