"""Softmax, log-softmax and two losses: cross-entropy with optional label smoothing
(``torch.nn.CrossEntropyLoss``) and binary cross-entropy on logits (``torch.nn.BCEWithLogitsLoss``).

Every function is stable for large logits: the row maximum is subtracted before ``exp`` (and the
binary loss only ever takes ``exp`` of ``-|x|``), so ``exp`` never overflows and the logarithms
keep full precision. The result has the dtype of the input (float32 stays float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["IGNORE_INDEX", "binary_cross_entropy_with_logits", "cross_entropy", "log_softmax",
           "softmax"]

#: The target of ``cross_entropy`` that adds no loss and no gradient (a padded step), as
#: torch's ``ignore_index`` default; both backends and every task use this one.
IGNORE_INDEX = -100


def _float_array(name: str, x: Any) -> np.ndarray:
    """``x`` as a float32/float64 array of rank >= 1, or a clear ``TypeError``/``ValueError``."""
    if not isinstance(x, np.ndarray):
        if isinstance(x, (list, tuple)) or np.isscalar(x):
            x = np.asarray(x)
        else:
            raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {x.dtype.name}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one axis, got a 0-D array")
    return x


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log_softmax(x)_j = (x_j - m) - log Σ_k exp(x_k - m)`` along ``axis``, ``m = max_k x_k``.

    ``x`` float array of any shape (rank >= 1); the result has the same shape and dtype.
    """
    x = _float_array("x", x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``softmax(x)_j = exp(x_j - m) / Σ_k exp(x_k - m)`` along ``axis``, ``m = max_k x_k``.

    ``x`` float array of any shape (rank >= 1); the result has the same shape and dtype.
    """
    x = _float_array("x", x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _check_label_smoothing(label_smoothing: Any) -> float:
    """``label_smoothing`` as a float in [0, 1], or a ``ValueError`` naming it.

    Torch documents [0, 1] but checks it only when eps > 0 (so it refuses 1.5 and silently
    takes -0.1 or NaN as 0); here anything outside [0, 1], NaN, a bool or a non-number is refused.
    """
    if (isinstance(label_smoothing, (bool, np.bool_))
            or not isinstance(label_smoothing, (int, float, np.integer, np.floating))
            or not 0.0 <= float(label_smoothing) <= 1.0):           # False for NaN
        raise ValueError(f"label_smoothing must be a real number in [0, 1], got "
                         f"{label_smoothing!r}")
    return float(label_smoothing)


def cross_entropy(logits: np.ndarray, targets: np.ndarray, ignore_index: int = IGNORE_INDEX,
                  label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``logits`` (N, V) against class ``targets`` (N,), and its gradient.

    With ``valid = {i : targets[i] != ignore_index}``, ``N_valid = |valid|`` and ``eps`` =
    ``label_smoothing``::

        logp      = log_softmax(logits)                        (N, V)
        nll       = -(1/N_valid) Σ_{i in valid} logp[i, targets[i]]
        smooth    = -(1/N_valid) Σ_{i in valid} Σ_j logp[i, j]
        loss      = (1 - eps)·nll + (eps/V)·smooth
        q_i       = (1 - eps)·onehot(targets[i]) + eps/V       (the smoothed target row)
        dlogits_i = (exp(logp_i) - q_i) / N_valid              for i in valid, 0 otherwise

    as ``torch.nn.CrossEntropyLoss(label_smoothing=eps)`` (``reduction='mean'``, no class
    weights): torch mixes the one-hot target with the uniform distribution over all V classes
    (the target class included, so it keeps ``1 - eps + eps/V``), and ignored rows count in
    neither sum nor in N_valid. The gradient is one line because ``Σ_j q_ij = 1``. With
    ``eps = 0`` (the default) the smoothing terms are not computed at all: the result is the
    plain cross-entropy, bit for bit. Sequence logits (B, T, V) go in as
    ``logits.reshape(-1, V)`` with ``targets.reshape(-1)``. Returns ``(loss, dlogits)``: a
    Python float and an (N, V) array of the logits' dtype.

    Raises ``TypeError`` for non-float logits or non-integer targets, and ``ValueError`` for
    wrong ranks or lengths, a target outside ``[0, V)`` that is not ``ignore_index``, when
    every target is ignored (torch would return NaN), or for a ``label_smoothing`` that is not
    a real number in [0, 1].
    """
    eps = _check_label_smoothing(label_smoothing)
    logits = _float_array("logits", logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, V), got shape {logits.shape}; reshape sequence "
                         "logits with logits.reshape(-1, V)")
    n, v = logits.shape
    if not isinstance(targets, np.ndarray):
        if isinstance(targets, (list, tuple)):
            targets = np.asarray(targets)
        else:
            raise TypeError(f"targets must be an integer NumPy array, got {type(targets).__name__}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be an integer array, got dtype {targets.dtype.name}")
    if targets.shape != (n,):
        raise ValueError(f"targets must have shape ({n},) to match logits {logits.shape}, "
                         f"got {targets.shape}")
    valid = targets != ignore_index
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        raise ValueError(f"no valid targets: all {n} targets equal ignore_index={ignore_index}")
    rows = np.flatnonzero(valid)
    cls = targets[rows]
    bad = (cls < 0) | (cls >= v)
    if bad.any():
        raise ValueError(f"target {int(cls[bad][0])} is out of range for {v} classes "
                         f"(valid: 0..{v - 1}, or ignore_index={ignore_index})")

    logp = log_softmax(logits, axis=1)
    loss = -float(logp[rows, cls].sum()) / n_valid
    scale = 1.0 / n_valid
    # d loss / d logp is -scale at each valid target; through log_softmax that becomes
    # softmax * scale minus scale at the target, and nothing for ignored rows.
    dlogits = np.exp(logp) * scale
    if eps == 0:
        dlogits[rows, cls] -= scale
    else:
        # The row sums of logp are an (N,) temporary; dlogits is shifted in place (the ignored
        # rows too: they are zeroed below), so smoothing adds no (N, V) array.
        smooth = -float(logp.sum(axis=1)[rows].sum()) / n_valid
        loss = (1 - eps) * loss + (eps / v) * smooth
        dlogits -= (eps / v) * scale
        dlogits[rows, cls] -= (1 - eps) * scale
    if n_valid < n:
        dlogits[~valid] = 0
    return loss, dlogits


def binary_cross_entropy_with_logits(logits: np.ndarray,
                                     targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy of ``logits`` x against ``targets`` y, and its gradient.

    With ``σ(x) = 1 / (1 + exp(-x))`` and N = ``logits.size``, for every element::

        loss_i    = -(y_i log σ(x_i) + (1 - y_i) log(1 - σ(x_i)))
                  = max(x_i, 0) - x_i y_i + log1p(exp(-|x_i|))      (the stable form computed)
        loss      = (1/N) Σ_i loss_i
        dlogits_i = (σ(x_i) - y_i) / N

    as ``torch.nn.BCEWithLogitsLoss()`` (``reduction='mean'``, no weights, no ``pos_weight``).
    The stable form follows from ``log σ(x) = -log(1 + exp(-x))`` and ``log(1 - σ(x)) =
    log σ(x) - x``; written with ``|x|`` its ``exp`` never overflows, so logits of ±1e4 give the
    exact loss (``|x|`` for a wrong sign, 0 for a right one) and the exact gradient.
    ``σ(x)`` itself is ``1 / (1 + z)`` for x >= 0 and ``z / (1 + z)`` for x < 0, ``z = exp(-|x|)``.

    Args:
        logits: float32 or float64 array of any shape (rank >= 1, at least one element).
        targets: array of the same shape and dtype (nothing is cast), 0/1 labels; any value in
            [0, 1] (a soft label) is as well defined.

    Returns:
        ``(loss, dlogits)``: a Python float and an array of the logits' shape and dtype.

    Raises ``TypeError`` for non-float logits or targets or targets of another dtype than the
    logits, and ``ValueError`` for a shape mismatch or empty input (torch would return NaN).
    """
    logits = _float_array("logits", logits)
    targets = _float_array("targets", targets)
    if targets.dtype != logits.dtype:
        raise TypeError(f"targets have dtype {targets.dtype.name} but logits have "
                        f"{logits.dtype.name}; convert them explicitly (targets.astype(...))")
    if targets.shape != logits.shape:
        raise ValueError(f"targets must have the logits' shape {logits.shape}, "
                         f"got {targets.shape}")
    if logits.size == 0:
        raise ValueError(f"logits are empty (shape {logits.shape}); the mean loss is undefined")
    x, y = logits, targets
    z = np.exp(-np.abs(x))                                   # in (0, 1]: never overflows
    loss = float(np.mean(np.maximum(x, 0) - x * y + np.log1p(z)))
    sigmoid = np.where(x >= 0, 1 / (1 + z), z / (1 + z))
    dlogits = (sigmoid - y) * (1.0 / x.size)
    return loss, dlogits
