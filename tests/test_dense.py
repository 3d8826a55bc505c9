"""Embedding and Linear against torch.nn (forward, every gradient), finite differences, errors."""

import numpy as np
import pytest

from numpy_rnn.nn.gradcheck import numerical_gradient

torch = pytest.importorskip("torch")

from numpy_rnn.nn.dense import Embedding, Linear  # noqa: E402

RTOL64 = 1e-10
RTOL32 = 1e-5


def assert_close(actual, expected, rtol, atol=0.0):
    """Elementwise closeness, with an absolute floor scaled by the expected array's size."""
    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol + rtol * 1e-2 * scale)


def central_diff(f, x, eps=1e-6):
    """d f / d x by central differences (numpy_rnn's own primitive; x is perturbed in place)."""
    return numerical_gradient(f, x, eps)


def torch_linear_from(lin: Linear) -> "torch.nn.Linear":
    dtype = torch.float64 if lin.dtype == np.float64 else torch.float32
    ref = torch.nn.Linear(lin.in_features, lin.out_features, bias=lin.has_bias, dtype=dtype)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(torch.from_numpy(lin.params[name]))
    return ref


# ---------------------------------------------------------------------------------------- Linear

@pytest.mark.parametrize("lead", [(), (5,), (3, 4)], ids=["unbatched", "2d", "3d"])
def test_linear_forward_and_all_gradients_match_torch_float64(lead):
    rng = np.random.default_rng(0)
    lin = Linear(6, 4, seed=1)
    lin.params["bias"][:] = rng.uniform(-2, 2, 4)  # non-trivial bias
    ref = torch_linear_from(lin)
    x = rng.standard_normal(lead + (6,))
    dy = rng.standard_normal(lead + (4,))

    y = lin.forward(x)
    dx = lin.backward(dy)

    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    assert y.shape == lead + (4,) and y.dtype == np.float64
    assert_close(y, yt.detach().numpy(), RTOL64)
    assert_close(dx, xt.grad.numpy(), RTOL64)
    assert_close(lin.grads["weight"], ref.weight.grad.numpy(), RTOL64)
    assert_close(lin.grads["bias"], ref.bias.grad.numpy(), RTOL64)


def test_linear_float32_matches_torch_and_never_upcasts():
    rng = np.random.default_rng(1)
    lin = Linear(7, 3, dtype=np.float32, seed=2)
    lin.params["bias"][:] = rng.uniform(-1, 1, 3)
    ref = torch_linear_from(lin)
    x = rng.standard_normal((2, 5, 7)).astype(np.float32)
    dy = rng.standard_normal((2, 5, 3)).astype(np.float32)
    y = lin(x)
    dx = lin.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    assert y.dtype == np.float32 and dx.dtype == np.float32
    assert lin.grads["weight"].dtype == np.float32 and lin.grads["bias"].dtype == np.float32
    assert_close(y, yt.detach().numpy(), RTOL32)
    assert_close(dx, xt.grad.numpy(), RTOL32)
    assert_close(lin.grads["weight"], ref.weight.grad.numpy(), RTOL32)
    assert_close(lin.grads["bias"], ref.bias.grad.numpy(), RTOL32)


def test_linear_without_bias_has_no_bias_entry_and_matches_torch():
    rng = np.random.default_rng(2)
    lin = Linear(4, 5, bias=False, seed=3)
    assert set(lin.params) == {"weight"} and set(lin.grads) == {"weight"}
    ref = torch_linear_from(lin)
    x = rng.standard_normal((3, 4))
    dy = rng.standard_normal((3, 5))
    y = lin(x)
    dx = lin.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    assert_close(y, yt.detach().numpy(), RTOL64)
    assert_close(dx, xt.grad.numpy(), RTOL64)
    assert_close(lin.grads["weight"], ref.weight.grad.numpy(), RTOL64)


def test_linear_gradients_accumulate_over_backward_calls_like_torch():
    rng = np.random.default_rng(3)
    lin = Linear(3, 2, seed=4)
    ref = torch_linear_from(lin)
    for _ in range(3):
        x = rng.standard_normal((4, 3))
        dy = rng.standard_normal((4, 2))
        lin(x)
        lin.backward(dy)
        ref(torch.tensor(x)).backward(torch.tensor(dy))
    assert_close(lin.grads["weight"], ref.weight.grad.numpy(), RTOL64)
    assert_close(lin.grads["bias"], ref.bias.grad.numpy(), RTOL64)
    lin.zero_grad()
    assert not lin.grads["weight"].any() and not lin.grads["bias"].any()


def test_linear_backward_matches_finite_differences():
    rng = np.random.default_rng(4)
    lin = Linear(4, 3, seed=5)
    lin.params["bias"][:] = rng.standard_normal(3)
    x = rng.standard_normal((2, 3, 4))
    dy = rng.standard_normal((2, 3, 3))

    def loss():
        return float(np.sum(lin.forward(x) * dy))

    lin.forward(x)
    dx = lin.backward(dy)
    assert_close(dx, central_diff(loss, x), 1e-7)
    assert_close(lin.grads["weight"], central_diff(loss, lin.params["weight"]), 1e-7)
    assert_close(lin.grads["bias"], central_diff(loss, lin.params["bias"]), 1e-7)


def test_linear_init_is_uniform_within_one_over_sqrt_in_features():
    lin = Linear(16, 400, seed=0)
    k = 1 / np.sqrt(16)
    for name in ("weight", "bias"):
        w = lin.params[name]
        assert np.all(np.abs(w) <= k)
    w = lin.params["weight"]
    assert abs(w.mean()) < 0.05 * k
    assert abs(w.var() - k * k / 3) < 0.05 * k * k / 3
    assert lin.params["weight"].shape == (400, 16) and lin.params["bias"].shape == (400,)


def test_linear_same_seed_gives_same_weights_and_different_seed_differs():
    a, b, c = Linear(5, 3, seed=7), Linear(5, 3, seed=7), Linear(5, 3, seed=8)
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    np.testing.assert_array_equal(a.params["bias"], b.params["bias"])
    assert not np.array_equal(a.params["weight"], c.params["weight"])


def test_linear_state_dict_loads_from_torch_state_dict():
    ref = torch.nn.Linear(3, 2, dtype=torch.float64)
    lin = Linear(3, 2)
    lin.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 3))
    assert_close(lin(x), ref(torch.tensor(x)).detach().numpy(), RTOL64)


# ---------------------------------------------------------------------------------------- Embedding

def torch_embedding_from(emb: Embedding) -> "torch.nn.Embedding":
    dtype = torch.float64 if emb.dtype == np.float64 else torch.float32
    ref = torch.nn.Embedding(emb.num_embeddings, emb.embedding_dim, dtype=dtype)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(emb.params["weight"]))
    return ref


@pytest.mark.parametrize("shape", [(), (7,), (4, 9)], ids=["scalar", "1d", "2d"])
def test_embedding_forward_and_scatter_add_gradient_match_torch_float64(shape):
    rng = np.random.default_rng(5)
    emb = Embedding(6, 3, seed=0)
    ref = torch_embedding_from(emb)
    idx = rng.integers(0, 6, size=shape)
    if idx.size > 1:
        idx.flat[0] = idx.flat[-1]  # make sure at least one index repeats
    dout = rng.standard_normal(shape + (3,))
    out = emb.forward(idx)
    assert emb.backward(dout) is None
    outt = ref(torch.tensor(idx))
    outt.backward(torch.tensor(dout))
    assert out.shape == shape + (3,) and out.dtype == np.float64
    assert_close(out, outt.detach().numpy(), RTOL64)
    assert_close(emb.grads["weight"], ref.weight.grad.numpy(), RTOL64)


def test_embedding_gradient_equals_np_add_at_with_many_repeats():
    rng = np.random.default_rng(6)
    emb = Embedding(5, 4, seed=1)
    idx = rng.integers(0, 3, size=(8, 10))  # rows 3 and 4 are never used
    dout = rng.standard_normal((8, 10, 4))
    emb(idx)
    emb.backward(dout)
    expected = np.zeros((5, 4))
    np.add.at(expected, idx.reshape(-1), dout.reshape(-1, 4))
    assert_close(emb.grads["weight"], expected, 1e-13)
    assert not emb.grads["weight"][3:].any()


def test_embedding_gradients_accumulate_and_float32_matches_torch():
    rng = np.random.default_rng(7)
    emb = Embedding(10, 5, dtype=np.float32, seed=2)
    ref = torch_embedding_from(emb)
    for _ in range(2):
        idx = rng.integers(0, 10, size=(3, 6)).astype(np.int32)
        dout = rng.standard_normal((3, 6, 5)).astype(np.float32)
        out = emb(idx)
        emb.backward(dout)
        outt = ref(torch.tensor(idx, dtype=torch.long))
        outt.backward(torch.tensor(dout))
        assert out.dtype == np.float32
        assert_close(out, outt.detach().numpy(), RTOL32)
    assert emb.grads["weight"].dtype == np.float32
    assert_close(emb.grads["weight"], ref.weight.grad.numpy(), RTOL32)


def test_embedding_backward_matches_finite_differences():
    rng = np.random.default_rng(8)
    emb = Embedding(4, 3, seed=3)
    idx = np.array([[0, 2, 2], [3, 0, 2]])
    dout = rng.standard_normal((2, 3, 3))

    def loss():
        return float(np.sum(emb.forward(idx) * dout))

    emb.forward(idx)
    emb.backward(dout)
    assert_close(emb.grads["weight"], central_diff(loss, emb.params["weight"]), 1e-7)


def test_embedding_init_is_standard_normal():
    w = Embedding(500, 40, seed=0).params["weight"]
    assert w.shape == (500, 40)
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02
    np.testing.assert_array_equal(w, Embedding(500, 40, seed=0).params["weight"])


# ---------------------------------------------------------------------------------------- errors

def test_linear_refuses_input_of_the_wrong_dtype_without_casting():
    lin = Linear(3, 2)
    with pytest.raises(TypeError, match="float32"):
        lin(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="int64"):
        lin(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(TypeError):
        Linear(3, 2, dtype=np.float32)(np.zeros((2, 3)))
    with pytest.raises(TypeError):
        lin("not an array")


def test_linear_refuses_wrong_feature_size_and_scalar_input():
    lin = Linear(3, 2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        lin(np.zeros((2, 4)))
    with pytest.raises(ValueError):
        lin(np.float64(1.0))


def test_linear_backward_before_forward_or_twice_raises_runtime_error():
    lin = Linear(3, 2)
    with pytest.raises(RuntimeError, match="before forward"):
        lin.backward(np.zeros((1, 2)))
    lin(np.ones((1, 3)))
    lin.backward(np.ones((1, 2)))
    with pytest.raises(RuntimeError):
        lin.backward(np.ones((1, 2)))


def test_linear_backward_refuses_wrong_dout_shape_and_dtype_and_keeps_grads():
    lin = Linear(3, 2)
    lin(np.ones((4, 3)))
    with pytest.raises(ValueError, match="shape"):
        lin.backward(np.ones((4, 3)))
    with pytest.raises(ValueError):
        lin.backward(np.ones((2, 2, 2)))
    with pytest.raises(TypeError):
        lin.backward(np.ones((4, 2), dtype=np.float32))
    assert not lin.grads["weight"].any()
    lin.backward(np.ones((4, 2)))  # the cache survives refused calls


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_layer_constructors_refuse_non_positive_or_non_integer_sizes(bad):
    with pytest.raises((TypeError, ValueError)):
        Linear(bad, 2)
    with pytest.raises((TypeError, ValueError)):
        Embedding(2, bad)


def test_layer_constructors_refuse_non_float_dtype():
    with pytest.raises(TypeError):
        Linear(2, 2, dtype=np.int32)
    with pytest.raises(TypeError):
        Embedding(2, 2, dtype=np.float16)


def test_embedding_refuses_float_or_bool_indices():
    emb = Embedding(4, 2)
    with pytest.raises(TypeError, match="integer"):
        emb(np.array([0.0, 1.0]))
    with pytest.raises(TypeError):
        emb(np.array([True, False]))


@pytest.mark.parametrize("bad", [4, -1, 100])
def test_embedding_refuses_out_of_range_indices(bad):
    emb = Embedding(4, 2)
    with pytest.raises(ValueError, match="out of range"):
        emb(np.array([[0, bad], [1, 2]]))


def test_embedding_backward_before_forward_and_wrong_dout_raise():
    emb = Embedding(4, 2)
    with pytest.raises(RuntimeError):
        emb.backward(np.zeros((3, 2)))
    emb(np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="shape"):
        emb.backward(np.zeros((3, 3)))
    with pytest.raises(TypeError):
        emb.backward(np.zeros((3, 2), dtype=np.float32))
    emb.backward(np.ones((3, 2)))
    np.testing.assert_array_equal(emb.grads["weight"], [[1, 1], [2, 2], [0, 0], [0, 0]])
    with pytest.raises(RuntimeError):
        emb.backward(np.ones((3, 2)))


def test_load_state_dict_refuses_wrong_shape_and_changes_nothing():
    lin = Linear(3, 2, seed=0)
    before = lin.state_dict()
    with pytest.raises(ValueError, match="shape"):
        lin.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.zeros(2)})
    with pytest.raises(KeyError):
        lin.load_state_dict({"weight": np.zeros((2, 3))})
    for k, v in before.items():
        np.testing.assert_array_equal(lin.params[k], v)
