"""cross_entropy, binary_cross_entropy_with_logits, softmax and log_softmax against torch, finite
differences, stability, errors."""

import numpy as np
import pytest

from numpy_rnn.nn.gradcheck import check_function, numerical_gradient

torch = pytest.importorskip("torch")

from numpy_rnn.nn.losses import (  # noqa: E402
    binary_cross_entropy_with_logits,
    cross_entropy,
    log_softmax,
    softmax,
)

RTOL64 = 1e-10
RTOL32 = 1e-5


def assert_close(actual, expected, rtol):
    """Elementwise closeness, with an absolute floor of 1% of rtol times the largest value."""
    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-2 * scale)


def central_diff(f, x, eps=1e-6):
    """d f / d x by central differences (numpy_rnn's own primitive; x is perturbed in place)."""
    return numerical_gradient(f, x, eps)


def torch_ce(logits, targets, ignore_index=-100):
    """Loss and d loss / d logits from torch.nn.CrossEntropyLoss()."""
    lt = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.CrossEntropyLoss(ignore_index=ignore_index)(lt, torch.tensor(targets))
    loss.backward()
    return loss.item(), lt.grad.numpy()


def test_cross_entropy_loss_and_gradient_match_torch_float64():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((12, 7)) * 3
    targets = rng.integers(0, 7, 12)
    loss, dlogits = cross_entropy(logits, targets)
    ref_loss, ref_grad = torch_ce(logits, targets)
    assert isinstance(loss, float)
    assert loss == pytest.approx(ref_loss, rel=RTOL64)
    assert dlogits.shape == logits.shape and dlogits.dtype == np.float64
    assert_close(dlogits, ref_grad, RTOL64)


@pytest.mark.parametrize("ignore_index", [-100, 3, -1])
def test_cross_entropy_ignored_targets_match_torch_and_get_zero_gradient(ignore_index):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((10, 5))
    targets = rng.integers(0, 5, 10)
    targets[[0, 4, 7]] = ignore_index
    loss, dlogits = cross_entropy(logits, targets, ignore_index=ignore_index)
    ref_loss, ref_grad = torch_ce(logits, targets, ignore_index)
    assert loss == pytest.approx(ref_loss, rel=RTOL64)
    assert_close(dlogits, ref_grad, RTOL64)
    assert not dlogits[targets == ignore_index].any()


def test_cross_entropy_float32_matches_torch_and_stays_float32():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((20, 11)).astype(np.float32)
    targets = rng.integers(0, 11, 20)
    loss, dlogits = cross_entropy(logits, targets)
    ref_loss, ref_grad = torch_ce(logits, targets)
    assert dlogits.dtype == np.float32
    assert loss == pytest.approx(ref_loss, rel=RTOL32)
    assert_close(dlogits, ref_grad, RTOL32)


def test_cross_entropy_sequence_reshape_equals_torch_class_dim_one_layout():
    rng = np.random.default_rng(3)
    b, t, v = 3, 4, 6
    logits = rng.standard_normal((b, t, v))
    targets = rng.integers(0, v, (b, t))
    loss, dlogits = cross_entropy(logits.reshape(-1, v), targets.reshape(-1))
    lt = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.CrossEntropyLoss()(lt.permute(0, 2, 1), torch.tensor(targets))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=RTOL64)
    assert_close(dlogits.reshape(b, t, v), lt.grad.numpy(), RTOL64)


def test_cross_entropy_is_finite_and_exact_for_huge_logits():
    logits = np.array([[1e4, -1e4, 0.0], [800.0, 801.0, 799.0], [-1e300, 0.0, 1.0]])
    targets = np.array([1, 0, 2])
    loss, dlogits = cross_entropy(logits, targets)
    ref_loss, ref_grad = torch_ce(logits, targets)
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    assert loss == pytest.approx(ref_loss, rel=RTOL64)
    assert_close(dlogits, ref_grad, RTOL64)


def test_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((6, 5))
    targets = np.array([0, 4, -100, 2, 2, 1])
    _, dlogits = cross_entropy(logits, targets)
    numeric = central_diff(lambda: cross_entropy(logits, targets)[0], logits)
    assert_close(dlogits, numeric, 1e-7)


def test_cross_entropy_gradient_rows_sum_to_zero():
    rng = np.random.default_rng(5)
    _, d = cross_entropy(rng.standard_normal((9, 4)), rng.integers(0, 4, 9))
    np.testing.assert_allclose(d.sum(axis=1), 0, atol=1e-16)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_and_log_softmax_match_torch_on_any_axis(axis):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 5)) * 10
    xt = torch.tensor(x)
    assert_close(softmax(x, axis=axis), torch.softmax(xt, dim=axis).numpy(), RTOL64)
    assert_close(log_softmax(x, axis=axis), torch.log_softmax(xt, dim=axis).numpy(), RTOL64)
    np.testing.assert_allclose(softmax(x, axis=axis).sum(axis=axis), 1.0, rtol=1e-14)


def test_softmax_and_log_softmax_are_stable_and_keep_float32():
    x = np.array([[1000.0, 1000.0, -1000.0], [-1e4, -1e4 + 1, -1e4 + 2]], dtype=np.float32)
    p, lp = softmax(x), log_softmax(x)
    assert p.dtype == np.float32 and lp.dtype == np.float32
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(lp))
    xt = torch.tensor(x)
    assert_close(p, torch.softmax(xt, dim=-1).numpy(), RTOL32)
    assert_close(lp, torch.log_softmax(xt, dim=-1).numpy(), RTOL32)


# ---------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_cross_entropy_refuses_logits_that_are_not_2d(shape):
    with pytest.raises(ValueError, match="2-D"):
        cross_entropy(np.zeros(shape), np.zeros(shape[0], dtype=np.int64))


def test_cross_entropy_refuses_non_float_logits_and_non_integer_targets():
    with pytest.raises(TypeError, match="float"):
        cross_entropy(np.zeros((2, 3), dtype=np.int64), np.array([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(TypeError):
        cross_entropy(np.zeros((2, 3)), "01")


def test_cross_entropy_refuses_targets_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"\(4,\)"):
        cross_entropy(np.zeros((4, 3)), np.array([0, 1, 2]))


@pytest.mark.parametrize("bad", [3, -1, -101])
def test_cross_entropy_refuses_targets_out_of_range(bad):
    with pytest.raises(ValueError, match="out of range"):
        cross_entropy(np.zeros((3, 3)), np.array([0, bad, 1]))


def test_cross_entropy_refuses_when_every_target_is_ignored():
    with pytest.raises(ValueError, match="no valid targets"):
        cross_entropy(np.zeros((2, 3)), np.array([-100, -100]))
    with pytest.raises(ValueError, match="no valid targets"):
        cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))


def test_softmax_refuses_integer_and_scalar_input():
    with pytest.raises(TypeError):
        softmax(np.arange(3))
    with pytest.raises(ValueError):
        log_softmax(np.float64(1.0))


# ---------------------------------------------------------------------------------------- binary

def torch_bce(logits, targets):
    """Loss and d loss / d logits from torch.nn.BCEWithLogitsLoss()."""
    lt = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.BCEWithLogitsLoss()(lt, torch.tensor(targets))
    loss.backward()
    return loss.item(), lt.grad.numpy()


@pytest.mark.parametrize("shape", [(1,), (13,), (4, 5), (2, 3, 4)], ids=["1", "13", "4x5", "2x3x4"])
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "soft"])
def test_bce_with_logits_loss_and_gradient_match_torch_float64(shape, soft):
    rng = np.random.default_rng(10)
    logits = rng.standard_normal(shape) * 4
    targets = rng.random(shape) if soft else (rng.random(shape) < 0.5).astype(np.float64)
    loss, dlogits = binary_cross_entropy_with_logits(logits, targets)
    ref_loss, ref_grad = torch_bce(logits, targets)
    assert isinstance(loss, float)
    assert loss == pytest.approx(ref_loss, rel=RTOL64)
    assert dlogits.shape == logits.shape and dlogits.dtype == np.float64
    assert_close(dlogits, ref_grad, RTOL64)


def test_bce_with_logits_is_finite_and_exact_for_huge_logits():
    logits = np.array([1e4, -1e4, 1e4, -1e4, 800.0, -800.0, 0.0])
    targets = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    loss, dlogits = binary_cross_entropy_with_logits(logits, targets)
    n = logits.size
    # right sign: 0 loss, 0 gradient; wrong sign: loss |x|, gradient ±1/N; x = 0: log 2, -1/2N.
    assert loss == (1e4 + 1e4 + 800.0 + np.log(2)) / n
    np.testing.assert_array_equal(dlogits, np.array([0, 0, 1, -1, 0, -1, -0.5]) / n)
    ref_loss, ref_grad = torch_bce(logits, targets)
    assert loss == pytest.approx(ref_loss, rel=RTOL64)
    assert_close(dlogits, ref_grad, RTOL64)
    loss32, d32 = binary_cross_entropy_with_logits(logits.astype(np.float32),
                                                   targets.astype(np.float32))
    assert np.isfinite(loss32) and np.all(np.isfinite(d32))
    assert loss32 == pytest.approx(loss, rel=RTOL32)


def test_bce_with_logits_is_accurate_where_the_naive_formula_loses_digits():
    """x = ±40 on the right side: each loss is log1p(exp(-40)) ~ 4.2e-18, which the textbook
    -log(sigmoid(x)) rounds to 0 (sigmoid(40) is 1.0 in float64)."""
    loss, dlogits = binary_cross_entropy_with_logits(np.array([40.0, -40.0]), np.array([1.0, 0.0]))
    assert loss == pytest.approx(np.log1p(np.exp(-40.0)), rel=1e-12) and loss > 0
    # sigmoid(-40) = z / (1 + z) keeps its digits; sigmoid(40) - 1 is 0 here, as in torch.
    assert dlogits[1] == pytest.approx(np.exp(-40.0) / 2, rel=1e-12)


def test_bce_with_logits_float32_matches_torch_and_stays_float32():
    rng = np.random.default_rng(11)
    logits = (rng.standard_normal((6, 7)) * 3).astype(np.float32)
    targets = (rng.random((6, 7)) < 0.3).astype(np.float32)
    loss, dlogits = binary_cross_entropy_with_logits(logits, targets)
    ref_loss, ref_grad = torch_bce(logits, targets)
    assert isinstance(loss, float)
    assert dlogits.dtype == np.float32 and dlogits.shape == logits.shape
    assert loss == pytest.approx(ref_loss, rel=RTOL32)
    assert_close(dlogits, ref_grad, RTOL32)


@pytest.mark.parametrize("soft", [False, True], ids=["labels", "soft"])
def test_bce_with_logits_gradient_matches_finite_differences(soft):
    rng = np.random.default_rng(12)
    logits = rng.standard_normal((5, 4)) * 3
    targets = rng.random((5, 4)) if soft else (rng.random((5, 4)) < 0.5).astype(np.float64)

    def loss():
        return np.asarray(binary_cross_entropy_with_logits(logits, targets)[0])

    def vjp(u):
        return {"logits": u * binary_cross_entropy_with_logits(logits, targets)[1]}

    report = check_function(loss, {"logits": logits}, vjp)
    assert report.ok(1e-7), str(report)


def test_bce_with_logits_refuses_non_float_logits_and_targets():
    with pytest.raises(TypeError, match="logits"):
        binary_cross_entropy_with_logits(np.zeros(3, dtype=np.int64), np.zeros(3))
    with pytest.raises(TypeError, match="targets"):
        binary_cross_entropy_with_logits(np.zeros(3), np.array([0, 1, 1]))
    with pytest.raises(TypeError, match="targets"):
        binary_cross_entropy_with_logits(np.zeros(3), np.array([True, False, True]))
    with pytest.raises(TypeError, match="targets"):
        binary_cross_entropy_with_logits(np.zeros(3), "011")


def test_bce_with_logits_refuses_targets_of_another_dtype_without_casting():
    with pytest.raises(TypeError, match="float32"):
        binary_cross_entropy_with_logits(np.zeros(3), np.zeros(3, dtype=np.float32))
    with pytest.raises(TypeError, match="float64"):
        binary_cross_entropy_with_logits(np.zeros(3, dtype=np.float32), np.zeros(3))


@pytest.mark.parametrize("target_shape", [(3,), (4, 3), (3, 4, 1), (12,)])
def test_bce_with_logits_refuses_a_shape_mismatch(target_shape):
    with pytest.raises(ValueError, match="shape"):
        binary_cross_entropy_with_logits(np.zeros((3, 4)), np.zeros(target_shape))


def test_bce_with_logits_refuses_empty_and_scalar_input():
    with pytest.raises(ValueError, match="empty"):
        binary_cross_entropy_with_logits(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError):
        binary_cross_entropy_with_logits(np.float64(1.0), np.float64(1.0))
