"""numpy_rnn.RNNCell / GRUCell / LSTMCell equal torch.nn.RNNCell / GRUCell / LSTMCell.

One step forward and backward: the torch cell is drawn with ``torch.manual_seed``, its weights are
copied into the NumPy cell, both read the same random input and state (or none: zeros), and the
same random upstream gradient on the new state (``h``, and ``c`` for the LSTM) is backpropagated.
Torch autograd is the truth for ``dx``, ``dh``, ``dc`` (also w.r.t. the zero state when none was
given) and every parameter gradient. Tolerances (scale-aware) are in ``conftest.RTOL``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy_rnn
from torch_ref import load_numpy_state, to_numpy_state

KINDS = ("rnn_tanh", "rnn_relu", "gru", "lstm")
DTYPES = (np.float64, np.float32)
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
MAX_SIZE = 6
N_EXAMPLES = settings().max_examples
N_FEW = max(3, N_EXAMPLES // 3)


@dataclass(frozen=True)
class CellConfig:
    kind: str
    input_size: int
    hidden_size: int
    bias: bool
    batch: int | None  # None: unbatched 1-D input (F,) and state (H,)
    given_state: bool
    seed: int

    @property
    def is_lstm(self) -> bool:
        return self.kind == "lstm"

    def shape(self, size: int) -> tuple[int, ...]:
        return (size,) if self.batch is None else (self.batch, size)


@st.composite
def cell_configs(draw, kind: str) -> CellConfig:
    return CellConfig(
        kind=kind,
        input_size=draw(st.integers(1, MAX_SIZE)),
        hidden_size=draw(st.integers(1, MAX_SIZE)),
        bias=draw(st.booleans()),
        batch=draw(st.one_of(st.none(), st.integers(1, MAX_SIZE))),
        given_state=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@dataclass
class CellData:
    """float64 input, previous state (None when not given) and upstream gradients."""

    x: np.ndarray
    h: np.ndarray | None
    c: np.ndarray | None
    dh: np.ndarray
    dc: np.ndarray | None


def make_data(cfg: CellConfig) -> CellData:
    rng = np.random.default_rng(cfg.seed)
    H = cfg.hidden_size
    return CellData(
        x=rng.standard_normal(cfg.shape(cfg.input_size)),
        h=rng.standard_normal(cfg.shape(H)) if cfg.given_state else None,
        c=rng.standard_normal(cfg.shape(H)) if cfg.given_state and cfg.is_lstm else None,
        dh=rng.standard_normal(cfg.shape(H)),
        dc=rng.standard_normal(cfg.shape(H)) if cfg.is_lstm else None,
    )


def make_torch_cell(cfg: CellConfig) -> torch.nn.Module:
    kw = dict(bias=cfg.bias, dtype=torch.float64)
    I, H = cfg.input_size, cfg.hidden_size
    if cfg.kind == "lstm":
        return torch.nn.LSTMCell(I, H, **kw)
    if cfg.kind == "gru":
        return torch.nn.GRUCell(I, H, **kw)
    return torch.nn.RNNCell(I, H, nonlinearity=cfg.kind.removeprefix("rnn_"), **kw)


def make_numpy_cell(cfg: CellConfig, dtype: type):
    I, H = cfg.input_size, cfg.hidden_size
    kw = dict(bias=cfg.bias, dtype=dtype, seed=cfg.seed)
    if cfg.kind == "lstm":
        return numpy_rnn.LSTMCell(I, H, **kw)
    if cfg.kind == "gru":
        return numpy_rnn.GRUCell(I, H, **kw)
    return numpy_rnn.RNNCell(I, H, nonlinearity=cfg.kind.removeprefix("rnn_"), **kw)


def matching_pair(cfg: CellConfig, dtype: type):
    """(torch cell, NumPy cell), both in ``dtype``, holding the same (float64-drawn) weights."""
    torch.manual_seed(cfg.seed)
    mod = make_torch_cell(cfg)
    cell = make_numpy_cell(cfg, dtype)
    cell.load_state_dict(to_numpy_state(mod))
    if dtype == np.float32:
        mod = copy.deepcopy(mod).float()
    for name, p in mod.named_parameters():
        assert np.array_equal(cell.params[name], p.detach().numpy()), f"{name} not loaded exactly"
    return mod, cell


def torch_reference(mod: torch.nn.Module, cfg: CellConfig, d: CellData,
                    dtype: type) -> dict[str, np.ndarray]:
    """Forward values and autograd gradients of the torch cell (zero-state leaves when no state)."""
    tdt = TORCH_DTYPE[dtype]

    def leaf(a: np.ndarray | None) -> torch.Tensor:
        a = np.zeros(cfg.shape(cfg.hidden_size)) if a is None else a
        return torch.tensor(a, dtype=tdt, requires_grad=True)

    x = torch.tensor(d.x, dtype=tdt, requires_grad=True)
    h = leaf(d.h)
    res: dict[str, np.ndarray] = {}
    if cfg.is_lstm:
        c = leaf(d.c)
        h_new, c_new = mod(x, (h, c))
        loss = (h_new * torch.tensor(d.dh, dtype=tdt)).sum() \
            + (c_new * torch.tensor(d.dc, dtype=tdt)).sum()
        res |= {"h": h_new.detach().numpy(), "c": c_new.detach().numpy()}
    else:
        h_new = mod(x, h)
        loss = (h_new * torch.tensor(d.dh, dtype=tdt)).sum()
        res["h"] = h_new.detach().numpy()
    loss.backward()
    res |= {"dx": x.grad.numpy(), "dh": h.grad.numpy()}
    if cfg.is_lstm:
        res["dc"] = c.grad.numpy()
    for name, p in mod.named_parameters():
        res["grad." + name] = p.grad.numpy()
    return res


def numpy_result(cell, cfg: CellConfig, d: CellData, dtype: type,
                 zero_grad: bool = True) -> dict[str, np.ndarray]:
    """Forward + backward of the NumPy cell as the same named arrays (gradients copied)."""
    if zero_grad:
        cell.zero_grad()

    def cast(a):
        return None if a is None else a.astype(dtype)

    x = cast(d.x)
    res: dict[str, np.ndarray] = {}
    if cfg.is_lstm:
        h_new, c_new = cell(x, (cast(d.h), cast(d.c))) if cfg.given_state else cell(x)
        dx, (dh, dc) = cell.backward((cast(d.dh), cast(d.dc)))
        res |= {"h": h_new, "c": c_new, "dx": dx, "dh": dh, "dc": dc}
    else:
        h_new = cell(x, cast(d.h)) if cfg.given_state else cell(x)
        dx, dh = cell.backward(cast(d.dh))
        res |= {"h": h_new, "dx": dx, "dh": dh}
    for name, g in cell.grads.items():
        res["grad." + name] = g.copy()
    return res


def assert_parity(parity, cfg: CellConfig, dtype: type, got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want), \
        f"quantities differ: numpy {sorted(got)}, torch {sorted(want)}"
    failures = [parity.check("cells", cfg.kind, name, got[name], want[name], dtype,
                             "forward" if name in ("h", "c") else "backward")
                for name in want]
    failures = [f for f in failures if f is not None]
    assert not failures, f"{cfg} {np.dtype(dtype).name}:\n  " + "\n  ".join(failures)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=N_FEW)
@given(data=st.data())
def test_cell_param_names_shapes_and_dtypes_match_torch(kind, data):
    cfg = data.draw(cell_configs(kind), label="cfg")
    torch_shapes = {n: tuple(p.shape) for n, p in make_torch_cell(cfg).named_parameters()}
    for dtype in DTYPES:
        cell = make_numpy_cell(cfg, dtype)
        assert {n: a.shape for n, a in cell.params.items()} == torch_shapes
        assert {n: a.shape for n, a in cell.grads.items()} == torch_shapes
        assert all(a.dtype == dtype for a in (*cell.params.values(), *cell.grads.values()))
        assert all(not g.any() for g in cell.grads.values()), "gradients must start at zero"
        m = make_torch_cell(cfg)
        load_numpy_state(m, cell.state_dict())
        assert all(np.array_equal(v, cell.params[k]) for k, v in to_numpy_state(m).items())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_cell_forward_and_all_gradients_match_torch_autograd(parity, kind, dtype, data):
    """Batched or 1-D input, bias on/off, given or zero state, sizes down to 1."""
    cfg = data.draw(cell_configs(kind), label="cfg")
    d = make_data(cfg)
    mod, cell = matching_pair(cfg, dtype)
    assert_parity(parity, cfg, dtype, numpy_result(cell, cfg, d, dtype),
                  torch_reference(mod, cfg, d, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=N_FEW)
@given(data=st.data())
def test_cell_backward_adds_into_grads_and_zero_grad_clears_them(kind, dtype, data):
    cfg = data.draw(cell_configs(kind), label="cfg")
    d = make_data(cfg)
    _, cell = matching_pair(cfg, dtype)
    once = numpy_result(cell, cfg, d, dtype)
    numpy_result(cell, cfg, d, dtype, zero_grad=False)  # same step again, no zero_grad
    for name, g in cell.grads.items():
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, 2 * once["grad." + name], err_msg=name)
    cell.zero_grad()
    assert all(not g.any() for g in cell.grads.values())


@settings(max_examples=N_FEW)
@given(data=st.data(), which=st.sampled_from(["h_only", "c_only", "none"]))
def test_lstm_cell_missing_state_gradient_counts_as_zero(data, which):
    """LSTMCell.backward((dh, None)), ((None, dc)) and (None) equal passing zeros."""
    cfg = data.draw(cell_configs("lstm"), label="cfg")
    d = make_data(cfg)
    _, cell = matching_pair(cfg, np.float64)
    zeros = CellData(d.x, d.h, d.c,
                     d.dh if which == "h_only" else np.zeros_like(d.dh),
                     d.dc if which == "c_only" else np.zeros_like(d.dc))
    want = numpy_result(cell, cfg, zeros, np.float64)
    cell.zero_grad()
    cell(d.x, (d.h, d.c)) if cfg.given_state else cell(d.x)
    arg = {"h_only": (d.dh, None), "c_only": (None, d.dc), "none": None}[which]
    dx, (dh, dc) = cell.backward(arg)
    got = {"dx": dx, "dh": dh, "dc": dc} | {"grad." + k: g for k, g in cell.grads.items()}
    for name, g in got.items():
        np.testing.assert_allclose(g, want[name], rtol=0, atol=1e-13, err_msg=name)
