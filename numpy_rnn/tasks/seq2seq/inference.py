"""What the seq2seq model's ``encode`` and ``decode_step`` compute once and reuse, so that
decoding one word at a time (a speech front end's batch of 1) costs little more than its
matrix products (issue 26).

At batch 1 a product ``x W^T`` reads a whole weight matrix to multiply one row, and a step is
a few dozen small NumPy calls; the work that is not needed at every step is moved out of it:

* **Tables, one row per token** (:class:`Tables`). The embedded token enters the stack only
  through its layer's input weights, so its share of the input projection is a row of a
  table computed once from the weights::

      source, direction d:  P_d = E_s W_ih_l0(d)^T + b        (Vs, G*H/2)   a whole-sequence
                                                                            run's biases
      target:               P_t = E_t W_ih_l0[:, :Et]^T + b   (Vt, G*H)     a stepwise run's

  (``b``: the biases :func:`~numpy_rnn.nn.recurrent.input_biases` names, added as the layer
  adds them). ``encode`` then gathers ``gx = P_d[source]`` instead of multiplying the embedded
  source by ``W_ih``, and ``decode_step`` ``gx = P_t[y_{t-1}] + f_{t-1} W_ih[:, Et:]^T``, as the
  training forward splits the decoder's input projection (``project_part`` and
  ``add_input``); the recurrent step itself is the library's
  (:meth:`~numpy_rnn.nn.recurrent.Recurrent.forward_projected`,
  :meth:`~numpy_rnn.nn.recurrent.Recurrent.forward_step` with ``projected``). The same
  products and sums as the general path, row by row; BLAS may round a row of a product
  differently by the product's shape, so the two agree to float rounding
  (``tests/test_fast_decoding.py``: the same tokens for every greedy and beam output, the
  same log-probabilities to rounding, float32 and float64).
* **A memory's session** (:class:`Session`): what ``decode_step`` needs of the memory it
  attends over, the inputs' checks, the attention's keys (a ``B*S x H x H`` product) and
  whether any source is padded, is done at the first step over a memory object and reused at
  every later step that passes the same memory and lengths objects, with the decoder stack's
  step prepared once (:class:`~numpy_rnn.nn.recurrent.StackStep`); a step then checks only
  its tokens, feed and state.

**When the weights change.** The tables depend on the weights, and optimizers, the EMA's swap
and ``load_state_dict`` change them in place, so the tables carry a
:class:`WeightsFingerprint` of what they were computed from and are rebuilt when it no longer
matches. It is checked when a memory is encoded, and when a memory that ``encode`` did not
just make is first decoded over: once per word, never per step, for a few microseconds.
``load_state_dict`` bumps the model's version (exact); the arrays must be the same objects;
and a sample of their elements must be unchanged: every element of the biases, some elements
of every row of the embeddings (an update may move a few rows of an embedding only, each row
whole) and some 64 elements spread over each input matrix. An optimizer step or an EMA swap
moves essentially every element of a matrix, so a sample sees it; an edit by hand of a few
elements of a matrix may not be seen: load the weights with ``load_state_dict`` (or call
:meth:`Seq2Seq.weights_changed`) after one. Within one memory's session only the version is
checked: a search runs on fixed weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ...nn.attention import Keys
from ...nn.recurrent import Recurrent, StackStep, input_biases

__all__ = ["Session", "Tables", "WeightsFingerprint", "build_tables"]

#: About how many elements of each large weight matrix the fingerprint samples (a dense
#: change, which is what an optimizer step or an EMA swap makes, moves them all).
SAMPLE = 64
#: Arrays with at most this many elements are compared whole (biases).
WHOLE = 1 << 12


class WeightsFingerprint:
    """The version, identity and a sample of the contents of ``arrays``, to tell cheaply
    whether something computed from them is still current (see the module's docstring).

    The sample of a large array is a strided view of it, every ``k``-th element in memory
    order with ``k`` prime to the row length (so it meets every column and every stretch of
    rows), made once; :meth:`matches` gathers the views into one vector and compares it with
    the copy taken at construction."""

    def __init__(self, arrays: Sequence[np.ndarray], version: int) -> None:
        self.arrays = tuple(arrays)
        self.version = version
        self._views = [_sample_view(a) for a in self.arrays]
        self._values = self._gather()

    def _gather(self) -> np.ndarray:
        return np.concatenate(self._views)

    def matches(self, arrays: Sequence[np.ndarray], version: int) -> bool:
        """True when ``arrays`` are the same objects, at the same ``version``, with the same
        sampled elements."""
        if version != self.version or len(arrays) != len(self.arrays) \
                or any(a is not b for a, b in zip(arrays, self.arrays)):
            return False
        return bool(np.array_equal(self._gather(), self._values))


def _sample_view(a: np.ndarray) -> np.ndarray:
    """``a`` flat (a view: the parameters are contiguous), whole when small, else every
    ``k``-th element, ``k`` prime to the last axis's length, and no longer than a row when
    ``a`` has few rows (an embedding: then every row is sampled)."""
    flat = a.reshape(-1)
    if flat.size <= WHOLE:
        return flat
    cols = a.shape[-1]
    k = max(flat.size // SAMPLE, 1)
    if flat.size // cols <= SAMPLE:
        k = min(k, cols - 1)
    k |= 1
    while math.gcd(k, cols) != 1:
        k += 2
    return flat[::k]


class Tables(NamedTuple):
    """The per-token tables of one set of weights (see the module's docstring)."""

    source: list[np.ndarray]      # per encoder direction, (Vs, G*H/2): layer 0's gx per token
    target: np.ndarray            # (Vt, G*H): the decoder's layer 0's gx per token, fed part aside
    fed_weight_t: np.ndarray | None   # (H, G*H): W_ih_l0[:, Et:]^T, a view (input feeding)
    fingerprint: WeightsFingerprint


def table_sources(encoder: Recurrent, decoder: Recurrent, source_embedding: np.ndarray,
                  target_embedding: np.ndarray) -> list[np.ndarray]:
    """The arrays the tables are computed from, in a fixed order."""
    arrays = [source_embedding, target_embedding]
    for layer, d in [(encoder, d) for d in range(encoder.num_directions)] + [(decoder, 0)]:
        p = layer.step_params(0, d)
        arrays += [p[k] for k in ("weight_ih", "bias_ih", "bias_hh") if p[k] is not None]
    return arrays


def _table(embedding: np.ndarray, weight: np.ndarray, biases: tuple[np.ndarray, ...]
           ) -> np.ndarray:
    """``embedding W^T`` plus ``biases`` one after another, as the layer adds them."""
    table = embedding @ weight.T
    for b in biases:
        table += b
    return table


def build_tables(encoder: Recurrent, decoder: Recurrent, source_embedding: np.ndarray,
                 target_embedding: np.ndarray, target_width: int, input_feeding: bool,
                 version: int) -> Tables:
    """The tables of the current weights: the encoder's layer 0 per direction with a
    whole-sequence run's biases (``Recurrent.forward`` projects the source in one product), the
    decoder's layer 0 over the embedding's ``target_width`` = Et columns with a stepwise run's
    (the training forward's input feeding projects the embedding part so, then adds the fed
    part step by step)."""
    fingerprint = WeightsFingerprint(table_sources(encoder, decoder, source_embedding,
                                                   target_embedding), version)
    source = []
    for d in range(encoder.num_directions):
        p = encoder.step_params(0, d)
        biases, _ = input_biases(encoder.step, p, stepwise=False)
        source.append(_table(source_embedding, p["weight_ih"], biases))
    p = decoder.step_params(0)
    biases, _ = input_biases(decoder.step, p, stepwise=True)
    w_ih = p["weight_ih"]
    target = _table(target_embedding, w_ih[:, :target_width], biases)
    fed = w_ih[:, target_width:].T if input_feeding else None
    return Tables(source=source, target=target, fed_weight_t=fed, fingerprint=fingerprint)


class Session(NamedTuple):
    """What ``decode_step`` keeps of the memory it last attended over: the caller's objects
    (a later step that passes the same ones reuses the rest), the model's weights version and
    tables at the time, the checked lengths and the attention's keys (None without
    attention)."""

    memory: Any                   # the caller's memory object (B, S, H)
    lengths: Any                  # the caller's lengths object (B,)
    version: int
    tables: Tables
    keys: Keys | None
    decoder: StackStep            # the decoder stack's step, prepared once
