"""Feed-forward layers around the recurrent core: ``Embedding`` (tokens -> vectors) and ``Linear``.

Both follow ``torch.nn``: the same parameter names, shapes and default initialisation (§6 of the
semantics notes), and gradients that are ADDED into ``.grads`` as torch accumulates ``.grad``.

Contract: one ``forward`` then one ``backward``. ``forward`` keeps what the backward needs (the
input, by reference, so do not modify it in place in between); ``backward`` uses it and then
drops it, so a second ``backward`` without a new ``forward`` raises ``RuntimeError``, like torch
after the graph has been freed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .module import Module, check_array

__all__ = ["Embedding", "Linear"]


def _check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an int, refusing bools, non-integers and values < 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


class Embedding(Module):
    """A lookup table: ``out[..., :] = weight[idx[...], :]``, as ``torch.nn.Embedding``.

    Parameters: ``weight`` (n, d), initialised ``N(0, 1)`` from ``np.random.default_rng(seed)``.

    Memory: the forward keeps only the index array; the backward allocates one (N, d) copy of
    the upstream gradient, sorted by index.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: Any = np.float64,
                 seed: int | None = None) -> None:
        super().__init__(dtype)
        self.num_embeddings = _check_positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = _check_positive_int("embedding_dim", embedding_dim)
        rng = np.random.default_rng(seed)
        self._add_param("weight", rng.standard_normal((self.num_embeddings, self.embedding_dim)))
        self._idx: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"Embedding({self.num_embeddings}, {self.embedding_dim}, "
                f"dtype={np.dtype(self.dtype).name})")

    def _check_indices(self, idx: Any) -> np.ndarray:
        if not isinstance(idx, np.ndarray):
            if isinstance(idx, (list, tuple)) or np.isscalar(idx):
                idx = np.asarray(idx)
            else:
                raise TypeError(f"idx must be an integer NumPy array, got {type(idx).__name__}")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"idx must be an integer array, got dtype {idx.dtype.name}")
        if idx.size:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.num_embeddings:
                bad = lo if lo < 0 else hi
                raise ValueError(f"index {bad} is out of range for an Embedding with "
                                 f"{self.num_embeddings} rows "
                                 f"(valid: 0..{self.num_embeddings - 1})")
        return idx

    def forward(self, idx: np.ndarray) -> np.ndarray:
        """Look up rows: ``idx`` integer array of any shape S -> ``out`` (*S, d), module dtype.

        Raises ``TypeError`` for non-integer ``idx`` and ``ValueError`` for an index outside
        ``[0, num_embeddings)`` (negative indices are refused, as torch does).
        """
        idx = self._check_indices(idx)
        self._idx = idx
        return self.params["weight"][idx]

    def backward(self, dout: np.ndarray) -> None:
        """Scatter-add ``dout`` (*S, d) into ``grads['weight']`` (n, d); returns ``None``.

        ``dW[k] += Σ_{positions p with idx[p] = k} dout[p]``. Indices repeat, so this is a
        scatter-ADD, not an assignment; rows that were never looked up get nothing.
        """
        if self._idx is None:
            raise RuntimeError("Embedding.backward called before forward (or twice after one "
                               "forward); call forward first")
        idx = self._idx
        d = self.embedding_dim
        dout = check_array("dout", dout, self.dtype, (idx.ndim + 1,))
        if dout.shape != idx.shape + (d,):
            raise ValueError(f"dout must have shape {idx.shape + (d,)} (idx shape + (d,)), "
                             f"got {dout.shape}")
        self._idx = None
        flat_idx = idx.reshape(-1)
        if flat_idx.size == 0:
            return None
        dout2 = dout.reshape(-1, d)
        # Sort once and sum each run of equal indices with reduceat: the same sums as
        # np.add.at(dW, idx, dout), vectorised and independent of the vocabulary size.
        order = np.argsort(flat_idx, kind="stable")
        sorted_idx = flat_idx[order]
        starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
        self.grads["weight"][sorted_idx[starts]] += np.add.reduceat(dout2[order], starts, axis=0)
        return None


class Linear(Module):
    """An affine map on the last axis: ``y = x @ W.T + b``, as ``torch.nn.Linear``.

    Parameters: ``weight`` W (out, in) and, when ``bias=True``, ``bias`` b (out,), both
    initialised ``U(-1/sqrt(in), 1/sqrt(in))`` from ``np.random.default_rng(seed)`` (weight drawn
    first). With ``bias=False`` there is no ``bias`` entry at all, as in torch.

    Leading axes are folded into one, so each direction is a single matrix product.
    Memory: the forward keeps a reference to the input (N, in).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = np.float64, seed: int | None = None) -> None:
        super().__init__(dtype)
        self.in_features = _check_positive_int("in_features", in_features)
        self.out_features = _check_positive_int("out_features", out_features)
        self.has_bias = bool(bias)
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(self.in_features)
        self._add_param("weight", rng.uniform(-k, k, (self.out_features, self.in_features)))
        if self.has_bias:
            self._add_param("bias", rng.uniform(-k, k, (self.out_features,)))
        self._x2: np.ndarray | None = None
        self._lead_shape: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return (f"Linear({self.in_features}, {self.out_features}, bias={self.has_bias}, "
                f"dtype={np.dtype(self.dtype).name})")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x`` (..., in) -> ``y = x @ W.T + b`` (..., out), in the module's dtype.

        Raises ``TypeError`` when ``x`` is not a floating array of the module's dtype (nothing is
        cast) and ``ValueError`` when it is 0-D or its last axis is not ``in_features``.
        """
        x = check_array("x", x, self.dtype, (np.ndim(x),))
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        y2 = x2 @ self.params["weight"].T
        if self.has_bias:
            y2 += self.params["bias"]
        self._x2, self._lead_shape = x2, lead
        return y2.reshape(lead + (self.out_features,))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout`` dL/dy (..., out) -> ``dx`` dL/dx (..., in); adds into ``grads``.

        With the leading axes folded into N rows (X (N, in), dY (N, out)):
        ``dW += dY.T @ X``, ``db += Σ_n dY[n]``, ``dx = dY @ W``.
        """
        if self._x2 is None or self._lead_shape is None:
            raise RuntimeError("Linear.backward called before forward (or twice after one "
                               "forward); call forward first")
        lead = self._lead_shape
        dout = check_array("dout", dout, self.dtype, (len(lead) + 1,))
        if dout.shape != lead + (self.out_features,):
            raise ValueError(f"dout must have shape {lead + (self.out_features,)} (the forward "
                             f"output's), got {dout.shape}")
        x2 = self._x2
        self._x2 = self._lead_shape = None
        dy2 = dout.reshape(-1, self.out_features)
        self.grads["weight"] += dy2.T @ x2
        if self.has_bias:
            self.grads["bias"] += dy2.sum(axis=0)
        return (dy2 @ self.params["weight"]).reshape(lead + (self.in_features,))
