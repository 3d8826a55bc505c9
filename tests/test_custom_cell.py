"""A cell torch does not have, written as a Step pair only, gets layers for free.

The peephole LSTM (Gers & Schmidhuber, 2000) lets the gates look at the cell state. Written as a
``numpy_rnn.Step`` subclass it runs in ``numpy_rnn.Recurrent`` with stacking, both directions,
lengths and dropout, and ``numpy_rnn.nn.gradcheck`` verifies its hand-written backward.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import numpy_rnn as nr
from numpy_rnn.nn.steps import sigmoid


class PeepholeCache(NamedTuple):
    ifgo: np.ndarray    # (T, B, 4H) gates i, f, g, o
    tanh_c: np.ndarray  # (T, B, H) tanh(c')


class PeepholeLSTMStep(nr.Step):
    r"""LSTM with diagonal peephole weights ``w_ci, w_cf, w_co`` (each ``(H,)``).

    Forward, with ``a = gx + h W_hh^T + b_hh = [a_i, a_f, a_g, a_o]``::

        i  = σ(a_i + w_ci ⊙ c)
        f  = σ(a_f + w_cf ⊙ c)
        g  = tanh(a_g)
        c' = f ⊙ c + i ⊙ g
        o  = σ(a_o + w_co ⊙ c')
        h' = o ⊙ tanh(c')

    Backward::

        da_o = dh' ⊙ tanh(c') ⊙ o(1-o)
        dc'  = dc' + dh' ⊙ o ⊙ (1 - tanh(c')^2) + da_o ⊙ w_co
        da_i = dc' ⊙ g ⊙ i(1-i)     da_f = dc' ⊙ c ⊙ f(1-f)     da_g = dc' ⊙ i ⊙ (1-g^2)
        dc   = dc' ⊙ f + da_i ⊙ w_ci + da_f ⊙ w_cf
        dh   = da W_hh
        dw_ci = Σ da_i ⊙ c    dw_cf = Σ da_f ⊙ c    dw_co = Σ da_o ⊙ c'      (after the loop)
    """

    num_gates = 4
    state_names = ("h", "c")
    shares_gate_grads = True

    def state_sizes(self):
        return (self.hidden_size, self.hidden_size)

    def extra_param_shapes(self):
        H = self.hidden_size
        return {"w_ci": (H,), "w_cf": (H,), "w_co": (H,)}

    def new_cache(self, T, B, dtype):
        H = self.hidden_size
        return PeepholeCache(np.empty((T, B, 4 * H), dtype), np.empty((T, B, H), dtype))

    def forward(self, p, gx, prev, new, cache, t):
        (h, c), (h_new, c_new) = prev, new
        H = self.hidden_size
        a = cache.ifgo[t]
        np.matmul(h, p["weight_hh"].T, out=a)
        a += gx
        if p["bias_hh"] is not None:
            a += p["bias_hh"]
        a[:, :H] += p["w_ci"] * c
        a[:, H:2 * H] += p["w_cf"] * c
        sigmoid(a[:, :2 * H], out=a[:, :2 * H])
        np.tanh(a[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])
        i, f, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H]
        c_new[...] = f * c + i * g
        o = a[:, 3 * H:]
        o += p["w_co"] * c_new
        sigmoid(o, out=o)
        np.tanh(c_new, out=cache.tanh_c[t])
        np.multiply(o, cache.tanh_c[t], out=h_new)

    def backward(self, p, dnew, prev, new, cache, t, dgx, dgh):
        (dh_new, dc_new), (_, c) = dnew, prev
        H = self.hidden_size
        ifgo, tanh_c = cache.ifgo[t], cache.tanh_c[t]
        i, f, g, o = ifgo[:, :H], ifgo[:, H:2 * H], ifgo[:, 2 * H:3 * H], ifgo[:, 3 * H:]
        dai, daf, dag, dao = dgx[:, :H], dgx[:, H:2 * H], dgx[:, 2 * H:3 * H], dgx[:, 3 * H:]
        dao[...] = dh_new * tanh_c * o * (1 - o)
        dc = dc_new + dh_new * o * (1 - tanh_c ** 2) + dao * p["w_co"]
        dai[...] = dc * g * i * (1 - i)
        daf[...] = dc * c * f * (1 - f)
        dag[...] = dc * i * (1 - g * g)
        dc_prev = dc * f + dai * p["w_ci"] + daf * p["w_cf"]
        return (dgx @ p["weight_hh"], dc_prev)

    def finish_backward(self, p, g, cache, dgx, dgh, prev, new):
        H = self.hidden_size
        c_prev, c_new = prev[1], new[1]
        g["w_ci"] += np.einsum("tbh,tbh->h", dgx[..., :H], c_prev)
        g["w_cf"] += np.einsum("tbh,tbh->h", dgx[..., H:2 * H], c_prev)
        g["w_co"] += np.einsum("tbh,tbh->h", dgx[..., 3 * H:], c_new)


def test_peephole_lstm_stack_passes_gradcheck_with_directions_lengths_and_dropout():
    rng = np.random.default_rng(0)
    layer = nr.Recurrent(PeepholeLSTMStep(3), input_size=2, num_layers=2, bidirectional=True,
                         dropout=0.25, seed=1)
    assert "w_co_l1_reverse" in layer.params
    x = rng.standard_normal((5, 3, 2))
    hx = (rng.standard_normal((4, 3, 3)), rng.standard_normal((4, 3, 3)))
    report = nr.gradcheck(layer, x, hx, lengths=np.array([5, 2, 4]))
    assert report.ok(1e-6), str(report)
    assert {"w_ci_l0", "w_cf_l1", "w_co_l0_reverse", "x", "h0", "c0"} <= set(report.errors)


def test_peephole_lstm_with_zero_peepholes_equals_the_builtin_lstm():
    rng = np.random.default_rng(1)
    ref = nr.LSTM(4, 5, num_layers=2, seed=3)
    peep = nr.Recurrent(PeepholeLSTMStep(5), input_size=4, num_layers=2, seed=3)
    state = ref.state_dict()
    for name in peep.params:
        if name.startswith("w_c"):
            state[name] = np.zeros(5)
    peep.load_state_dict(state)
    x = rng.standard_normal((6, 2, 4))
    out_ref, (h_ref, c_ref) = ref(x)
    out, (h, c) = peep(x)
    np.testing.assert_allclose(out, out_ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(h, h_ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(c, c_ref, rtol=1e-13, atol=1e-14)


def test_peephole_weights_change_the_output():
    rng = np.random.default_rng(2)
    peep = nr.Recurrent(PeepholeLSTMStep(5), input_size=4, seed=3)
    x = rng.standard_normal((6, 2, 4))
    out1, _ = peep(x)
    peep.params["w_co_l0"] += 0.5
    out2, _ = peep(x)
    assert np.max(np.abs(out1 - out2)) > 1e-3


@pytest.mark.parametrize("bias", [True, False])
def test_peephole_cell_passes_gradcheck(bias):
    rng = np.random.default_rng(3)
    cell = nr.RecurrentCell(PeepholeLSTMStep(4), input_size=3, bias=bias, seed=0)
    x = rng.standard_normal((2, 3))
    report = nr.gradcheck(cell, x, (rng.standard_normal((2, 4)), rng.standard_normal((2, 4))))
    assert report.ok(1e-6), str(report)
