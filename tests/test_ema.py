"""ExponentialMovingAverage against torch's AveragedModel(model,
multi_avg_fn=get_ema_multi_avg_fn(decay)) update for update (float64 within 1e-12, float32 within
an ulp per update), state dicts, swapped(), errors.

What torch computes: ``update_parameters`` copies the weights at its first call (n_averaged = 0)
and afterwards calls ``torch._foreach_lerp_(averaged, weights, 1 - decay)``; its lerp is
``avg + w·(θ − avg)`` for |w| < 0.5 and ``θ + (w − 1)·(θ − avg)`` otherwise, each a fused
multiply-add on the AVX2/AVX512 CPU kernels.
"""

import copy
import math

import numpy as np
import pytest

from numpy_rnn.nn import Adam, ExponentialMovingAverage, Linear

torch = pytest.importorskip("torch")
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SUITE = "ema"
RTOL64 = 1e-12
SHAPES = {"weight": (7, 5), "bias": (5,), "kernel": (2, 3, 4), "gain": (1,), "big": (300,)}
# Both branches of torch's lerp: w = 1 - decay below 0.5 (decay > 0.5) and at or above it.
DECAYS = [0.999, 0.9, 0.75, 0.5, 0.3, 0.0]


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def torch_twin(params):
    """A torch module with the same parameters (same names and order), and its EMA."""
    model = torch.nn.Module()
    for k, p in params.items():
        model.register_parameter(k, torch.nn.Parameter(torch.tensor(p)))
    return model


def move_weights(params, model, rng):
    """One 'optimizer step': every weight moves by a drawn amount (sometimes not at all, sometimes
    by 10), in place in NumPy and copied into torch."""
    for k, p in params.items():
        size = 10.0 ** rng.uniform(-6, 1) if rng.random() > 0.1 else 0.0
        p += (rng.standard_normal(p.shape) * size).astype(p.dtype)
        with torch.no_grad():
            getattr(model, k).copy_(torch.from_numpy(p))


def scaled_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want))) / max(1.0, float(np.max(np.abs(want))))


@pytest.mark.parametrize("decay", DECAYS)
def test_ema_matches_torch_averaged_model_float64_after_every_update(parity, decay):
    params = make_params(np.float64)
    model = torch_twin(params)
    averaged_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
    ema = ExponentialMovingAverage(params, decay)
    rng = np.random.default_rng(1)
    for _ in range(40):
        move_weights(params, model, rng)
        averaged_model.update_parameters(model)
        ema.update()
        assert ema.n_averaged == int(averaged_model.n_averaged)
        for k, avg in ema.averaged.items():
            want = getattr(averaged_model.module, k).detach().numpy()
            msg = parity.check(SUITE, f"d={decay}", k, avg, want, np.float64, "forward")
            assert msg is None, msg
            assert scaled_error(avg, want) <= RTOL64, k


@pytest.mark.parametrize("decay", DECAYS)
def test_ema_float32_equals_torch_to_an_ulp_per_update(parity, decay):
    """Torch fuses the lerp's multiply-add, NumPy rounds twice: within an ulp per update (the
    differences add up over the updates)."""
    params = make_params(np.float32)
    model = torch_twin(params)
    averaged_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
    ema = ExponentialMovingAverage(params, decay)
    rng = np.random.default_rng(2)
    for n in range(1, 41):
        move_weights(params, model, rng)
        averaged_model.update_parameters(model)
        ema.update()
        for k, avg in ema.averaged.items():
            want = getattr(averaged_model.module, k).detach().numpy()
            assert avg.dtype == np.float32
            msg = parity.check(SUITE, f"d={decay}", k, avg, want, np.float32, "forward")
            assert msg is None, msg
            # an ulp of the terms summed (the weights, the average) per update so far
            scale = max(np.abs(want).max(), np.abs(params[k]).max())
            np.testing.assert_allclose(avg, want, rtol=0, atol=n * np.spacing(
                scale, dtype=np.float32), err_msg=k)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_ema_of_adam_training_matches_torch_step_for_step(parity, dtype):
    """The intended use: update() after each optimizer step, here Adam on a Linear layer."""
    layer = Linear(6, 4, dtype=dtype, seed=3)
    opt = Adam(layer.params, layer.grads, lr=0.05)
    ema = ExponentialMovingAverage(layer.params, decay=0.9)
    model = torch_twin(layer.params)
    topt = torch.optim.Adam(model.parameters(), lr=0.05)
    averaged_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    rng = np.random.default_rng(4)
    for _ in range(25):
        for k, g in layer.grads.items():
            g[...] = rng.standard_normal(g.shape)
            getattr(model, k).grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        ema.update()
        averaged_model.update_parameters(model)
    for k, avg in ema.averaged.items():
        msg = parity.check(SUITE, "adam", k, avg,
                           getattr(averaged_model.module, k).detach().numpy(), dtype, "forward")
        assert msg is None, msg


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_first_update_copies_and_averages_are_preallocated_and_updated_in_place(dtype):
    params = make_params(dtype)
    ema = ExponentialMovingAverage(params, decay=0.99)
    arrays = {k: id(a) for k, a in ema.averaged.items()}
    for k, p in params.items():                 # before any update: the weights at construction
        np.testing.assert_array_equal(ema.averaged[k], p)
        assert ema.averaged[k] is not p and ema.averaged[k].dtype == dtype
    for p in params.values():
        p += 3.0
    ema.update()
    assert ema.n_averaged == 1
    for k, p in params.items():
        np.testing.assert_array_equal(ema.averaged[k], p)
    for p in params.values():
        p += 1.0
    ema.update()
    assert ema.n_averaged == 2
    assert {k: id(a) for k, a in ema.averaged.items()} == arrays


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_state_dict_round_trip_continues_exactly(dtype):
    params = make_params(dtype)
    model = torch_twin(params)
    ema = ExponentialMovingAverage(params, decay=0.95)
    rng = np.random.default_rng(6)
    for _ in range(10):
        move_weights(params, model, rng)
        ema.update()
    saved = ema.state_dict()
    assert set(saved) == {"decay", "n_averaged", "averaged"}
    assert saved["decay"] == 0.95 and saved["n_averaged"] == 10
    assert isinstance(saved["n_averaged"], int) and isinstance(saved["decay"], float)

    params2 = {k: p.copy() for k, p in params.items()}
    resumed = ExponentialMovingAverage(params2, decay=0.5)    # load_state_dict restores decay
    resumed.load_state_dict(copy.deepcopy(saved))
    assert resumed.decay == 0.95 and resumed.n_averaged == 10
    for _ in range(10):
        move_weights(params, model, rng)
        for k in params:
            params2[k][...] = params[k]
        ema.update()
        resumed.update()
    for k in params:
        np.testing.assert_array_equal(resumed.averaged[k], ema.averaged[k])
        assert resumed.averaged[k].dtype == dtype


def test_state_dict_is_a_deep_copy():
    params = make_params(np.float64)
    ema = ExponentialMovingAverage(params, decay=0.9)
    ema.update()
    saved = ema.state_dict()
    before = saved["averaged"]["weight"].copy()
    params["weight"] += 1
    ema.update()
    np.testing.assert_array_equal(saved["averaged"]["weight"], before)


def spoiled(sd):
    """Variants of a valid state dict, each wrong in one way."""
    def no_decay(d): del d["decay"]
    def decay_one(d): d["decay"] = 1.0
    def decay_text(d): d["decay"] = "0.9"
    def negative_count(d): d["n_averaged"] = -1
    def float_count(d): d["n_averaged"] = 2.0
    def missing_param(d): del d["averaged"]["bias"]
    def extra_param(d): d["averaged"]["other"] = np.zeros(3)
    def wrong_shape(d): d["averaged"]["weight"] = np.zeros((5, 7))
    def complex_values(d): d["averaged"]["bias"] = d["averaged"]["bias"] * 1j
    def extra_key(d): d["step"] = 3

    for spoil in (no_decay, decay_one, decay_text, negative_count, float_count, missing_param,
                  extra_param, wrong_shape, complex_values, extra_key):
        d = copy.deepcopy(sd)
        spoil(d)
        yield spoil.__name__, d


def test_load_state_dict_refuses_bad_input_and_changes_nothing():
    good = ExponentialMovingAverage(make_params(np.float64, seed=1), decay=0.5)
    good.update()
    other = ExponentialMovingAverage(make_params(np.float64, seed=2), decay=0.9)
    other.update()
    other.update()
    before = other.state_dict()
    for name, bad in spoiled(good.state_dict()):
        with pytest.raises((KeyError, ValueError, TypeError), match="refused"):
            other.load_state_dict(bad)
        after = other.state_dict()
        assert (after["decay"], after["n_averaged"]) == (0.9, 2), name
        for k, a in before["averaged"].items():
            np.testing.assert_array_equal(after["averaged"][k], a, err_msg=name)
    with pytest.raises(TypeError, match="refused"):
        other.load_state_dict([("decay", 0.5)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_swapped_puts_the_averages_in_and_restores_the_weights_bit_for_bit(dtype):
    layer = Linear(5, 3, dtype=dtype, seed=7)
    ema = ExponentialMovingAverage(layer.params, decay=0.8)
    rng = np.random.default_rng(8)
    for _ in range(5):
        for p in layer.params.values():
            p += rng.standard_normal(p.shape).astype(dtype)
        ema.update()
    layer.params["bias"][0] = -0.0                       # a signed zero survives too
    weights = {k: p.copy() for k, p in layer.params.items()}
    arrays = {k: id(p) for k, p in layer.params.items()}
    x = rng.standard_normal((2, 5)).astype(dtype)
    for _ in range(2):                                   # the second swap reuses its buffers
        with ema.swapped() as swapped_params:
            assert swapped_params is layer.params
            for k, p in layer.params.items():
                np.testing.assert_array_equal(p, ema.averaged[k])
            y = layer(x)
            np.testing.assert_array_equal(y, x @ ema.averaged["weight"].T + ema.averaged["bias"])
        for k, p in layer.params.items():
            assert p.tobytes() == weights[k].tobytes()
        assert {k: id(p) for k, p in layer.params.items()} == arrays


def test_swapped_restores_on_an_exception_and_refuses_update_and_nesting():
    params = make_params(np.float64)
    ema = ExponentialMovingAverage(params, decay=0.9)
    params["weight"] += 1
    ema.update()
    params["weight"] += 1
    weights = {k: p.copy() for k, p in params.items()}
    with pytest.raises(KeyError, match="boom"), ema.swapped():
        raise KeyError("boom")
    for k, p in params.items():
        np.testing.assert_array_equal(p, weights[k])
    with ema.swapped():
        with pytest.raises(RuntimeError, match="inside swapped"):
            ema.update()
        with pytest.raises(RuntimeError, match="do not nest"), ema.swapped():
            pass
    assert ema.n_averaged == 1
    for k, p in params.items():
        np.testing.assert_array_equal(p, weights[k])


def test_swapped_refuses_a_read_only_param_before_changing_anything():
    params = make_params(np.float64)
    ema = ExponentialMovingAverage(params, decay=0.9)
    params["weight"] += 1
    ema.update()
    params["weight"] += 1
    params["kernel"].flags.writeable = False
    weights = {k: p.copy() for k, p in params.items()}
    with pytest.raises(ValueError, match="'kernel' is read-only"), ema.swapped():
        pass
    for k, p in params.items():
        np.testing.assert_array_equal(p, weights[k])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, math.nan, math.inf])
def test_decay_outside_zero_to_one_is_refused_with_value_error(bad):
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(make_params(np.float64), decay=bad)


@pytest.mark.parametrize("bad", [True, "0.9", None, [0.9]])
def test_decay_that_is_not_a_number_is_refused_with_type_error(bad):
    with pytest.raises(TypeError, match="decay"):
        ExponentialMovingAverage(make_params(np.float64), decay=bad)


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="empty"):
        ExponentialMovingAverage({}, decay=0.9)
    with pytest.raises(TypeError, match="mapping"):
        ExponentialMovingAverage([np.zeros(3)], decay=0.9)
    with pytest.raises(TypeError, match="'w' must be a float32 or float64"):
        ExponentialMovingAverage({"w": np.zeros(3, np.int64)}, decay=0.9)
    params = make_params(np.float64)
    ema = ExponentialMovingAverage(params, decay=0.9)
    params["bias"] = np.zeros(6)
    with pytest.raises(ValueError, match="'bias' is now float64 \\(6,\\)"):
        ema.update()
    del params["bias"]
    with pytest.raises(KeyError, match="'bias' was removed"):
        ema.update()
    assert ema.n_averaged == 0


def test_repr_names_the_decay_and_count():
    ema = ExponentialMovingAverage(make_params(np.float32), decay=0.99)
    ema.update()
    assert repr(ema) == "ExponentialMovingAverage(5 params, decay=0.99, n_averaged=1)"
