"""cross_entropy with label smoothing against torch.nn.functional.cross_entropy(label_smoothing=)
(loss and gradient, ignored rows present, float64 and float32), finite differences, the unchanged
eps = 0 path, the power of the checks to catch a wrong gradient, memory, errors.

Torch's definition (``cross_entropy_loss_label_smoothing`` in ATen's LossNLL.cpp, and asked here):
with ``valid`` the rows whose target is not ``ignore_index``,

    loss = (1 - eps) * mean_{i in valid} -logp[i, t_i]
         + eps * mean_{i in valid} -(1/V) Σ_j logp[i, j]

i.e. the uniform part covers all V classes, the target included, and ignored rows count nowhere.
"""

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_rnn.nn import cross_entropy
from numpy_rnn.nn.gradcheck import numerical_gradient, relative_error
from numpy_rnn.nn.losses import log_softmax

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SUITE = "ce-smooth"
RTOL32 = 1e-5  # float32 (conftest's float32 tolerance, 1e-4, is looser than this suite asks)


def torch_ce(logits, targets, eps, ignore_index=-100):
    """Loss (a float) and d loss / d logits from torch.nn.functional.cross_entropy."""
    lt = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(lt, torch.tensor(targets), ignore_index=ignore_index,
                                             label_smoothing=eps, reduction="mean")
    loss.backward()
    return loss.item(), lt.grad.numpy()


def scaled_error(got, want):
    """``max|got - want| / max(1, max|want|)``: what ``conftest.Parity.check`` bounds."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want))) / max(1.0, float(np.max(np.abs(want))))


@st.composite
def problems(draw):
    """Logits (N, V) of a drawn scale, targets with some rows ignored (at least one kept), eps."""
    n = draw(st.integers(1, 16))
    v = draw(st.integers(1, 10))
    eps = draw(st.one_of(st.sampled_from([0.0, 1.0, 0.1]), st.floats(0.0, 1.0)))
    ignore_index = draw(st.sampled_from([-100, -1, 0] if v > 1 else [-100, -1]))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 1000.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, v)) * scale
    low = 1 if ignore_index == 0 else 0             # ignore_index 0: class 0 is never a target
    targets = rng.integers(low, v, n)
    ignored = rng.random(n) < draw(st.sampled_from([0.0, 0.3, 0.7]))
    ignored[rng.integers(n)] = False
    targets[ignored] = ignore_index
    return logits, targets, eps, ignore_index


def check_against_torch(parity, logits, targets, eps, ignore_index, rtol=None):
    dtype = logits.dtype.type
    loss, dlogits = cross_entropy(logits, targets, ignore_index=ignore_index, label_smoothing=eps)
    ref_loss, ref_grad = torch_ce(logits, targets, eps, ignore_index)
    assert isinstance(loss, float)
    assert dlogits.dtype == logits.dtype and dlogits.shape == logits.shape
    for name, got, want, stage in (("loss", np.asarray(loss, dtype), np.asarray(ref_loss, dtype),
                                    "forward"),
                                   ("dlogits", dlogits, ref_grad, "backward")):
        msg = parity.check(SUITE, "eps", name, got, want, dtype, stage)
        assert msg is None, msg
        if rtol is not None:
            assert scaled_error(got, want) <= rtol, name
    assert not dlogits[targets == ignore_index].any()


@given(problem=problems())
def test_smoothed_loss_and_gradient_match_torch_float64_with_ignored_rows(parity, problem):
    logits, targets, eps, ignore_index = problem
    check_against_torch(parity, logits, targets, eps, ignore_index)


@given(problem=problems())
def test_smoothed_loss_and_gradient_match_torch_float32_and_stay_float32(parity, problem):
    logits, targets, eps, ignore_index = problem
    check_against_torch(parity, logits.astype(np.float32), targets, eps, ignore_index,
                        rtol=RTOL32)


def test_smoothed_gradient_matches_central_differences():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((7, 5)) * 2
    targets = np.array([0, 4, -100, 2, 2, -100, 1])
    for eps in (0.1, 0.5, 1.0):
        _, dlogits = cross_entropy(logits, targets, label_smoothing=eps)
        numeric = numerical_gradient(
            lambda eps=eps: cross_entropy(logits, targets, label_smoothing=eps)[0], logits)
        assert relative_error(dlogits, numeric) < 1e-8, eps
        np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-16)  # Σ_j q_ij = 1


def old_cross_entropy(logits, targets, ignore_index=-100):
    """The function before label smoothing, line for line (the eps = 0 result must not move)."""
    valid = targets != ignore_index
    n_valid = int(np.count_nonzero(valid))
    rows = np.flatnonzero(valid)
    cls = targets[rows]
    logp = log_softmax(logits, axis=1)
    loss = -float(logp[rows, cls].sum()) / n_valid
    scale = 1.0 / n_valid
    dlogits = np.exp(logp) * scale
    dlogits[rows, cls] -= scale
    if n_valid < len(targets):
        dlogits[~valid] = 0
    return loss, dlogits


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("eps", [None, 0, 0.0, -0.0, np.float64(0), np.float32(0)],
                         ids=["default", "int", "float", "minus0", "np64", "np32"])
def test_zero_smoothing_is_bit_identical_to_the_plain_loss(dtype, eps):
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((40, 13)) * 4).astype(dtype)
    targets = rng.integers(0, 13, 40)
    targets[::7] = -100
    want_loss, want_grad = old_cross_entropy(logits, targets)
    kw = {} if eps is None else {"label_smoothing": eps}
    loss, dlogits = cross_entropy(logits, targets, **kw)
    assert loss == want_loss
    assert dlogits.dtype == want_grad.dtype
    np.testing.assert_array_equal(dlogits, want_grad)


def test_the_checks_catch_a_deliberately_wrong_smoothed_gradient():
    """Three plausible mistakes, each far outside what torch and finite differences allow."""
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((8, 5))
    targets = np.array([1, 0, -100, 4, 3, -100, 2, 2])
    eps, v, n_valid = 0.1, 5, 6
    valid = targets != -100
    _, good = cross_entropy(logits, targets, label_smoothing=eps)
    _, ref_grad = torch_ce(logits, targets, eps)
    numeric = numerical_gradient(lambda: cross_entropy(logits, targets, label_smoothing=eps)[0],
                                 logits)
    assert scaled_error(good, ref_grad) < 1e-13 and relative_error(good, numeric) < 1e-8

    smoothing_on_ignored_rows = good.copy()
    smoothing_on_ignored_rows[~valid] -= eps / v / n_valid
    # Another convention: target 1 - eps, and eps spread over the V - 1 other classes.
    q = np.full(logits.shape, eps / (v - 1))
    q[np.flatnonzero(valid), targets[valid]] = 1 - eps
    uniform_over_the_other_classes = (np.exp(log_softmax(logits)) - q) / n_valid
    uniform_over_the_other_classes[~valid] = 0
    mean_over_all_rows = good * n_valid / len(targets)
    for wrong in (smoothing_on_ignored_rows, uniform_over_the_other_classes, mean_over_all_rows):
        assert scaled_error(wrong, ref_grad) > 1e-4        # the parity tolerance is 1e-10
        assert relative_error(wrong, numeric) > 1e-3       # the finite-difference one is 1e-8


def test_smoothing_adds_no_full_size_temporary():
    """The smoothing terms cost an (N,) row sum and in-place updates: the peak memory of the
    loss does not grow by an (N, V) array (as it would with ``dlogits[rows] -= c``)."""
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((256, 512))
    targets = rng.integers(0, 512, 256)
    targets[::5] = -100

    def peak(eps):
        tracemalloc.start()
        cross_entropy(logits, targets, label_smoothing=eps)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    assert peak(0.1) - peak(0.0) < logits.nbytes / 4


@pytest.mark.parametrize("bad", [-0.1, 1.0000001, 2, -1, math.nan, math.inf, -math.inf, True,
                                 False, np.bool_(True), "0.1", None, 0.1j, [0.1]])
def test_bad_label_smoothing_is_refused_naming_it(bad):
    logits, targets = np.zeros((3, 4)), np.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"label_smoothing must be a real number in \[0, 1\]"):
        cross_entropy(logits, targets, label_smoothing=bad)


def test_torch_refuses_eps_above_one_but_takes_negative_or_nan_eps_as_zero():
    """Why this module is stricter than torch: torch documents [0, 1] but checks the range only
    on its smoothing path, which it enters for eps > 0, so -0.1 and NaN silently mean 0 there."""
    logits, targets = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 2])
    with pytest.raises(RuntimeError, match=r"label_smoothing must be between 0\.0 and 1\.0"):
        torch.nn.functional.cross_entropy(logits, targets, label_smoothing=1.5)
    plain = torch.nn.functional.cross_entropy(logits, targets)
    for eps in (-0.1, math.nan):
        assert torch.nn.functional.cross_entropy(logits, targets, label_smoothing=eps) == plain
