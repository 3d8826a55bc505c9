"""Attention of a query sequence over a memory in torch.nn: the oracle for
:class:`numpy_rnn.nn.Attention`, differentiated by autograd.

The same three scores (``additive``: Bahdanau, ``general`` and ``dot``: Luong), written with
torch ops. The ``nn.Linear`` children are named ``query``, ``key`` and ``score``, so the state-dict
keys equal the NumPy layer's parameter names (``query.weight``, ``key.weight``, ``key.bias``,
``score.weight``; see :func:`numpy_rnn.nn.attention.score_param_shapes`).

Padded memory steps (``valid`` False) are set to 0 before anything reads them and their scores
to ``-inf``, so their weight is exactly 0 and their values (even NaN) reach no result and no
gradient, as in the NumPy layer.
"""

from __future__ import annotations

import torch
from torch import nn

from numpy_rnn.nn.attention import SCORES

__all__ = ["Attention"]


class Attention(nn.Module):
    """``context, weights = attn(queries (T, B, Q), memory (S, B, K), valid (S, B) | None)``.

    ``context (T, B, K)``, ``weights (T, B, S)``. For a decoder, :meth:`project_keys` computes
    the key side once per memory and :meth:`step` attends with one query ``(B, Q)`` (or a
    block ``(T, B, Q)``)::

        additive  e = score(tanh(query(q) + key(m)))      query: Linear(Q, A, bias=False)
                                                          key:   Linear(K, A)
                                                          score: Linear(A, 1, bias=False)
        general   e = q · key(m)                          key:   Linear(K, Q, bias=False)
        dot       e = q · m                               (Q == K)
        alpha = softmax over the valid memory steps of e;  context = Σ_s alpha_s m_s
    """

    def __init__(self, query_size: int, memory_size: int, score: str = "additive",
                 attention_size: int | None = None, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}: use one of "
                             f"{', '.join(map(repr, SCORES))}")
        if score == "dot" and query_size != memory_size:
            raise ValueError(f"the dot score needs query_size == memory_size, got {query_size} "
                             f"and {memory_size}")
        if score != "additive" and attention_size is not None:
            raise ValueError("attention_size is for the additive score only")
        self.score_name = score
        self.query: nn.Linear | None = None
        self.key: nn.Linear | None = None
        self.score: nn.Linear | None = None
        if score == "additive":
            A = query_size if attention_size is None else attention_size
            self.query = nn.Linear(query_size, A, bias=False, dtype=dtype, device=device)
            self.key = nn.Linear(memory_size, A, dtype=dtype, device=device)
            self.score = nn.Linear(A, 1, bias=False, dtype=dtype, device=device)
        elif score == "general":
            self.key = nn.Linear(memory_size, query_size, bias=False, dtype=dtype, device=device)

    @staticmethod
    def masked_memory(memory: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """``memory (S, B, K)`` with 0 at the padded steps (``valid (S, B)`` False)."""
        if valid is None:
            return memory
        return torch.where(valid[:, :, None], memory, torch.zeros((), dtype=memory.dtype,
                                                                  device=memory.device))

    def project_keys(self, memory: torch.Tensor, valid: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """The key side of the score, once per memory: ``(S, B, A)`` additive (``key(m)``),
        ``(S, B, Q)`` general, the (masked) memory itself for dot."""
        m = self.masked_memory(memory, valid)
        return m if self.key is None else self.key(m)

    def step(self, query: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor | None,
             keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One query ``(B, Q)`` (or a block ``(T, B, Q)``) against ``memory (S, B, K)``.

        ``valid (S, B)`` bool marks the memory steps to attend to (None: all); ``keys`` is
        :meth:`project_keys` of the same memory and mask, computed here when None. Returns
        ``context (B, K)`` and ``alpha (B, S)`` (``(T, B, K)``, ``(T, B, S)`` for a block).
        """
        one = query.dim() == 2
        q = query[None] if one else query                                  # (T, B, Q)
        m = self.masked_memory(memory, valid)
        k = self.project_keys(memory, valid) if keys is None else keys     # (S, B, D)
        if self.score_name == "additive":
            assert self.query is not None and self.score is not None
            Z = self.query(q)[:, None] + k[None]                            # (T, S, B, A)
            e = self.score(torch.tanh(Z)).squeeze(-1).permute(0, 2, 1)      # (T, B, S)
        else:
            e = torch.einsum("tbq,sbq->tbs", q, k)
        if valid is not None:
            e = e.masked_fill(~valid.T[None], float("-inf"))               # exp(-inf) = 0
        alpha = torch.softmax(e, dim=-1)                                    # (T, B, S)
        context = torch.einsum("tbs,sbk->tbk", alpha, m)
        return (context[0], alpha[0]) if one else (context, alpha)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``queries (T, B, Q)``, ``memory (S, B, K)``, ``valid (S, B)`` bool or None ->
        ``context (T, B, K)``, ``weights (T, B, S)``."""
        return self.step(queries, memory, valid)
