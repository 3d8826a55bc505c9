"""Attention of a query sequence over a memory (additive, general, dot) against torch autograd
(forward and every gradient), the step-at-a-time functions against the whole-sequence layer,
finite differences, padding, parameters, initialisation, accumulation and errors.

The torch reference is ``torch_ref.attention.Attention`` holding the NumPy layer's weights;
random upstream gradients flow into BOTH the context and the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_rnn.nn import DTypeError, ShapeError
from numpy_rnn.nn.attention import (
    SCORES,
    Attention,
    AttentionPooling,
    attend_backward,
    attend_forward,
    keys_backward,
    prepare_keys,
)
from numpy_rnn.nn.gradcheck import gradcheck

torch = pytest.importorskip("torch")
from torch_ref.attention import Attention as TorchAttention  # noqa: E402 - needs torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
PARAM_NAMES = {"additive": ["query.weight", "key.weight", "key.bias", "score.weight"],
               "general": ["key.weight"], "dot": []}
FORWARD_NAMES = {"context", "weights"}
N_EXAMPLES = settings().max_examples      # the hypothesis profile's count (conftest)
N_FEW = max(3, N_EXAMPLES // 3)


# --------------------------------------------------------------------------------------------
# Cases, the two sides
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One test case; ``lengths`` (memory lengths) None means every memory step is valid."""

    score: str
    steps: int               # T query steps
    mem_steps: int           # S memory steps
    batch: int
    query_size: int
    memory_size: int
    attention_size: int | None
    lengths: tuple[int, ...] | None
    scale: float    # > 1 sharpens the softmax: multiplies the parameters (dot: the queries)
    seed: int

    def valid(self) -> np.ndarray:
        """(S, B) boolean mask of the valid memory steps."""
        lens = self.lengths if self.lengths is not None else (self.mem_steps,) * self.batch
        return np.arange(self.mem_steps)[:, None] < np.asarray(lens)[None, :]

    def lengths_kw(self) -> dict:
        return {} if self.lengths is None else {"lengths": np.asarray(self.lengths, np.int64)}


@st.composite
def cases(draw, score: str | None = None) -> Case:
    score = draw(st.sampled_from(SCORES)) if score is None else score
    T, S, B = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    Q = draw(st.integers(1, 5))
    K = Q if score == "dot" else draw(st.integers(1, 5))
    lengths = None
    if draw(st.booleans()):
        lens = draw(st.lists(st.integers(1, S), min_size=B, max_size=B))
        if B >= 2 and draw(st.booleans()):   # pin the extremes: one length 1, one length S
            i, j = draw(st.permutations(range(B)))[:2]
            lens[i], lens[j] = 1, S
        lengths = tuple(lens)
    return Case(score=score, steps=T, mem_steps=S, batch=B, query_size=Q, memory_size=K,
                attention_size=draw(st.integers(1, 5)) if score == "additive" else None,
                lengths=lengths, scale=draw(st.sampled_from([1.0, 3.0, 10.0])),
                seed=draw(st.integers(0, 2**31 - 1)))


@dataclass
class Data:
    """float64 inputs and upstream gradients, time-major."""

    queries: np.ndarray    # (T, B, Q)
    memory: np.ndarray     # (S, B, K)
    dcontext: np.ndarray   # (T, B, K)
    dweights: np.ndarray   # (T, B, S)


def make_data(case: Case) -> Data:
    rng = np.random.default_rng(case.seed)
    T, S, B = case.steps, case.mem_steps, case.batch
    q = rng.standard_normal((T, B, case.query_size))
    if case.score == "dot":
        q *= case.scale
    return Data(queries=q, memory=rng.standard_normal((S, B, case.memory_size)),
                dcontext=rng.standard_normal((T, B, case.memory_size)),
                dweights=rng.standard_normal((T, B, S)))


def make_layer(case: Case, dtype=np.float64) -> Attention:
    attn = Attention(case.query_size, case.memory_size, score=case.score,
                     attention_size=case.attention_size, dtype=dtype, seed=case.seed)
    for p in attn.params.values():
        p *= case.scale
    return attn


def torch_twin(attn: Attention) -> TorchAttention:
    """A TorchAttention holding ``attn``'s weights exactly, in ``attn``'s dtype."""
    ref = TorchAttention(attn.query_size, attn.memory_size, attn.score, attn.attention_size,
                         dtype=TORCH_DTYPE[attn.dtype])
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in attn.params.items()})
    return ref


def torch_result(attn: Attention, case: Case, d: Data) -> dict[str, np.ndarray]:
    tdt = TORCH_DTYPE[attn.dtype]
    ref = torch_twin(attn)
    q = torch.tensor(d.queries, dtype=tdt, requires_grad=True)
    m = torch.tensor(d.memory, dtype=tdt, requires_grad=True)
    valid = None if case.lengths is None else torch.from_numpy(case.valid())
    context, weights = ref(q, m, valid)
    loss = ((context * torch.tensor(d.dcontext, dtype=tdt)).sum()
            + (weights * torch.tensor(d.dweights, dtype=tdt)).sum())
    loss.backward()
    res = {"context": context.detach().numpy(), "weights": weights.detach().numpy(),
           "dqueries": q.grad.numpy(), "dmemory": m.grad.numpy()}
    for name, p in ref.named_parameters():
        res["grad." + name] = p.grad.numpy()
    return res


def numpy_result(attn: Attention, case: Case, d: Data) -> dict[str, np.ndarray]:
    dt = attn.dtype
    attn.zero_grad()
    context, weights = attn(d.queries.astype(dt), d.memory.astype(dt), **case.lengths_kw())
    dq, dm = attn.backward(d.dcontext.astype(dt), d.dweights.astype(dt))
    res = {"context": context, "weights": weights, "dqueries": dq, "dmemory": dm}
    for name, g in attn.grads.items():
        res["grad." + name] = g.copy()
    return res


def assert_parity(parity, case: Case, dtype, got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    failures = [parity.check("seq_attn", case.score, name, got[name], want[name], dtype,
                             "forward" if name in FORWARD_NAMES else "backward")
                for name in want]
    failures = [f for f in failures if f is not None]
    assert not failures, f"{case} {np.dtype(dtype).name}:\n  " + "\n  ".join(failures)


def assert_close(got: np.ndarray, want: np.ndarray, tol: float, name: str = "") -> None:
    """``max|got - want| <= tol * max(1, max|want|)``, same shape and dtype."""
    assert got.shape == want.shape and got.dtype == want.dtype, name
    err = float(np.max(np.abs(got - want), initial=0.0))
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    assert err <= tol * scale, f"{name}: max|err| = {err:.3e} > {tol:.0e} * {scale:.3g}"


def fixed_case(score: str, **kw) -> Case:
    base = Case(score=score, steps=3, mem_steps=5, batch=4, query_size=3,
                memory_size=3 if score == "dot" else 4,
                attention_size=2 if score == "additive" else None,
                lengths=(5, 1, 3, 2), scale=2.0, seed=3)
    return replace(base, **kw)


# --------------------------------------------------------------------------------------------
# Parity with torch
# --------------------------------------------------------------------------------------------

@given(case=cases())
def test_forward_and_all_gradients_match_torch_float64(parity, case):
    """Every score, sizes from 1 (T = 1 is one query step), with and without memory lengths
    (1 and S pinned in some), upstream gradients into both outputs."""
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


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("steps, mem_steps, lengths",
                         [(1, 1, None), (1, 1, (1, 1, 1)), (1, 4, (4, 1, 2)), (3, 4, (1, 1, 1)),
                          (3, 1, None), (3, 4, (4, 4, 4))],
                         ids=["T1-S1", "T1-S1-lengths", "one-step", "all-1", "S1", "all-S"])
def test_edge_cases_match_torch(parity, score, steps, mem_steps, lengths):
    """Fixed cases the random sweep may miss: T = 1, S = 1, every length 1 or S, widths 1."""
    case = Case(score=score, steps=steps, mem_steps=mem_steps, batch=3, query_size=1,
                memory_size=1, attention_size=1 if score == "additive" else None,
                lengths=lengths, scale=5.0, seed=11)
    d = make_data(case)
    attn = make_layer(case)
    assert_parity(parity, case, np.float64, numpy_result(attn, case, d),
                  torch_result(attn, case, d))


@pytest.mark.parametrize("score", SCORES)
def test_large_scores_are_stable_and_match_torch(parity, score):
    """Scores in the hundreds: exp would overflow without subtracting the maximum."""
    case = fixed_case(score, scale=300.0, seed=5)
    d = make_data(case)
    for dtype in (np.float64, np.float32):
        attn = make_layer(case, dtype)
        got = numpy_result(attn, case, d)
        assert all(np.all(np.isfinite(a)) for a in got.values())
        assert_parity(parity, case, dtype, got, torch_result(attn, case, d))


# --------------------------------------------------------------------------------------------
# One query step at a time, as a decoder calls it
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lengths", [None, (5, 1, 3, 2)], ids=["full", "lengths"])
@pytest.mark.parametrize("score", SCORES)
def test_step_at_a_time_equals_the_whole_sequence_layer(score, lengths):
    """prepare_keys once, attend_forward and attend_backward per query step (backward in reverse
    order, as a decoder runs), keys_backward once: the layer's numbers to 1e-12. The steps are
    given NaN key-side parameters: they use the prepared keys, never the key projection."""
    case = fixed_case(score, lengths=lengths, steps=4)
    d = make_data(case)
    layer = make_layer(case)
    want = numpy_result(layer, case, d)

    stepper = make_layer(case)
    p, g = stepper.params, stepper.grads
    nan_keys = {**p, **{k: np.full_like(v, np.nan) for k, v in p.items() if k.startswith("key.")}}
    lens = case.lengths_kw().get("lengths")
    keys = prepare_keys(score, p, d.memory, lens)
    contexts, weights, caches = [], [], []
    for t in range(case.steps):
        c, a, cache = attend_forward(score, nan_keys, d.queries[t], keys)
        assert c.shape == (case.batch, case.memory_size)
        assert a.shape == (case.batch, case.mem_steps)
        contexts.append(c)
        weights.append(a)
        caches.append(cache)
    dqueries = [np.empty(0)] * case.steps
    for t in reversed(range(case.steps)):
        dqueries[t] = attend_backward(score, nan_keys, g, d.dcontext[t], d.dweights[t],
                                      caches[t])
    dmemory = keys_backward(score, p, g, keys)
    got = {"context": np.stack(contexts), "weights": np.stack(weights),
           "dqueries": np.stack(dqueries), "dmemory": dmemory,
           **{"grad." + n: a for n, a in g.items()}}
    assert sorted(got) == sorted(want)
    for name in want:
        assert_close(got[name], want[name], 1e-12, name)


@pytest.mark.parametrize("score", SCORES)
def test_steps_may_come_in_blocks_of_any_size(score):
    """Query steps 0..1 as one (T, B, Q) block and 2..4 one by one equal one block of all five."""
    case = fixed_case(score, steps=5)
    d = make_data(case)
    attn = make_layer(case)
    want = numpy_result(attn, case, d)
    attn.zero_grad()
    p, g = attn.params, attn.grads
    keys = prepare_keys(score, p, d.memory, np.array(case.lengths))
    c01, a01, cache01 = attend_forward(score, p, d.queries[:2], keys)
    singles = [attend_forward(score, p, d.queries[t], keys) for t in range(2, 5)]
    dq01 = attend_backward(score, p, g, d.dcontext[:2], d.dweights[:2], cache01)
    dqs = [attend_backward(score, p, g, d.dcontext[t], d.dweights[t], singles[t - 2][2])
           for t in range(2, 5)]
    dm = keys_backward(score, p, g, keys)
    assert_close(np.concatenate([c01, np.stack([s[0] for s in singles])]), want["context"],
                 1e-12, "context")
    assert_close(np.concatenate([a01, np.stack([s[1] for s in singles])]), want["weights"],
                 1e-12, "weights")
    assert_close(np.concatenate([dq01, np.stack(dqs)]), want["dqueries"], 1e-12, "dqueries")
    assert_close(dm, want["dmemory"], 1e-12, "dmemory")
    for name, grad in g.items():
        assert_close(grad, want["grad." + name], 1e-12, name)


@pytest.mark.parametrize("score", SCORES)
def test_torch_reference_step_equals_its_forward(score):
    """The torch oracle's one-step method (a seq2seq decoder's) against its own forward."""
    case = fixed_case(score)
    d = make_data(case)
    ref = torch_twin(make_layer(case))
    q, m = torch.from_numpy(d.queries), torch.from_numpy(d.memory)
    valid = torch.from_numpy(case.valid())
    with torch.no_grad():
        context, weights = ref(q, m, valid)
        keys = ref.project_keys(m, valid)
        for t in range(case.steps):
            for k in (None, keys):
                c, a = ref.step(q[t], m, valid, keys=k)
                torch.testing.assert_close(c, context[t], rtol=1e-13, atol=1e-14)
                torch.testing.assert_close(a, weights[t], rtol=1e-13, atol=1e-14)


def test_pooling_is_additive_attention_without_a_query_term():
    """AttentionPooling equals Attention(additive) with its key = pooling's proj and a zero
    query projection, in every output and gradient."""
    T, B, F, A = 5, 3, 4, 2
    rng = np.random.default_rng(0)
    pool = AttentionPooling(F, A, seed=1)
    attn = Attention(2, F, "additive", attention_size=A, seed=1)
    attn.params["query.weight"][:] = 0
    for name in ("weight", "bias"):
        attn.params["key." + name][:] = pool.params["proj." + name]
    attn.params["score.weight"][:] = pool.params["score.weight"]
    x, lens = rng.standard_normal((T, B, F)), np.array([5, 1, 3])
    dc, dw = rng.standard_normal((B, F)), rng.standard_normal((T, B))
    c1, w1 = pool(x, lens)
    dx1 = pool.backward(dc, dw)
    c2, w2 = attn(rng.standard_normal((1, B, 2)), x, lens)
    _, dx2 = attn.backward(dc[None], dw.T[None].copy())
    assert_close(c2[0], c1, 1e-14, "context")
    assert_close(w2[0], w1.T.copy(), 1e-14, "weights")
    assert_close(dx2, dx1, 1e-14, "doutputs")
    for name in ("weight", "bias"):
        assert_close(attn.grads["key." + name], pool.grads["proj." + name], 1e-14, name)
    assert_close(attn.grads["score.weight"], pool.grads["score.weight"], 1e-14, "score")


# --------------------------------------------------------------------------------------------
# Finite differences
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lengths", [None, (5, 1, 3, 2)], ids=["full", "lengths"])
@pytest.mark.parametrize("score", SCORES)
def test_backward_matches_finite_differences(score, lengths):
    """gradcheck passes the memory as its second array (``hx``), so the report names it h0."""
    case = fixed_case(score, lengths=lengths)
    d = make_data(case)
    attn = make_layer(case)
    report = gradcheck(attn, d.queries, d.memory, **case.lengths_kw())
    assert set(report.errors) == {"x", "h0", *PARAM_NAMES[score]}
    assert report.ok(1e-7), str(report)


def test_finite_differences_catch_a_wrong_gradient(monkeypatch):
    """The check above can fail: a backward that drops the direct path through the context."""
    case = fixed_case("general", lengths=None)
    d = make_data(case)
    attn = make_layer(case)
    original = Attention.backward

    def wrong(self, dcontext, dweights=None):
        dq, dm = original(self, dcontext, dweights)
        return dq, dm - np.einsum("tbs,tbk->sbk", self._cache.alpha.transpose(1, 0, 2),
                                  dcontext)

    monkeypatch.setattr(Attention, "backward", wrong)
    report = gradcheck(attn, d.queries, d.memory)
    assert report.errors["h0"] > 1e-2 and report.errors["x"] < 1e-7


# --------------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("score", SCORES)
def test_values_at_padded_memory_steps_never_reach_any_result(score):
    """NaN, inf or huge values in the padding of the memory and of dweights change nothing,
    bit for bit."""
    case = fixed_case(score)
    d = make_data(case)
    pad = ~case.valid()                                           # (S, B)
    clean_m = np.where(pad[:, :, None], 0.0, d.memory)
    dirty_m = d.memory.copy()
    dirty_m[pad] = np.nan
    dirty_m[4, 1] = np.inf
    dirty_m[4, 2] = 1e300
    dirty_dw = d.dweights.copy()
    dirty_dw[:, pad.T] = np.nan
    results = []
    for m, dw in ((clean_m, d.dweights), (dirty_m, dirty_dw)):
        attn = make_layer(case)
        c, w = attn(d.queries, m, np.array(case.lengths))
        dq, dm = attn.backward(d.dcontext, dw)
        results.append([c, w, dq, dm, *attn.grads.values()])
    for clean, dirty in zip(*results):
        assert np.all(np.isfinite(dirty))
        np.testing.assert_array_equal(clean, dirty)


@pytest.mark.parametrize("score", SCORES)
def test_appending_padded_memory_steps_changes_no_output_or_gradient(score):
    """Three more memory steps of NaN garbage, past every length: the outputs and gradients are
    those without them, and the new steps get exactly 0 weight and exactly 0 gradient (as
    every padded step does, while every valid step gets a non-zero weight and gradient)."""
    case = fixed_case(score)
    d = make_data(case)
    S, extra = case.mem_steps, 3
    lens = np.array(case.lengths)
    a, b = make_layer(case), make_layer(case)
    c1, w1 = a(d.queries, d.memory, lens)
    dq1, dm1 = a.backward(d.dcontext, d.dweights)
    long_m = np.concatenate([d.memory, np.full((extra, case.batch, case.memory_size), np.nan)])
    long_dw = np.concatenate([d.dweights, np.full((case.steps, case.batch, extra), np.nan)],
                             axis=2)
    c2, w2 = b(d.queries, long_m, lens)
    dq2, dm2 = b.backward(d.dcontext, long_dw)
    assert w2.shape == (case.steps, case.batch, S + extra)
    assert np.all(w2[:, :, S:] == 0) and np.all(dm2[S:] == 0)
    for got, want, name in ((c2, c1, "context"), (w2[:, :, :S], w1, "weights"),
                            (dq2, dq1, "dqueries"), (dm2[:S], dm1, "dmemory"),
                            *((b.grads[n], a.grads[n], n) for n in a.grads)):
        assert_close(got, want, 1e-14, name)
    valid = case.valid()                                              # (S, B)
    assert np.all(w1.transpose(2, 1, 0)[~valid] == 0) and np.all(w1.transpose(2, 1, 0)[valid] > 0)
    np.testing.assert_allclose(w1.sum(axis=2), 1.0, rtol=1e-14)
    assert np.all(dm1[~valid] == 0) and np.all(dm1[valid] != 0)


def test_full_lengths_equal_no_lengths_and_lists_are_accepted():
    case = fixed_case("additive", lengths=None)
    d = make_data(case)
    a, b = make_layer(case), make_layer(case)
    c1, w1 = a(d.queries, d.memory)
    c2, w2 = b(d.queries, d.memory, lengths=[5, 5, 5, 5])
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(w1, w2)
    for x, y in zip(a.backward(d.dcontext, d.dweights), b.backward(d.dcontext, d.dweights)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("score", SCORES)
def test_none_upstream_gradients_are_zeros(score):
    case = fixed_case(score)
    d = make_data(case)
    lens = np.array(case.lengths)
    a, b = make_layer(case), make_layer(case)
    a(d.queries, d.memory, lens)
    b(d.queries, d.memory, lens)
    for (da, dw), zeros in (((d.dcontext, None), (d.dcontext, np.zeros_like(d.dweights))),
                            ((None, d.dweights), (np.zeros_like(d.dcontext), d.dweights)),
                            ((None, None), (np.zeros_like(d.dcontext),
                                            np.zeros_like(d.dweights)))):
        a.zero_grad()
        b.zero_grad()
        for x, y in zip(a.backward(da, dw), b.backward(*zeros)):
            np.testing.assert_array_equal(x, y)
        for name in a.grads:
            np.testing.assert_array_equal(a.grads[name], b.grads[name])


def test_returned_arrays_are_fresh_and_editing_them_cannot_change_backward():
    case = fixed_case("additive")
    d = make_data(case)
    lens = np.array(case.lengths)
    a, b = make_layer(case), make_layer(case)
    a(d.queries, d.memory, lens)
    c, w = b(d.queries, d.memory, lens)
    c[:] = 123.0
    w[:] = 123.0
    for x, y in zip(a.backward(d.dcontext, d.dweights), b.backward(d.dcontext, d.dweights)):
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------------------------
# Parameters, initialisation, accumulation
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("score", SCORES)
def test_parameter_names_shapes_and_dtypes_match_torch_linear_children(score, dtype):
    Q, K, A = 7, 7 if score == "dot" else 5, 3
    size = A if score == "additive" else None
    attn = Attention(Q, K, score, attention_size=size, dtype=dtype, seed=0)
    ref = TorchAttention(Q, K, score, size, dtype=torch.float64)
    torch_shapes = {n: tuple(p.shape) for n, p in ref.named_parameters()}
    assert list(attn.params) == list(torch_shapes) == PARAM_NAMES[score]
    assert {n: a.shape for n, a in attn.params.items()} == torch_shapes
    assert {n: a.shape for n, a in attn.grads.items()} == torch_shapes
    if score == "additive":
        assert torch_shapes == {"query.weight": (A, Q), "key.weight": (A, K), "key.bias": (A,),
                                "score.weight": (1, A)}
        assert (ref.query.in_features, ref.key.in_features, ref.score.in_features) == (Q, K, A)
        assert ref.query.bias is None and ref.score.bias is None
    elif score == "general":
        assert torch_shapes == {"key.weight": (Q, K)} and ref.key.bias is None
    assert all(a.dtype == dtype for a in (*attn.params.values(), *attn.grads.values()))
    assert all(not g.any() for g in attn.grads.values())
    attn.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    for name, p in ref.named_parameters():
        np.testing.assert_array_equal(attn.params[name], p.detach().numpy().astype(dtype))
    assert list(attn.state_dict()) == PARAM_NAMES[score]


def test_additive_attention_size_defaults_to_query_size():
    attn = Attention(6, 4, "additive")
    assert attn.attention_size == 6 and attn.params["score.weight"].shape == (1, 6)
    assert Attention(6, 4, "general").attention_size is None


@pytest.mark.parametrize("score", ["additive", "general"])
def test_init_is_torch_default_drawn_in_order_from_the_seed(score):
    Q, K, A = 300, 16, 200          # key.weight has 3200 (additive) or 4800 entries
    attn = Attention(Q, K, score, attention_size=A if score == "additive" else None, seed=42)
    rng = np.random.default_rng(42)
    kQ, kK, kA = 1 / np.sqrt(Q), 1 / np.sqrt(K), 1 / np.sqrt(A)
    if score == "additive":
        bounds = {"query.weight": kQ, "key.weight": kK, "key.bias": kK, "score.weight": kA}
    else:
        bounds = {"key.weight": kK}
    assert list(attn.params) == list(bounds)
    for name, k in bounds.items():                   # the documented order
        w = attn.params[name]
        np.testing.assert_array_equal(w, rng.uniform(-k, k, w.shape))
        assert np.all(np.abs(w) <= k)
        assert np.abs(w).max() > 0.9 * k        # the bound is the one used, not a smaller one
    w = attn.params["key.weight"]
    assert abs(w.var() - kK * kK / 3) < 0.05 * kK * kK / 3
    other = Attention(Q, K, score, attention_size=A if score == "additive" else None, seed=43)
    assert not np.array_equal(other.params["key.weight"], w)


@pytest.mark.parametrize("score", SCORES)
def test_gradients_accumulate_over_backward_calls_like_torch_and_zero_grad_clears(score):
    case = fixed_case(score)
    attn = make_layer(case)
    ref = torch_twin(attn)
    rng = np.random.default_rng(0)
    lens, valid = np.array(case.lengths), torch.from_numpy(case.valid())
    T, S, B, Q, K = 3, 5, 4, case.query_size, case.memory_size
    for _ in range(2):                       # two forward/backward pairs, different data
        q, m = rng.standard_normal((T, B, Q)), rng.standard_normal((S, B, K))
        dc, dw = rng.standard_normal((T, B, K)), rng.standard_normal((T, B, S))
        attn(q, m, lens)
        attn.backward(dc, dw)
        c, w = ref(torch.tensor(q, requires_grad=True), torch.tensor(m), valid)
        ((c * torch.tensor(dc)).sum() + (w * torch.tensor(dw)).sum()).backward()
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(attn.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-14)
    # Two backward calls after one forward add the same parameter gradient twice, and return
    # the same input gradients each time (the keys' buffers start empty for each call).
    attn.zero_grad()
    assert all(not g.any() for g in attn.grads.values())
    attn(q, m, lens)
    dq1, dm1 = attn.backward(dc, dw)
    once = {n: g.copy() for n, g in attn.grads.items()}
    dq2, dm2 = attn.backward(dc, dw)
    np.testing.assert_array_equal(dq1, dq2)
    np.testing.assert_array_equal(dm1, dm2)
    for name in PARAM_NAMES[score]:
        np.testing.assert_allclose(attn.grads[name], 2 * once[name], rtol=1e-15)


def test_repr_and_gradient_check_contract():
    assert (repr(Attention(4, 3, attention_size=5, dtype=np.float32))
            == "Attention(4, 3, score='additive', attention_size=5, dtype=float32)")
    assert repr(Attention(3, 3, "dot")) == "Attention(3, 3, score='dot', dtype=float64)"
    assert Attention.backward_unpacks_outputs is True


def test_new_names_are_exported_from_the_library():
    import numpy_rnn.nn as nn
    for name in ("Attention", "prepare_keys", "attend_forward", "attend_backward",
                 "keys_backward", "Keys", "AttendCache", "AttentionPooling"):
        assert name in nn.__all__ and getattr(nn, name) is not None
    assert nn.Attention is Attention and nn.prepare_keys is prepare_keys


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["Additive", "concat", "", None, 1])
def test_constructor_refuses_an_unknown_score_naming_the_choices(bad):
    with pytest.raises(ValueError, match="'additive', 'general', 'dot'"):
        Attention(3, 3, bad)


def test_dot_score_needs_equal_widths_and_only_additive_takes_attention_size():
    with pytest.raises(ShapeError, match="query_size == memory_size"):
        Attention(3, 4, "dot")
    for score in ("general", "dot"):
        with pytest.raises(ValueError, match="attention_size"):
            Attention(3, 3, score, attention_size=2)


@pytest.mark.parametrize("bad", [2.0, "3", True])
def test_constructor_refuses_non_integer_sizes_with_type_error(bad):
    with pytest.raises(TypeError, match="query_size"):
        Attention(bad, 2)
    with pytest.raises(TypeError, match="memory_size"):
        Attention(2, bad)
    with pytest.raises(TypeError, match="attention_size"):
        Attention(2, 2, attention_size=bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_constructor_refuses_sizes_below_one_with_value_error(bad):
    with pytest.raises(ValueError, match="query_size"):
        Attention(bad, 2)
    with pytest.raises(ValueError, match="memory_size"):
        Attention(2, bad)
    with pytest.raises(ValueError, match="attention_size"):
        Attention(2, 2, attention_size=bad)


def test_forward_refuses_wrong_dtype_without_casting():
    attn = Attention(3, 4)
    q, m = np.zeros((2, 2, 3)), np.zeros((5, 2, 4))
    with pytest.raises(DTypeError, match="queries"):
        attn(q.astype(np.float32), m)
    with pytest.raises(DTypeError, match="memory"):
        attn(q, m.astype(np.float32))
    with pytest.raises(DTypeError, match="int64"):
        attn(q, m.astype(np.int64))
    with pytest.raises(DTypeError, match="float64"):
        Attention(3, 4, dtype=np.float32)(q.astype(np.float32), m)


def test_forward_refuses_wrong_shapes():
    attn = Attention(3, 4)
    q, m = np.zeros((2, 2, 3)), np.zeros((5, 2, 4))
    with pytest.raises(ShapeError, match="3-D"):
        attn(q[0], m)
    with pytest.raises(ShapeError, match="3-D"):
        attn(q, m[0])
    with pytest.raises(ShapeError, match="query_size=3"):
        attn(np.zeros((2, 2, 4)), m)
    with pytest.raises(ShapeError, match="memory_size=4"):
        attn(q, np.zeros((5, 2, 3)))
    with pytest.raises(ShapeError, match="batch"):
        attn(q, np.zeros((5, 3, 4)))
    for q_, m_ in ((np.zeros((0, 2, 3)), m), (np.zeros((2, 0, 3)), np.zeros((5, 0, 4))),
                   (q, np.zeros((0, 2, 4)))):
        with pytest.raises(ShapeError, match="at least one"):
            attn(q_, m_)


@pytest.mark.parametrize("lengths, error, match",
                         [(np.array([1.0, 2.0]), TypeError, "integers"),
                          (np.array([1, 2, 3]), ShapeError, r"shape \(2,\)"),
                          (np.array([0, 2]), ShapeError, r"\[1, T=5\]"),
                          (np.array([6, 1]), ShapeError, r"\[1, T=5\]")],
                         ids=["float", "shape", "zero", "past-S"])
def test_forward_refuses_bad_lengths(lengths, error, match):
    with pytest.raises(error, match=match):
        Attention(3, 4)(np.zeros((2, 2, 3)), np.zeros((5, 2, 4)), lengths)


def test_backward_before_forward_raises_runtime_error():
    with pytest.raises(RuntimeError, match="before forward"):
        Attention(3, 4).backward(np.zeros((2, 2, 4)))


def test_backward_refuses_wrong_shapes_and_dtypes_and_changes_nothing():
    case = fixed_case("additive")
    d = make_data(case)
    attn = make_layer(case)
    attn(d.queries, d.memory, np.array(case.lengths))
    T, B, K, S = 3, 4, 4, 5
    with pytest.raises(ShapeError, match="dcontext"):
        attn.backward(np.ones((T, B, K + 1)))
    with pytest.raises(ShapeError, match="dcontext"):
        attn.backward(np.ones((B, K)))
    with pytest.raises(ShapeError, match="dweights"):
        attn.backward(np.ones((T, B, K)), np.ones((T, S, B)))
    with pytest.raises(DTypeError, match="dcontext"):
        attn.backward(np.ones((T, B, K), np.float32))
    with pytest.raises(DTypeError, match="dweights"):
        attn.backward(np.ones((T, B, K)), np.ones((T, B, S), np.float32))
    assert all(not g.any() for g in attn.grads.values())
    dq, dm = attn.backward(np.ones((T, B, K)), np.ones((T, B, S)))  # the cache survives
    assert dq.shape == d.queries.shape and dm.shape == d.memory.shape


def test_step_functions_refuse_mismatched_scores_queries_and_dtypes():
    attn = Attention(3, 3, "general", seed=0)
    m = np.zeros((5, 2, 3))
    keys = prepare_keys("general", attn.params, m)
    with pytest.raises(ValueError, match="prepared for the 'general' score"):
        attend_forward("dot", {}, np.zeros((2, 3)), keys)
    with pytest.raises(ValueError, match="without a query"):
        attend_forward("general", attn.params, None, keys)
    with pytest.raises(ShapeError, match="query"):
        attend_forward("general", attn.params, np.zeros((3, 3)), keys)
    with pytest.raises(DTypeError, match="query"):
        attend_forward("general", attn.params, np.zeros((2, 3), np.float32), keys)
    with pytest.raises(DTypeError, match="memory"):
        prepare_keys("general", attn.params, m.astype(np.float32))
    with pytest.raises(ShapeError, match="memory_size=3"):
        prepare_keys("general", attn.params, np.zeros((5, 2, 4)))
    with pytest.raises(ValueError, match="unknown score"):
        prepare_keys("concat", attn.params, m)
    _, _, cache = attend_forward("general", attn.params, np.zeros((2, 3)), keys)
    with pytest.raises(ShapeError, match="dalpha"):
        attend_backward("general", attn.params, attn.grads, None, np.zeros((2, 4)), cache)
    with pytest.raises(ShapeError, match="dcontext"):
        attend_backward("general", attn.params, attn.grads, np.zeros((1, 2, 3)), None, cache)
    assert keys.dkeys is None and keys.dvalues is None   # refused calls changed nothing
