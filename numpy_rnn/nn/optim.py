"""Optimizers (SGD, Adam, AdamW), gradient-norm clipping and an exponential moving average of the
weights, equal to ``torch.optim`` step for step.

An optimizer holds a module's two dicts, ``params`` and ``grads`` (name -> ndarray, same keys),
and updates the parameter arrays in place; it never rebinds them, so the module keeps seeing the
new values. A gradient that is missing from ``grads`` or set to ``None`` is skipped completely,
as torch skips a parameter whose ``.grad`` is ``None``: no state is created or advanced and no
weight decay is applied. A gradient of zeros is not skipped.

The arithmetic follows torch's default CPU path (the per-parameter for-loop; torch uses it on
CPU, and neither the foreach nor the fused kernels) in torch's order of operations, so float64
results agree with torch to a few ulps per step. ``lr`` is a plain settable attribute (validated
on assignment), for learning-rate decay between steps. :class:`ExponentialMovingAverage` follows
``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["SGD", "Adam", "AdamW", "ExponentialMovingAverage", "Optimizer",
           "clip_grad_norm"]


def _check_number(name: str, value: Any) -> float:
    """``value`` as a float; bools, non-numbers and NaN are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def _check_lr(lr: Any) -> float:
    lr = _check_number("lr", lr)
    if lr < 0:
        raise ValueError(f"Invalid learning rate lr={lr}: must be >= 0")
    return lr


def _check_weight_decay(weight_decay: Any) -> float:
    weight_decay = _check_number("weight_decay", weight_decay)
    if weight_decay < 0:
        raise ValueError(f"Invalid weight_decay={weight_decay}: must be >= 0")
    return weight_decay


def _check_params(params: Any, who: str, not_a_mapping: str) -> None:
    """``TypeError`` (``not_a_mapping``) unless ``params`` is a non-empty mapping (else a
    ``ValueError`` naming ``who``) of float32/float64 arrays (else a ``TypeError`` naming the
    parameter)."""
    if not isinstance(params, Mapping):
        raise TypeError(not_a_mapping)
    if len(params) == 0:
        raise ValueError(f"{who} got an empty params mapping")
    for name, p in params.items():
        if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
            raise TypeError(f"param {name!r} must be a float32 or float64 ndarray, got "
                            f"{getattr(p, 'dtype', type(p).__name__)}")


class Optimizer:
    """Common machinery: the held dicts, per-parameter ``state``, ``zero_grad``, state dicts.

    Subclasses define ``_STATE_KEYS`` (the arrays and counters kept per parameter),
    ``_validate_hyperparams`` and ``_update``.
    """

    _STATE_KEYS: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, np.ndarray],
                 grads: Mapping[str, np.ndarray | None]) -> None:
        if not isinstance(grads, Mapping):
            raise TypeError("params and grads must be mappings of name -> ndarray (a Module's "
                            ".params and .grads)")
        _check_params(params, "optimizer", "params and grads must be mappings of name -> "
                                           "ndarray (a Module's .params and .grads)")
        for name, p in params.items():
            if not p.flags.writeable:
                raise ValueError(f"param {name!r} is read-only; the optimizer updates it in place")
        self.params = params
        self.grads = grads
        # Parameter names are fixed at construction, as torch fixes its param groups.
        self._names: tuple[str, ...] = tuple(params)
        self._check_grad_keys()
        # name -> per-parameter state, created lazily at a parameter's first step with a gradient.
        self.state: dict[str, dict[str, Any]] = {}

    # -- hyperparameters -------------------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The learning rate; may be changed between steps (learning-rate decay)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _check_lr(value)

    @property
    def hyperparams(self) -> dict[str, Any]:
        """The hyperparameters as plain Python values, under the constructor's names."""
        raise NotImplementedError

    @staticmethod
    def _validate_hyperparams(h: Mapping[str, Any]) -> dict[str, Any]:
        """Check every hyperparameter; return them normalised (floats, tuples, bools)."""
        raise NotImplementedError

    def _set_hyperparams(self, h: Mapping[str, Any]) -> None:
        for k, v in h.items():
            setattr(self, k, v)

    # -- gradients -------------------------------------------------------------------------------

    def _check_grad_keys(self) -> None:
        extra = [k for k in self.grads if k not in self.params]
        if extra:
            raise ValueError(f"grads has keys that are not parameters: {extra}")

    def _gradients(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(name, param, grad)`` for every parameter whose gradient is present.

        Everything is checked before anything is updated, so a bad gradient leaves the
        parameters and the state untouched.
        """
        self._check_grad_keys()
        out = []
        for name in self._names:
            if name not in self.params:
                raise KeyError(f"parameter {name!r} was removed from params after the optimizer "
                               "was built")
            p = self.params[name]
            g = self.grads.get(name)
            if g is None:
                continue
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grad {name!r} must be an ndarray or None, got "
                                f"{type(g).__name__}")
            if g.shape != p.shape:
                raise ValueError(f"grad {name!r} has shape {g.shape}, param has {p.shape}")
            if g.dtype != p.dtype:
                raise TypeError(f"grad {name!r} has dtype {g.dtype.name}, param has "
                                f"{p.dtype.name}")
            out.append((name, p, g))
        return out

    def zero_grad(self) -> None:
        """Set every present gradient to zero, in place (``None`` entries stay ``None``)."""
        for g in self.grads.values():
            if g is not None:
                g.fill(0)

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        for name, p, g in self._gradients():
            self._update(name, p, g)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    # -- state dicts -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A deep copy of the optimizer: ``{"optimizer", "hyperparams", "state"}``.

        ``state`` maps parameter name -> {state key -> int step count or ndarray copy}; only
        parameters that have taken a step appear, as in torch.
        """
        return {
            "optimizer": type(self).__name__,
            "hyperparams": self.hyperparams,
            "state": {name: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                             for k, v in st.items()}
                      for name, st in self.state.items()},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore hyperparameters (``lr`` included, as torch does) and per-parameter state.

        Everything is validated first (keys, optimizer type, hyperparameter values, state keys,
        array shapes, step counts); on any problem a ``KeyError``/``ValueError``/``TypeError``
        explains it and nothing is changed. Arrays are copied and cast to the parameter's dtype.
        """
        prefix = "load_state_dict refused (nothing was changed): "
        if not isinstance(state_dict, Mapping):
            raise TypeError(prefix + f"expected a mapping, got {type(state_dict).__name__}")
        want = {"optimizer", "hyperparams", "state"}
        if set(state_dict) != want:
            raise KeyError(prefix + f"expected keys {sorted(want)}, got {sorted(state_dict)}")
        if state_dict["optimizer"] != type(self).__name__:
            raise ValueError(prefix + f"state is for {state_dict['optimizer']!r}, this is "
                             f"{type(self).__name__!r}")
        hyper = state_dict["hyperparams"]
        if not isinstance(hyper, Mapping) or set(hyper) != set(self.hyperparams):
            got = sorted(hyper) if isinstance(hyper, Mapping) else type(hyper).__name__
            raise KeyError(prefix + f"hyperparams must have keys {sorted(self.hyperparams)}, "
                           f"got {got}")
        try:
            hyper = self._validate_hyperparams(hyper)
        except (TypeError, ValueError) as exc:
            raise type(exc)(prefix + str(exc)) from exc
        states = state_dict["state"]
        if not isinstance(states, Mapping):
            raise TypeError(prefix + f"state must be a mapping, got {type(states).__name__}")
        unknown = [k for k in states if k not in self._names]
        if unknown:
            raise KeyError(prefix + f"state for unknown parameters: {unknown}")
        new_state: dict[str, dict[str, Any]] = {}
        for name, st in states.items():
            p = self.params[name]
            if not isinstance(st, Mapping) or set(st) != set(self._STATE_KEYS):
                got = sorted(st) if isinstance(st, Mapping) else type(st).__name__
                raise KeyError(prefix + f"state[{name!r}] must have keys "
                               f"{sorted(self._STATE_KEYS)}, got {got}")
            entry: dict[str, Any] = {}
            for k, v in st.items():
                if k == "step":
                    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) \
                            or v < 1:
                        raise ValueError(prefix + f"state[{name!r}]['step'] must be a positive "
                                         f"int, got {v!r}")
                    entry[k] = int(v)
                    continue
                a = np.asarray(v)
                if a.dtype.kind not in "fiu":
                    raise TypeError(prefix + f"state[{name!r}][{k!r}] has non-real dtype "
                                    f"{a.dtype.name}")
                if a.shape != p.shape:
                    raise ValueError(prefix + f"state[{name!r}][{k!r}] has shape {a.shape}, "
                                     f"param has {p.shape}")
                entry[k] = np.array(a, dtype=p.dtype, copy=True)
            new_state[name] = entry
        self._set_hyperparams(hyper)
        self.state = new_state

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items())
        return f"{type(self).__name__}({len(self._names)} params, {args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, as ``torch.optim.SGD``.

    For each parameter θ with gradient g (``wd`` = weight_decay, μ = momentum, τ = dampening)::

        g ← g + wd·θ                           if wd ≠ 0
        b ← g  (first step)  |  b ← μ·b + (1−τ)·g   if μ ≠ 0
        g ← g + μ·b  (nesterov)  |  g ← b           if μ ≠ 0
        θ ← θ − lr·g

    The momentum buffer b is taken as g on its first step, without dampening, as torch does.
    """

    _STATE_KEYS = ("momentum_buffer",)
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float

    def __init__(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray | None],
                 lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(params, grads)
        self._set_hyperparams(self._validate_hyperparams(dict(
            lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
            weight_decay=weight_decay)))

    @property
    def hyperparams(self) -> dict[str, Any]:
        return dict(lr=self.lr, momentum=self.momentum, dampening=self.dampening,
                    nesterov=self.nesterov, weight_decay=self.weight_decay)

    @staticmethod
    def _validate_hyperparams(h: Mapping[str, Any]) -> dict[str, Any]:
        lr = _check_lr(h["lr"])
        momentum = _check_number("momentum", h["momentum"])
        if momentum < 0:
            raise ValueError(f"Invalid momentum={momentum}: must be >= 0")
        dampening = _check_number("dampening", h["dampening"])
        nesterov = h["nesterov"]
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {nesterov!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires momentum > 0 and dampening = 0 "
                             f"(got momentum={momentum}, dampening={dampening})")
        return dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=bool(nesterov),
                    weight_decay=_check_weight_decay(h["weight_decay"]))

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        if self.weight_decay != 0:
            g = g + self.weight_decay * p  # a new array: the caller's gradient is not changed
        if self.momentum != 0:
            st = self.state.get(name)
            if st is None:
                buf = g.copy()
                self.state[name] = {"momentum_buffer": buf}
            else:
                buf = st["momentum_buffer"]
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (``amsgrad=False``, ``maximize=False``).

    Each parameter θ keeps a step count t and moments m, v (zero at the start). At each step
    with gradient g (``wd`` = weight_decay, β1, β2 = betas, ε = eps)::

        t ← t + 1
        g ← g + wd·θ                                    if wd ≠ 0   (L2 term, enters m and v)
        m ← m + (1−β1)·(g − m)                          (torch's lerp; = β1·m + (1−β1)·g)
        v ← β2·v + (1−β2)·g·g
        θ ← θ − (lr / (1−β1^t)) · m / (sqrt(v) / sqrt(1−β2^t) + ε)

    ε is added after bias-correcting sqrt(v). For ``1−β1 ≥ 0.5`` torch's lerp switches to the
    form ``m ← g − (g − m)·β1``, reproduced here.
    """

    _STATE_KEYS = ("step", "exp_avg", "exp_avg_sq")
    _DECOUPLED = False
    betas: tuple[float, float]
    eps: float
    weight_decay: float

    def __init__(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray | None],
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, grads)
        self._set_hyperparams(self._validate_hyperparams(dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)))

    @property
    def hyperparams(self) -> dict[str, Any]:
        return dict(lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)

    @staticmethod
    def _validate_hyperparams(h: Mapping[str, Any]) -> dict[str, Any]:
        lr = _check_lr(h["lr"])
        betas = h["betas"]
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Iterable):
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        betas = tuple(betas)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair of floats, got {len(betas)} values")
        b1, b2 = (_check_number(f"betas[{i}]", b) for i, b in enumerate(betas))
        if not 0.0 <= b1 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {b1} (must be in [0, 1))")
        if not 0.0 <= b2 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {b2} (must be in [0, 1))")
        eps = _check_number("eps", h["eps"])
        if eps < 0:
            raise ValueError(f"Invalid eps={eps}: must be >= 0")
        return dict(lr=lr, betas=(b1, b2), eps=eps,
                    weight_decay=_check_weight_decay(h["weight_decay"]))

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        st = self.state.get(name)
        if st is None:
            st = {"step": 0, "exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
            self.state[name] = st
        st["step"] += 1
        t = st["step"]
        m, v = st["exp_avg"], st["exp_avg_sq"]
        beta1, beta2 = self.betas
        lr, wd = self.lr, self.weight_decay

        if wd != 0:
            if self._DECOUPLED:
                p *= 1 - lr * wd
            else:
                g = g + wd * p  # a new array: the caller's gradient is not changed

        # torch's lerp(m, g, w) with w = 1 − β1, in its two branches, w in the param's dtype.
        w = p.dtype.type(1 - beta1)
        if abs(w) < 0.5:
            m += w * (g - m)
        else:
            m[...] = g + (w - 1) * (g - m)
        v *= beta2
        v += (1 - beta2) * g * g

        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        step_size = lr / bias_correction1
        denom = np.sqrt(v)
        denom /= bias_correction2 ** 0.5
        denom += self.eps
        p += (-step_size * m) / denom


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay (default 1e-2).

    The decay shrinks the parameter before the Adam update and never enters m or v::

        θ ← θ·(1 − lr·wd),   then the Adam step of ``Adam`` with wd = 0.
    """

    _DECOUPLED = True

    def __init__(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray | None],
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, grads, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def clip_grad_norm(grads: Mapping[str, np.ndarray | None] | Iterable[np.ndarray | None]
                   | np.ndarray, max_norm: float, norm_type: float = 2.0) -> float:
    """Scale all gradients in place so their global norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: with ``‖·‖_p`` the p-norm (``norm_type``; ``inf`` is
    the largest absolute value)::

        total = ‖(‖g_1‖_p, ‖g_2‖_p, ...)‖_p        (the norm of all gradients concatenated)
        coef  = min(max_norm / (total + 1e-6), 1)
        g_i  ← coef · g_i                           for every gradient, even when coef = 1

    ``grads``: a mapping name -> array (a Module's ``.grads``; the arrays are modified, the
    mapping is not), an iterable of arrays, or one array. ``None`` entries are ignored. Returns
    ``total``, the norm before clipping, as a Python float (0.0 when there are no gradients).
    A non-finite total is not an error (as torch's default): the gradients become NaN.
    """
    max_norm = _check_number("max_norm", max_norm)
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    norm_type = _check_number("norm_type", norm_type)
    if not norm_type > 0:
        raise ValueError(f"norm_type must be > 0 or inf, got {norm_type}")
    given: list[np.ndarray | None]
    if isinstance(grads, np.ndarray):
        given = [grads]
    elif isinstance(grads, Mapping):
        given = list(grads.values())
    elif isinstance(grads, Iterable):
        given = list(grads)
    else:
        raise TypeError(f"grads must be a mapping, an iterable of arrays or an array, got "
                        f"{type(grads).__name__}")
    arrays = [g for g in given if g is not None]
    for g in arrays:
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            raise TypeError("every gradient must be a floating ndarray or None, got "
                            f"{getattr(g, 'dtype', type(g).__name__)}")
    if not arrays:
        return 0.0

    def norm(a: np.ndarray) -> float:
        a = a.ravel()
        if a.size == 0:
            return 0.0
        if math.isinf(norm_type):
            return float(np.max(np.abs(a)))
        if norm_type == 2.0:
            return float(np.sqrt(np.dot(a, a)))
        return float(np.sum(np.abs(a) ** norm_type) ** (1.0 / norm_type))

    total = norm(np.array([norm(g.astype(np.float64, copy=False)) for g in arrays]))
    coef = min(max_norm / (total + 1e-6), 1.0)
    for g in arrays:
        g *= coef
    return total


def _check_decay(decay: Any) -> float:
    decay = _check_number("decay", decay)
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"Invalid decay={decay}: must be in [0, 1) (the average keeps this "
                         "fraction of itself at each update)")
    return decay


class ExponentialMovingAverage:
    """An exponential moving average of a module's weights, as torch's
    ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))`` with
    ``update_parameters(model)`` called after every optimizer step.

    For each parameter θ, with its average θ̄ (``averaged[name]``), ``w = 1 − decay`` and
    n = ``n_averaged`` (the number of updates so far)::

        θ̄ ← θ                          at the first update (n = 0): a copy
        θ̄ ← θ̄ + w·(θ − θ̄)              later, if |w| < 0.5
        θ̄ ← θ + (w − 1)·(θ − θ̄)        later, if |w| >= 0.5
        n ← n + 1

    both later forms being ``decay·θ̄ + (1 − decay)·θ``. Before the first update θ̄ holds the
    weights at construction (torch deep-copies the model).

    What torch computes: ``get_ema_multi_avg_fn`` calls ``torch._foreach_lerp_(averaged,
    weights, 1 - decay)``, a lerp with the Python float ``1 − decay`` as its weight, cast to the
    parameter's dtype. Torch's lerp has the two branches above, and its vectorised CPU kernels
    (AVX2, AVX512) evaluate each as one fused multiply-add: ``θ − θ̄`` is rounded, then
    ``w·(θ − θ̄) + θ̄`` (or ``(w − 1)·(θ − θ̄) + θ``) is rounded once. NumPy has no fused
    multiply-add, so here the product and the sum are rounded separately: an average may be an
    ulp away from torch's after an update (a fused one built from float64 would cost some 20
    times as much, 50 ms per step for a 3-million-weight model, for no gain in what the average
    is worth). The update is three passes over the weights, in place, with one scratch buffer
    per parameter allocated at the first update (about 1 ms per million float32 weights).

    ``params`` is a module's ``params`` dict (name -> float32/float64 ndarray), read at every
    :meth:`update`; its names are fixed at construction. ``averaged`` (name -> array of the
    parameter's shape and dtype) is allocated once and updated in place. Memory: one copy of
    the weights, and a second one (the model's weights, kept aside) from the first
    :meth:`swapped`.
    """

    def __init__(self, params: Mapping[str, np.ndarray], decay: float = 0.999) -> None:
        _check_params(params, "ExponentialMovingAverage",
                      "params must be a mapping of name -> ndarray (a Module's .params), got "
                      f"{type(params).__name__}")
        self.params = params
        self._decay = _check_decay(decay)
        self.averaged: dict[str, np.ndarray] = {name: p.copy() for name, p in params.items()}
        self.n_averaged = 0
        self._kept: dict[str, np.ndarray] = {}   # the model's weights during swapped()
        self._diff: dict[str, np.ndarray] = {}   # θ − θ̄ of each update, reused
        self._swapped = False

    @property
    def decay(self) -> float:
        """The fraction of the average kept at each update, in [0, 1); fixed at construction
        (``load_state_dict`` restores it)."""
        return self._decay

    def _current(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(name, param, average)`` for every name, each param checked against its average."""
        out = []
        for name, avg in self.averaged.items():
            if name not in self.params:
                raise KeyError(f"parameter {name!r} was removed from params after the "
                               "ExponentialMovingAverage was built")
            p = self.params[name]
            if not isinstance(p, np.ndarray) or p.shape != avg.shape or p.dtype != avg.dtype:
                got = (f"{p.dtype.name} {p.shape}" if isinstance(p, np.ndarray)
                       else type(p).__name__)
                raise ValueError(f"param {name!r} is now {got}, its average is "
                                 f"{avg.dtype.name} {avg.shape}")
            out.append((name, p, avg))
        return out

    def update(self) -> None:
        """Move every average toward its parameter's current value (call after each step)."""
        if self._swapped:
            raise RuntimeError("update() inside swapped(): the params hold the averages now, "
                               "so this would average the averages; update after the block")
        current = self._current()
        if self.n_averaged == 0:
            for _, p, avg in current:
                np.copyto(avg, p)
        else:
            for name, p, avg in current:
                w = p.dtype.type(1 - self._decay)       # torch casts the lerp weight to the dtype
                coef, base = (w, avg) if abs(w) < 0.5 else (w - 1, p)
                if name not in self._diff:
                    self._diff[name] = np.empty_like(p)
                diff = self._diff[name]
                np.subtract(p, avg, out=diff)           # rounded, as torch does
                diff *= coef
                np.add(base, diff, out=avg)
        self.n_averaged += 1

    @contextmanager
    def swapped(self) -> Iterator[Mapping[str, np.ndarray]]:
        """Within the ``with`` block the params hold the averaged weights (to validate or sample
        with them); on leaving it, by an exception too, the model's own weights are put back
        bit for bit. Yields ``params``. The arrays are copied into, never rebound, so a module
        holding them sees the swap. :meth:`update` is refused inside the block.
        """
        if self._swapped:
            raise RuntimeError("swapped() is already active; blocks do not nest")
        current = self._current()
        for name, p, _ in current:
            if not p.flags.writeable:
                raise ValueError(f"param {name!r} is read-only; swapped() writes the averages "
                                 "into it")
        for name, p, avg in current:
            if name not in self._kept:                 # allocated once, reused by every swap
                self._kept[name] = np.empty_like(p)
            np.copyto(self._kept[name], p)
            np.copyto(p, avg)
        self._swapped = True
        try:
            yield self.params
        finally:
            for name, p, _ in current:
                np.copyto(p, self._kept[name])
            self._swapped = False

    def state_dict(self) -> dict[str, Any]:
        """A deep copy: ``{"decay": float, "n_averaged": int, "averaged": {name: ndarray}}``."""
        return {"decay": self._decay, "n_averaged": self.n_averaged,
                "averaged": {name: avg.copy() for name, avg in self.averaged.items()}}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore ``decay``, ``n_averaged`` and the averages (copied into the existing arrays,
        cast to each parameter's dtype), so a resumed run continues exactly.

        Everything is validated first; on any problem a ``KeyError``/``ValueError``/``TypeError``
        explains it and nothing is changed.
        """
        prefix = "load_state_dict refused (nothing was changed): "
        if not isinstance(state_dict, Mapping):
            raise TypeError(prefix + f"expected a mapping, got {type(state_dict).__name__}")
        want = {"decay", "n_averaged", "averaged"}
        if set(state_dict) != want:
            raise KeyError(prefix + f"expected keys {sorted(want)}, got {sorted(state_dict)}")
        try:
            decay = _check_decay(state_dict["decay"])
        except (TypeError, ValueError) as exc:
            raise type(exc)(prefix + str(exc)) from exc
        n = state_dict["n_averaged"]
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(prefix + f"n_averaged must be an int >= 0, got {n!r}")
        averaged = state_dict["averaged"]
        if not isinstance(averaged, Mapping) or set(averaged) != set(self.averaged):
            got = sorted(averaged) if isinstance(averaged, Mapping) else type(averaged).__name__
            raise KeyError(prefix + f"averaged must have keys {sorted(self.averaged)}, got {got}")
        arrays = {}
        for name, avg in self.averaged.items():
            a = np.asarray(averaged[name])
            if a.dtype.kind not in "fiu":
                raise TypeError(prefix + f"averaged[{name!r}] has non-real dtype {a.dtype.name}")
            if a.shape != avg.shape:
                raise ValueError(prefix + f"averaged[{name!r}] has shape {a.shape}, param has "
                                 f"{avg.shape}")
            arrays[name] = a
        self._decay = decay
        self.n_averaged = int(n)
        for name, a in arrays.items():
            np.copyto(self.averaged[name], a, casting="unsafe")

    def __repr__(self) -> str:
        return (f"ExponentialMovingAverage({len(self.averaged)} params, decay={self._decay!r}, "
                f"n_averaged={self.n_averaged})")
