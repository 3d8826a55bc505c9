"""SGD, Adam, AdamW and clip_grad_norm against torch.optim step for step; state dicts; errors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from numpy_rnn.nn.dense import Linear  # noqa: E402
from numpy_rnn.nn.optim import SGD, Adam, AdamW, clip_grad_norm  # noqa: E402

RTOL64 = 1e-10
RTOL32 = 1e-5
SHAPES = {"weight": (3, 4), "bias": (4,), "kernel": (2, 3, 2), "frozen": (5,), "gain": (1,)}
STEPS = 36
LR_DECAY_AT = 17

CONFIGS = [
    (SGD, torch.optim.SGD, dict(lr=0.1)),
    (SGD, torch.optim.SGD, dict(lr=0.05, weight_decay=0.01)),
    (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.02)),
    (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    (Adam, torch.optim.Adam, dict()),
    (Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1)),
    (Adam, torch.optim.Adam, dict(lr=0.02, betas=(0.3, 0.5), eps=1e-6)),  # lerp's other branch
    (AdamW, torch.optim.AdamW, dict()),
    (AdamW, torch.optim.AdamW, dict(lr=0.05, betas=(0.2, 0.95), weight_decay=0.3)),
]
CONFIG_IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}"
              for c, _, kw in CONFIGS]


def assert_close(actual, expected, rtol):
    """Elementwise closeness, with an absolute floor of 1% of rtol times the largest value."""
    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-2 * scale)


def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    grads = {k: np.zeros(s, dtype) for k, s in SHAPES.items()}
    return params, grads


def draw_grads(rng, step, dtype):
    """Gradients that vary in scale from 1e-9 to 10; 'frozen' never has one, 'kernel' skips."""
    out = {}
    for k, s in SHAPES.items():
        if k == "frozen" or (k == "kernel" and step % 3 == 1):
            out[k] = None
        else:
            out[k] = (rng.standard_normal(s) * 10.0 ** rng.uniform(-9, 1)).astype(dtype)
    return out


class TorchTwin:
    """The same parameters as torch Parameters, with a torch optimizer on them."""

    def __init__(self, params, torch_cls, kw):
        self.p = {k: torch.nn.Parameter(torch.tensor(v.copy())) for k, v in params.items()}
        self.opt = torch_cls(list(self.p.values()), **kw)

    def set_grads(self, grads):
        for k, g in grads.items():
            self.p[k].grad = None if g is None else torch.tensor(g.copy())

    def scale_lr(self, factor):
        for group in self.opt.param_groups:
            group["lr"] *= factor


def set_grads(grads_dict, new):
    """Write new gradients into the module-style dict (in place where possible, None to skip)."""
    for k, g in new.items():
        if g is None:
            grads_dict[k] = None
        elif grads_dict.get(k) is None:
            grads_dict[k] = g.copy()
        else:
            grads_dict[k][...] = g


@pytest.mark.parametrize(("cls", "torch_cls", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_optimizer_matches_torch_after_every_step_with_none_grads_and_lr_change(cls, torch_cls,
                                                                                kw):
    params, grads = make_params()
    frozen_before = params["frozen"].copy()
    ids = {k: id(v) for k, v in params.items()}
    twin = TorchTwin(params, torch_cls, kw)
    opt = cls(params, grads, **kw)
    rng = np.random.default_rng(1)
    for step in range(STEPS):
        new = draw_grads(rng, step, np.float64)
        set_grads(grads, new)
        twin.set_grads(new)
        if step == LR_DECAY_AT:
            opt.lr = opt.lr * 0.3
            twin.scale_lr(0.3)
        opt.step()
        twin.opt.step()
        for k in SHAPES:
            assert_close(params[k], twin.p[k].detach().numpy(), RTOL64)
    # a parameter that never had a gradient is untouched (no decay) and has no state
    np.testing.assert_array_equal(params["frozen"], frozen_before)
    assert "frozen" not in opt.state
    assert {k: id(v) for k, v in params.items()} == ids  # updated in place, never rebound
    if cls is not SGD:
        assert opt.state["kernel"]["step"] == STEPS - len(range(1, STEPS, 3))
        assert opt.state["weight"]["step"] == STEPS


@pytest.mark.parametrize(("cls", "torch_cls", "kw"), [CONFIGS[i] for i in (4, 6, 9)],
                         ids=[CONFIG_IDS[i] for i in (4, 6, 9)])
def test_optimizer_float32_matches_torch_and_stays_float32(cls, torch_cls, kw):
    params, grads = make_params(np.float32)
    twin = TorchTwin(params, torch_cls, kw)
    opt = cls(params, grads, **kw)
    rng = np.random.default_rng(2)
    for step in range(12):
        new = draw_grads(rng, step, np.float32)
        set_grads(grads, new)
        twin.set_grads(new)
        opt.step()
        twin.opt.step()
    for k in SHAPES:
        assert params[k].dtype == np.float32
        assert_close(params[k], twin.p[k].detach().numpy(), RTOL32)


def test_zero_gradient_is_not_skipped_and_still_decays_and_moves_momentum():
    params = {"w": np.ones(3)}
    grads = {"w": np.zeros(3)}
    opt = AdamW(params, grads, lr=0.1, weight_decay=0.5)
    opt.step()
    np.testing.assert_allclose(params["w"], 1 - 0.1 * 0.5)
    assert opt.state["w"]["step"] == 1


@pytest.mark.parametrize(("cls", "torch_cls", "kw"),
                         [CONFIGS[3], CONFIGS[4], CONFIGS[7], CONFIGS[9]],
                         ids=[CONFIG_IDS[i] for i in (3, 4, 7, 9)])
def test_state_dict_round_trip_continues_identically(cls, torch_cls, kw):
    params, grads = make_params()
    opt = cls(params, grads, **kw)
    rng = np.random.default_rng(3)
    all_grads = [draw_grads(rng, s, np.float64) for s in range(20)]
    for new in all_grads[:10]:
        set_grads(grads, new)
        opt.step()
    opt.lr = opt.lr * 0.5
    saved = opt.state_dict()

    params2 = {k: v.copy() for k, v in params.items()}
    grads2 = dict.fromkeys(params)
    opt2 = cls(params2, grads2, lr=123.0)  # a different lr: load_state_dict restores it
    opt2.load_state_dict(saved)
    assert opt2.lr == opt.lr and opt2.hyperparams == opt.hyperparams
    for new in all_grads[10:]:
        set_grads(grads, new)
        set_grads(grads2, new)
        opt.step()
        opt2.step()
    for k in params:
        np.testing.assert_array_equal(params2[k], params[k])


def test_state_dict_is_a_deep_copy_of_plain_data():
    params, grads = make_params()
    opt = Adam(params, grads)
    set_grads(grads, draw_grads(np.random.default_rng(4), 0, np.float64))
    opt.step()
    sd = opt.state_dict()
    assert sd["optimizer"] == "Adam"
    assert sd["hyperparams"] == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    assert set(sd["state"]["weight"]) == {"step", "exp_avg", "exp_avg_sq"}
    assert isinstance(sd["state"]["weight"]["step"], int)
    m = sd["state"]["weight"]["exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state"]["weight"]["exp_avg"], m)


def test_sgd_state_dict_holds_momentum_buffers_only_with_momentum():
    params, grads = make_params()
    set_grads(grads, draw_grads(np.random.default_rng(5), 0, np.float64))
    plain = SGD(params, grads, lr=0.1)
    plain.step()
    assert plain.state_dict()["state"] == {}
    heavy = SGD(params, grads, lr=0.1, momentum=0.5)
    heavy.step()
    assert set(heavy.state_dict()["state"]["weight"]) == {"momentum_buffer"}


def bad_state_dicts(sd):
    """Variants of a valid Adam state dict, each wrong in one way."""
    import copy

    def exp_avg_shape(d): d["state"]["weight"]["exp_avg"] = np.zeros((4, 3))
    def unknown_param(d): d["state"]["nonexistent"] = d["state"]["bias"]
    def other_optimizer(d): d["optimizer"] = "SGD"
    def bad_beta(d): d["hyperparams"]["betas"] = (0.9, 1.5)
    def negative_lr(d): d["hyperparams"]["lr"] = -1.0
    def no_eps(d): del d["hyperparams"]["eps"]
    def no_exp_avg_sq(d): del d["state"]["bias"]["exp_avg_sq"]
    def step_zero(d): d["state"]["bias"]["step"] = 0
    def no_state(d): del d["state"]

    out = []
    for spoil in (exp_avg_shape, unknown_param, other_optimizer, bad_beta, negative_lr, no_eps,
                  no_exp_avg_sq, step_zero, no_state):
        d = copy.deepcopy(sd)
        spoil(d)
        out.append(d)
    return out


def test_load_state_dict_refuses_bad_input_and_changes_nothing():
    params, grads = make_params()
    opt = Adam(params, grads, lr=0.01)
    set_grads(grads, draw_grads(np.random.default_rng(6), 0, np.float64))
    opt.step()
    good = opt.state_dict()
    other = Adam(*make_params(seed=9), lr=0.5)
    other.grads.update(draw_grads(np.random.default_rng(7), 0, np.float64))
    other.step()
    before = other.state_dict()
    for bad in bad_state_dicts(good):
        with pytest.raises((KeyError, ValueError, TypeError), match="refused"):
            other.load_state_dict(bad)
        after = other.state_dict()
        assert after["hyperparams"] == before["hyperparams"]
        assert after["state"].keys() == before["state"].keys()
        for k, st in before["state"].items():
            for key, val in st.items():
                np.testing.assert_array_equal(after["state"][k][key], val)
    with pytest.raises(TypeError):
        other.load_state_dict([("optimizer", "Adam")])


def test_optimizer_drives_a_module_through_its_dicts():
    lin = Linear(3, 2, seed=0)
    weight = lin.params["weight"]
    opt = SGD(lin.params, lin.grads, lr=0.5)
    x = np.random.default_rng(8).standard_normal((4, 3))
    before = weight.copy()
    lin(x)
    lin.backward(np.ones((4, 2)))
    expected = before - 0.5 * lin.grads["weight"]
    opt.step()
    assert lin.params["weight"] is weight
    np.testing.assert_allclose(weight, expected, rtol=1e-15)
    grad_array = lin.grads["weight"]
    opt.zero_grad()
    assert lin.grads["weight"] is grad_array and not grad_array.any()


def test_zero_grad_zeros_in_place_and_leaves_none_alone():
    params, grads = make_params()
    set_grads(grads, draw_grads(np.random.default_rng(9), 0, np.float64))
    arrays = {k: g for k, g in grads.items() if g is not None}
    SGD(params, grads, lr=0.1).zero_grad()
    assert grads["frozen"] is None
    for k, g in arrays.items():
        assert grads[k] is g and not g.any()


def test_step_refuses_a_bad_gradient_before_changing_anything():
    params, grads = make_params()
    opt = Adam(params, grads)
    before = {k: v.copy() for k, v in params.items()}
    grads["weight"] = np.ones((3, 4))
    grads["bias"] = np.ones((5,))  # wrong shape
    with pytest.raises(ValueError, match="bias"):
        opt.step()
    grads["bias"] = np.ones((4,), dtype=np.float32)  # wrong dtype
    with pytest.raises(TypeError, match="bias"):
        opt.step()
    grads["bias"] = np.ones(4)
    grads["stray"] = np.ones(2)
    with pytest.raises(ValueError, match="stray"):
        opt.step()
    assert opt.state == {}
    for k, v in before.items():
        np.testing.assert_array_equal(params[k], v)


@pytest.mark.parametrize(("make", "match"), [
    (lambda p, g: SGD(p, g, lr=-0.1), "learning rate"),
    (lambda p, g: SGD(p, g, lr=float("nan")), "lr"),
    (lambda p, g: SGD(p, g, lr=0.1, momentum=-0.5), "momentum"),
    (lambda p, g: SGD(p, g, lr=0.1, weight_decay=-1), "weight_decay"),
    (lambda p, g: SGD(p, g, lr=0.1, nesterov=True), "Nesterov"),
    (lambda p, g: SGD(p, g, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda p, g: Adam(p, g, lr=-1e-3), "learning rate"),
    (lambda p, g: Adam(p, g, betas=(1.0, 0.999)), "index 0"),
    (lambda p, g: Adam(p, g, betas=(0.9, -0.1)), "index 1"),
    (lambda p, g: Adam(p, g, betas=(0.9,)), "pair"),
    (lambda p, g: Adam(p, g, eps=-1e-8), "eps"),
    (lambda p, g: Adam(p, g, weight_decay=-0.1), "weight_decay"),
    (lambda p, g: AdamW(p, g, weight_decay=-0.1), "weight_decay"),
    (lambda p, g: Adam({}, {}), "empty"),
    (lambda p, g: Adam(p, {**g, "stray": np.zeros(1)}), "stray"),
])
def test_invalid_hyperparameters_raise_value_error_naming_the_problem(make, match):
    params, grads = make_params()
    with pytest.raises(ValueError, match=match):
        make(params, grads)


def test_invalid_types_raise_type_error():
    params, grads = make_params()
    with pytest.raises(TypeError):
        SGD(params, grads, lr="0.1")
    with pytest.raises(TypeError):
        SGD(params, grads, lr=0.1, momentum=0.9, nesterov="yes")
    with pytest.raises(TypeError):
        Adam(list(params.values()), grads)
    with pytest.raises(TypeError):
        Adam({"w": np.zeros(3, dtype=np.int64)}, {})


def test_lr_is_settable_and_validated_between_steps():
    params, grads = make_params()
    opt = Adam(params, grads, lr=0.1)
    opt.lr = 0.05
    assert opt.lr == 0.05 and opt.hyperparams["lr"] == 0.05
    with pytest.raises(ValueError):
        opt.lr = -1.0
    assert opt.lr == 0.05


# ---------------------------------------------------------------------------------------- clipping

def torch_clip(arrays, max_norm, norm_type):
    ps = []
    for a in arrays:
        if a is None:
            p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        else:
            p = torch.nn.Parameter(torch.zeros(a.shape, dtype=torch.from_numpy(a).dtype))
        p.grad = None if a is None else torch.tensor(a.copy())
        ps.append(p)
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    return total.item(), [None if p.grad is None else p.grad.numpy() for p in ps]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clips", "no-clip"])
def test_clip_grad_norm_equals_torch(norm_type, max_norm):
    rng = np.random.default_rng(10)
    grads = {"a": rng.standard_normal((3, 4)), "b": None, "c": rng.standard_normal(7) * 3,
             "d": rng.standard_normal((2, 2, 2)) * 1e-3}
    ref_total, ref_grads = torch_clip(list(grads.values()), max_norm, norm_type)
    ids = {k: id(v) for k, v in grads.items()}
    total = clip_grad_norm(grads, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(ref_total, rel=RTOL64)
    assert grads["b"] is None and {k: id(v) for k, v in grads.items()} == ids
    for g, r in zip(grads.values(), ref_grads):
        if g is not None:
            assert_close(g, r, RTOL64)
    if max_norm < total:
        new_total = clip_grad_norm(grads, 1e9, norm_type=norm_type)
        assert new_total == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_accepts_a_list_or_one_array_and_float32():
    rng = np.random.default_rng(11)
    arrays = [rng.standard_normal(5).astype(np.float32), None,
              rng.standard_normal((2, 3)).astype(np.float32)]
    ref_total, ref_grads = torch_clip(arrays, 1.0, 2.0)
    total = clip_grad_norm(arrays, 1.0)
    assert total == pytest.approx(ref_total, rel=RTOL32)
    for g, r in zip(arrays, ref_grads):
        if g is not None:
            assert g.dtype == np.float32
            assert_close(g, r, RTOL32)
    one = np.full(4, 2.0)
    assert clip_grad_norm(one, 1.0) == pytest.approx(4.0)
    np.testing.assert_allclose(one, 2.0 / (4.0 + 1e-6), rtol=1e-15)
    assert clip_grad_norm({"x": None}, 1.0) == 0.0


def test_clip_grad_norm_refuses_bad_arguments():
    g = [np.ones(3)]
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(g, -1.0)
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm(g, 1.0, norm_type=0)
    with pytest.raises(TypeError):
        clip_grad_norm([np.ones(3, dtype=np.int64)], 1.0)
    with pytest.raises(TypeError):
        clip_grad_norm(5, 1.0)
