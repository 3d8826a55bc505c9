"""Additive attention pooling: one weighted average of a sequence of vectors, weights learned.

A recurrent layer gives one output vector per time step; a classifier over whole sequences needs
one vector per sequence. Attention pooling scores every step with a small network, turns the
scores into weights with a softmax over each sequence's valid steps, and returns the weighted
average of the outputs (Bahdanau-style additive scoring, as in "hierarchical attention networks").

Contract, as the recurrent layers: ``forward`` keeps what ``backward`` needs (the outputs by
reference, so do not modify them in place in between); ``backward`` may be called more than once
after one forward, and each call ADDS its parameter gradients into ``.grads``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .module import Module, ShapeError, check_array, check_bool, check_lengths, check_size

__all__ = ["AttentionPooling"]


class AttentionPooling(Module):
    """Additive attention pooling over time, with per-sequence ``lengths``.

    ``context, weights = attn(outputs, lengths=None)``; ``doutputs = attn.backward(dcontext,
    dweights=None)``.

    Parameters (torch's names, as if built from ``proj = nn.Linear(F, A)`` and
    ``score = nn.Linear(A, 1, bias=False)``), with torch's default initialisation, drawn from
    ``np.random.default_rng(seed)`` in this order:

    * ``proj.weight``  W (A, F), ``U(-1/sqrt(F), 1/sqrt(F))``
    * ``proj.bias``    bias (A,), ``U(-1/sqrt(F), 1/sqrt(F))``
    * ``score.weight`` v (1, A), ``U(-1/sqrt(A), 1/sqrt(A))``

    Shapes: T steps, B sequences, F = ``input_size``, A = ``attention_size``, N = T*B rows.
    Internally everything is time-major; ``batch_first`` only changes the layout of ``outputs``,
    ``weights`` and ``doutputs`` (to (B, T, F), (B, T), (B, T, F)).

    Forward (the code's symbols; ``[t, b]`` indexes a step of a sequence)::

        M[t, b]  = t < lengths[b]                   (T, B)   valid steps (all True without lengths)
        O        = outputs, 0 where not M           (T, B, F) padded steps never reach a result
        X        = O.reshape(N, F)                  (N, F)   row n = t*B + b
        Z        = X W^T + bias                     (N, A)   one matrix product for all steps
        U        = tanh(Z)                          (N, A)
        e        = (U v^T).reshape(T, B)            (T, B)   the scores
        m[b]     = max_{t: M[t, b]} e[t, b]         (B,)     subtracted for a stable softmax
        E[t, b]  = exp(e[t, b] - m[b]) if M[t, b] else 0
        alpha    = E / Σ_t E                        (T, B)   returned as ``weights``
        context  = Σ_t alpha[t, :, None] O[t]       (B, F)

    Backward, given dcontext = dL/dcontext (B, F) and dweights = dL/dweights (T, B, time-major
    here), each zeros when None (de_rows below is de.reshape(N, 1))::

        dalpha   = Σ_f O[..., f] dcontext[None, :, f] + dweights,  0 where not M      (T, B)
        de       = alpha ⊙ (dalpha - Σ_t alpha ⊙ dalpha)      (T, B)  softmax backward
        dU       = de_rows v                                  (N, A)
        dZ       = dU ⊙ (1 - U²)                              (N, A)  tanh' = 1 - tanh²
        dv      += de_rows^T U                                (1, A)
        dW      += dZ^T X                                     (A, F)
        dbias   += Σ_n dZ[n]                                  (A,)
        dO       = (dZ W).reshape(T, B, F) + alpha[:, :, None] dcontext[None]       (T, B, F)

    ``doutputs`` is dO in the layout of ``outputs``. Its second term is the direct path (context
    is linear in O), its first the path through the scores. At a padded step alpha = 0 and
    de = 0, so its weight and its gradient are exactly 0 (whatever ``dweights`` holds there).

    Memory: forward keeps O (a reference, or a copy when ``lengths`` or ``batch_first`` make one),
    U (N, A), alpha (T, B) and M.
    """

    backward_unpacks_outputs = True  # backward(dcontext, dweights): one argument per output

    def __init__(self, input_size: int, attention_size: int, batch_first: bool = False,
                 dtype: Any = np.float64, seed: int | None = None) -> None:
        super().__init__(dtype)
        self.input_size = check_size("input_size", input_size)
        self.attention_size = check_size("attention_size", attention_size)
        self.batch_first = check_bool("batch_first", batch_first)  # "False" is refused, not read
        F, A = self.input_size, self.attention_size
        rng = np.random.default_rng(seed)
        k_proj, k_score = 1.0 / np.sqrt(F), 1.0 / np.sqrt(A)
        self._add_param("proj.weight", rng.uniform(-k_proj, k_proj, (A, F)))
        self._add_param("proj.bias", rng.uniform(-k_proj, k_proj, (A,)))
        self._add_param("score.weight", rng.uniform(-k_score, k_score, (1, A)))
        self._ctx: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (f"AttentionPooling({self.input_size}, {self.attention_size}, "
                f"batch_first={self.batch_first}, dtype={np.dtype(self.dtype).name})")

    def forward(self, outputs: np.ndarray,
                lengths: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Pool ``outputs`` over time.

        Args:
            outputs: ``(T, B, F)``, or ``(B, T, F)`` with ``batch_first``, in the module's dtype.
            lengths: optional ``(B,)`` integer valid lengths in ``[1, T]``; the steps
                ``t >= lengths[b]`` get weight exactly 0, and their values (even NaN) reach
                no result and no gradient.

        Returns:
            ``context`` ``(B, F)`` and ``weights`` alpha ``(T, B)`` (``(B, T)`` with
            ``batch_first``); each sequence's weights sum to 1.

        Raises ``TypeError`` for a wrong dtype or non-integer ``lengths``, ``ValueError`` for a
        wrong rank, feature size, empty input, or ``lengths`` of the wrong shape or range.
        """
        outputs = check_array("outputs", outputs, self.dtype, (3,))
        if outputs.shape[-1] != self.input_size:
            raise ShapeError(f"outputs have {outputs.shape[-1]} features, expected "
                             f"input_size={self.input_size}")
        O = outputs.transpose(1, 0, 2) if self.batch_first else outputs
        T, B, F = O.shape
        if T == 0 or B == 0:
            raise ShapeError(f"outputs must have at least one time step and one sequence, "
                             f"got shape {outputs.shape}")
        if lengths is None:
            M = None
        else:
            lens = check_lengths(lengths, T, B)
            M = np.arange(T)[:, None] < lens[None, :]                  # (T, B)
            O = np.where(M[:, :, None], O, self.dtype(0))
        O = np.ascontiguousarray(O)
        W, bias = self.params["proj.weight"], self.params["proj.bias"]
        v = self.params["score.weight"]

        X = O.reshape(T * B, F)
        U = np.tanh(X @ W.T + bias)                                    # (N, A)
        e = (U @ v.T).reshape(T, B)
        if M is not None:
            e = np.where(M, e, self.dtype(-np.inf))                    # exp(-inf) = 0 exactly
        E = np.exp(e - e.max(axis=0))
        alpha = E / E.sum(axis=0)
        context = np.einsum("tb,tbf->bf", alpha, O)    # Σ_t alpha[t, :, None] O[t]

        self._ctx = dict(O=O, U=U, alpha=alpha, M=M)
        weights = alpha.T if self.batch_first else alpha
        return context, weights.copy()        # a copy: editing it cannot change backward

    def backward(self, dcontext: np.ndarray | None,
                 dweights: np.ndarray | None = None) -> np.ndarray:
        """Backpropagate through the last forward call; ADD parameter gradients into ``grads``.

        Args:
            dcontext: dL/dcontext ``(B, F)``, or None for zeros.
            dweights: dL/dweights, shaped like ``weights`` (``(T, B)``, ``(B, T)`` with
                ``batch_first``), or None for zeros.

        Returns:
            ``doutputs``, dL/doutputs in the layout of ``outputs``; exactly 0 at padded steps.

        Raises ``RuntimeError`` before any forward, ``TypeError`` for a wrong dtype and
        ``ValueError`` for a wrong shape (nothing is changed then).
        """
        if self._ctx is None:
            raise RuntimeError("AttentionPooling.backward called before forward; call forward "
                               "first")
        O, U, alpha, M = (self._ctx[k] for k in ("O", "U", "alpha", "M"))
        T, B, F = O.shape
        if dcontext is not None:
            dcontext = check_array("dcontext", dcontext, self.dtype, (2,))
            if dcontext.shape != (B, F):
                raise ShapeError(f"dcontext must have the context's shape {(B, F)}, "
                                 f"got {dcontext.shape}")
        if dweights is not None:
            w_shape = (B, T) if self.batch_first else (T, B)
            dweights = check_array("dweights", dweights, self.dtype, (2,))
            if dweights.shape != w_shape:
                raise ShapeError(f"dweights must have the weights' shape {w_shape}, "
                                 f"got {dweights.shape}")
        W, v = self.params["proj.weight"], self.params["score.weight"]

        dalpha = np.zeros((T, B), self.dtype)
        if dcontext is not None:
            dalpha += np.einsum("tbf,bf->tb", O, dcontext)
        if dweights is not None:
            dalpha += dweights.T if self.batch_first else dweights
        if M is not None:
            dalpha[~M] = 0                    # padded weights are constants: ignore their grads
        de = alpha * (dalpha - (alpha * dalpha).sum(axis=0))
        de_rows = de.reshape(T * B, 1)
        dZ = (de_rows * v) * (1 - U * U)      # dU ⊙ tanh'(Z), (N, A)

        self.grads["score.weight"] += de_rows.T @ U
        self.grads["proj.weight"] += dZ.T @ O.reshape(T * B, F)
        self.grads["proj.bias"] += dZ.sum(axis=0)

        dO = (dZ @ W).reshape(T, B, F)
        if dcontext is not None:
            dO += alpha[:, :, None] * dcontext[None, :, :]
        return dO.transpose(1, 0, 2) if self.batch_first else dO
