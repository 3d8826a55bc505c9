"""AttentionPooling against torch autograd (forward and every gradient), finite differences,
padding, initialisation, accumulation and errors.

The torch reference is built from ``nn.Linear(F, A)`` and ``nn.Linear(A, 1, bias=False)`` holding
the NumPy layer's weights, with a softmax over time masked by ``-inf`` at padded steps; random
upstream gradients flow into BOTH the context and the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_rnn.nn.attention import AttentionPooling
from numpy_rnn.nn.gradcheck import check_function

torch = pytest.importorskip("torch")

TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
PARAM_NAMES = ["proj.weight", "proj.bias", "score.weight"]
FORWARD_NAMES = {"context", "weights"}
N_EXAMPLES = settings().max_examples      # the hypothesis profile's count (conftest)
N_FEW = max(3, N_EXAMPLES // 3)


# --------------------------------------------------------------------------------------------
# Cases, the two sides
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One test case; ``lengths`` None means every step is valid."""

    steps: int
    batch: int
    input_size: int
    attention_size: int
    batch_first: bool
    lengths: tuple[int, ...] | None
    weight_scale: float   # > 1 sharpens the softmax, so the weights are far from uniform
    seed: int

    def outputs_shape(self) -> tuple[int, int, int]:
        T, B, F = self.steps, self.batch, self.input_size
        return (B, T, F) if self.batch_first else (T, B, F)

    def weights_shape(self) -> tuple[int, int]:
        return (self.batch, self.steps) if self.batch_first else (self.steps, self.batch)

    def valid(self) -> np.ndarray:
        """(T, B) boolean mask of the valid steps, time-major."""
        lens = self.lengths if self.lengths is not None else (self.steps,) * self.batch
        return np.arange(self.steps)[:, None] < np.asarray(lens)[None, :]


@st.composite
def cases(draw, use_lengths: bool | None = None) -> Case:
    T = draw(st.integers(1, 6))
    B = draw(st.integers(1, 5))
    if use_lengths is None:
        use_lengths = draw(st.booleans())
    lengths = None
    if use_lengths:
        lens = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
        if B >= 2 and draw(st.booleans()):   # pin the extremes: one length 1, one length T
            i, j = draw(st.permutations(range(B)))[:2]
            lens[i], lens[j] = 1, T
        lengths = tuple(lens)
    return Case(steps=T, batch=B, input_size=draw(st.integers(1, 5)),
                attention_size=draw(st.integers(1, 5)), batch_first=draw(st.booleans()),
                lengths=lengths, weight_scale=draw(st.sampled_from([1.0, 3.0, 10.0])),
                seed=draw(st.integers(0, 2**31 - 1)))


@dataclass
class Data:
    """float64 outputs and upstream gradients in the case's layout."""

    outputs: np.ndarray
    dcontext: np.ndarray
    dweights: np.ndarray


def make_data(case: Case) -> Data:
    rng = np.random.default_rng(case.seed)
    return Data(outputs=rng.standard_normal(case.outputs_shape()),
                dcontext=rng.standard_normal((case.batch, case.input_size)),
                dweights=rng.standard_normal(case.weights_shape()))


def make_layer(case: Case, dtype=np.float64) -> AttentionPooling:
    attn = AttentionPooling(case.input_size, case.attention_size, batch_first=case.batch_first,
                            dtype=dtype, seed=case.seed)
    for p in attn.params.values():
        p *= case.weight_scale
    return attn


class TorchAttention(torch.nn.Module):
    """The reference: the same math in torch ops, time-major inside."""

    def __init__(self, F: int, A: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(F, A, dtype=dtype)
        self.score = torch.nn.Linear(A, 1, bias=False, dtype=dtype)

    def forward(self, o: torch.Tensor, lengths, batch_first: bool):
        o_tm = o.transpose(0, 1) if batch_first else o                         # (T, B, F)
        e = self.score(torch.tanh(self.proj(o_tm))).squeeze(-1)              # (T, B)
        if lengths is not None:
            T = o_tm.shape[0]
            valid = torch.arange(T)[:, None] < torch.as_tensor(lengths)[None, :]
            e = e.masked_fill(~valid, float("-inf"))
        alpha = torch.softmax(e, dim=0)
        context = (alpha[:, :, None] * o_tm).sum(dim=0)
        return context, (alpha.T if batch_first else alpha)


def torch_twin(attn: AttentionPooling) -> TorchAttention:
    """A TorchAttention holding ``attn``'s weights exactly, in ``attn``'s dtype."""
    ref = TorchAttention(attn.input_size, attn.attention_size, TORCH_DTYPE[attn.dtype])
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(torch.from_numpy(attn.params[name]))
    return ref


def torch_result(attn: AttentionPooling, case: Case, d: Data) -> dict[str, np.ndarray]:
    tdt = TORCH_DTYPE[attn.dtype]
    ref = torch_twin(attn)
    o = torch.tensor(d.outputs, dtype=tdt, requires_grad=True)
    context, weights = ref(o, case.lengths, case.batch_first)
    loss = ((context * torch.tensor(d.dcontext, dtype=tdt)).sum()
            + (weights * torch.tensor(d.dweights, dtype=tdt)).sum())
    loss.backward()
    res = {"context": context.detach().numpy(), "weights": weights.detach().numpy(),
           "doutputs": o.grad.numpy()}
    for name, p in ref.named_parameters():
        res["grad." + name] = p.grad.numpy()
    return res


def numpy_result(attn: AttentionPooling, case: Case, d: Data) -> dict[str, np.ndarray]:
    dt = attn.dtype
    kw = {} if case.lengths is None else {"lengths": np.asarray(case.lengths, dtype=np.int64)}
    attn.zero_grad()
    context, weights = attn(d.outputs.astype(dt), **kw)
    doutputs = attn.backward(d.dcontext.astype(dt), d.dweights.astype(dt))
    res = {"context": context, "weights": weights, "doutputs": doutputs}
    for name, g in attn.grads.items():
        res["grad." + name] = g.copy()
    return res


def assert_parity(parity, case: Case, dtype, got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    failures = [parity.check("attention", "pooling", name, got[name], want[name], dtype,
                             "forward" if name in FORWARD_NAMES else "backward")
                for name in want]
    failures = [f for f in failures if f is not None]
    assert not failures, f"{case} {np.dtype(dtype).name}:\n  " + "\n  ".join(failures)


# --------------------------------------------------------------------------------------------
# Parity with torch
# --------------------------------------------------------------------------------------------

@given(case=cases())
def test_forward_and_all_gradients_match_torch_float64(parity, case):
    """Any sizes from 1, both layouts, with and without lengths (1 and T pinned in some)."""
    d = make_data(case)
    attn = make_layer(case)
    assert_parity(parity, case, np.float64, numpy_result(attn, case, d),
                  torch_result(attn, case, d))


@settings(max_examples=N_FEW)
@given(case=cases())
def test_float32_matches_torch_float32_and_stays_float32(parity, case):
    d = make_data(case)
    attn = make_layer(case, np.float32)
    got = numpy_result(attn, case, d)
    assert all(a.dtype == np.float32 for a in got.values()), {k: a.dtype for k, a in got.items()}
    assert all(p.dtype == np.float32 for p in attn.params.values())
    assert_parity(parity, case, np.float32, got, torch_result(attn, case, d))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("steps, lengths", [(1, None), (1, (1, 1, 1)), (4, (4, 1, 2)),
                                            (4, (1, 1, 1)), (4, (4, 4, 4))],
                         ids=["T1", "T1-lengths", "mixed", "all-1", "all-T"])
def test_edge_cases_match_torch(parity, batch_first, steps, lengths):
    """Fixed cases the random sweep may miss: T = 1, every length 1, every length T, F = A = 1."""
    case = Case(steps=steps, batch=3, input_size=1, attention_size=1, batch_first=batch_first,
                lengths=lengths, weight_scale=5.0, seed=11)
    d = make_data(case)
    attn = make_layer(case)
    assert_parity(parity, case, np.float64, numpy_result(attn, case, d),
                  torch_result(attn, case, d))


def test_large_scores_are_stable_and_match_torch(parity):
    """Scores in the hundreds: exp would overflow without subtracting the maximum."""
    case = Case(steps=5, batch=4, input_size=3, attention_size=4, batch_first=False,
                lengths=(5, 2, 1, 4), weight_scale=300.0, seed=5)
    d = make_data(case)
    for dtype in (np.float64, np.float32):
        attn = make_layer(case, dtype)
        got = numpy_result(attn, case, d)
        assert all(np.all(np.isfinite(a)) for a in got.values())
        assert_parity(parity, case, dtype, got, torch_result(attn, case, d))


def test_batch_first_is_exactly_the_transposed_time_major_result():
    case = Case(steps=4, batch=3, input_size=2, attention_size=3, batch_first=False,
                lengths=(4, 1, 3), weight_scale=2.0, seed=2)
    d = make_data(case)
    tm, bf = make_layer(case), AttentionPooling(2, 3, batch_first=True, seed=2)
    for p in bf.params.values():
        p *= 2.0
    lens = np.array(case.lengths)
    c1, w1 = tm(d.outputs, lens)
    c2, w2 = bf(d.outputs.transpose(1, 0, 2).copy(), lens)
    dx1 = tm.backward(d.dcontext, d.dweights)
    dx2 = bf.backward(d.dcontext, d.dweights.T.copy())
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(w1, w2.T)
    np.testing.assert_array_equal(dx1, dx2.transpose(1, 0, 2))
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(tm.grads[name], bf.grads[name])


# --------------------------------------------------------------------------------------------
# Finite differences
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [None, (5, 1, 3, 2)], ids=["full", "lengths"])
def test_backward_matches_finite_differences(batch_first, lengths):
    case = Case(steps=5, batch=4, input_size=3, attention_size=4, batch_first=batch_first,
                lengths=lengths, weight_scale=2.0, seed=3)
    attn = make_layer(case)
    x = make_data(case).outputs
    kw = {} if lengths is None else {"lengths": np.array(lengths)}
    arrays = {"outputs": x, **attn.params}

    def fn():
        return attn(x, **kw)

    def vjp(upstream):
        dcontext, dweights = upstream
        attn.zero_grad()
        attn(x, **kw)
        doutputs = attn.backward(dcontext, dweights)
        return {"outputs": doutputs, **{name: g.copy() for name, g in attn.grads.items()}}

    report = check_function(fn, arrays, vjp)
    assert set(report.errors) == {"outputs", *PARAM_NAMES}
    assert report.ok(1e-7), str(report)


# --------------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_first", [False, True])
def test_padded_steps_get_exactly_zero_weight_and_zero_gradient(batch_first):
    case = Case(steps=6, batch=4, input_size=3, attention_size=2, batch_first=batch_first,
                lengths=(6, 1, 3, 4), weight_scale=3.0, seed=4)
    d = make_data(case)
    attn = make_layer(case)
    _, weights = attn(d.outputs, np.array(case.lengths))
    doutputs = attn.backward(d.dcontext, d.dweights)
    valid = case.valid()
    if batch_first:
        weights, doutputs = weights.T, doutputs.transpose(1, 0, 2)
    assert np.all(weights[~valid] == 0) and np.all(weights[valid] > 0)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, rtol=1e-14)
    assert np.all(doutputs[~valid] == 0)
    assert np.all(doutputs[valid] != 0)


def test_values_at_padded_steps_never_reach_any_result():
    """NaN or huge values in the padding of outputs and dweights change nothing, bit for bit."""
    case = Case(steps=5, batch=3, input_size=2, attention_size=3, batch_first=False,
                lengths=(5, 2, 1), weight_scale=2.0, seed=6)
    d = make_data(case)
    lens, pad = np.array(case.lengths), ~case.valid()
    clean_x = np.where(pad[:, :, None], 0.0, d.outputs)
    dirty_x = d.outputs.copy()
    dirty_x[pad] = np.nan
    dirty_x[4, 1] = 1e300
    dirty_dw = d.dweights.copy()
    dirty_dw[pad] = np.nan
    results = []
    for x, dw in ((clean_x, d.dweights), (dirty_x, dirty_dw)):
        attn = make_layer(case)
        c, w = attn(x, lens)
        dx = attn.backward(d.dcontext, dw)
        results.append([c, w, dx, *(attn.grads[n] for n in PARAM_NAMES)])
    for clean, dirty in zip(*results):
        assert np.all(np.isfinite(dirty))
        np.testing.assert_array_equal(clean, dirty)


def test_full_lengths_equal_no_lengths_and_lists_are_accepted():
    case = Case(steps=4, batch=3, input_size=2, attention_size=2, batch_first=False,
                lengths=None, weight_scale=2.0, seed=7)
    d = make_data(case)
    a, b = make_layer(case), make_layer(case)
    c1, w1 = a(d.outputs)
    c2, w2 = b(d.outputs, lengths=[4, 4, 4])
    np.testing.assert_allclose(c1, c2, rtol=1e-15)
    np.testing.assert_allclose(w1, w2, rtol=1e-15)
    np.testing.assert_allclose(a.backward(d.dcontext, d.dweights),
                               b.backward(d.dcontext, d.dweights), rtol=1e-14, atol=1e-16)


def test_returned_weights_are_a_copy_that_cannot_change_backward():
    case = Case(steps=3, batch=2, input_size=2, attention_size=2, batch_first=False,
                lengths=None, weight_scale=2.0, seed=8)
    d = make_data(case)
    a, b = make_layer(case), make_layer(case)
    a(d.outputs)
    _, w = b(d.outputs)
    w[:] = 123.0
    np.testing.assert_array_equal(a.backward(d.dcontext, d.dweights),
                                  b.backward(d.dcontext, d.dweights))


def test_none_upstream_gradients_are_zeros():
    case = Case(steps=3, batch=2, input_size=2, attention_size=2, batch_first=True,
                lengths=(3, 1), weight_scale=2.0, seed=9)
    d = make_data(case)
    lens = np.array(case.lengths)
    a, b = make_layer(case), make_layer(case)
    a(d.outputs, lens)
    b(d.outputs, lens)
    np.testing.assert_array_equal(a.backward(d.dcontext),
                                  b.backward(d.dcontext, np.zeros(case.weights_shape())))
    a.zero_grad()
    b.zero_grad()
    np.testing.assert_array_equal(a.backward(None, d.dweights),
                                  b.backward(np.zeros((2, 2)), d.dweights))
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(a.grads[name], b.grads[name])


# --------------------------------------------------------------------------------------------
# Parameters, initialisation, accumulation
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_parameter_names_shapes_and_dtypes_match_torch(dtype):
    attn = AttentionPooling(7, 5, dtype=dtype, seed=0)
    ref = TorchAttention(7, 5, torch.float64)
    torch_shapes = {n: tuple(p.shape) for n, p in ref.named_parameters()}
    assert list(attn.params) == list(torch_shapes) == PARAM_NAMES
    assert {n: a.shape for n, a in attn.params.items()} == torch_shapes
    assert {n: a.shape for n, a in attn.grads.items()} == torch_shapes
    assert all(a.dtype == dtype for a in (*attn.params.values(), *attn.grads.values()))
    assert all(not g.any() for g in attn.grads.values())
    # A torch state dict loads unchanged, and state_dict round-trips.
    attn.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    for name, p in ref.named_parameters():
        np.testing.assert_array_equal(attn.params[name], p.detach().numpy().astype(dtype))
    assert list(attn.state_dict()) == PARAM_NAMES


def test_init_is_torch_default_drawn_in_order_from_the_seed():
    F, A = 16, 300
    attn = AttentionPooling(F, A, seed=42)
    rng = np.random.default_rng(42)
    kF, kA = 1 / np.sqrt(F), 1 / np.sqrt(A)
    np.testing.assert_array_equal(attn.params["proj.weight"], rng.uniform(-kF, kF, (A, F)))
    np.testing.assert_array_equal(attn.params["proj.bias"], rng.uniform(-kF, kF, (A,)))
    np.testing.assert_array_equal(attn.params["score.weight"], rng.uniform(-kA, kA, (1, A)))
    for name, k in (("proj.weight", kF), ("proj.bias", kF), ("score.weight", kA)):
        w = attn.params[name]
        assert np.all(np.abs(w) <= k)
        assert np.abs(w).max() > 0.9 * k        # the bound is the one used, not a smaller one
    w = attn.params["proj.weight"]
    assert abs(w.var() - kF * kF / 3) < 0.05 * kF * kF / 3
    other = AttentionPooling(F, A, seed=43)
    assert not np.array_equal(other.params["proj.weight"], w)


def test_gradients_accumulate_over_backward_calls_like_torch_and_zero_grad_clears():
    case = Case(steps=4, batch=3, input_size=3, attention_size=2, batch_first=False,
                lengths=(4, 2, 1), weight_scale=2.0, seed=10)
    attn = make_layer(case)
    ref = torch_twin(attn)
    rng = np.random.default_rng(0)
    lens = np.array(case.lengths)
    for _ in range(2):                       # two forward/backward pairs, different data
        x = rng.standard_normal(case.outputs_shape())
        dc, dw = rng.standard_normal((3, 3)), rng.standard_normal((4, 3))
        attn(x, lens)
        attn.backward(dc, dw)
        c, w = ref(torch.tensor(x), case.lengths, False)
        ((c * torch.tensor(dc)).sum() + (w * torch.tensor(dw)).sum()).backward()
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(attn.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-14)
    # Two backward calls after one forward add the same gradient twice.
    attn.zero_grad()
    assert all(not g.any() for g in attn.grads.values())
    attn(x, lens)
    attn.backward(dc, dw)
    once = {n: g.copy() for n, g in attn.grads.items()}
    attn.backward(dc, dw)
    for name in PARAM_NAMES:
        np.testing.assert_allclose(attn.grads[name], 2 * once[name], rtol=1e-15)


def test_repr_and_gradient_check_contract():
    attn = AttentionPooling(4, 3, batch_first=True, dtype=np.float32)
    assert repr(attn) == "AttentionPooling(4, 3, batch_first=True, dtype=float32)"
    assert AttentionPooling.backward_unpacks_outputs is True


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [2.0, "3", True, None])
def test_constructor_refuses_non_integer_sizes_with_type_error(bad):
    with pytest.raises(TypeError, match="input_size"):
        AttentionPooling(bad, 2)
    with pytest.raises(TypeError, match="attention_size"):
        AttentionPooling(2, bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_constructor_refuses_sizes_below_one_with_value_error(bad):
    with pytest.raises(ValueError, match="input_size"):
        AttentionPooling(bad, 2)
    with pytest.raises(ValueError, match="attention_size"):
        AttentionPooling(2, bad)


@pytest.mark.parametrize("bad", [0, 1, "True", None, np.bool_(True)])
def test_constructor_refuses_batch_first_that_is_not_a_bool(bad):
    with pytest.raises(TypeError, match="batch_first"):
        AttentionPooling(2, 2, batch_first=bad)


def test_constructor_refuses_non_float_dtype():
    with pytest.raises(TypeError):
        AttentionPooling(2, 2, dtype=np.int32)
    with pytest.raises(TypeError):
        AttentionPooling(2, 2, dtype=np.float16)


@pytest.mark.parametrize("shape", [(3, 2), (3, 2, 4, 1), (3,)])
def test_forward_refuses_wrong_rank(shape):
    with pytest.raises(ValueError, match="3-D"):
        AttentionPooling(4, 2)(np.zeros(shape))


def test_forward_refuses_wrong_feature_size_and_empty_input():
    attn = AttentionPooling(4, 2)
    with pytest.raises(ValueError, match="input_size=4"):
        attn(np.zeros((3, 2, 5)))
    with pytest.raises(ValueError, match="at least one"):
        attn(np.zeros((0, 2, 4)))
    with pytest.raises(ValueError, match="at least one"):
        attn(np.zeros((3, 0, 4)))


def test_forward_refuses_wrong_dtype_without_casting():
    with pytest.raises(TypeError, match="float32"):
        AttentionPooling(4, 2)(np.zeros((3, 2, 4), np.float32))
    with pytest.raises(TypeError):
        AttentionPooling(4, 2, dtype=np.float32)(np.zeros((3, 2, 4)))
    with pytest.raises(TypeError, match="int64"):
        AttentionPooling(4, 2)(np.zeros((3, 2, 4), np.int64))
    with pytest.raises(TypeError):
        AttentionPooling(4, 2)("outputs")


@pytest.mark.parametrize("lengths", [np.array([1.0, 2.0]), np.array([True, True]), ["1", "2"]],
                         ids=["float", "bool", "str"])
def test_forward_refuses_non_integer_lengths(lengths):
    with pytest.raises(TypeError, match="lengths"):
        AttentionPooling(4, 2)(np.zeros((3, 2, 4)), lengths)


@pytest.mark.parametrize("lengths", [np.array([1, 2, 3]), np.array([2]), np.array(2),
                                     np.array([[1, 2]])], ids=["3", "1", "scalar", "2d"])
def test_forward_refuses_lengths_of_the_wrong_shape(lengths):
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        AttentionPooling(4, 2)(np.zeros((3, 2, 4)), lengths)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [[0, 2], [3, 4], [-1, 1]], ids=["0", "T+1", "negative"])
def test_forward_refuses_lengths_outside_one_to_T(batch_first, lengths):
    attn = AttentionPooling(4, 2, batch_first=batch_first)
    x = np.zeros((2, 3, 4) if batch_first else (3, 2, 4))
    with pytest.raises(ValueError, match=r"\[1, T=3\]"):
        attn(x, np.array(lengths))


def test_backward_before_forward_raises_runtime_error():
    with pytest.raises(RuntimeError, match="before forward"):
        AttentionPooling(4, 2).backward(np.zeros((2, 4)))


@pytest.mark.parametrize("batch_first", [False, True])
def test_backward_refuses_wrong_shapes_and_dtypes_and_changes_nothing(batch_first):
    attn = AttentionPooling(4, 2, batch_first=batch_first, seed=0)
    T, B = 3, 2
    x = np.random.default_rng(0).standard_normal((B, T, 4) if batch_first else (T, B, 4))
    attn(x, np.array([3, 1]))
    w_shape = (B, T) if batch_first else (T, B)
    wrong_w_shape = (T, B) if batch_first else (B, T)
    with pytest.raises(ValueError, match="dcontext"):
        attn.backward(np.ones((B, 5)))
    with pytest.raises(ValueError, match="dcontext"):
        attn.backward(np.ones((B, 1, 4)))
    with pytest.raises(ValueError, match="dweights"):
        attn.backward(np.ones((B, 4)), np.ones(wrong_w_shape))
    with pytest.raises(ValueError, match="dweights"):
        attn.backward(np.ones((B, 4)), np.ones((T * B,)))
    with pytest.raises(TypeError, match="dcontext"):
        attn.backward(np.ones((B, 4), np.float32))
    with pytest.raises(TypeError, match="dweights"):
        attn.backward(np.ones((B, 4)), np.ones(w_shape, np.float32))
    assert all(not g.any() for g in attn.grads.values())
    dx = attn.backward(np.ones((B, 4)), np.ones(w_shape))   # the cache survives refused calls
    assert dx.shape == x.shape


def test_every_building_block_is_exported_at_the_top_level():
    import numpy_rnn as nr
    for name in ("AttentionPooling", "Embedding", "Linear", "cross_entropy",
                 "binary_cross_entropy_with_logits", "softmax", "log_softmax", "SGD", "Adam",
                 "AdamW", "clip_grad_norm", "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell",
                 "RNNCell", "gradcheck", "ShapeError", "DTypeError"):
        assert name in nr.__all__ and getattr(nr, name) is not None
    assert nr.AttentionPooling is AttentionPooling
