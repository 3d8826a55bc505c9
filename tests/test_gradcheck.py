"""numpy_rnn.nn.gradcheck: finite differences agree with every backward, and catch a wrong one."""

from __future__ import annotations

import numpy as np
import pytest

import numpy_rnn as nr

RNG = np.random.default_rng(1234)


def _x(*shape):
    return RNG.standard_normal(shape)


@pytest.mark.parametrize("make, hx", [
    (lambda: nr.RNN(3, 4, num_layers=2, bidirectional=True, seed=0), lambda: _x(4, 2, 4)),
    (lambda: nr.RNN(3, 4, nonlinearity="relu", num_layers=2, seed=0), lambda: None),
    (lambda: nr.GRU(3, 4, num_layers=2, bidirectional=True, seed=0), lambda: _x(4, 2, 4)),
    (lambda: nr.GRU(3, 4, bias=False, seed=0), lambda: _x(1, 2, 4)),
    (lambda: nr.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0),
     lambda: (_x(4, 2, 4), _x(4, 2, 4))),
    (lambda: nr.LSTM(3, 4, num_layers=2, proj_size=2, seed=0), lambda: (_x(2, 2, 2), _x(2, 2, 4))),
], ids=["rnn-tanh-bi", "rnn-relu", "gru-bi", "gru-nobias", "lstm-bi", "lstm-proj"])
@pytest.mark.parametrize("lengths", [None, np.array([5, 2])], ids=["full", "lengths"])
def test_every_layer_family_passes_gradcheck_in_float64(make, hx, lengths):
    layer = make()
    report = nr.gradcheck(layer, _x(5, 2, 3), hx(), lengths=lengths)
    assert set(layer.params) <= set(report.errors) and "x" in report.errors
    assert report.ok(1e-6), str(report)


@pytest.mark.parametrize("cell, hx", [
    (nr.RNNCell(3, 4, seed=0), _x(2, 4)),
    (nr.RNNCell(3, 4, nonlinearity="relu", bias=False, seed=0), None),
    (nr.GRUCell(3, 4, seed=0), _x(2, 4)),
    (nr.LSTMCell(3, 4, seed=0), (_x(2, 4), _x(2, 4))),
], ids=["rnn", "rnn-relu-nobias", "gru", "lstm"])
def test_every_cell_family_passes_gradcheck_in_float64(cell, hx):
    report = nr.gradcheck(cell, _x(2, 3), hx)
    assert report.ok(1e-6), str(report)


def test_gradcheck_with_dropout_uses_one_mask_for_all_evaluations():
    layer = nr.LSTM(3, 4, num_layers=3, dropout=0.4, seed=5)
    report = nr.gradcheck(layer, _x(4, 2, 3))
    assert report.ok(1e-6), str(report)


def test_gradcheck_reports_states_only_when_given():
    layer = nr.LSTM(2, 3, seed=0)
    assert {"h0", "c0"} <= set(nr.gradcheck(layer, _x(3, 1, 2), (_x(1, 1, 3), _x(1, 1, 3))).errors)
    errors = nr.gradcheck(layer, _x(3, 1, 2)).errors
    assert "h0" not in errors and "c0" not in errors


def test_gradcheck_leaves_parameters_and_grads_exactly_as_they_were():
    layer = nr.GRU(3, 4, num_layers=2, seed=0)
    layer(_x(3, 2, 3))
    layer.backward(_x(3, 2, 4))
    params = {k: v.copy() for k, v in layer.params.items()}
    grads = {k: v.copy() for k, v in layer.grads.items()}
    nr.gradcheck(layer, _x(3, 2, 3))
    for k in params:
        np.testing.assert_array_equal(layer.params[k], params[k])
        np.testing.assert_array_equal(layer.grads[k], grads[k])


class _WrongBackwardRNN(nr.RNN):
    """A negative control: its bias_hh gradient is off by 1%."""

    def backward(self, dout, dh_n=None):
        dx, dh0 = super().backward(dout, dh_n)
        self.grads["bias_hh_l0"] *= 1.01
        return dx, dh0


def test_gradcheck_catches_a_wrong_gradient():
    report = nr.gradcheck(_WrongBackwardRNN(3, 4, seed=0), _x(4, 2, 3))
    assert not report.ok(1e-6)
    assert report.errors["bias_hh_l0"] > 1e-3
    assert report.errors["weight_hh_l0"] < 1e-6
    assert max(report.errors, key=report.errors.get) == "bias_hh_l0"


def test_gradcheck_refuses_float32_layers():
    layer = nr.LSTM(2, 3, dtype=np.float32, seed=0)
    with pytest.raises(TypeError, match="float64"):
        nr.gradcheck(layer, _x(3, 1, 2).astype(np.float32))


def test_gradcheck_report_is_a_readable_table():
    report = nr.gradcheck(nr.RNNCell(2, 3, seed=0), _x(2, 2))
    text = str(report)
    for name in ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "x", "max"]:
        assert name in text
    assert report.max_error == max(report.errors.values())
    assert report.checked["weight_ih"] == 6


def test_gradcheck_can_sample_entries_of_large_arrays():
    report = nr.gradcheck(nr.LSTM(4, 8, seed=0), _x(3, 2, 4), max_entries=5)
    assert all(n <= 5 for n in report.checked.values())
    assert report.ok(1e-6)


def test_check_function_checks_any_function_of_arrays():
    w, x = _x(3, 4), _x(5, 3)

    def fn():
        return np.tanh(x @ w), (x ** 2).sum(axis=1)

    def vjp(up):
        du, ds = up
        da = du * (1 - np.tanh(x @ w) ** 2)
        return {"w": x.T @ da, "x": da @ w.T + 2 * x * ds[:, None]}

    assert nr.check_function(fn, {"w": w, "x": x}, vjp).ok(1e-7)

    def wrong_vjp(up):
        g = vjp(up)
        g["x"] = g["x"] * 0.9
        return g

    report = nr.check_function(fn, {"w": w, "x": x}, wrong_vjp)
    assert report.errors["w"] < 1e-7 and report.errors["x"] > 1e-2


def test_numerical_gradient_of_a_quadratic_is_exact_to_roundoff():
    a = _x(4)
    g = nr.numerical_gradient(lambda: float(np.sum(a ** 2)), a)
    np.testing.assert_allclose(g, 2 * a, rtol=1e-8)


# -- wrapped layers: gradcheck decides from what the layer is, not from its signature --------

class _LoggingLSTM(nr.LSTM):
    """The ordinary way to wrap a layer: forward everything, remember the calls."""

    calls: list[str]

    def forward(self, *args, **kwargs):
        self.calls = getattr(self, "calls", []) + ["forward"]
        return super().forward(*args, **kwargs)

    def backward(self, *args, **kwargs):
        self.calls.append("backward")
        return super().backward(*args, **kwargs)


class _Wrapper:
    """Composition: holds a layer and passes everything through (``__getattr__``)."""

    def __init__(self, layer, scale_dx=1.0):
        self.layer, self.scale_dx = layer, scale_dx

    def __call__(self, *args, **kwargs):
        return self.layer(*args, **kwargs)

    def backward(self, *args, **kwargs):
        dx, dstates = self.layer.backward(*args, **kwargs)
        return dx * self.scale_dx, dstates

    def __getattr__(self, name):
        return getattr(self.layer, name)


class _WrapsStyle:
    """Names the wrapped object as ``__wrapped__`` and exposes params/grads explicitly."""

    def __init__(self, cell):
        self.__wrapped__ = cell
        self.params, self.grads, self.zero_grad = cell.params, cell.grads, cell.zero_grad

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def backward(self, *args, **kwargs):
        return self.__wrapped__.backward(*args, **kwargs)


def test_gradcheck_works_through_a_subclass_whose_backward_takes_star_args():
    layer = _LoggingLSTM(3, 4, num_layers=2, seed=0)
    report = nr.gradcheck(layer, _x(4, 2, 3), (_x(2, 2, 4), _x(2, 2, 4)))
    assert report.ok(1e-6), str(report)
    assert "backward" in layer.calls


@pytest.mark.parametrize("make, hx", [
    (lambda: nr.GRU(3, 4, bidirectional=True, seed=0), lambda: _x(2, 2, 4)),
    (lambda: nr.LSTMCell(3, 4, seed=0), lambda: (_x(2, 4), _x(2, 4))),
    (lambda: nr.RNNCell(3, 4, seed=0), lambda: _x(2, 4)),
], ids=["gru", "lstm-cell", "rnn-cell"])
def test_gradcheck_works_through_wrappers_of_layers_and_cells(make, hx):
    x = _x(4, 2, 3) if isinstance(make(), nr.Recurrent) else _x(2, 3)
    for wrapper in (_Wrapper, _WrapsStyle):
        report = nr.gradcheck(wrapper(make()), x, hx())
        assert report.ok(1e-6), f"{wrapper.__name__}\n{report}"


def test_gradcheck_catches_a_wrong_gradient_planted_in_a_wrapper():
    report = nr.gradcheck(_Wrapper(nr.LSTM(3, 4, seed=0), scale_dx=1.01), _x(4, 2, 3))
    assert not report.ok(1e-6)
    assert report.errors["x"] > 1e-3
    assert report.errors["weight_ih_l0"] < 1e-6


def test_gradcheck_asks_an_undeclared_star_args_class_to_declare_its_contract():
    class Opaque:
        def __init__(self):
            self.layer = nr.RNN(3, 4, seed=0)
            self.params, self.grads = self.layer.params, self.layer.grads

        def zero_grad(self):
            self.layer.zero_grad()

        def __call__(self, *args):
            return self.layer(*args)

        def backward(self, *args):
            return self.layer.backward(*args)

    with pytest.raises(TypeError, match="backward_unpacks_outputs"):
        nr.gradcheck(Opaque(), _x(3, 2, 3))
    Opaque.backward_unpacks_outputs = True
    assert nr.gradcheck(Opaque(), _x(3, 2, 3)).ok(1e-6)


def test_gradcheck_still_reads_an_explicit_signature_of_an_undeclared_class():
    class OwnCell:
        """A user's own cell written before the declaration existed: backward(dh)."""

        def __init__(self):
            self.cell = nr.GRUCell(3, 4, seed=0)
            self.params, self.grads = self.cell.params, self.cell.grads

        def zero_grad(self):
            self.cell.zero_grad()

        def __call__(self, x, h=None):
            return self.cell(x, h)

        def backward(self, dh):
            return self.cell.backward(dh)

    assert nr.gradcheck(OwnCell(), _x(2, 3), _x(2, 4)).ok(1e-6)
