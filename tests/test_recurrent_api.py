"""The layer and cell API: shapes, dtypes, init, state dicts, dropout, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import numpy_rnn as nr

RNG = np.random.default_rng(7)


def _x(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


LAYERS = {
    "rnn": lambda **kw: nr.RNN(3, 4, **kw),
    "gru": lambda **kw: nr.GRU(3, 4, **kw),
    "lstm": lambda **kw: nr.LSTM(3, 4, **kw),
}


def _snapshot(layer):
    return ({k: v.copy() for k, v in layer.params.items()},
            {k: v.copy() for k, v in layer.grads.items()})


def _assert_unchanged(layer, snap):
    params, grads = snap
    for k in params:
        np.testing.assert_array_equal(layer.params[k], params[k])
        np.testing.assert_array_equal(layer.grads[k], grads[k])


# -- parameters and init ----------------------------------------------------------------------

def test_parameter_names_shapes_and_order_follow_torch():
    lstm = nr.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2)
    assert list(lstm.params)[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                                     "weight_hr_l0"]
    assert list(lstm.params)[5] == "weight_ih_l0_reverse"
    assert lstm.params["weight_ih_l1"].shape == (24, 4)       # D*P input features
    assert lstm.params["weight_hh_l1_reverse"].shape == (24, 2)
    assert lstm.params["weight_hr_l1_reverse"].shape == (2, 6)
    assert set(lstm.grads) == set(lstm.params)
    gru = nr.GRU(3, 5, bias=False)
    assert list(gru.params) == ["weight_ih_l0", "weight_hh_l0"]   # absent, not zero
    assert gru.params["weight_ih_l0"].shape == (15, 3)
    cell = nr.LSTMCell(3, 5)
    assert list(cell.params) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert cell.params["weight_hh"].shape == (20, 5)


@pytest.mark.parametrize("make", [lambda s: nr.LSTM(10, 64, num_layers=2, proj_size=8, seed=s),
                                  lambda s: nr.GRUCell(10, 64, seed=s)])
def test_init_draws_uniform_within_one_over_sqrt_hidden_size_and_is_seeded(make):
    a, b, c = make(0), make(0), make(1)
    k = 1 / np.sqrt(64)
    values = np.concatenate([v.ravel() for v in a.params.values()])
    assert np.abs(values).max() <= k
    assert abs(values.mean()) < 0.05 * k
    assert abs(values.var() - k * k / 3) < 0.05 * k * k / 3        # variance of U(-k, k)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert any(not np.array_equal(a.params[n], c.params[n]) for n in a.params)


def test_load_state_dict_refuses_missing_unexpected_and_misshaped_keys_without_changing_anything():
    layer = nr.LSTM(3, 4, num_layers=2, seed=0)
    snap = _snapshot(layer)
    good = {k: np.ones_like(v) for k, v in layer.params.items()}
    missing = dict(good)
    del missing["bias_hh_l1"]
    with pytest.raises(KeyError, match=r"missing keys.*bias_hh_l1"):
        layer.load_state_dict(missing)
    with pytest.raises(KeyError, match=r"unexpected keys.*weight_hr_l0"):
        layer.load_state_dict({**good, "weight_hr_l0": np.ones((2, 4))})
    bad = dict(good)
    bad["weight_hh_l0"] = np.ones((16, 3))
    with pytest.raises(ValueError, match=r"weight_hh_l0: expected shape \(16, 4\), got \(16, 3\)"):
        layer.load_state_dict(bad)
    with pytest.raises(TypeError, match="non-real"):
        layer.load_state_dict({**good, "weight_ih_l0": good["weight_ih_l0"] + 0j})
    _assert_unchanged(layer, snap)
    layer.load_state_dict(good)
    assert all(np.all(v == 1) for v in layer.params.values())


def test_state_dict_is_a_copy_and_load_writes_in_place():
    layer = nr.GRU(3, 4, seed=0)
    arrays = dict(layer.params)
    sd = layer.state_dict()
    sd["weight_ih_l0"] += 1
    assert not np.array_equal(sd["weight_ih_l0"], layer.params["weight_ih_l0"])
    layer.load_state_dict(sd)
    assert all(layer.params[k] is arrays[k] for k in arrays)   # optimizers keep their references
    np.testing.assert_array_equal(layer.params["weight_ih_l0"], sd["weight_ih_l0"])


def test_zero_grad_and_accumulation():
    layer = nr.RNN(3, 4, seed=0)
    x, dout = _x(4, 2, 3), _x(4, 2, 4)
    layer(x)
    layer.backward(dout)
    once = {k: v.copy() for k, v in layer.grads.items()}
    layer(x)
    layer.backward(dout)
    for k in once:
        np.testing.assert_allclose(layer.grads[k], 2 * once[k], rtol=1e-14)
    layer.zero_grad()
    assert all(np.all(g == 0) for g in layer.grads.values())


# -- shapes, layouts, dtypes -------------------------------------------------------------------

@pytest.mark.parametrize("kind", LAYERS)
def test_batch_first_and_unbatched_give_the_same_numbers_as_time_major(kind):
    tm = LAYERS[kind](num_layers=2, bidirectional=True, seed=0)
    bf = LAYERS[kind](num_layers=2, bidirectional=True, batch_first=True, seed=0)
    x = _x(5, 2, 3)
    out, s = tm(x)
    out_bf, s_bf = bf(x.transpose(1, 0, 2))
    np.testing.assert_array_equal(out_bf, out.transpose(1, 0, 2))
    np.testing.assert_array_equal(np.asarray(s_bf[0] if kind == "lstm" else s_bf),
                                  np.asarray(s[0] if kind == "lstm" else s))
    out_u, s_u = tm(x[:, 0])
    np.testing.assert_allclose(out_u, out[:, 0], rtol=1e-14, atol=1e-15)
    h_u = s_u[0] if kind == "lstm" else s_u
    assert h_u.shape == (4, 4)


@pytest.mark.parametrize("kind", LAYERS)
def test_float32_layers_stay_float32_end_to_end(kind):
    layer = LAYERS[kind](num_layers=2, bidirectional=True, dtype="float32", seed=0)
    assert all(v.dtype == np.float32 for v in layer.params.values())
    x = _x(4, 2, 3, dtype=np.float32)
    out, states = layer(x)
    states = states if isinstance(states, tuple) else (states,)
    assert out.dtype == np.float32 and all(s.dtype == np.float32 for s in states)
    dx, d0 = layer.backward(out.copy(), tuple(states) if kind == "lstm" else states[0])
    d0 = d0 if isinstance(d0, tuple) else (d0,)
    assert dx.dtype == np.float32 and all(d.dtype == np.float32 for d in d0)
    assert all(g.dtype == np.float32 for g in layer.grads.values())


def test_float32_matches_float64_to_float32_precision():
    l64 = nr.LSTM(3, 8, num_layers=2, seed=0)
    l32 = nr.LSTM(3, 8, num_layers=2, dtype=np.float32)
    l32.load_state_dict(l64.state_dict())
    x = _x(6, 2, 3)
    out64, _ = l64(x)
    out32, _ = l32(x.astype(np.float32))
    np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=1e-6)


# -- dropout -----------------------------------------------------------------------------------

def test_dropout_acts_in_training_only_and_is_seeded():
    a, b = nr.GRU(3, 16, num_layers=3, dropout=0.5, seed=1), nr.GRU(3, 16, num_layers=3,
                                                                       dropout=0.5, seed=1)
    x = _x(5, 2, 3)
    out_a1, _ = a(x)
    out_a2, _ = a(x)
    out_b1, _ = b(x)
    np.testing.assert_array_equal(out_a1, out_b1)             # same seed, same masks
    assert not np.array_equal(out_a1, out_a2)                  # new masks every call
    a.eval()
    e1, _ = a(x)
    e2, _ = a(x)
    np.testing.assert_array_equal(e1, e2)
    no_dropout = nr.GRU(3, 16, num_layers=3, seed=9)
    no_dropout.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(e1, no_dropout(x)[0])


def test_dropout_does_nothing_with_one_layer():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):   # as torch warns
        layer = nr.LSTM(3, 4, dropout=0.5, seed=0)
    x = _x(3, 2, 3)
    np.testing.assert_array_equal(layer(x)[0], layer.eval()(x)[0])


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(nonlinearity="sigmoid"), "nonlinearity"),
    (dict(dropout=1.5), "dropout"),
    (dict(dropout=-0.1), "dropout"),
    (dict(num_layers=0), "num_layers"),
    (dict(dtype=np.int64), "dtype"),
    (dict(dtype=np.complex128), "dtype"),
    (dict(dtype="float16"), "dtype"),
])
def test_bad_constructor_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        nr.RNN(3, 4, **kwargs)


@pytest.mark.parametrize("proj", [4, 5, -1])
def test_proj_size_must_be_below_hidden_size(proj):
    with pytest.raises(ValueError, match="proj_size"):
        nr.LSTM(3, 4, proj_size=proj)


def test_hidden_and_input_size_must_be_positive():
    with pytest.raises(ValueError, match="hidden_size"):
        nr.GRU(3, 0)
    with pytest.raises(ValueError, match="input_size"):
        nr.LSTMCell(0, 3)


@pytest.mark.parametrize("call, exc, match", [
    (lambda l: l(_x(2, 3, 4, 3)), ValueError, "2-D or 3-D"),
    (lambda l: l(_x(3)), ValueError, "2-D or 3-D"),
    (lambda l: l(_x(5, 2, 2)), ValueError, "input_size=3"),
    (lambda l: l(np.ones((5, 2, 3), dtype=np.int64)), TypeError, "int64"),
    (lambda l: l(np.ones((5, 2, 3), dtype=np.complex128)), TypeError, "complex128"),
    (lambda l: l(_x(5, 2, 3, dtype=np.float32)), TypeError, "float32.*float64"),
    (lambda l: l(_x(5, 2, 3), (_x(2, 2, 4), _x(2, 2, 4))), ValueError,
     r"h0 must have shape \(1, 2, 4\)"),
    (lambda l: l(_x(5, 2, 3), (_x(1, 2, 4), _x(1, 2, 5))), ValueError, r"c0 must have shape"),
    (lambda l: l(_x(5, 2, 3), (_x(1, 2, 4, dtype=np.float32), None)), TypeError,
     "h0 has dtype float32"),
    (lambda l: l(_x(5, 2, 3), _x(1, 2, 4)), TypeError, "tuple"),
    (lambda l: l(_x(5, 3), (_x(1, 2, 4), None)), ValueError, "h0 must be 2-D"),
    (lambda l: l(_x(5, 2, 3), lengths=[5, 6]), ValueError, r"\[1, T=5\]"),
    (lambda l: l(_x(5, 2, 3), lengths=[0, 3]), ValueError, r"\[1, T=5\]"),
    (lambda l: l(_x(5, 2, 3), lengths=[5]), ValueError, r"shape \(2,\)"),
    (lambda l: l(_x(5, 2, 3), lengths=[5.0, 2.0]), TypeError, "integers"),
    (lambda l: l(_x(5, 3), lengths=[5]), ValueError, "batched"),
    (lambda l: l(np.zeros((0, 2, 3))), ValueError, "at least one"),
])
def test_bad_forward_input_raises_and_changes_nothing(call, exc, match):
    layer = nr.LSTM(3, 4, seed=0)
    x, dout = _x(4, 2, 3), _x(4, 2, 4)
    layer(x)
    snap = _snapshot(layer)
    with pytest.raises(exc, match=match):
        call(layer)
    _assert_unchanged(layer, snap)
    dx, _ = layer.backward(dout)     # the earlier forward is still the one backward sees
    fresh = nr.LSTM(3, 4, seed=0)
    fresh(x)
    np.testing.assert_array_equal(dx, fresh.backward(dout)[0])


@pytest.mark.parametrize("call, exc, match", [
    (lambda l: l.backward(_x(4, 2, 5)), ValueError, "output's shape"),
    (lambda l: l.backward(_x(4, 2, 4, dtype=np.float32)), TypeError, "dtype"),
    (lambda l: l.backward(_x(4, 2, 4), _x(1, 2, 4)), TypeError, "tuple"),
    (lambda l: l.backward(_x(4, 2, 4), (_x(1, 3, 4), None)), ValueError, "dh_n must have shape"),
])
def test_bad_backward_input_raises_and_changes_nothing(call, exc, match):
    layer = nr.LSTM(3, 4, seed=0)
    layer(_x(4, 2, 3))
    snap = _snapshot(layer)
    with pytest.raises(exc, match=match):
        call(layer)
    _assert_unchanged(layer, snap)


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="before forward"):
        nr.GRU(3, 4).backward(_x(2, 1, 4))
    with pytest.raises(RuntimeError, match="before forward"):
        nr.GRUCell(3, 4).backward(_x(1, 4))


@pytest.mark.parametrize("call, exc, match", [
    (lambda c: c(_x(2, 4)), ValueError, "input_size=3"),
    (lambda c: c(_x(2, 2, 3)), ValueError, "1-D or 2-D"),
    (lambda c: c(_x(2, 3), (_x(3, 4), None)), ValueError, r"h must have shape \(2, 4\)"),
    (lambda c: c(_x(2, 3), _x(2, 4)), TypeError, "tuple"),
    (lambda c: c(np.ones((2, 3), dtype=np.int32)), TypeError, "int32"),
])
def test_bad_cell_input_raises_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(nr.LSTMCell(3, 4, seed=0))


def test_lengths_freeze_states_and_zero_padded_outputs():
    layer = nr.GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
    x = _x(6, 3, 3)
    out, h_n = layer(x, lengths=np.array([6, 2, 4]))
    assert np.all(out[2:, 1] == 0) and np.all(out[4:, 2] == 0)
    short, h_short = layer(x[:2, 1:2])               # the same sequence, cut to its length
    np.testing.assert_allclose(out[:2, 1:2], short, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(h_n[:, 1], h_short[:, 0], rtol=1e-13, atol=1e-15)
    layer(x, lengths=np.array([6, 2, 4]))
    dx, _ = layer.backward(_x(6, 3, 8))
    assert np.any(dx[:2, 1] != 0)
    assert np.all(dx[2:, 1] == 0) and np.all(dx[4:, 2] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [2, 4, 8, 9])
def test_sigmoid_in_place_on_a_single_column_slice_is_correct(dtype, width):
    # Regression: NumPy 2.4's np.negative misreads such a slice in place (the H = 1 LSTM o gate).
    from numpy_rnn.nn.steps import sigmoid
    a = RNG.standard_normal((3, width)).astype(dtype)
    want = 1 / (1 + np.exp(-a[:, -1:].astype(np.float64)))
    col = a[:, -1:]
    sigmoid(col, out=col)
    np.testing.assert_allclose(a[:, -1:], want, rtol=1e-6)
