"""Attention: a softmax-weighted average of a memory, scored by a small function, with a
hand-written backward.

Two users, one score code:

* :class:`Attention`: a query sequence (a decoder's states, ``(T, B, Q)``) attends over a memory
  (an encoder's outputs, ``(S, B, K)``, both the keys and the values), with the three score
  functions of Bahdanau et al. (``additive``) and Luong et al. (``general``, ``dot``), as in a
  Luong-style encoder-decoder.
* :class:`AttentionPooling`: one weighted average of a sequence (a classifier's pooling). It is
  additive attention WITHOUT a query term, and runs through the same functions below.

The math lives in four functions, written as the recurrent steps are (forward/backward pairs
with named caches), so a decoder can call them ONE QUERY STEP AT A TIME:

1. ``keys = prepare_keys(score, params, memory, lengths)``: the key side of the score, which
   depends only on the memory, computed ONCE per memory (as the recurrent layers project the
   input of all time steps before the time loop);
2. ``context, alpha, cache = attend_forward(score, params, query, keys)`` per query step
   (``query (B, Q)``), or for a whole block of steps at once (``query (T, B, Q)``);
3. ``dquery = attend_backward(score, params, grads, dcontext, dalpha, cache)`` per step (or
   block), in any order; it adds the query-side parameter gradients into ``grads`` and sums the
   gradient w.r.t. the keys and the memory into buffers on ``keys``;
4. ``dmemory = keys_backward(score, params, grads, keys)`` ONCE after all steps: the key-side
   weight gradients as single matrix products (as the recurrent layers do their weight
   gradients after the time loop), and the memory's gradient.

``params`` maps :class:`Attention`'s parameter names (``query.weight``, ``key.weight``,
``key.bias``, ``score.weight``; see :func:`score_param_shapes`) to arrays and ``grads`` the same
names to the gradient arrays added into; a layer's own ``.params``/``.grads`` dicts serve.

Contract of the layers, as the recurrent layers': ``forward`` keeps what ``backward`` needs (the
memory and queries by reference or a copy, so do not modify them in place in between);
``backward`` may be called more than once after one forward, and each call ADDS its parameter
gradients into ``.grads``.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .module import (
    DTypeError,
    Module,
    ShapeError,
    check_array,
    check_bool,
    check_lengths,
    check_size,
)

__all__ = ["SCORES", "Keys", "AttendCache", "score_param_shapes", "prepare_keys",
           "attend_forward", "attend_backward", "keys_backward", "Attention", "AttentionPooling"]

#: The score functions: ``additive`` (Bahdanau), ``general`` and ``dot`` (Luong).
SCORES = ("additive", "general", "dot")

ScoreParams = Mapping[str, np.ndarray]          # name -> parameter array
ScoreGrads = MutableMapping[str, np.ndarray]    # name -> gradient array, added into in place


def _check_score(score: Any) -> str:
    if not isinstance(score, str) or score not in SCORES:
        raise ValueError(f"unknown score {score!r}: use one of {', '.join(map(repr, SCORES))}")
    return score


def score_param_shapes(score: str, query_size: int, memory_size: int,
                       attention_size: int | None = None) -> dict[str, tuple[int, ...]]:
    """The parameters of a score function: name -> shape, in initialisation order.

    Torch's names, as if built from ``nn.Linear`` children ``query``, ``key`` and ``score``
    (Q = ``query_size``, K = ``memory_size``, A = ``attention_size``)::

        additive  query.weight (A, Q)   nn.Linear(Q, A, bias=False), applied to the query
                  key.weight   (A, K)   nn.Linear(K, A), applied to the memory
                  key.bias     (A,)
                  score.weight (1, A)   nn.Linear(A, 1, bias=False)
        general   key.weight   (Q, K)   nn.Linear(K, Q, bias=False), applied to the memory
        dot       (none)                needs Q == K
    """
    _check_score(score)
    Q, K = query_size, memory_size
    if score == "additive":
        A = query_size if attention_size is None else attention_size
        return {"query.weight": (A, Q), "key.weight": (A, K), "key.bias": (A,),
                "score.weight": (1, A)}
    if score == "general":
        return {"key.weight": (Q, K)}
    return {}


# --------------------------------------------------------------------------------------------
# The functions: keys once per memory, one query step (or block) forward and back, keys back
# --------------------------------------------------------------------------------------------

@dataclass(eq=False)                  # arrays: compare by identity
class Keys:
    """A memory prepared for any number of query steps (:func:`prepare_keys`), and the gradient
    buffers those steps' backward calls add into until :func:`keys_backward` uses them.

    B sequences, S memory steps, K = memory width, D = the key width (A additive, Q general,
    K dot). Everything is batch-major, so each sequence's scores and context are one batched
    matrix product.
    """

    score: str                        # the score function the keys were prepared for
    values: np.ndarray                # (B, S, K) m: the memory, 0 at padded steps
    keys: np.ndarray                  # (B, S, D) k: the key side of the score (``values`` for dot)
    valid: np.ndarray | None          # (B, S) bool: s < lengths[b]; None when all are valid
    dkeys: np.ndarray | None = None   # (B, S, D) dk: Σ over query steps, the path through e
    dvalues: np.ndarray | None = None  # (B, S, K) dm: Σ over query steps, the path through context

    @property
    def dtype(self) -> Any:
        """``np.float32`` or ``np.float64``: the memory's, the parameters' and the queries'."""
        return self.values.dtype.type


class AttendCache(NamedTuple):
    """What :func:`attend_backward` needs from one :func:`attend_forward` call."""

    keys: Keys                   # the prepared memory (shared by every step)
    query: np.ndarray | None     # (B, T, Q) q, a batch-major view; None without a query (pooling)
    alpha: np.ndarray            # (B, T, S) the attention weights
    U: np.ndarray | None         # (B, T, S, A) tanh(Z), the additive score's hidden layer
    one_step: bool               # the query was (B, Q) (T = 1): gradients come and go as (B, ·)


def _dtype_of(params: ScoreParams, memory: Any) -> Any:
    """The dtype every array must have: the parameters' (the memory's when there are none)."""
    first = next(iter(params.values()), None)
    if first is not None:
        return first.dtype.type
    dt = getattr(memory, "dtype", None)
    return dt.type if dt in (np.dtype(np.float32), np.dtype(np.float64)) else np.float64


def _param(params: ScoreParams, name: str, dtype: Any) -> np.ndarray:
    p = params[name]
    if p.dtype != dtype:
        raise DTypeError(f"parameter {name} has dtype {p.dtype.name}, expected "
                         f"{np.dtype(dtype).name}")
    return p


def prepare_keys(score: str, params: ScoreParams, memory: np.ndarray,
                 lengths: Any = None) -> Keys:
    """The key side of the score, once per memory: it depends on the memory alone.

    Args:
        score: one of :data:`SCORES`.
        params: the score's parameters (:func:`score_param_shapes`), by name.
        memory: ``(S, B, K)``, time-major (a transposed view of a batch-first array serves), in
            the parameters' dtype; the keys and the values.
        lengths: optional ``(B,)`` integers in ``[1, S]``; steps ``s >= lengths[b]`` get weight
            exactly 0, and their values (even NaN) reach no result and no gradient.

    Returns:
        :class:`Keys`, with (the code's symbols, batch-major)::

            valid[b, s] = s < lengths[b]                        (B, S)
            m = memory as (B, S, K), 0 where not valid          np.where: NaN there is dropped
            k = m W_k^T + b_k      additive (B, S, A)           one product for all S steps
              = m W^T              general  (B, S, Q)
              = m                  dot      (B, S, K)

    Raises ``DTypeError`` for a memory of another dtype, ``ShapeError`` for a wrong rank, width
    or an empty memory, ``TypeError``/``ShapeError`` for bad ``lengths``, ``ValueError`` for an
    unknown score.
    """
    _check_score(score)
    dtype = _dtype_of(params, memory)
    memory = check_array("memory", memory, dtype, (3,))
    S, B, K = memory.shape
    if S == 0 or B == 0:
        raise ShapeError(f"memory must have at least one step and one sequence, got shape "
                         f"{memory.shape}")
    if score != "dot":
        width = _param(params, "key.weight", dtype).shape[1]
        if width != K:
            raise ShapeError(f"memory has {K} features, expected memory_size={width}")
    valid = None
    values = memory.transpose(1, 0, 2)                             # (B, S, K), a view
    if lengths is not None:
        lens = check_lengths(lengths, S, B)
        valid = np.arange(S)[None, :] < lens[:, None]              # (B, S)
        values = np.where(valid[:, :, None], values, dtype(0))
    values = np.ascontiguousarray(values)
    if score == "additive":
        keys = values @ params["key.weight"].T + _param(params, "key.bias", dtype)
    elif score == "general":
        keys = values @ params["key.weight"].T
    else:
        keys = values
    return Keys(score=score, values=values, keys=keys, valid=valid)


def attend_forward(score: str, params: ScoreParams, query: np.ndarray | None,
                   keys: Keys) -> tuple[np.ndarray, np.ndarray, AttendCache]:
    """One query step (``query (B, Q)``) or a block of T steps (``(T, B, Q)``) against the keys.

    ``query`` None (additive only) scores the keys alone, with no query term: that is attention
    pooling. The equations (batch-major, the code's symbols; ``q`` is the query as ``(B, T, Q)``,
    T = 1 for one step; ``m``, ``k``, ``valid`` from :func:`prepare_keys`)::

        additive  Z = (q W_q^T)[:, :, None] + k[:, None]     (B, T, S, A)   no q term: Z = k
                  U = tanh(Z)
                  e = U v^T                                  (B, T, S)      v = score.weight
        general,  e[b] = q[b] k[b]^T                         (B, T, S)      a batched product
        dot
        e         = -inf where not valid                     exp(-inf) = 0 exactly
        alpha     = exp(e - max_s e) / Σ_s exp(e - max_s e)  (B, T, S)      stable softmax over s
        context   = alpha m                                  (B, T, K)      Σ_s alpha[..., s] m[s]

    Returns:
        ``context`` and ``alpha`` in the query's layout: ``(B, K)`` and ``(B, S)`` for one step
        (and without a query), ``(T, B, K)`` and ``(T, B, S)`` for a block (fresh arrays: editing
        them cannot change the backward), and the :class:`AttendCache` for
        :func:`attend_backward`.

    Memory: the cache holds ``alpha (B, T, S)`` and, additive, ``U (B, T, S, A)``.
    """
    _check_score(score)
    if score != keys.score:
        raise ValueError(f"the keys were prepared for the {keys.score!r} score, not {score!r}")
    dtype = keys.dtype
    B = keys.values.shape[0]
    if query is None:
        if score != "additive":
            raise ValueError(f"only the additive score can attend without a query, not {score!r}")
        q = None
        one_step = True
    else:
        query = check_array("query", query, dtype, (2, 3))
        Q = params["query.weight"].shape[1] if score == "additive" else keys.keys.shape[2]
        if query.shape[-2:] != (B, Q):
            raise ShapeError(f"query must be (B, Q) = {(B, Q)} or (T, B, Q), got {query.shape}")
        one_step = query.ndim == 2
        q = query[:, None, :] if one_step else query.transpose(1, 0, 2)   # (B, T, Q), a view

    U = None
    if score == "additive":
        v = _param(params, "score.weight", dtype)
        if q is None:
            U = np.tanh(keys.keys)[:, None]                            # (B, 1, S, A)
        else:
            qp = q @ _param(params, "query.weight", dtype).T           # q W_q^T, (B, T, A)
            U = np.tanh(qp[:, :, None, :] + keys.keys[:, None])        # (B, T, S, A)
        e = (U @ v.T)[..., 0]                                          # (B, T, S)
    else:
        e = q @ keys.keys.transpose(0, 2, 1)                           # (B, T, S)
    if keys.valid is not None:
        e = np.where(keys.valid[:, None, :], e, dtype(-np.inf))
    E = np.exp(e - e.max(axis=-1, keepdims=True))
    alpha = E / E.sum(axis=-1, keepdims=True)                          # (B, T, S)
    context = alpha @ keys.values                                      # (B, T, K)

    cache = AttendCache(keys=keys, query=q, alpha=alpha, U=U, one_step=one_step)
    if one_step:
        return context[:, 0], alpha[:, 0].copy(), cache
    return (np.ascontiguousarray(context.transpose(1, 0, 2)),
            np.ascontiguousarray(alpha.transpose(1, 0, 2)), cache)


def _upstream(name: str, g: np.ndarray | None, shape: tuple[int, ...], one_step: bool,
              dtype: Any) -> np.ndarray | None:
    """Check an upstream gradient against its output's ``shape`` and make it batch-major."""
    if g is None:
        return None
    g = check_array(name, g, dtype, (len(shape),))
    if g.shape != shape:
        raise ShapeError(f"{name} must have the shape {shape} of its output, got {g.shape}")
    return g[:, None, :] if one_step else g.transpose(1, 0, 2)


def attend_backward(score: str, params: ScoreParams, grads: ScoreGrads,
                    dcontext: np.ndarray | None, dalpha: np.ndarray | None,
                    cache: AttendCache) -> np.ndarray | None:
    """Backward of one :func:`attend_forward` call; ADDS the query-side parameter gradients.

    Args:
        dcontext: dL/dcontext shaped like that call's context (``(B, K)`` or ``(T, B, K)``), or
            None for zeros.
        dalpha: dL/dalpha shaped like its alpha (``(B, S)`` or ``(T, B, S)``), or None.
        grads: gradient arrays by name; ``score.weight`` and ``query.weight`` (additive) are
            added into here, the key-side ones by :func:`keys_backward`.

    Equations, batch-major: ``dc`` is dcontext as ``(B, T, K)``, ``da_up`` dalpha as
    ``(B, T, S)`` (T = 1 for one step), ``m``, ``k``, ``q``, ``U``, ``alpha`` as in
    :func:`attend_forward`::

        da   = dc m^T + da_up,  0 where not valid            (B, T, S)  alpha's total gradient;
                                                                        padded weights are
                                                                        constants: none there
        de   = alpha ⊙ (da - Σ_s alpha ⊙ da)                (B, T, S)  softmax backward
        dm  += alpha^T dc                                    (B, S, K)  into keys.dvalues
        additive  dZ   = de[..., None] v ⊙ (1 - U²)          (B, T, S, A)  tanh' = 1 - tanh²
                  dv  += Σ_{b,t,s} de U                      (1, A)
                  dk  += Σ_t dZ                              (B, S, A)  into keys.dkeys
                  dqp  = Σ_s dZ                              (B, T, A)
                  dW_q += Σ_{b,t} dqp^T q                    (A, Q)
                  dq   = dqp W_q                             (B, T, Q)
        general,  dk  += de^T q                              (B, S, D)  into keys.dkeys
        dot       dq   = de k                                (B, T, Q)

    ``dm`` (the direct path: context is linear in m) and ``dk`` (the path through the scores)
    are only summed here, over this call's query steps; :func:`keys_backward` turns them into
    the memory's gradient once, after every step.

    Returns:
        ``dquery`` in the query's layout (None when there was no query). Nothing is changed
        when an argument is refused (``DTypeError``/``ShapeError``).
    """
    _check_score(score)
    keys, q, alpha, U = cache.keys, cache.query, cache.alpha, cache.U
    if score != keys.score:
        raise ValueError(f"the keys were prepared for the {keys.score!r} score, not {score!r}")
    dtype = keys.dtype
    B, T, S = alpha.shape
    K = keys.values.shape[2]
    lead = (B,) if cache.one_step else (T, B)
    dc = _upstream("dcontext", dcontext, (*lead, K), cache.one_step, dtype)   # (B, T, K)
    da_up = _upstream("dalpha", dalpha, (*lead, S), cache.one_step, dtype)    # (B, T, S)

    if dc is not None:
        da = dc @ keys.values.transpose(0, 2, 1)     # the context's gradient reaches alpha
        if da_up is not None:
            da += da_up                              # and so does alpha's own
    elif da_up is not None:
        da = da_up.copy()
    else:
        da = np.zeros((B, T, S), dtype)
    if keys.valid is not None:
        da = np.where(keys.valid[:, None, :], da, dtype(0))  # NaN in padded dalpha is dropped
    de = alpha * (da - (alpha * da).sum(axis=-1, keepdims=True))

    if keys.dkeys is None:                           # the buffers that keys_backward empties
        keys.dkeys = np.zeros_like(keys.keys)
        keys.dvalues = np.zeros_like(keys.values)
    assert keys.dvalues is not None
    if dc is not None:
        keys.dvalues += alpha.transpose(0, 2, 1) @ dc          # dm += alpha^T dc

    dq = None
    if score == "additive":
        assert U is not None
        A = U.shape[-1]
        v = params["score.weight"]
        dZ = de[..., None] * v[0]                    # dU = de v
        dZ *= 1 - U * U                              # dZ = dU ⊙ tanh'(Z)
        grads["score.weight"] += de.reshape(1, -1) @ U.reshape(-1, A)
        keys.dkeys += dZ.sum(axis=1)                 # dk: summed over this call's query steps
        if q is not None:
            dqp = dZ.sum(axis=2)                     # (B, T, A)
            grads["query.weight"] += np.tensordot(dqp, q, axes=([0, 1], [0, 1]))
            dq = dqp @ params["query.weight"]
    else:
        assert q is not None
        keys.dkeys += de.transpose(0, 2, 1) @ q      # dk += de^T q
        dq = de @ keys.keys                          # dq = de k
    if dq is None:
        return None
    return dq[:, 0] if cache.one_step else np.ascontiguousarray(dq.transpose(1, 0, 2))


def keys_backward(score: str, params: ScoreParams, grads: ScoreGrads, keys: Keys) -> np.ndarray:
    """After every query step's :func:`attend_backward`: the key side, once; returns dmemory.

    Adds ``key.weight`` (additive, general) and ``key.bias`` (additive) gradients into
    ``grads``, each a single matrix product over all ``B*S`` memory rows, and empties the
    buffers of ``keys`` (so the same keys can go through another backward)::

        additive  dW_k += Σ_{b,s} dk^T m    db_k += Σ_{b,s} dk    dmemory = dk W_k + dm
        general   dW   += Σ_{b,s} dk^T m                          dmemory = dk W + dm
        dot                                                       dmemory = dk + dm

    Returns:
        ``dmemory`` ``(S, B, K)``, time-major like the memory: the sum, over all
        query steps, of the path through the scores (``dk``) and the direct path through the
        context (``dm``). Exactly 0 at padded steps, where alpha = de = 0 and m = 0.
    """
    _check_score(score)
    if score != keys.score:
        raise ValueError(f"the keys were prepared for the {keys.score!r} score, not {score!r}")
    if keys.dkeys is None or keys.dvalues is None:   # no backward step: nothing reached them
        dk, dm = np.zeros_like(keys.keys), np.zeros_like(keys.values)
    else:
        dk, dm = keys.dkeys, keys.dvalues
    keys.dkeys = keys.dvalues = None
    m = keys.values
    if score == "dot":
        dmemory = dk + dm                            # the keys ARE the memory: both paths
    else:
        grads["key.weight"] += np.tensordot(dk, m, axes=([0, 1], [0, 1]))
        if score == "additive":
            grads["key.bias"] += dk.sum(axis=(0, 1))
        # The memory's gradient: the path through the scores (dk, every query step's, summed
        # in the buffer) plus the direct path through the context (dm, likewise).
        dmemory = dk @ params["key.weight"]
        dmemory += dm
    return np.ascontiguousarray(dmemory.transpose(1, 0, 2))


# --------------------------------------------------------------------------------------------
# The layers
# --------------------------------------------------------------------------------------------

class Attention(Module):
    """Attention of a query sequence over a memory, with per-sequence memory ``lengths``.

    ``context, weights = attn(queries, memory, lengths=None)``;
    ``dqueries, dmemory = attn.backward(dcontext, dweights=None)``.

    The memory ``(S, B, K)`` (an encoder's outputs) is both the keys and the values; each query
    step ``queries[t] (B, Q)`` (a decoder's state) gets ``context[t] = Σ_s weights[t, :, s] m_s``
    with the weights a softmax over the memory's valid steps of the score ``e(q, m_s)``:

    * ``score="additive"`` (Bahdanau): ``e = v^T tanh(W_q q + W_k m + b_k)``, A =
      ``attention_size`` (default Q);
    * ``score="general"`` (Luong): ``e = q^T W m``;
    * ``score="dot"`` (Luong): ``e = q^T m``, needs Q == K.

    Parameters (torch's names and shapes, :func:`score_param_shapes`), with torch's nn.Linear
    default initialisation ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` drawn from
    ``np.random.default_rng(seed)`` in this order::

        additive  query.weight (A, Q)  bound 1/sqrt(Q)    general  key.weight (Q, K)  1/sqrt(K)
                  key.weight   (A, K)  bound 1/sqrt(K)    dot      none
                  key.bias     (A,)    bound 1/sqrt(K)
                  score.weight (1, A)  bound 1/sqrt(A)

    The whole query block goes through :func:`attend_forward` at once (no loop over T); the
    equations are in :func:`prepare_keys`, :func:`attend_forward`, :func:`attend_backward` and
    :func:`keys_backward`, which a decoder calls one step at a time with ``attn.params`` and
    ``attn.grads`` to get the same numbers.

    Memory: forward keeps the memory (a batch-major copy) and its keys ``(B, S, D)``, the
    weights ``(B, T, S)`` and, additive, ``tanh`` of the scores' hidden layer ``(B, T, S, A)``.
    """

    backward_unpacks_outputs = True  # backward(dcontext, dweights): one argument per output

    def __init__(self, query_size: int, memory_size: int, score: str = "additive",
                 attention_size: int | None = None, dtype: Any = np.float64,
                 seed: int | None = None) -> None:
        super().__init__(dtype)
        self.score = _check_score(score)
        self.query_size = check_size("query_size", query_size)
        self.memory_size = check_size("memory_size", memory_size)
        self.attention_size: int | None = None
        if score == "additive":
            self.attention_size = (self.query_size if attention_size is None
                                   else check_size("attention_size", attention_size))
        elif attention_size is not None:
            raise ValueError(f"attention_size is for the additive score only; the {score!r} "
                             f"score has no hidden layer (got attention_size={attention_size!r})")
        if score == "dot" and self.query_size != self.memory_size:
            raise ShapeError(f"the dot score needs query_size == memory_size, got "
                             f"{self.query_size} and {self.memory_size}")
        fan_in = {"query.weight": self.query_size, "key.weight": self.memory_size,
                  "key.bias": self.memory_size, "score.weight": self.attention_size or 0}
        rng = np.random.default_rng(seed)
        for name, shape in score_param_shapes(score, self.query_size, self.memory_size,
                                              self.attention_size).items():
            k = 1.0 / np.sqrt(fan_in[name])      # nn.Linear's bound, for its weight and bias
            self._add_param(name, rng.uniform(-k, k, shape))
        self._cache: AttendCache | None = None

    def __repr__(self) -> str:
        size = f", attention_size={self.attention_size}" if self.score == "additive" else ""
        return (f"Attention({self.query_size}, {self.memory_size}, score={self.score!r}{size}, "
                f"dtype={np.dtype(self.dtype).name})")

    def forward(self, queries: np.ndarray, memory: np.ndarray,
                lengths: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Attend with every query step over the memory.

        Args:
            queries: ``(T, B, Q)`` in the module's dtype.
            memory: ``(S, B, K)`` in the module's dtype.
            lengths: optional ``(B,)`` integer memory lengths in ``[1, S]``; memory steps
                ``s >= lengths[b]`` get weight exactly 0, and their values (even NaN) reach no
                result and no gradient.

        Returns:
            ``context`` ``(T, B, K)`` and ``weights`` ``(T, B, S)``; each ``weights[t, b]`` sums
            to 1.

        Raises ``DTypeError`` (a ``TypeError``) for a wrong dtype, ``TypeError`` for
        non-integer ``lengths``, ``ShapeError`` (a ``ValueError``) for a wrong rank, width,
        batch, an empty input or ``lengths`` of the wrong shape or range.
        """
        queries = check_array("queries", queries, self.dtype, (3,))
        memory = check_array("memory", memory, self.dtype, (3,))
        if queries.shape[2] != self.query_size:
            raise ShapeError(f"queries have {queries.shape[2]} features, expected "
                             f"query_size={self.query_size}")
        if memory.shape[2] != self.memory_size:
            raise ShapeError(f"memory has {memory.shape[2]} features, expected "
                             f"memory_size={self.memory_size}")
        if queries.shape[1] != memory.shape[1]:
            raise ShapeError(f"queries have batch {queries.shape[1]} but memory has batch "
                             f"{memory.shape[1]}")
        if 0 in queries.shape[:2] or memory.shape[0] == 0:
            raise ShapeError(f"queries and memory must have at least one step and one "
                             f"sequence, got shapes {queries.shape} and {memory.shape}")
        keys = prepare_keys(self.score, self.params, memory, lengths)
        context, weights, self._cache = attend_forward(self.score, self.params, queries, keys)
        return context, weights

    def backward(self, dcontext: np.ndarray | None,
                 dweights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Backpropagate through the last forward call; ADD parameter gradients into ``grads``.

        Args:
            dcontext: dL/dcontext ``(T, B, K)``, or None for zeros.
            dweights: dL/dweights ``(T, B, S)``, or None for zeros.

        Returns:
            ``(dqueries (T, B, Q), dmemory (S, B, K))``; ``dmemory`` is exactly 0 at padded
            steps.

        Raises ``RuntimeError`` before any forward, ``DTypeError`` for a wrong dtype and
        ``ShapeError`` for a wrong shape (nothing is changed then).
        """
        if self._cache is None:
            raise RuntimeError("Attention.backward called before forward; call forward first")
        B, T, S = self._cache.alpha.shape
        if dweights is not None:
            dweights = check_array("dweights", dweights, self.dtype, (3,))
            if dweights.shape != (T, B, S):
                raise ShapeError(f"dweights must have the weights' shape {(T, B, S)}, got "
                                 f"{dweights.shape}")
        dq = attend_backward(self.score, self.params, self.grads, dcontext, dweights,
                             self._cache)
        assert dq is not None
        return dq, keys_backward(self.score, self.params, self.grads, self._cache.keys)


class AttentionPooling(Module):
    """Additive attention pooling over time, with per-sequence ``lengths``.

    ``context, weights = attn(outputs, lengths=None)``; ``doutputs = attn.backward(dcontext,
    dweights=None)``.

    This is additive attention with no query term: the outputs are the memory, scored by
    ``e = v^T tanh(W o + bias)``, and it runs through :func:`prepare_keys`,
    :func:`attend_forward` (with ``query=None``), :func:`attend_backward` and
    :func:`keys_backward` with ``proj`` in the role of ``key``.

    Parameters (torch's names, as if built from ``proj = nn.Linear(F, A)`` and
    ``score = nn.Linear(A, 1, bias=False)``), with torch's default initialisation, drawn from
    ``np.random.default_rng(seed)`` in this order:

    * ``proj.weight``  W (A, F), ``U(-1/sqrt(F), 1/sqrt(F))``
    * ``proj.bias``    bias (A,), ``U(-1/sqrt(F), 1/sqrt(F))``
    * ``score.weight`` v (1, A), ``U(-1/sqrt(A), 1/sqrt(A))``

    Shapes: T steps, B sequences, F = ``input_size``, A = ``attention_size``. ``batch_first``
    only changes the layout of ``outputs``, ``weights`` and ``doutputs`` (to (B, T, F), (B, T),
    (B, T, F)).

    Forward (``[t, b]`` indexes a step of a sequence; in the functions' symbols m = O, k = Z)::

        M[t, b]  = t < lengths[b]                   (T, B)   valid steps (all True without lengths)
        O        = outputs, 0 where not M           (T, B, F) padded steps never reach a result
        Z        = O W^T + bias                     (T, B, A) one matrix product for all steps
        U        = tanh(Z)
        e        = U v^T                            (T, B)   the scores
        alpha    = softmax over t of e, -inf where not M, max subtracted  (T, B)  ``weights``
        context  = Σ_t alpha[t, :, None] O[t]       (B, F)

    Backward, given dcontext = dL/dcontext (B, F) and dweights = dL/dweights (T, B, time-major
    here), each zeros when None::

        dalpha   = Σ_f O[..., f] dcontext[None, :, f] + dweights,  0 where not M      (T, B)
        de       = alpha ⊙ (dalpha - Σ_t alpha ⊙ dalpha)      (T, B)  softmax backward
        dZ       = de v ⊙ (1 - U²)                            (T, B, A)  tanh' = 1 - tanh²
        dv      += Σ de U                                     (1, A)
        dW      += Σ dZ^T O                                   (A, F)
        dbias   += Σ dZ                                       (A,)
        dO       = dZ W + alpha[:, :, None] dcontext[None]    (T, B, F)

    ``doutputs`` is dO in the layout of ``outputs``. Its second term is the direct path (context
    is linear in O), its first the path through the scores. At a padded step alpha = 0 and
    de = 0, so its weight and its gradient are exactly 0 (whatever ``dweights`` holds there).

    Memory: forward keeps a batch-major copy of O, Z and U (B, T, A) and alpha.
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
        self._ctx: AttendCache | None = None

    def __repr__(self) -> str:
        return (f"AttentionPooling({self.input_size}, {self.attention_size}, "
                f"batch_first={self.batch_first}, dtype={np.dtype(self.dtype).name})")

    def _as_score(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``params`` or ``grads`` under the additive score's names (the same arrays)."""
        return {"key.weight": arrays["proj.weight"], "key.bias": arrays["proj.bias"],
                "score.weight": arrays["score.weight"]}

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
        if O.shape[0] == 0 or O.shape[1] == 0:
            raise ShapeError(f"outputs must have at least one time step and one sequence, "
                             f"got shape {outputs.shape}")
        keys = prepare_keys("additive", self._as_score(self.params), O, lengths)
        context, alpha, self._ctx = attend_forward("additive", self._as_score(self.params),
                                                   None, keys)
        # alpha is (B, T), a fresh array: editing the weights cannot change backward
        return context, (alpha if self.batch_first else alpha.T.copy())

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
        B, _, T = self._ctx.alpha.shape
        if dweights is not None:
            w_shape = (B, T) if self.batch_first else (T, B)
            dweights = check_array("dweights", dweights, self.dtype, (2,))
            if dweights.shape != w_shape:
                raise ShapeError(f"dweights must have the weights' shape {w_shape}, "
                                 f"got {dweights.shape}")
            if not self.batch_first:
                dweights = dweights.T                # (B, T): alpha's layout in the functions
        p, g = self._as_score(self.params), self._as_score(self.grads)
        attend_backward("additive", p, g, dcontext, dweights, self._ctx)
        dO = keys_backward("additive", p, g, self._ctx.keys)   # (T, B, F)
        return dO.transpose(1, 0, 2) if self.batch_first else dO
