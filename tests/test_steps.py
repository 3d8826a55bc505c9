"""The elementwise helpers of numpy_rnn.nn.steps against NumPy's own functions."""

from __future__ import annotations

import numpy as np
import pytest

from numpy_rnn.nn.steps import sigmoid, tanh


@pytest.mark.parametrize("dtype, tol", [(np.float64, 4e-16), (np.float32, 0.0)])
def test_tanh_equals_numpy_tanh(dtype, tol):
    a = np.concatenate([np.linspace(-25, 25, 20001), [0.0, 1e-300, -1e-300, 1e-9]]).astype(dtype)
    out = np.empty_like(a)
    with np.errstate(over="ignore"):
        got = tanh(a, out=out)
    assert got is out and got.dtype == dtype
    np.testing.assert_allclose(got, np.tanh(a), rtol=0, atol=tol)


def test_tanh_saturates_exactly_and_works_in_place():
    a = np.array([-1e4, -400.0, 400.0, 1e4, np.inf, -np.inf])
    with np.errstate(over="ignore"):
        tanh(a, out=a)
    assert a.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, -1.0]
    assert np.isnan(tanh(np.array([np.nan]), out=np.empty(1)))[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_equals_its_definition(dtype):
    a = np.linspace(-50, 50, 10001).astype(dtype)
    with np.errstate(over="ignore"):
        got = sigmoid(a, out=np.empty_like(a))
    want = 1.0 / (1.0 + np.exp(-a.astype(np.float64)))
    np.testing.assert_allclose(got, want, rtol=2 * np.finfo(dtype).eps, atol=0)
