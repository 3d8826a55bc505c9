"""Memory held for backward: what numpy_rnn's layer keeps after forward, against the shapes.

Three numbers per configuration, all in bytes:

* ``held``: the distinct buffers reachable from the layer's backward context (``layer._ctx``)
  after one forward call. Views count as the whole buffer they view (that is what stays alive),
  and each buffer counts once. This includes the layer-0 input ``x`` (kept by reference, not
  copied) and excludes the parameters, which exist anyway.
* ``expected``: the count from the shapes, as :mod:`numpy_rnn.nn.recurrent`'s docstring documents
  it, by component: per layer the states ``(T+1, B, H)`` (and ``(T+1, B, H)`` for ``c``) and the
  step's cache (LSTM ``(T, B, 5H)`` and a ``(B, H)`` scratch, GRU ``(T, B, 6H)``, RNN none),
  plus the layer-0 input ``(T, B, F)``. Upper layers read a view of the layer below's states: no
  extra copy.
  ``unexplained`` is ``held - expected``: 0 when the layer keeps exactly what is documented.
* ``input_projection``: one layer's input projection ``(T, B, G*H)``, which the docstring
  documents as a forward-time transient (the layer drops it after its time loop; the caches
  hold what backward needs from it), so it is not in ``expected``; it is part of
  ``peak_forward``.
* ``peak_forward`` / ``peak_backward``: the highest traced NumPy allocation during one forward
  and one backward call (``tracemalloc``, which NumPy reports its data buffers to), above what
  was allocated before the call: the transient buffers on top of what is held.

For torch (CPU, autograd) ``torch_saved`` is the total size of the distinct storages autograd
saves for backward during forward, the parameters excluded (``saved_tensors_hooks``).
"""

from __future__ import annotations

import dataclasses
import tracemalloc
from typing import Any

import numpy as np

from numpy_rnn.nn import held_for_backward

from .configs import Config
from .workloads import make_recurrent_pair

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def expected_components(cfg: Config) -> dict[str, int]:
    """Bytes held for backward by component, counted from the shapes as numpy_rnn documents them
    (:func:`numpy_rnn.nn.held_for_backward`, the count the memory guard also uses)."""
    return held_for_backward(cfg.cell, cfg.seq_len, cfg.batch, cfg.input_size, cfg.hidden_size,
                             cfg.num_layers, cfg.dtype)


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _walk(obj: Any, seen: set[int], out: list[np.ndarray]) -> None:
    """Collect every ndarray reachable through dicts, lists, tuples, dataclasses, namedtuples."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _walk(v, seen, out)
    elif isinstance(obj, (list, tuple)):           # namedtuples are tuples
        for v in obj:
            _walk(v, seen, out)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _walk(getattr(obj, f.name), seen, out)


def held_bytes(ctx: Any, exclude: list[np.ndarray] = ()) -> tuple[int, int]:
    """``(bytes, buffers)``: the distinct buffers reachable from ``ctx``, but ``exclude``'s."""
    arrays: list[np.ndarray] = []
    _walk(ctx, set(), arrays)
    skip = {id(_root(a)) for a in exclude}
    roots = {id(r): r for r in map(_root, arrays) if id(r) not in skip}
    return sum(r.nbytes for r in roots.values()), len(roots)


def _traced_peak(fn) -> int:
    """Highest traced allocation during ``fn()`` above the level before it, in bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


def torch_saved_bytes(pair) -> int:
    """Distinct storages torch's autograd saves in forward, parameters excluded."""
    import torch
    params = {p.untyped_storage().data_ptr() for p in pair.module.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            saved[s.data_ptr()] = s.nbytes()
        return t

    x = torch.from_numpy(pair.x).requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = pair.module(x)
    del out
    return sum(saved.values())


def measure_memory(cfg: Config) -> dict:
    """The memory numbers of one configuration (see the module docstring)."""
    pair = make_recurrent_pair(cfg)
    pair.numpy_forward()                         # first call: one-off allocations out of the way
    peak_fwd = _traced_peak(pair.numpy_forward)
    held, buffers = held_bytes(pair.layer._ctx, exclude=list(pair.layer.params.values()))
    ds = pair.dstates if pair.is_lstm else pair.dstates[0]
    peak_bwd = _traced_peak(lambda: pair.layer.backward(pair.dout, ds))
    parts = expected_components(cfg)
    expected = sum(parts.values())
    n = np.dtype(cfg.dtype).itemsize
    projection = n * cfg.seq_len * cfg.batch * GATES[cfg.cell] * cfg.hidden_size
    return dict(held=held, buffers=buffers, expected=expected, expected_components=parts,
                held_over_expected=held / expected, unexplained=held - expected,
                input_projection=projection, peak_forward=peak_fwd, peak_backward=peak_bwd,
                torch_saved=torch_saved_bytes(pair))
