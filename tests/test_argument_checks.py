"""Arguments are checked as torch 2.13 checks them: what torch refuses, numpy_rnn refuses too.

Each constructor and forward argument has its own test. Where the exception type matters to
code written against torch, torch itself is asked in the test and numpy_rnn must raise an
exception of the same type (numpy_rnn's :class:`ShapeError` is both a ``ValueError`` and the
``RuntimeError`` torch raises for shapes; :class:`DTypeError` is both a ``TypeError`` and the
``ValueError`` torch raises for dtypes). numpy_rnn is stricter than torch in a few documented
places, each tested as such: ``bidirectional`` and the cells' ``bias`` must be bools too (torch
reads anything there), cell sizes must be >= 1 (torch builds empty cells), and a bool is not a
size (torch takes ``True`` as 1).

The second half is torch's own RNN tests (test_nn.py), adapted to NumPy arrays.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

import numpy_rnn as nr

torch = pytest.importorskip("torch")

LAYERS = {"RNN": (nr.RNN, torch.nn.RNN), "GRU": (nr.GRU, torch.nn.GRU),
          "LSTM": (nr.LSTM, torch.nn.LSTM)}
CELLS = {"RNNCell": (nr.RNNCell, torch.nn.RNNCell), "GRUCell": (nr.GRUCell, torch.nn.GRUCell),
         "LSTMCell": (nr.LSTMCell, torch.nn.LSTMCell)}
RNG = np.random.default_rng(2024)


def torch_error(make):
    """The exception type torch raises for ``make()``, or None when it accepts it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            make()
        except Exception as exc:
            return type(exc)
    return None


def assert_refused_like_torch(ours, theirs, name):
    """numpy_rnn raises what torch raises (an instance of the same type), naming ``name``."""
    want = torch_error(theirs)
    assert want is not None, "torch accepts this: the test is wrong"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(want, match=name):
            ours()


# -- constructor arguments -------------------------------------------------------------------

@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("arg", ["bias", "batch_first"])
@pytest.mark.parametrize("value", [0, 1, "False", "True", None, 1.0, np.True_])
def test_bias_and_batch_first_must_be_bools_like_torch(kind, arg, value):
    ours, theirs = LAYERS[kind]
    assert_refused_like_torch(lambda: ours(3, 5, **{arg: value}),
                              lambda: theirs(3, 5, **{arg: value}), arg)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("value", [0, 1, "False", None, 1.0, np.True_])
def test_bidirectional_must_be_a_bool_stricter_than_torch(kind, value):
    # torch 2.13 reads bidirectional with bool(): "False" would build a bidirectional layer.
    with pytest.raises(TypeError, match="bidirectional"):
        LAYERS[kind][0](3, 5, bidirectional=value)


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("value", [0, 1, "False", None])
def test_cell_bias_must_be_a_bool_stricter_than_torch(kind, value):
    with pytest.raises(TypeError, match="bias"):
        CELLS[kind][0](3, 5, bias=value)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("arg", ["input_size", "hidden_size"])
@pytest.mark.parametrize("value", [0, -1, 2.0, 2.5, "3", None])
def test_sizes_are_checked_like_torch(kind, arg, value):
    ours, theirs = LAYERS[kind]
    sizes = {"input_size": 3, "hidden_size": 5, arg: value}
    assert_refused_like_torch(lambda: ours(sizes["input_size"], sizes["hidden_size"]),
                              lambda: theirs(sizes["input_size"], sizes["hidden_size"]), arg)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("value", [0, -1, 2.0, 2.5, "3", None])
def test_num_layers_is_checked_like_torch(kind, value):
    ours, theirs = LAYERS[kind]
    want = torch_error(lambda: theirs(3, 5, num_layers=value))
    with pytest.raises(want, match="num_layers"):
        ours(3, 5, num_layers=value)


@pytest.mark.parametrize("kind", [*LAYERS, *CELLS])
@pytest.mark.parametrize("arg", ["input_size", "hidden_size"])
def test_a_bool_is_not_a_size_and_cells_need_sizes_of_at_least_one(kind, arg):
    ours = {**LAYERS, **CELLS}[kind][0]
    sizes = {"input_size": 3, "hidden_size": 5}
    with pytest.raises(TypeError, match=arg):
        ours(**{**sizes, arg: True})
    with pytest.raises(ValueError, match=arg):
        ours(**{**sizes, arg: 0})
    with pytest.raises(TypeError, match=arg):
        ours(**{**sizes, arg: 2.0})


def test_numpy_integers_are_sizes():
    layer = nr.LSTM(np.int64(3), np.int32(5), num_layers=np.int64(2))
    assert (layer.input_size, layer.hidden_size, layer.num_layers) == (3, 5, 2)
    assert type(layer.input_size) is int


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.5", float("nan")])
def test_dropout_is_checked_like_torch(kind, value):
    ours, theirs = LAYERS[kind]
    assert_refused_like_torch(lambda: ours(3, 5, num_layers=2, dropout=value),
                              lambda: theirs(3, 5, num_layers=2, dropout=value), "dropout")


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0, np.float32(0.25)])
def test_dropout_accepts_every_probability_torch_accepts(value):
    assert nr.GRU(3, 5, num_layers=2, dropout=value).dropout == float(value)


@pytest.mark.parametrize("kind", LAYERS)
def test_dropout_with_one_layer_warns_like_torch(kind):
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        LAYERS[kind][0](3, 5, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LAYERS[kind][0](3, 5, dropout=0.0)
        LAYERS[kind][0](3, 5, num_layers=2, dropout=0.5)


@pytest.mark.parametrize("value", [-0.5, 1.5, True, "0.1", None, float("nan")])
def test_dropout_assigned_later_is_checked_with_the_constructors_message(value):
    layer = nr.LSTM(3, 5, num_layers=2, dropout=0.2)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\]") as caught:
        layer.dropout = value
    with pytest.raises(ValueError) as from_constructor:
        nr.LSTM(3, 5, num_layers=2, dropout=value)
    assert str(caught.value) == str(from_constructor.value)
    assert layer.dropout == 0.2                          # the refused value was not kept


def test_dropout_assigned_later_is_used_by_the_next_forward():
    layer = nr.LSTM(3, 5, num_layers=2, dropout=0.0, seed=0)
    x = RNG.standard_normal((4, 2, 3))
    plain, _ = layer(x)
    layer.dropout = 1.0                                  # torch's p = 1: layer 1 reads zeros
    dropped, _ = layer(x)
    assert not np.allclose(plain, dropped)
    top = nr.LSTM(5, 5)                                  # layer 1 alone, fed only zeros
    top.load_state_dict({k.replace("_l1", "_l0"): v for k, v in layer.params.items()
                         if k.endswith("_l1")})
    np.testing.assert_array_equal(dropped, top(np.zeros((4, 2, 5)))[0])


@pytest.mark.parametrize("value", [-1, 5, 7, 2.0, True, "1"])
def test_proj_size_is_checked_like_torch(value):
    assert_refused_like_torch(lambda: nr.LSTM(3, 5, proj_size=value),
                              lambda: torch.nn.LSTM(3, 5, proj_size=value), "proj_size")


@pytest.mark.parametrize("value", ["sigmoid", "Tanh", None, 1])
def test_nonlinearity_is_checked_like_torch(value):
    assert_refused_like_torch(lambda: nr.RNN(3, 5, nonlinearity=value),
                              lambda: torch.nn.RNN(3, 5, nonlinearity=value), "nonlinearity")
    with pytest.raises(ValueError, match="nonlinearity"):   # torch only fails at forward
        nr.RNNCell(3, 5, nonlinearity=value)


def test_nonlinearity_may_be_given_positionally_as_in_torch():
    assert nr.RNN(2, 3, 1, "relu").nonlinearity == "relu"
    assert nr.RNN(1, 10).nonlinearity == "tanh"


# -- forward arguments -----------------------------------------------------------------------

def _pair(kind, **kw):
    ours, theirs = LAYERS[kind]
    torch.manual_seed(0)
    ref = theirs(3, 5, num_layers=2, dtype=torch.float64, **kw)
    layer = ours(3, 5, num_layers=2, **kw)
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    return layer, ref


def _state(kind, shape_h, shape_c=None):
    h = np.zeros(shape_h)
    if kind == "LSTM":
        return (h, np.zeros(shape_c if shape_c is not None else shape_h))
    return h


def _to_torch(s):
    if isinstance(s, tuple):
        return tuple(torch.from_numpy(a) for a in s)
    return None if s is None else torch.from_numpy(s)


def _both(kind, x, hx=None):
    layer, ref = _pair(kind)
    return (lambda: layer(x, hx)), (lambda: ref(torch.from_numpy(x), _to_torch(hx)))


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("shape", [(3,), (1, 4, 2, 3)], ids=["1-D", "4-D"])
def test_input_rank_is_checked_like_torch(kind, shape):
    ours, theirs = _both(kind, np.zeros(shape))
    assert_refused_like_torch(ours, theirs, "2-D or 3-D")


@pytest.mark.parametrize("kind", LAYERS)
def test_input_features_are_checked_like_torch(kind):
    ours, theirs = _both(kind, np.zeros((4, 2, 4)))
    assert_refused_like_torch(ours, theirs, "input_size=3")


@pytest.mark.parametrize("kind", LAYERS)
def test_an_empty_sequence_is_refused_like_torch(kind):
    ours, theirs = _both(kind, np.zeros((0, 2, 3)))
    assert_refused_like_torch(ours, theirs, "at least one time step")


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_input_dtype_is_checked_like_torch(kind, dtype):
    layer, ref = _pair(kind)
    x = np.zeros((4, 2, 3), dtype)
    assert_refused_like_torch(lambda: layer(x), lambda: ref(torch.from_numpy(x)),
                              np.dtype(dtype).name)
    with pytest.raises(TypeError):                       # and still the TypeError it was
        layer(x)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 2, 5), (2, 2, 4), (3, 2, 5)],
                         ids=["batch", "layers", "hidden", "too-many-layers"])
def test_initial_state_shape_is_checked_like_torch(kind, shape):
    x = np.zeros((4, 2, 3))
    for hx in ([_state(kind, shape, (2, 2, 5)), (np.zeros((2, 2, 5)), np.zeros(shape))]
               if kind == "LSTM" else [_state(kind, shape)]):
        ours, theirs = _both(kind, x, hx)
        assert_refused_like_torch(ours, theirs, "must have shape")


@pytest.mark.parametrize("kind", LAYERS)
def test_initial_state_rank_is_checked_like_torch(kind):
    ours, theirs = _both(kind, np.zeros((4, 2, 3)), _state(kind, (2, 5)))
    assert_refused_like_torch(ours, theirs, "must be 3-D")
    ours, theirs = _both(kind, np.zeros((4, 3)), _state(kind, (2, 1, 5)))
    assert_refused_like_torch(ours, theirs, "must be 2-D")


def test_lstm_state_must_be_a_pair():
    layer = nr.LSTM(3, 5)
    for hx in (np.zeros((1, 2, 5)), (np.zeros((1, 2, 5)),), (np.zeros((1, 2, 5)),) * 3):
        with pytest.raises(TypeError, match="tuple of 2"):
            layer(np.zeros((4, 2, 3)), hx)


@pytest.mark.parametrize("lengths, exc", [([0, 3], ValueError), ([5, 6], ValueError),
                                          ([4], ValueError), ([4.0, 2.0], TypeError)])
def test_lengths_are_checked(lengths, exc):
    layer = nr.GRU(3, 5)
    with pytest.raises(exc, match="lengths"):
        layer(np.zeros((5, 2, 3)), lengths=lengths)
    torch_lengths_error = torch_error(lambda: torch.nn.utils.rnn.pack_padded_sequence(
        torch.zeros(5, 2, 3), torch.tensor(lengths), enforce_sorted=False))
    if torch_lengths_error is RuntimeError:              # torch: length 0 or > T
        with pytest.raises(RuntimeError):
            layer(np.zeros((5, 2, 3)), lengths=lengths)


@pytest.mark.parametrize("kind", CELLS)
def test_cell_shapes_are_checked_like_torch(kind):
    ours, theirs = CELLS[kind]
    torch.manual_seed(0)
    ref = theirs(10, 20, dtype=torch.float64)
    cell = ours(10, 20)
    good_x, good_h = np.zeros((3, 10)), np.zeros((3, 20))
    for x, h in [(good_x, np.zeros((1, 20))), (good_x, np.zeros((3, 1))),
                 (np.zeros((3, 1)), good_h)]:
        pairs = [(h, good_h), (good_h, h)] if kind == "LSTMCell" else [h]
        for hx in pairs:
            assert_refused_like_torch(lambda x=x, hx=hx: cell(x, hx),
                                      lambda x=x, hx=hx: ref(torch.from_numpy(x), _to_torch(hx)),
                                      "")
    assert_refused_like_torch(lambda: cell(np.zeros((1, 2, 10))),
                              lambda: ref(torch.zeros(1, 2, 10, dtype=torch.float64)),
                              "1-D or 2-D")


# -- torch's own RNN tests (test/test_nn.py), adapted to NumPy ---------------------------------

@pytest.mark.parametrize("kind", LAYERS)
def test_rnn_args_check(kind):
    """torch: every mismatch of input and hidden shapes is a RuntimeError."""
    input_size, hidden_size, num_layers, batch, seq = 3, 5, 2, 4, 6
    bad = 7
    good_in, good_h = (seq, batch, input_size), (num_layers, batch, hidden_size)
    layer = LAYERS[kind][0](input_size, hidden_size, num_layers)
    cases = [((seq, bad, input_size), good_h), (good_in, (num_layers, bad, hidden_size)),
             ((seq, batch, bad), good_h), (good_in, (num_layers, batch, bad)),
             (good_in, (bad, batch, hidden_size))]
    for x_shape, h_shape in cases:
        x, h = RNG.standard_normal(x_shape), RNG.standard_normal(h_shape)
        if kind != "LSTM":
            hiddens = [h]
        elif h_shape == good_h:
            hiddens = [(h, h)]
        else:
            g = RNG.standard_normal(good_h)
            hiddens = [(h, g), (g, h)]
        for hx in hiddens:
            with pytest.raises(RuntimeError):
                layer(x, hx)


@pytest.mark.parametrize("kind", LAYERS)
def test_RNN_input_size_zero(kind):
    """torch runs a batch of zero sequences and returns empty outputs."""
    layer = LAYERS[kind][0](input_size=3, hidden_size=4)
    out, _ = layer(np.zeros((5, 0, 3)))
    assert out.shape == (5, 0, 4)
    dx, _ = layer.backward(np.zeros_like(out))
    assert dx.shape == (5, 0, 3)


@pytest.mark.parametrize("kind", LAYERS)
def test_rnn_initial_hidden_state(kind):
    layer = LAYERS[kind][0](30, 20, 2)
    x = RNG.standard_normal((10, 32, 30))
    hidden = np.zeros((2, 32, 20))
    if kind == "LSTM":
        hidden = (hidden, hidden)
    out1, hidden1 = layer(x, hidden)
    out2, hidden2 = layer(x)
    np.testing.assert_array_equal(out1, out2)
    for a, b in zip(hidden1 if kind == "LSTM" else [hidden1],
                    hidden2 if kind == "LSTM" else [hidden2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("p", [0, 0.276, 0.731, 1])
@pytest.mark.parametrize("train", [True, False])
def test_RNN_dropout(p, train):
    """Dropout sits between the layers: with all-ones weights the output counts kept units."""
    layer = nr.RNN(10, 1000, 2, bias=False, dropout=p, nonlinearity="relu", seed=0)
    layer.train(train)
    for v in layer.params.values():
        v.fill(1)
    out, h = layer(np.ones((1, 1, 10)), np.zeros((2, 1, 1000)))
    val = out[0, 0, 0]
    if p == 0 or not train:
        assert val == 10000
    elif p == 1:
        assert val == 0
    else:
        assert 8000 < val < 12000
        denorm = (val * (1 - p)) % 10
        assert min(denorm, 10 - denorm) < 1e-2
    assert h[0, 0, 0] == 10
    assert h[1, 0, 0] == val


@pytest.mark.parametrize("train", [True, False])
def test_RNN_change_dropout(train):
    layer = nr.RNN(100, 100, 2, dropout=0, nonlinearity="relu", seed=0)
    layer.train(train)
    x = RNG.random((1, 1, 100))
    prev = None
    for p in (0, 0.276, 0.731, 1, 0):
        layer.dropout = p
        out1, h1 = layer(x)
        out2, h2 = layer(x)
        if p == 0 or p == 1 or not train:
            np.testing.assert_array_equal(out1, out2)
            np.testing.assert_array_equal(h1, h2)
        else:
            assert not np.array_equal(out1, out2)
            assert not np.array_equal(h1, h2)
        if prev is not None:
            if not train:
                np.testing.assert_array_equal(out1, prev)
            else:
                assert not np.array_equal(out1, prev)
        prev = out1


@pytest.mark.parametrize("p", [0, 0.1234])
@pytest.mark.parametrize("train", [True, False])
def test_RNN_dropout_state(p, train):
    """A pickled layer computes what the original computes (and draws fresh masks)."""
    layer = nr.RNN(100, 100, 2, bias=False, dropout=p, nonlinearity="relu", seed=0)
    layer.train(train)
    x, hx = RNG.random((1, 1, 100)), RNG.random((2, 1, 100))
    out1, h1 = layer(x, hx)
    out2, _ = layer(x, hx)
    copy = pickle.loads(pickle.dumps(layer))
    out3, h3 = copy(x, hx)
    if p == 0 or not train:
        np.testing.assert_array_equal(out1, out2)
        np.testing.assert_array_equal(out1, out3)
        np.testing.assert_array_equal(h1, h3)
    else:
        assert not np.array_equal(out1, out2)
        assert not np.array_equal(out1, out3)


@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell"])
@pytest.mark.parametrize("bias", [True, False])
def test_RNN_cell(kind, bias):
    cell = CELLS[kind][0](10, 20, bias=bias)
    x, hx = RNG.standard_normal((3, 10)), RNG.standard_normal((3, 20))
    for _ in range(6):
        hx = cell(x, hx)
    dx, dh = cell.backward(np.ones_like(hx))
    assert dx.shape == (3, 10) and dh.shape == (3, 20)


@pytest.mark.parametrize("bias", [True, False])
def test_LSTM_cell(bias):
    cell = nr.LSTMCell(10, 20, bias)
    x = RNG.standard_normal((3, 10))
    hx, cx = RNG.standard_normal((3, 20)), RNG.standard_normal((3, 20))
    for _ in range(6):
        hx, cx = cell(x, (hx, cx))
    dx, (dh, dc) = cell.backward((np.ones_like(hx), np.ones_like(cx)))
    assert dx.shape == (3, 10) and dh.shape == dc.shape == (3, 20)


@pytest.mark.parametrize("kind", CELLS)
def test_cell_on_an_empty_batch(kind):
    cell = CELLS[kind][0](3, 4)
    new = cell(np.zeros((0, 3)))
    first = new[0] if isinstance(new, tuple) else new
    assert first.shape == (0, 4)
