"""numpy_rnn.nn.recurrent.StepRunner, the one step-by-step runner every time loop drives: the
layers' own loop (run_forward/run_backward), a stepwise loop whose input at t depends on its
output at t-1 (input feeding), and one-step decoding (Recurrent.forward_step).

Checked here: ``forward_step`` is one step of ``forward`` to the bit; a runner driven by hand
over a whole sequence is the layer to the bit; a stepwise runner (inputs projected step by
step, part of them before the loop) is the layer to rounding; a stepwise loop that feeds its
own output back gets finite differences' gradients; the public per-layer parameters are the
layer's own arrays; backward lets go of its buffers.
"""

from __future__ import annotations

import numpy as np
import pytest

from numpy_rnn.nn.gradcheck import numerical_gradient, relative_error
from numpy_rnn.nn.module import DTypeError, ShapeError
from numpy_rnn.nn.recurrent import (
    GRU,
    LAYERS,
    LSTM,
    RNN,
    Recurrent,
    StepRunner,
    run_backward,
    run_forward,
)

KINDS = {
    "lstm": lambda F, H, **kw: LSTM(F, H, **kw),
    "lstm_proj": lambda F, H, **kw: LSTM(F, H, proj_size=H - 2, **kw),
    "gru": lambda F, H, **kw: GRU(F, H, **kw),
    "rnn_tanh": lambda F, H, **kw: RNN(F, H, **kw),
    "rnn_relu": lambda F, H, **kw: RNN(F, H, nonlinearity="relu", **kw),
}


def make_layer(kind: str, F: int = 5, H: int = 6, seed: int = 0, **kw: object) -> Recurrent:
    """A layer whose every parameter (biases too) is redrawn from N(0, 0.5^2)."""
    layer = KINDS[kind](F, H, seed=seed, **kw)
    rng = np.random.default_rng([seed, 7])
    for p in layer.params.values():
        p[...] = rng.normal(0.0, 0.5, p.shape)
    return layer


def random_states(layer: Recurrent, B: int, rng: np.random.Generator) -> tuple:
    LD = layer.num_layers * layer.num_directions
    return tuple(rng.standard_normal((LD, B, n)).astype(layer.dtype)
                 for n in layer.step.state_sizes())


# --------------------------------------------------------------------------------------------
# Recurrent.forward_step: one-step decoding
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", list(KINDS))
def test_forward_step_is_one_step_of_forward_to_the_bit(kind, layers, dtype, B):
    layer = make_layer(kind, num_layers=layers, dtype=dtype, dropout=0.5 if layers > 1 else 0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, layer.input_size)).astype(dtype)
    hx = random_states(layer, B, rng)
    layer.train()                   # forward_step never drops, whatever the mode
    h, new = layer.forward_step(x, hx)
    layer.eval()
    out, finals = Recurrent.forward(layer, x[None], hx)
    np.testing.assert_array_equal(h, out[0])
    assert isinstance(new, tuple) and len(new) == len(finals)
    for got, want in zip(new, finals):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_forward_step_leaves_its_arguments_alone_and_takes_a_list():
    layer = make_layer("lstm", num_layers=2)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5))
    hx = random_states(layer, 2, rng)
    before = [s.copy() for s in hx]
    h1, s1 = layer.forward_step(x, hx)
    h2, s2 = layer.forward_step(x, list(hx))
    assert all(np.array_equal(a, b) for a, b in zip(hx, before))
    np.testing.assert_array_equal(h1, h2)
    assert all(np.array_equal(a, b) for a, b in zip(s1, s2))


def test_forward_step_refuses_bad_input():
    layer = make_layer("gru", num_layers=2)
    x, (h,) = np.zeros((3, 5)), random_states(layer, 3, np.random.default_rng(3))
    with pytest.raises(ValueError, match="unidirectional"):
        make_layer("gru", bidirectional=True).forward_step(x, (h[:1],))
    with pytest.raises(DTypeError, match="input"):
        layer.forward_step(x.astype(np.float32), (h,))
    with pytest.raises(ShapeError, match="input_size"):
        layer.forward_step(np.zeros((3, 4)), (h,))
    with pytest.raises(ShapeError, match="2-D"):
        layer.forward_step(np.zeros((1, 3, 5)), (h,))
    with pytest.raises(TypeError, match="tuple of 1"):
        layer.forward_step(x, (h, h))
    with pytest.raises(TypeError, match="tuple of 1"):
        layer.forward_step(x, h)
    with pytest.raises(ShapeError, match="h must have shape"):
        layer.forward_step(x, (h[:1],))


# --------------------------------------------------------------------------------------------
# The runner driven by hand
# --------------------------------------------------------------------------------------------

def layer_reference(layer: Recurrent, x: np.ndarray, hx: tuple, dout: np.ndarray,
                    dfinal: tuple) -> dict:
    """forward and backward of the whole layer: outputs, finals, dx, dinit, gradients."""
    layer.zero_grad()
    out, finals = Recurrent.forward(layer, x, hx)
    dx, dinit = Recurrent.backward(layer, dout, dfinal)
    return dict(out=out.copy(), finals=[f.copy() for f in finals], dx=dx, dinit=list(dinit),
                grads={k: g.copy() for k, g in layer.grads.items()})


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_runner_driven_by_hand_is_the_layer_to_the_bit(kind):
    """The loop of run_forward/run_backward written out with the runner's public methods."""
    layer = make_layer(kind)
    rng = np.random.default_rng(4)
    T, B = 7, 3
    x = rng.standard_normal((T, B, 5))
    hx = random_states(layer, B, rng)
    dout = rng.standard_normal((T, B, layer.step.output_size))
    dfinal = random_states(layer, B, rng)
    want = layer_reference(layer, x, hx, dout, dfinal)

    layer.zero_grad()
    run = StepRunner(layer.step, layer.step_params(0), x, tuple(s[0] for s in hx))
    run.project()
    with np.errstate(over="ignore"):
        outs = [run.forward_step(t).copy() for t in run.times()]
    run.start_backward(tuple(d[0] for d in dfinal))
    for t in reversed(run.times()):
        run.backward_step(t, dout[t])
    run.finish_backward(layer.step_grads(0))
    dx = run.input_grad()
    dinit = run.end_backward()
    np.testing.assert_array_equal(np.stack(outs), want["out"])
    for got, f in zip(run.final(), want["finals"]):
        np.testing.assert_array_equal(got, f[0])
    np.testing.assert_array_equal(dx, want["dx"])
    for got, d in zip(dinit, want["dinit"]):
        np.testing.assert_array_equal(got, d[0])
    for name, g in want["grads"].items():
        np.testing.assert_array_equal(layer.grads[name], g, err_msg=name)


@pytest.mark.parametrize("split", [False, True], ids=["whole-input", "split-input"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_stepwise_runner_is_the_layer(kind, split):
    """Each step's input projected when it comes (``project(t)``, or its first columns for
    all steps before the loop and the rest at each step) gives the layer's outputs, states and
    every gradient, to rounding (the biases are summed once instead of added one by one)."""
    layer = make_layer(kind)
    rng = np.random.default_rng(5)
    T, B, F = 6, 2, 5
    x = rng.standard_normal((T, B, F))
    hx = random_states(layer, B, rng)
    dout = rng.standard_normal((T, B, layer.step.output_size))
    want = layer_reference(layer, x, hx, dout, (None,) * len(hx))

    layer.zero_grad()
    run = StepRunner(layer.step, layer.step_params(0), np.empty((T, B, F)),
                     tuple(s[0] for s in hx), stepwise=True)
    if split:
        run.project_part(x[:, :, :2], slice(0, 2))
    outs = []
    with np.errstate(over="ignore"):
        for t in range(T):
            if split:
                run.add_input(t, x[t, :, 2:], slice(2, None))
            else:
                run.x[t] = x[t]
                run.project(t)
            outs.append(run.forward_step(t).copy())
    np.testing.assert_array_equal(run.x, x)
    run.start_backward()
    dx = np.empty_like(x)
    for t in reversed(run.times()):
        dx[t] = run.backward_step(t, dout[t]) @ run.w_ih
    run.finish_backward(layer.step_grads(0))
    dinit = run.end_backward()
    np.testing.assert_allclose(np.stack(outs), want["out"], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx, want["dx"], rtol=1e-11, atol=1e-12)
    for got, d in zip(dinit, want["dinit"]):
        np.testing.assert_allclose(got, d[0], rtol=1e-11, atol=1e-12)
    for name, g in want["grads"].items():
        np.testing.assert_allclose(layer.grads[name], g, rtol=1e-11, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", ["lstm", "lstm_proj", "gru", "rnn_tanh"])
def test_a_loop_that_feeds_its_output_back_matches_finite_differences(kind):
    """The input-feeding pattern on its own: ``u_t = [x_t; h_{t-1}]`` (``h_{-1} = 0``), loss
    ``Σ_t w_t · h_t``; the gradient reaching h_t is what comes from the loss at t plus what
    comes back from step t+1's input."""
    T, B, F = 5, 2, 3
    Ho = KINDS[kind](1, 4).step.output_size        # the width of the h fed back
    layer = make_layer(kind, F=F + Ho, H=4, seed=1)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((T, B, F))
    h0 = random_states(layer, B, rng)
    w = rng.standard_normal((T, B, Ho))

    def forward() -> tuple[float, StepRunner]:
        run = StepRunner(layer.step, layer.step_params(0), np.empty((T, B, F + Ho)),
                         tuple(s[0] for s in h0), stepwise=True)
        run.project_part(x, slice(0, F))
        run.x[0, :, F:] = 0.0
        loss, h = 0.0, np.zeros((B, Ho))
        with np.errstate(over="ignore"):
            for t in range(T):
                if t > 0:
                    run.add_input(t, h, slice(F, None))
                h = run.forward_step(t).copy()
                loss += float(np.sum(w[t] * h))
        return loss, run

    layer.zero_grad()
    _, run = forward()
    run.start_backward()
    dfed = np.zeros((B, Ho))
    for t in reversed(run.times()):
        dgx = run.backward_step(t, w[t] + dfed)        # from the loss at t + from step t+1
        dfed = dgx @ run.w_ih[:, F:]
    run.finish_backward(layer.step_grads(0))
    dinit = run.end_backward()
    for name in layer.params:
        p = layer.params[name]
        numeric = numerical_gradient(lambda: forward()[0], p, eps=1e-6)
        assert relative_error(layer.grads[name], numeric) < 1e-7, name
    for j, s in enumerate(h0):
        numeric = numerical_gradient(lambda: forward()[0], s, eps=1e-6)
        assert relative_error(dinit[j], numeric[0]) < 1e-7


# --------------------------------------------------------------------------------------------
# What the layer lends the runner, and what a run keeps
# --------------------------------------------------------------------------------------------

def test_step_params_and_grads_are_the_layers_own_arrays():
    layer = make_layer("lstm_proj", num_layers=2, bidirectional=True)
    p, g = layer.step_params(1, 1), layer.step_grads(1, 1)
    assert set(p) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"}
    assert p["weight_ih"] is layer.params["weight_ih_l1_reverse"]
    assert g["weight_hr"] is layer.grads["weight_hr_l1_reverse"]
    no_bias = make_layer("gru", bias=False)
    assert no_bias.step_params(0)["bias_ih"] is None and "bias_ih" not in no_bias.step_grads(0)
    for bad in [(2, 0), (0, 2), (-1, 0)]:
        with pytest.raises(IndexError, match="no layer"):
            layer.step_params(*bad)


def test_a_run_keeps_for_backward_what_it_needs_and_backward_lets_go_of_its_buffers():
    layer = make_layer("gru")
    x = np.random.default_rng(8).standard_normal((20, 3, 5))   # T >= 16: W_hh^T is copied
    run = run_forward(layer.step, layer.step_params(0), x, (np.zeros((3, 6)),), None, False)
    assert run.gx is None                    # the input projection is a forward transient
    dx, (dh0,) = run_backward(run, layer.step_grads(0), np.ones((20, 3, 6)), (None,))
    assert dx.shape == x.shape and dh0.shape == (3, 6)
    assert not hasattr(run, "dgx") and not hasattr(run, "dgh")


def test_a_runner_needs_initial_states_or_buffers_holding_them():
    layer = make_layer("rnn_tanh")
    with pytest.raises(ValueError, match="initial states"):
        StepRunner(layer.step, layer.step_params(0), np.zeros((2, 1, 5)), None)
    buffer = np.zeros((2, 1, 6))
    buffer[0] = 0.5
    run = StepRunner(layer.step, layer.step_params(0), np.ones((1, 1, 5)), None,
                     states=(buffer,))
    run.project()
    with np.errstate(over="ignore"):
        h = run.forward_step(0)
    assert run.states[0] is buffer and np.shares_memory(h, buffer)
    want = Recurrent.forward(layer, np.ones((1, 1, 5)), (np.full((1, 1, 6), 0.5),))[0][0]
    np.testing.assert_array_equal(h, want)


def test_layers_names_every_cell():
    assert set(LAYERS) == {"lstm", "gru", "rnn"}
    assert LAYERS["gru"] is GRU and LAYERS["lstm"] is LSTM and LAYERS["rnn"] is RNN
