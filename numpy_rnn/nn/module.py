"""The parameter contract every numpy_rnn layer, cell and model follows.

A module owns two dicts with the same keys:

* ``params``: name -> ndarray, torch's own names and shapes (``weight_ih_l0``, ``bias_hh``, ...),
* ``grads``:  name -> ndarray of the same shape and dtype; ``backward`` ADDS into it, as torch
  accumulates ``.grad``, and ``zero_grad()`` clears it.

The arrays are updated in place and never rebound (``load_state_dict`` and the optimizers write
into them), so a model can expose its children's arrays under prefixed names and an optimizer
can hold on to the dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

FloatDType = type[np.floating]

_FLOAT_DTYPES: dict[np.dtype[Any], FloatDType] = {np.dtype(np.float32): np.float32,
                                                   np.dtype(np.float64): np.float64}


def resolve_dtype(dtype: Any) -> FloatDType:
    """Return ``np.float32`` or ``np.float64`` for a NumPy dtype, a type or its name.

    Raises ``TypeError`` for anything else (integers, complex, float16, unknown names).
    """
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt.name}")
    return _FLOAT_DTYPES[dt]


class ShapeError(ValueError, RuntimeError):
    """An array whose shape does not fit the module (features, batch, states, lengths, T = 0).

    A ``ValueError``, and also a ``RuntimeError``, which is what torch raises for the same
    mistakes, so code written against ``torch.nn`` catches it unchanged.
    """


class DTypeError(TypeError, ValueError):
    """An array of another dtype than the module's (nothing is ever cast silently).

    A ``TypeError``, and also a ``ValueError``, which is what torch raises for an input whose
    dtype does not match the weights.
    """


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a Python ``bool``; raise ``TypeError`` naming ``name`` otherwise.

    As torch does for ``bias`` and ``batch_first``: ``0``, ``1``, ``"False"``, ``None`` and NumPy
    bools are refused rather than read with ``bool()`` (``bool("False")`` is True).
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} should be of type bool, got: {type(value).__name__} "
                        f"({value!r})")
    return value


def check_size(name: str, value: Any) -> int:
    """Return ``value`` as an int if it is an integer >= 1.

    Raises ``TypeError`` for anything that is not an integer (floats such as ``2.0``, strings,
    None, bools) and ``ValueError`` for integers below 1, as torch does for its layer sizes.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__} "
                        f"({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be greater than zero, got {value}")
    return int(value)


def check_lengths(lengths: Any, T: int, B: int) -> np.ndarray:
    """``lengths`` as an int64 ``(B,)`` array of valid lengths in ``[1, T]``, one per sequence.

    Raises ``TypeError`` for non-integers and :class:`ShapeError` for the wrong shape or a length
    outside ``[1, T]`` (torch's packed sequences refuse the same).
    """
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu" and arr.size:
        raise TypeError(f"lengths must be integers, got dtype {arr.dtype.name}")
    if arr.shape != (B,):
        raise ShapeError(f"lengths must have shape ({B},) (one per sequence), got {arr.shape}")
    if arr.size and (arr.min() < 1 or arr.max() > T):
        raise ShapeError(f"lengths must lie in [1, T={T}], got min {arr.min()}, "
                         f"max {arr.max()}")
    return arr.astype(np.int64)


def check_array(name: str, a: Any, dtype: FloatDType, ndims: tuple[int, ...]) -> np.ndarray:
    """Check that ``a`` is a real floating array of exactly ``dtype`` and one of ``ndims`` ranks.

    Nothing is cast: an fp32 module refuses fp64 input (and vice versa) instead of silently
    converting it, and integer or complex input is refused, each with a :class:`DTypeError`. A
    wrong rank is a :class:`ShapeError`.
    """
    if not isinstance(a, np.ndarray):
        if isinstance(a, (list, tuple)) or np.isscalar(a):
            a = np.asarray(a)
        else:
            raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype.kind != "f":
        raise DTypeError(f"{name} must be a real floating array of dtype "
                         f"{np.dtype(dtype).name}, got dtype {a.dtype.name}")
    if a.dtype != dtype:
        raise DTypeError(f"{name} has dtype {a.dtype.name} but the module's dtype is "
                         f"{np.dtype(dtype).name}; convert it explicitly (x.astype(...))")
    if a.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ShapeError(f"{name} must be {want}, got a {a.ndim}-D array of shape {a.shape}")
    return a


class Module:
    """Base class: ``params``, ``grads``, ``state_dict``, ``load_state_dict``, train/eval mode."""

    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]
    training: bool
    dtype: FloatDType

    def __init__(self, dtype: Any = np.float64) -> None:
        self.dtype = resolve_dtype(dtype)
        self.params = {}
        self.grads = {}
        self.training = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _add_param(self, name: str, value: np.ndarray) -> None:
        """Register a parameter and a zero gradient of the same shape and dtype."""
        self.params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        self.grads[name] = np.zeros_like(self.params[name])

    def zero_grad(self) -> None:
        """Set every gradient to zero, in place."""
        for g in self.grads.values():
            g.fill(0)

    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout active). Returns self."""
        self.training = bool(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (dropout off). Returns self."""
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter, under torch's names."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy ``state`` into the parameters, in place (strict).

        Every key must be present, no key may be extra, and every shape must match. Values are
        converted to the module's dtype (a float64 torch state dict loads into a float32 layer).
        When anything is wrong a ``KeyError``/``ValueError``/``TypeError`` lists all the problems
        and no parameter is changed.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of name -> array, got {type(state).__name__}")
        missing = [k for k in self.params if k not in state]
        unexpected = [k for k in state if k not in self.params]
        problems = []
        if missing:
            problems.append(f"missing keys: {missing}")
        if unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if problems:
            raise KeyError("load_state_dict refused (nothing was changed): " + "; ".join(problems))
        converted = {}
        for k, p in self.params.items():
            v = np.asarray(state[k])
            if v.dtype.kind not in "fiu":
                raise TypeError(f"load_state_dict refused (nothing was changed): {k} has "
                                f"non-real dtype {v.dtype.name}")
            if v.shape != p.shape:
                problems.append(f"{k}: expected shape {p.shape}, got {v.shape}")
                continue
            converted[k] = v.astype(self.dtype, copy=False)
        if problems:
            raise ValueError("load_state_dict refused (nothing was changed): wrong shapes: "
                             + "; ".join(problems))
        for k, v in converted.items():
            np.copyto(self.params[k], v)
