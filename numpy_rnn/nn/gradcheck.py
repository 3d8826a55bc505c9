"""Gradient checking: analytic gradients from ``backward`` against central finite differences.

Two levels:

* :func:`gradcheck` checks any layer or cell that follows numpy_rnn's contract
  (``out = layer(x, hx, **kw)``, ``layer.backward(...)``, ``.params``, ``.grads``), including a
  user's own class, and leaves its parameters and gradients exactly as they were.
* :func:`check_function` checks any function of arrays given its vector-Jacobian product, and
  :func:`numerical_gradient` is the finite-difference primitive under both.

How the check works: a random upstream gradient ``u`` is drawn for every output (the layer output
and its final states), which turns the function into the scalar ``s = Σ <u, output>``. Its exact
gradient is what ``backward(u)`` returns; its numerical gradient is ``(s(θ+ε) - s(θ-ε)) / 2ε`` for
every entry ``θ`` of every input and parameter. Finite differences in float32 are too noisy to mean
anything, so everything runs in float64.

The error of one array is ``max|analytic - numeric| / max(max|analytic|, max|numeric|)`` (the
plain ``max|analytic - numeric|`` when both are below 1e-12): scale-aware, and unlike an
elementwise ratio it is not fooled by entries that are zero up to finite-difference noise.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Structure = Any  # an ndarray, or a (nested) tuple/list of ndarrays


@dataclass
class GradcheckReport:
    """Per-array maximum relative errors of a gradient check.

    Attributes:
        errors: array name (parameter name, ``"x"``, ``"h0"``, ``"c0"``) -> relative error.
        checked: array name -> number of entries compared.
        eps: the finite-difference step.
    """

    errors: dict[str, float]
    checked: dict[str, int] = field(default_factory=dict)
    eps: float = 1e-6

    @property
    def max_error(self) -> float:
        """The largest error over all arrays (0.0 when nothing was checked)."""
        return max(self.errors.values(), default=0.0)

    def ok(self, tol: float = 1e-6) -> bool:
        """True when every error is below ``tol``."""
        return self.max_error < tol

    def __str__(self) -> str:
        width = max([len(k) for k in self.errors] + [5])
        lines = [f"{'array':<{width}}  {'entries':>8}  {'rel. error':>10}",
                 f"{'-' * width}  {'-' * 8}  {'-' * 10}"]
        for name, err in self.errors.items():
            lines.append(f"{name:<{width}}  {self.checked.get(name, 0):>8}  {err:>10.2e}")
        lines.append(f"{'max':<{width}}  {'':>8}  {self.max_error:>10.2e}   (eps={self.eps:g})")
        return "\n".join(lines)


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``max|a - n| / max(max|a|, max|n|)``; the plain ``max|a - n|`` when both are below 1e-12."""
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    if a.shape != n.shape:
        raise ValueError(f"shapes differ: analytic {a.shape}, numeric {n.shape}")
    if a.size == 0:
        return 0.0
    diff = float(np.max(np.abs(a - n)))
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(n))))
    return diff / scale if scale > 1e-12 else diff


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6,
                       indices: np.ndarray | None = None) -> np.ndarray:
    """Central differences ``(f(x+ε) - f(x-ε)) / 2ε`` of the scalar ``f()`` w.r.t. each entry of x.

    ``f`` takes no arguments and reads ``x``, which is perturbed IN PLACE one entry at a time and
    restored exactly. ``indices`` (flat, in C order, like ``x.reshape(-1)``) limits the entries;
    the others are left 0. ``x`` may have any strides (transposed, Fortran order, a slice): it
    keeps its layout, so ``f`` sees the array it was given.

    Returns an array of ``x``'s shape, float64, C-contiguous.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise TypeError("numerical_gradient needs a float64 ndarray (float32 finite differences "
                        "are too noisy to check anything)")
    grad = np.zeros(x.shape, np.float64)
    flat_g = grad.reshape(-1)
    flat_x = x.reshape(-1)
    if np.shares_memory(flat_x, x):
        target, where = flat_x, (lambda i: i)
    else:
        # Not C-contiguous (transposed, Fortran order, strided): reshape made a copy, so write
        # through x itself, at the C-order position of each flat index.
        target, where = x, (lambda i: np.unravel_index(i, x.shape))
    for i in (range(x.size) if indices is None else indices):
        at = where(i)
        orig = target[at]
        target[at] = orig + eps
        f_plus = f()
        target[at] = orig - eps
        f_minus = f()
        target[at] = orig
        flat_g[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def _leaves(s: Structure) -> list[np.ndarray]:
    if isinstance(s, (tuple, list)):
        return [leaf for item in s for leaf in _leaves(item)]
    return [] if s is None else [s]


def _like(s: Structure, rng: np.random.Generator) -> Structure:
    """A random standard-normal array for every array of the structure ``s``."""
    if isinstance(s, (tuple, list)):
        return type(s)(_like(item, rng) for item in s)
    return None if s is None else rng.standard_normal(np.shape(s))


def check_function(fn: Callable[[], Structure], arrays: Mapping[str, np.ndarray],
                   vjp: Callable[[Structure], Mapping[str, np.ndarray]], eps: float = 1e-6,
                   seed: int = 0, max_entries: int | None = None) -> GradcheckReport:
    """Gradient-check any function of float64 arrays.

    Args:
        fn: takes no arguments, reads the arrays of ``arrays`` and returns an ndarray or a
            (nested) tuple of them.
        arrays: name -> float64 array to differentiate with respect to; perturbed in place and
            restored.
        vjp: given upstream gradients ``u`` shaped like ``fn()``'s result, returns name -> the
            analytic gradient of ``Σ <u, fn()>`` w.r.t. that array (the names of ``arrays``).
        max_entries: check at most this many random entries per array (None: all).

    Returns:
        A :class:`GradcheckReport`.
    """
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype != np.float64:
            raise TypeError(f"gradcheck runs in float64, but {name!r} is "
                            f"{getattr(a, 'dtype', type(a).__name__)}; build the layer with "
                            f"dtype=np.float64 (load_state_dict converts weights)")
    rng = np.random.default_rng(seed)
    upstream = _like(fn(), rng)
    up_leaves = _leaves(upstream)

    def scalar() -> float:
        return float(sum(np.sum(u * y, dtype=np.float64)
                         for u, y in zip(up_leaves, _leaves(fn()))))

    analytic = dict(vjp(upstream))
    errors, checked = {}, {}
    for name, a in arrays.items():
        if name not in analytic:
            raise KeyError(f"the vjp returned no gradient for {name!r}")
        idx = None
        if max_entries is not None and a.size > max_entries:
            idx = rng.choice(a.size, size=max_entries, replace=False)
        numeric = numerical_gradient(scalar, a, eps, idx)
        ana = np.asarray(analytic[name], np.float64)
        if ana.shape != a.shape:
            raise ValueError(f"analytic gradient of {name!r} has shape {ana.shape}, "
                             f"expected {a.shape}")
        if idx is not None:
            ana, numeric = ana.reshape(-1)[idx], numeric.reshape(-1)[idx]
        errors[name] = relative_error(ana, numeric)
        checked[name] = a.size if idx is None else len(idx)
    return GradcheckReport(errors=errors, checked=checked, eps=eps)


def gradcheck(layer: Any, x: np.ndarray, hx: Any = None, *, eps: float = 1e-6, seed: int = 0,
              max_entries: int | None = None, **forward_kwargs: Any) -> GradcheckReport:
    """Check ``layer.backward`` against finite differences, for every parameter, ``x`` and ``hx``.

    Works for any object with ``layer(x, hx, **forward_kwargs)`` (``layer(x, **forward_kwargs)``
    when ``hx`` is None), ``layer.backward(...)``, ``.params`` and ``.grads``: numpy_rnn's
    layers, cells and attention pooling, subclasses and wrappers of them, and a user's own class
    that follows the same contract. How ``backward`` receives the upstream gradients is part of
    that contract, declared by the layer's ``backward_unpacks_outputs`` attribute (see
    :func:`backward_unpacks_outputs`): True, one argument per forward output
    (``backward(dout, dstates)``, the layers); False, one argument shaped like forward's result
    (``backward(dh)`` or ``backward((dh, dc))``, the cells). It must return ``(dx, dhx)`` with
    ``dhx`` shaped like ``hx``, or ``dx`` alone for a layer without initial states.

    Args:
        layer: a float64 layer or cell. A layer in training mode with dropout reuses one set of
            dropout masks for every evaluation.
        x: float64 input. hx: initial state: an array (``"h0"``), a tuple ``(h0, c0)``, or None.
        forward_kwargs: passed to every forward call (e.g. ``lengths``).
        max_entries: check at most this many random entries of each array (None: all).

    Returns:
        A :class:`GradcheckReport` with errors for every parameter name, ``"x"``, and ``"h0"`` /
        ``"c0"`` when given. The layer's parameters and gradients are left exactly as they were.
    """
    arrays: dict[str, np.ndarray] = dict(layer.params)
    arrays["x"] = np.array(x, dtype=x.dtype, copy=True) if isinstance(x, np.ndarray) else x
    state_names = []
    if isinstance(hx, tuple):
        state_names = [n for n, s in zip(("h0", "c0"), hx) if s is not None]
        hx = tuple(None if s is None else np.array(s, copy=True) for s in hx)
        for n, s in zip(("h0", "c0"), hx):
            if s is not None:
                arrays[n] = s
    elif hx is not None:
        hx = np.array(hx, copy=True)
        arrays["h0"] = hx
        state_names = ["h0"]
    unpack = backward_unpacks_outputs(layer)

    def fn() -> Structure:
        if hx is None:
            return layer(arrays["x"], **forward_kwargs)
        return layer(arrays["x"], hx, **forward_kwargs)

    def vjp(upstream: Structure) -> dict[str, np.ndarray]:
        layer.zero_grad()
        fn()
        if unpack and isinstance(upstream, tuple):
            result = layer.backward(*upstream)
        else:
            result = layer.backward(upstream)
        dx, dhx = (result, None) if isinstance(result, np.ndarray) else result
        grads = {k: np.array(g, copy=True) for k, g in layer.grads.items()}
        grads["x"] = dx
        dstates = dhx if isinstance(dhx, tuple) else (dhx,)
        for n, d in zip(("h0", "c0"), dstates):
            if n in state_names:
                grads[n] = d
        return grads

    saved_grads = {k: np.array(g, copy=True) for k, g in layer.grads.items()}
    freeze = getattr(layer, "fixed_dropout_masks", None)
    try:
        if freeze is not None:
            with freeze():
                return check_function(fn, arrays, vjp, eps=eps, seed=seed,
                                      max_entries=max_entries)
        return check_function(fn, arrays, vjp, eps=eps, seed=seed, max_entries=max_entries)
    finally:
        for k, g in saved_grads.items():
            np.copyto(layer.grads[k], g)


def backward_unpacks_outputs(layer: Any) -> bool:
    """How ``layer.backward`` takes the gradients of forward's outputs, from what ``layer`` is.

    The layer (or its class) declares it as ``backward_unpacks_outputs``: True for numpy_rnn's
    layers and attention pooling (``backward(dout, dstates)``: one argument per output), False
    for its cells (``backward(dh)``, ``backward((dh, dc))``: one argument shaped like forward's
    result). Subclasses inherit the declaration, and a wrapper that forwards attribute access
    (``__getattr__``) or names the object it wraps as ``__wrapped__`` (``functools.wraps``
    style) answers for the wrapped layer, so ``backward(self, *args, **kwargs)`` wrappers work.

    A user's own class that declares nothing is read the old way, from an explicit signature:
    two or more positional parameters unpack, one does not. When even that cannot tell (the
    signature is ``*args``), a ``TypeError`` asks for the declaration.
    """
    seen = set()
    obj = layer
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        declared = getattr(obj, "backward_unpacks_outputs", None)
        if isinstance(declared, (bool, np.bool_)):
            return bool(declared)
        obj = getattr(obj, "__wrapped__", None)
    try:
        params = inspect.signature(layer.backward).parameters.values()
    except (TypeError, ValueError):
        params = None
    if params is not None and not any(q.kind == q.VAR_POSITIONAL for q in params):
        positional = [q for q in params if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
        return len(positional) >= 2
    raise TypeError(f"gradcheck cannot tell how {type(layer).__name__}.backward takes the "
                    "gradients of forward's outputs: set the class attribute "
                    "backward_unpacks_outputs = True (backward(dout, dstates), like "
                    "numpy_rnn's layers) or False (backward(dstate), like its cells)")
