"""The floor: the matrix products a workload cannot avoid, with its shapes, and nothing else.

For each configuration the floor runs the same sequence of ``np.matmul`` calls that numpy_rnn's
layer runs, with the same shapes, the same operand layouts (transposed weights are views, as in
``x @ W.T``) and the results written into preallocated buffers (``out=``), but without any of the
elementwise work (gates, biases, state updates, gradient sums). NumPy's time divided by the floor's
says how much of it is spent outside BLAS: a multiple of 1.0 would mean nothing is left to gain in
Python and the ufuncs.

Per layer ``l`` (input size ``F_l = F`` for ``l = 0``, else ``H``), ``G`` gates, ``GH = G*H``:

forward::

    gx   = x (T*B, F_l) @ W_ih^T (F_l, GH)                       one product before the loop
    gh_t = h_t (B, H) @ W_hh^T (H, GH)                 t = 0..T-1 one product per step

backward (layers from the top)::

    dh_t = dgh_t (B, GH) @ W_hh (GH, H)                t = T-1..0 one product per step
    dW_ih = dgx^T (GH, T*B) @ x (T*B, F_l)                       after the loop
    dW_hh = dgh^T (GH, T*B) @ h_prev (T*B, H)
    dx    = dgx (T*B, GH) @ W_ih (GH, F_l)

The recurrent products are independent here (the floor's inputs do not change), which does not
matter to BLAS: a product costs the same whatever the numbers are, as long as they are normal
floats (inputs are drawn in [-1, 1), so no denormals).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .configs import Config

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


@dataclass
class GemmSequence:
    """A list of ``out = a @ b`` products, run in order by ``run()``."""

    ops: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    flops: int = 0   # 2 * m * n * k summed over the products

    def add(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        (m, k), (_, n) = a.shape, b.shape
        self.ops.append((a, b, out))
        self.flops += 2 * m * n * k

    def run(self) -> None:
        for a, b, out in self.ops:
            np.matmul(a, b, out=out)

    def __len__(self) -> int:
        return len(self.ops)


def _layer_arrays(cfg: Config, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Weights and activation buffers of every layer, shaped like numpy_rnn's."""
    T, B, H, G = cfg.seq_len, cfg.batch, cfg.hidden_size, GATES[cfg.cell]
    dt = np.dtype(cfg.dtype)

    def u(*shape):
        return rng.uniform(-1.0, 1.0, size=shape).astype(dt)

    layers = []
    for layer in range(cfg.num_layers):
        f_in = cfg.input_size if layer == 0 else H
        layers.append(dict(
            x=u(T * B, f_in),                   # the layer's input, all steps
            w_ih=u(G * H, f_in), w_hh=u(G * H, H),
            gx=np.empty((T * B, G * H), dt),    # input projection
            h=u(T + 1, B, H),                   # states: step t reads h[t]
            gh=np.empty((T, B, G * H), dt),     # recurrent part of the gates, per step
            dg=u(T, B, G * H),                  # gate gradients (dgx == dgh in shape)
            dh=np.empty((T, B, H), dt),         # dh_t from each step
            dw_ih=np.empty((G * H, f_in), dt), dw_hh=np.empty((G * H, H), dt),
            dx=np.empty((T * B, f_in), dt),
        ))
    return layers


def recurrent_forward_floor(cfg: Config, seed: int = 0) -> GemmSequence:
    """The products of ``layer(x)``: one input projection and ``T`` recurrent products per layer."""
    seq = GemmSequence()
    for a in _layer_arrays(cfg, np.random.default_rng(seed)):
        _add_forward(seq, a, cfg.seq_len)
    return seq


def recurrent_forward_backward_floor(cfg: Config, seed: int = 0) -> GemmSequence:
    """The products of ``layer(x)`` followed by ``layer.backward(dout, dstates)``."""
    seq = GemmSequence()
    layers = _layer_arrays(cfg, np.random.default_rng(seed))
    for a in layers:
        _add_forward(seq, a, cfg.seq_len)
    for a in reversed(layers):
        _add_backward(seq, a, cfg.seq_len)
    return seq


def _add_forward(seq: GemmSequence, a: dict, T: int) -> None:
    seq.add(a["x"], a["w_ih"].T, a["gx"])
    for t in range(T):
        seq.add(a["h"][t], a["w_hh"].T, a["gh"][t])


def _add_backward(seq: GemmSequence, a: dict, T: int) -> None:
    for t in range(T - 1, -1, -1):
        seq.add(a["dg"][t], a["w_hh"], a["dh"][t])
    dg2 = a["dg"].reshape(-1, a["dg"].shape[-1])
    h_prev2 = a["h"][:-1].reshape(-1, a["h"].shape[-1])
    seq.add(dg2.T, a["x"], a["dw_ih"])
    seq.add(dg2.T, h_prev2, a["dw_hh"])
    seq.add(dg2, a["w_ih"], a["dx"])


def sampling_floor(cfg: Config, streams: int, seed: int = 0) -> GemmSequence:
    """The products of sampling ``T`` characters for ``streams`` streams, one model call per
    character: per character and layer ``x_t (B, F_l) @ W_ih^T`` and ``h (B, H) @ W_hh^T``, then
    the decoder ``h (B, H) @ W_dec^T (H, V)``. With ``B = 1`` these are matrix-vector products that
    read every weight once per character, so their time is set by memory bandwidth, not FLOPs."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(cfg.dtype)
    H, G, B = cfg.hidden_size, GATES[cfg.cell], streams

    def u(*shape):
        return rng.uniform(-1.0, 1.0, size=shape).astype(dt)

    layers = []
    for layer in range(cfg.num_layers):
        f_in = cfg.input_size if layer == 0 else H
        layers.append((u(B, f_in), u(G * H, f_in), u(B, H), u(G * H, H),
                       np.empty((B, G * H), dt), np.empty((B, G * H), dt)))
    w_dec, logits = u(cfg.vocab, H), np.empty((B, cfg.vocab), dt)
    seq = GemmSequence()
    for _ in range(cfg.seq_len):
        for x, w_ih, h, w_hh, gx, gh in layers:
            seq.add(x, w_ih.T, gx)
            seq.add(h, w_hh.T, gh)
        seq.add(layers[-1][2], w_dec.T, logits)
    return seq
