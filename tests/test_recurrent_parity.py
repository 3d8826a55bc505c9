"""numpy_rnn.RNN / GRU / LSTM equal torch.nn.RNN / GRU / LSTM: forward values and every gradient.

Each example builds a torch module with ``torch.manual_seed``, copies its weights into the NumPy
layer (``load_state_dict(to_numpy_state(...))``), feeds both the same random input and initial
state, and backpropagates the same random upstream gradients on the output AND on ``h_n``/``c_n``.
Torch autograd is the truth for ``dx``, ``dh0``, ``dc0`` and every parameter gradient.

float64 layers are compared with the float64 torch module, float32 layers (loading the same float64
weights, rounded) with the float32 torch module; tolerances are in ``conftest.RTOL``.

Variable lengths are checked against torch's ``pack_padded_sequence(enforce_sorted=False)`` ->
module -> ``pad_packed_sequence(total_length=T)``. Dropout is checked with injected masks against a
stack of single-layer torch modules that applies the same masks between layers.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import numpy_rnn
from torch_ref import load_numpy_state, to_numpy_state

KINDS = ("rnn_tanh", "rnn_relu", "gru", "lstm")
DTYPES = (np.float64, np.float32)
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
MAX_SIZE = 5  # T, B, I, H are drawn from 1..MAX_SIZE
# Example counts relative to the hypothesis profile (conftest): the main sweep uses the profile's
# count per (kind, dtype); the narrower properties need fewer.
N_EXAMPLES = settings().max_examples
N_FEW = max(3, N_EXAMPLES // 3)

# torch's CPU LSTM falls back from oneDNN for projections and says so once; not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")


# --------------------------------------------------------------------------------------------
# Configurations and data
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerConfig:
    """One recurrent-layer test case. ``lengths`` is None for full-length (unpacked) input."""

    kind: str
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    proj_size: int
    bias: bool
    batch_first: bool
    unbatched: bool
    steps: int
    batch: int
    lengths: tuple[int, ...] | None
    given_state: bool
    seed: int

    @property
    def D(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def Ho(self) -> int:
        return self.proj_size or self.hidden_size

    @property
    def is_lstm(self) -> bool:
        return self.kind == "lstm"

    def x_shape(self, features: int) -> tuple[int, ...]:
        T, B = self.steps, self.batch
        if self.unbatched:
            return (T, features)
        return (B, T, features) if self.batch_first else (T, B, features)

    def state_shape(self, size: int) -> tuple[int, ...]:
        LD = self.num_layers * self.D
        return (LD, size) if self.unbatched else (LD, self.batch, size)

    def to_time_major(self, a: np.ndarray) -> np.ndarray:
        """(T, B, F) view of an input/output array in this config's layout."""
        if self.unbatched:
            return a[:, None, :]
        return a.transpose(1, 0, 2) if self.batch_first else a

    def from_time_major(self, a: np.ndarray) -> np.ndarray:
        """Inverse of ``to_time_major``."""
        if self.unbatched:
            return a[:, 0, :]
        return a.transpose(1, 0, 2) if self.batch_first else a


@st.composite
def layer_configs(draw, kind: str, *, min_layers: int = 1, bidirectional: bool | None = None,
                  use_lengths: bool | None = None, unbatched: bool | None = None) -> LayerConfig:
    """Random LayerConfig; a keyword left at None is drawn, otherwise it is fixed."""
    H = draw(st.integers(1, MAX_SIZE))
    proj = draw(st.sampled_from([0, *range(1, H)])) if kind == "lstm" else 0
    T = draw(st.integers(1, MAX_SIZE))
    if unbatched is None:
        unbatched = draw(st.booleans()) if use_lengths is not True else False
    B = 1 if unbatched else draw(st.integers(1, MAX_SIZE))
    if use_lengths is None:
        use_lengths = (not unbatched) and draw(st.booleans())
    lengths = None
    if use_lengths:
        lengths = tuple(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    return LayerConfig(
        kind=kind,
        input_size=draw(st.integers(1, MAX_SIZE)),
        hidden_size=H,
        num_layers=draw(st.integers(min_layers, 3)),
        bidirectional=draw(st.booleans()) if bidirectional is None else bidirectional,
        proj_size=proj,
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        unbatched=unbatched,
        steps=T,
        batch=B,
        lengths=lengths,
        given_state=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@dataclass
class LayerData:
    """float64 inputs and upstream gradients; ``h0``/``c0`` None when the state is not given."""

    x: np.ndarray
    h0: np.ndarray | None
    c0: np.ndarray | None
    dout: np.ndarray
    dh_n: np.ndarray
    dc_n: np.ndarray | None


def make_data(cfg: LayerConfig) -> LayerData:
    rng = np.random.default_rng(cfg.seed)
    H, Ho = cfg.hidden_size, cfg.Ho
    lstm = cfg.is_lstm
    return LayerData(
        x=rng.standard_normal(cfg.x_shape(cfg.input_size)),
        h0=rng.standard_normal(cfg.state_shape(Ho)) if cfg.given_state else None,
        c0=rng.standard_normal(cfg.state_shape(H)) if cfg.given_state and lstm else None,
        dout=rng.standard_normal(cfg.x_shape(cfg.D * Ho)),
        dh_n=rng.standard_normal(cfg.state_shape(Ho)),
        dc_n=rng.standard_normal(cfg.state_shape(H)) if lstm else None,
    )


def random_masks(cfg: LayerConfig, p: float) -> list[np.ndarray]:
    """num_layers-1 Bernoulli(1-p) masks of 0/1, time-major (T, B, D*Ho) whatever the layout."""
    rng = np.random.default_rng(cfg.seed + 1)
    shape = (cfg.steps, cfg.batch, cfg.D * cfg.Ho)
    return [(rng.random(shape) >= p).astype(np.float64) for _ in range(cfg.num_layers - 1)]


# --------------------------------------------------------------------------------------------
# Building the two sides
# --------------------------------------------------------------------------------------------

def make_torch_layer(cfg: LayerConfig, *, num_layers: int | None = None,
                     input_size: int | None = None, batch_first: bool | None = None,
                     dropout: float = 0.0) -> torch.nn.RNNBase:
    """A float64 torch module for ``cfg``; keywords override the config (for per-layer stacks)."""
    kw = dict(
        input_size=cfg.input_size if input_size is None else input_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers if num_layers is None else num_layers,
        bias=cfg.bias,
        batch_first=cfg.batch_first if batch_first is None else batch_first,
        dropout=dropout,
        bidirectional=cfg.bidirectional,
        dtype=torch.float64,
    )
    if cfg.kind == "lstm":
        return torch.nn.LSTM(proj_size=cfg.proj_size, **kw)
    if cfg.kind == "gru":
        return torch.nn.GRU(**kw)
    return torch.nn.RNN(nonlinearity=cfg.kind.removeprefix("rnn_"), **kw)


def make_numpy_layer(cfg: LayerConfig, dtype: type, dropout: float = 0.0):
    kw = dict(num_layers=cfg.num_layers, bias=cfg.bias, batch_first=cfg.batch_first,
              dropout=dropout, bidirectional=cfg.bidirectional, dtype=dtype, seed=cfg.seed)
    if cfg.kind == "lstm":
        return numpy_rnn.LSTM(cfg.input_size, cfg.hidden_size, proj_size=cfg.proj_size, **kw)
    if cfg.kind == "gru":
        return numpy_rnn.GRU(cfg.input_size, cfg.hidden_size, **kw)
    return numpy_rnn.RNN(cfg.input_size, cfg.hidden_size,
                         nonlinearity=cfg.kind.removeprefix("rnn_"), **kw)


def matching_pair(cfg: LayerConfig, dtype: type, dropout: float = 0.0):
    """(torch module in ``dtype``, NumPy layer in ``dtype`` holding the same weights).

    The torch module is drawn in float64 from ``torch.manual_seed(cfg.seed)``; the NumPy layer loads
    that float64 state (so a float32 layer exercises the float64 -> float32 conversion of
    ``load_state_dict``), and the float32 torch module is the float64 one rounded by ``.float()``,
    which rounds identically.
    """
    torch.manual_seed(cfg.seed)
    mod = make_torch_layer(cfg, dropout=dropout)
    layer = make_numpy_layer(cfg, dtype, dropout=dropout)
    layer.load_state_dict(to_numpy_state(mod))
    if dtype == np.float32:
        mod = copy.deepcopy(mod).float()
    for name, p in mod.named_parameters():
        assert np.array_equal(layer.params[name], p.detach().numpy()), f"{name} not loaded exactly"
    return mod, layer


def _leaf(a: np.ndarray, dtype: type) -> torch.Tensor:
    return torch.tensor(a, dtype=TORCH_DTYPE[dtype], requires_grad=True)


def _run_torch_module(mod: torch.nn.RNNBase, x: torch.Tensor, hx, lengths, batch_first: bool,
                      steps: int):
    """``mod`` on padded ``x``, through pack/pad when ``lengths`` is given.

    Returns ``(out, h_n)`` or ``(out, (h_n, c_n))``.
    """
    if lengths is None:
        return mod(x, hx)
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                  enforce_sorted=False)
    out_packed, state = mod(packed, hx)
    out, _ = pad_packed_sequence(out_packed, batch_first=batch_first, total_length=steps)
    return out, state


def _initial_state(cfg: LayerConfig, data: LayerData, dtype: type):
    """Torch leaves for h0 (and c0); zeros when the state is not given, to read off dh0 (dc0)."""
    h0 = data.h0 if data.h0 is not None else np.zeros(cfg.state_shape(cfg.Ho))
    h0 = _leaf(h0, dtype)
    if not cfg.is_lstm:
        return h0, None
    c0 = data.c0 if data.c0 is not None else np.zeros(cfg.state_shape(cfg.hidden_size))
    return h0, _leaf(c0, dtype)


def _torch_backward(loss_terms, x, h0, c0, named_params, cfg: LayerConfig) -> dict[str, np.ndarray]:
    loss = sum((a * g).sum() for a, g in loss_terms)
    loss.backward()
    res = {"dx": x.grad.numpy(), "dh0": h0.grad.numpy()}
    if c0 is not None:
        res["dc0"] = c0.grad.numpy()
    for name, p in named_params:
        res["grad." + name] = p.grad.numpy()
    return res


def torch_reference(mod: torch.nn.RNNBase, cfg: LayerConfig, data: LayerData,
                    dtype: type) -> dict[str, np.ndarray]:
    """Forward values and autograd gradients of the full torch module, in ``cfg``'s layout."""
    mod.zero_grad(set_to_none=True)
    tdt = TORCH_DTYPE[dtype]
    x = _leaf(data.x, dtype)
    h0, c0 = _initial_state(cfg, data, dtype)
    hx = (h0, c0) if cfg.is_lstm else h0
    out, state = _run_torch_module(mod, x, hx, cfg.lengths, cfg.batch_first, cfg.steps)
    h_n, c_n = state if cfg.is_lstm else (state, None)
    res = {"out": out.detach().numpy(), "h_n": h_n.detach().numpy()}
    terms = [(out, torch.tensor(data.dout, dtype=tdt)), (h_n, torch.tensor(data.dh_n, dtype=tdt))]
    if cfg.is_lstm:
        res["c_n"] = c_n.detach().numpy()
        terms.append((c_n, torch.tensor(data.dc_n, dtype=tdt)))
    res |= _torch_backward(terms, x, h0, c0, mod.named_parameters(), cfg)
    return res


def torch_stack_reference(mod: torch.nn.RNNBase, cfg: LayerConfig, data: LayerData, dtype: type,
                          masks: list[np.ndarray], p: float) -> dict[str, np.ndarray]:
    """Like ``torch_reference``, but run as a stack of single-layer torch modules holding ``mod``'s
    weights, with ``y * (M / (1 - p))`` applied to each non-last layer's padded output.

    Runs time-major (B = 1 for unbatched input) and converts back to ``cfg``'s layout. With lengths
    every layer is packed / run / padded to ``T``, so the masked padding (zero anyway) is re-packed.
    """
    tdt = TORCH_DTYPE[dtype]
    L, D = cfg.num_layers, cfg.D
    state = to_numpy_state(mod)
    singles = []
    for l in range(L):
        torch.manual_seed(0)
        m = make_torch_layer(cfg, num_layers=1, batch_first=False,
                             input_size=cfg.input_size if l == 0 else D * cfg.Ho)
        load_numpy_state(m, {name: state[name.replace("_l0", f"_l{l}", 1)]
                             for name, _ in m.named_parameters()})
        singles.append(m.to(tdt))

    def batched_state(a: np.ndarray) -> np.ndarray:
        return a[:, None, :] if cfg.unbatched else a

    x = _leaf(cfg.to_time_major(data.x), dtype)
    h0 = data.h0 if data.h0 is not None else np.zeros(cfg.state_shape(cfg.Ho))
    h0 = _leaf(batched_state(h0), dtype)
    c0 = None
    if cfg.is_lstm:
        c0 = data.c0 if data.c0 is not None else np.zeros(cfg.state_shape(cfg.hidden_size))
        c0 = _leaf(batched_state(c0), dtype)

    inp, h_parts, c_parts = x, [], []
    for l, m in enumerate(singles):
        ks = slice(l * D, (l + 1) * D)
        hx = (h0[ks], c0[ks]) if cfg.is_lstm else h0[ks]
        out, st_l = _run_torch_module(m, inp, hx, cfg.lengths, False, cfg.steps)
        if cfg.is_lstm:
            h_parts.append(st_l[0])
            c_parts.append(st_l[1])
        else:
            h_parts.append(st_l)
        if l < L - 1:
            out = out * (torch.tensor(masks[l], dtype=tdt) / (1 - p))
        inp = out

    def unbatch_state(t: torch.Tensor) -> torch.Tensor:
        return t[:, 0, :] if cfg.unbatched else t

    h_n = unbatch_state(torch.cat(h_parts))
    out_tm = inp
    terms = [(out_tm, torch.tensor(cfg.to_time_major(data.dout), dtype=tdt)),
             (h_n, torch.tensor(data.dh_n, dtype=tdt))]
    res = {"out": cfg.from_time_major(out_tm.detach().numpy()), "h_n": h_n.detach().numpy()}
    if cfg.is_lstm:
        c_n = unbatch_state(torch.cat(c_parts))
        res["c_n"] = c_n.detach().numpy()
        terms.append((c_n, torch.tensor(data.dc_n, dtype=tdt)))
    loss = sum((a * g).sum() for a, g in terms)
    loss.backward()
    res["dx"] = cfg.from_time_major(x.grad.numpy())
    res["dh0"] = h0.grad.numpy()[:, 0, :] if cfg.unbatched else h0.grad.numpy()
    if c0 is not None:
        res["dc0"] = c0.grad.numpy()[:, 0, :] if cfg.unbatched else c0.grad.numpy()
    for l, m in enumerate(singles):
        for name, prm in m.named_parameters():
            res["grad." + name.replace("_l0", f"_l{l}", 1)] = prm.grad.numpy()
    return res


def numpy_result(layer, cfg: LayerConfig, data: LayerData, dtype: type,
                 zero_grad: bool = True, dropout_masks=None) -> dict[str, np.ndarray]:
    """Forward + backward of the NumPy layer (from zeroed gradients unless ``zero_grad=False``),
    as the same named arrays as the torch reference; the gradients are copies."""
    if zero_grad:
        layer.zero_grad()

    def cast(a):
        return None if a is None else a.astype(dtype)

    kw = {} if cfg.lengths is None else {"lengths": np.asarray(cfg.lengths, dtype=np.int64)}
    if dropout_masks is not None:
        kw["dropout_masks"] = dropout_masks
    x = cast(data.x)
    res: dict[str, np.ndarray] = {}
    if cfg.is_lstm:
        state = (cast(data.h0), cast(data.c0)) if cfg.given_state else None
        out, (h_n, c_n) = layer(x, state, **kw) if state is not None else layer(x, **kw)
        res |= {"out": out, "h_n": h_n, "c_n": c_n}
        dx, (dh0, dc0) = layer.backward(cast(data.dout), (cast(data.dh_n), cast(data.dc_n)))
        res |= {"dx": dx, "dh0": dh0, "dc0": dc0}
    else:
        out, h_n = layer(x, cast(data.h0), **kw) if cfg.given_state else layer(x, **kw)
        res |= {"out": out, "h_n": h_n}
        dx, dh0 = layer.backward(cast(data.dout), cast(data.dh_n))
        res |= {"dx": dx, "dh0": dh0}
    for name, g in layer.grads.items():
        res["grad." + name] = g.copy()
    return res


FORWARD_NAMES = {"out", "h_n", "c_n"}


def assert_parity(parity, suite: str, cfg: LayerConfig, dtype: type,
                  got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Every array torch produced must be matched (and no other gradient may exist)."""
    assert sorted(got) == sorted(want), \
        f"quantities differ: numpy {sorted(got)}, torch {sorted(want)}"
    failures = [parity.check(suite, cfg.kind, name, got[name], want[name], dtype,
                             "forward" if name in FORWARD_NAMES else "backward")
                for name in want]
    failures = [f for f in failures if f is not None]
    assert not failures, f"{cfg} {np.dtype(dtype).name}:\n  " + "\n  ".join(failures)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=N_FEW)
@given(data=st.data())
def test_param_names_shapes_and_dtypes_match_torch(kind, data):
    cfg = data.draw(layer_configs(kind))
    for dtype in DTYPES:
        layer = make_numpy_layer(cfg, dtype)
        torch_shapes = {n: tuple(p.shape) for n, p in make_torch_layer(cfg).named_parameters()}
        assert {n: a.shape for n, a in layer.params.items()} == torch_shapes
        assert {n: a.shape for n, a in layer.grads.items()} == torch_shapes
        assert all(a.dtype == dtype for a in (*layer.params.values(), *layer.grads.values()))
        assert all(not g.any() for g in layer.grads.values()), "gradients must start at zero"
        sd = layer.state_dict()
        assert sd.keys() == torch_shapes.keys()
        # state_dict is a copy, and it round-trips through torch unchanged.
        m = make_torch_layer(cfg)
        load_numpy_state(m, sd)
        assert all(np.array_equal(v, sd[k]) for k, v in to_numpy_state(m).items())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_forward_and_all_gradients_match_torch_autograd(parity, kind, dtype, data):
    """Any layout, depth, direction, projection, bias, lengths, given/zero state, sizes from 1."""
    cfg = data.draw(layer_configs(kind), label="cfg")
    d = make_data(cfg)
    mod, layer = matching_pair(cfg, dtype)
    assert_parity(parity, "layers", cfg, dtype, numpy_result(layer, cfg, d, dtype),
                  torch_reference(mod, cfg, d, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps, lengths", [(1, None), (3, None), (3, (3, 1, 2))],
                         ids=["T1", "T3", "T3-lengths"])
def test_size_one_features_and_hidden_match_torch(parity, kind, dtype, steps, lengths):
    """Fixed edge cases the random sweep may miss: I = H = 1 (width-1 gate slices) with B > 1,
    two bidirectional layers, explicit state."""
    cfg = LayerConfig(kind=kind, input_size=1, hidden_size=1, num_layers=2, bidirectional=True,
                      proj_size=0, bias=True, batch_first=False, unbatched=False, steps=steps,
                      batch=3, lengths=lengths, given_state=True, seed=3)
    d = make_data(cfg)
    mod, layer = matching_pair(cfg, dtype)
    assert_parity(parity, "layers", cfg, dtype, numpy_result(layer, cfg, d, dtype),
                  torch_reference(mod, cfg, d, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=N_FEW * 2)
@given(data=st.data(), p=st.sampled_from([0.2, 0.5, 0.7]))
def test_dropout_with_injected_masks_matches_torch_layer_stack(parity, kind, dtype, data, p):
    """Training mode, 2-3 layers, inverted dropout between layers with the same masks as torch."""
    cfg = data.draw(layer_configs(kind, min_layers=2), label="cfg")
    d = make_data(cfg)
    mod, layer = matching_pair(cfg, dtype, dropout=p)
    layer.train()
    masks = random_masks(cfg, p)
    want = torch_stack_reference(mod, cfg, d, dtype, masks, p)
    assert_parity(parity, "dropout", cfg, dtype,
                  numpy_result(layer, cfg, d, dtype, dropout_masks=masks), want)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=N_FEW)
@given(data=st.data())
def test_torch_layer_stack_reference_equals_full_module_without_dropout(kind, data):
    """Self-check of the dropout reference: all-ones masks with p=0 reproduce the full module."""
    cfg = data.draw(layer_configs(kind, min_layers=2), label="cfg")
    d = make_data(cfg)
    torch.manual_seed(cfg.seed)
    mod = make_torch_layer(cfg)
    want = torch_reference(mod, cfg, d, np.float64)
    ones = [np.ones_like(m) for m in random_masks(cfg, 0.0)]
    got = torch_stack_reference(mod, cfg, d, np.float64, ones, 0.0)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=N_FEW)
@given(data=st.data(), p=st.sampled_from([0.3, 0.5]))
def test_eval_mode_disables_dropout_and_matches_torch_eval(parity, kind, data, p):
    cfg = data.draw(layer_configs(kind, min_layers=2), label="cfg")
    d = make_data(cfg)
    mod, layer = matching_pair(cfg, np.float64, dropout=p)
    mod.eval()
    layer.eval()
    assert_parity(parity, "eval", cfg, np.float64, numpy_result(layer, cfg, d, np.float64),
                  torch_reference(mod, cfg, d, np.float64))


@pytest.mark.parametrize("kind", KINDS)
def test_given_masks_are_used_by_that_forward_call_only(kind):
    cfg = LayerConfig(kind=kind, input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                      proj_size=0, bias=True, batch_first=False, unbatched=False, steps=6, batch=5,
                      lengths=None, given_state=False, seed=7)
    p = 0.5
    _, layer = matching_pair(cfg, np.float64, dropout=p)
    layer.train()
    x = make_data(cfg).x
    ones = [np.ones((cfg.steps, cfg.batch, cfg.D * cfg.Ho))]
    first, _ = layer(x, dropout_masks=ones)
    second, _ = layer(x)  # random masks now: 60 kept-or-dropped draws cannot all be ones
    assert not np.array_equal(first, second)
    keep = [RNG_MASKS.random(ones[0].shape) >= p]
    as_bool, _ = layer(x, dropout_masks=keep)
    as_float, _ = layer(x, dropout_masks=[keep[0].astype(np.float64)])
    np.testing.assert_array_equal(as_bool, as_float)      # bool and 0/1 masks are the same


RNG_MASKS = np.random.default_rng(99)


def test_dropout_masks_are_refused_where_no_dropout_applies_or_the_shape_is_wrong():
    layer = numpy_rnn.GRU(3, 4, num_layers=3, dropout=0.5, seed=0)
    x = np.zeros((5, 2, 3))
    good = [np.ones((5, 2, 4), bool)] * 2
    with pytest.raises(ValueError, match=r"2 arrays of shape \(5, 2, 4\)"):
        layer(x, dropout_masks=good[:1])
    with pytest.raises(ValueError, match="shape"):
        layer(x, dropout_masks=[np.ones((5, 2, 8), bool)] * 2)
    layer.eval()
    with pytest.raises(ValueError, match="applies no dropout"):
        layer(x, dropout_masks=good)
    layer.train()
    layer.dropout = 0.0
    with pytest.raises(ValueError, match="applies no dropout"):
        layer(x, dropout_masks=good)


@pytest.mark.parametrize("kind", KINDS)
def test_single_layer_dropout_is_a_no_op_in_training_mode(parity, kind):
    cfg = LayerConfig(kind=kind, input_size=3, hidden_size=4, num_layers=1, bidirectional=True,
                      proj_size=0, bias=True, batch_first=True, unbatched=False, steps=5, batch=3,
                      lengths=(5, 2, 4), given_state=True, seed=11)
    d = make_data(cfg)
    with pytest.warns(UserWarning):  # torch warns that dropout needs num_layers > 1
        mod, layer = matching_pair(cfg, np.float64, dropout=0.5)
    layer.train()
    mod.train()
    assert_parity(parity, "layers", cfg, np.float64, numpy_result(layer, cfg, d, np.float64),
                  torch_reference(mod, cfg, d, np.float64))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=N_FEW)
@given(data=st.data())
def test_packed_sequences_equal_each_sequence_run_alone(kind, data):
    """With lengths, sequence b gives exactly what it gives alone, truncated to its own length:
    the reverse direction starts at its own last valid step ℓ_b-1, not at the padded end."""
    cfg = data.draw(layer_configs(kind, bidirectional=True, use_lengths=True), label="cfg")
    d = make_data(cfg)
    _, layer = matching_pair(cfg, np.float64)
    _, single = matching_pair(dataclasses.replace(cfg, batch=1, lengths=None), np.float64)
    out, state = layer(d.x, None if not cfg.given_state else
                       ((d.h0, d.c0) if cfg.is_lstm else d.h0), lengths=np.asarray(cfg.lengths))
    h_n, c_n = state if cfg.is_lstm else (state, None)
    out_tm = cfg.to_time_major(out)
    Ho = cfg.Ho
    for b, n in enumerate(cfg.lengths):
        xb = cfg.to_time_major(d.x)[:n, b:b + 1]
        xb = cfg.from_time_major(np.ascontiguousarray(xb))
        hb = None
        if cfg.given_state:
            hb = (d.h0[:, b:b + 1], d.c0[:, b:b + 1]) if cfg.is_lstm else d.h0[:, b:b + 1]
        ob, sb = single(xb, hb) if hb is not None else single(xb)
        hb_n, cb_n = sb if cfg.is_lstm else (sb, None)
        np.testing.assert_allclose(out_tm[:n, b], cfg.to_time_major(ob)[:, 0], rtol=0, atol=1e-13)
        np.testing.assert_allclose(h_n[:, b], hb_n[:, 0], rtol=0, atol=1e-13)
        if cfg.is_lstm:
            np.testing.assert_allclose(c_n[:, b], cb_n[:, 0], rtol=0, atol=1e-13)
        # Final states of the last layer come from the sequence's own ends, exactly.
        assert np.array_equal(h_n[-2, b], out_tm[n - 1, b, :Ho])
        assert np.array_equal(h_n[-1, b], out_tm[0, b, Ho:])
        assert not out_tm[n:, b].any(), "padded outputs must be exactly 0"


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=N_FEW)
@given(data=st.data())
def test_padded_positions_get_exactly_zero_input_gradient(kind, data):
    cfg = data.draw(layer_configs(kind, use_lengths=True), label="cfg")
    d = make_data(cfg)  # dout is non-zero at padded positions too: it must be ignored
    _, layer = matching_pair(cfg, np.float64)
    res = numpy_result(layer, cfg, d, np.float64)
    pad = np.arange(cfg.steps)[:, None] >= np.asarray(cfg.lengths)[None, :]  # (T, B)
    assert not cfg.to_time_major(res["dx"])[pad].any()
    assert not cfg.to_time_major(res["out"])[pad].any()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=N_FEW)
@given(data=st.data())
def test_backward_adds_into_grads_and_zero_grad_clears_them(kind, dtype, data):
    cfg = data.draw(layer_configs(kind), label="cfg")
    d = make_data(cfg)
    _, layer = matching_pair(cfg, dtype)
    once = numpy_result(layer, cfg, d, dtype)
    # A second forward + backward without zero_grad adds the same gradients again.
    numpy_result(layer, cfg, d, dtype, zero_grad=False)
    for name, g in layer.grads.items():
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, 2 * once["grad." + name], err_msg=name)
    layer.zero_grad()
    assert all(not g.any() for g in layer.grads.values())


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=N_FEW)
@given(data=st.data(), which=st.sampled_from(["none", "h_only", "c_only"]))
def test_missing_final_state_gradients_count_as_zero(kind, data, which):
    cfg = data.draw(layer_configs(kind), label="cfg")
    d = make_data(cfg)
    _, layer = matching_pair(cfg, np.float64)
    zeros = LayerData(d.x, d.h0, d.c0, d.dout, np.zeros_like(d.dh_n),
                      None if d.dc_n is None else np.zeros_like(d.dc_n))
    if cfg.is_lstm:
        keep_h, keep_c = which == "h_only", which == "c_only"
        zeros.dh_n = d.dh_n if keep_h else zeros.dh_n
        zeros.dc_n = d.dc_n if keep_c else zeros.dc_n
        arg = {"none": None, "h_only": (d.dh_n, None), "c_only": (None, d.dc_n)}[which]
    else:
        arg = None
    want = numpy_result(layer, cfg, zeros, np.float64)
    layer.zero_grad()
    kw = {} if cfg.lengths is None else {"lengths": np.asarray(cfg.lengths)}
    state = None
    if cfg.given_state:
        state = (d.h0, d.c0) if cfg.is_lstm else d.h0
    layer(d.x, state, **kw)
    if cfg.is_lstm:
        dx, (dh0, dc0) = layer.backward(d.dout, arg)
        got = {"dx": dx, "dh0": dh0, "dc0": dc0}
    else:
        dx, dh0 = layer.backward(d.dout) if which == "none" else layer.backward(d.dout, None)
        got = {"dx": dx, "dh0": dh0}
    got |= {"grad." + k: g for k, g in layer.grads.items()}
    for name, g in got.items():
        np.testing.assert_allclose(g, want[name], rtol=0, atol=1e-13, err_msg=name)
