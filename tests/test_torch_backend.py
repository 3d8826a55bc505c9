"""The torch backend against the NumPy backend: same weights and batches, same training run.

In float64 both backends compute the same functions in (nearly) the same order, so a whole run
agrees to rounding error: the loss at every step, the gradient norm, the carried states, the
final weights and the optimizer state. Checkpoints (weights + optimizer state) move between the
backends mid-run, and the notebook's saved LSTM loads into the NumPy model.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from numpy_rnn.driver.backend import NumpyBackend, OptimConfig  # noqa: E402
from numpy_rnn.driver.train import draw_dropout_masks  # noqa: E402
from numpy_rnn.tasks.lm import CharRNN as NumpyCharRNN  # noqa: E402
from numpy_rnn.tasks.lm_batches import StreamBatcher, random_windows  # noqa: E402
from numpy_rnn.tasks.model import ModelConfig  # noqa: E402
from torch_ref.backend import TorchBackend  # noqa: E402
from torch_ref.model import CharRNN as TorchCharRNN  # noqa: E402
from torch_ref.notebook import load_notebook_state  # noqa: E402

V, H, L, B, T = 12, 16, 2, 4, 8
CLIP = 0.25          # below most gradient norms of these runs: clipping really happens
STEPS = 50
RTOL = 1e-9          # float64 trajectories; observed differences are ~1e-15


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def markov_text(n: int = 400, seed: int = 0) -> np.ndarray:
    """A learnable token stream: a random first-order Markov chain over ``V`` symbols, (n,)."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(V, 0.3), size=V)
    text = np.empty(n, np.int64)
    text[0] = 0
    for i in range(1, n):
        text[i] = rng.choice(V, p=P[text[i - 1]])
    return text


TEXT = markov_text()


def window_batches(n: int, seed: int = 1):
    """``n`` random-window batches ``(inputs, targets, reset=True)``: every batch starts at zero."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x, y = random_windows(TEXT, B, T, rng)
        yield x, y, True


def stream_batches(n: int):
    """``n`` contiguous chunks ``(inputs, targets, reset)``: 12 chunks per epoch, so a run of
    50 wraps around (reset) four times."""
    batcher = StreamBatcher(TEXT, B, T)
    for _ in range(n):
        b = next(batcher)
        yield b.inputs, b.targets, b.reset


SCHEDULES = {"windows": window_batches, "streams": stream_batches}


def config(cell: str = "lstm", **kw) -> ModelConfig:
    return ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, cell=cell, **kw)


def make_backends(cfg: ModelConfig, optim: OptimConfig, seed: int = 7):
    """Both backends with the same initial weights, numpy_rnn's ``CharRNN(cfg, seed)``."""
    weights = NumpyCharRNN(cfg, seed=seed).state_dict()
    nb, tb = NumpyBackend(cfg, optim), TorchBackend(cfg, optim)
    nb.load_state_dict(weights)
    tb.load_state_dict(weights)
    return nb, tb


def max_rel(got: np.ndarray, want: np.ndarray) -> float:
    """``max|got - want| / max|want|`` (0 when both are all zero)."""
    scale = float(np.max(np.abs(want), initial=0.0))
    err = float(np.max(np.abs(np.asarray(got, np.float64) - want), initial=0.0))
    return err / scale if scale else err


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float, what: str) -> None:
    assert np.shape(got) == np.shape(want), f"{what}: shape {np.shape(got)} vs {np.shape(want)}"
    err = max_rel(got, want)
    assert err <= rtol, f"{what}: max|diff| / max|want| = {err:.3e} > {rtol:.0e}"


def assert_same_weights(a: dict, b: dict, rtol: float = RTOL) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert_close(a[k], b[k], rtol, k)


def assert_same_optimizer_state(a: dict, b: dict, rtol: float = RTOL) -> None:
    assert a["optimizer"] == b["optimizer"]
    assert a["hyperparams"] == b["hyperparams"]
    assert list(a["state"]) == list(b["state"])
    for name, st in a["state"].items():
        assert set(st) == set(b["state"][name]), name
        for k, v in st.items():
            if k == "step":
                assert type(v) is int and v == b["state"][name][k], (name, v)
            else:
                assert isinstance(v, np.ndarray)
                assert_close(v, b["state"][name][k], rtol, f"{name}.{k}")


def run(backends, batches, state=None, mask_seed=3):
    """Train every backend on the same batches; carry each one's own state, reset when told.
    Where the config has dropout, every backend gets the same keep masks (drawn here, as the
    driver draws them).

    Returns one list of StepResults per step (one result per backend) and the final states.
    """
    states = [state] * len(backends)
    cfg = backends[0].config
    rng = np.random.default_rng(mask_seed)
    steps = []
    for x, y, reset in batches:
        if reset:
            states = [None] * len(backends)
        masks = draw_dropout_masks(rng, cfg.dropout, cfg.dropout_mask_shapes(*x.shape[::-1]))
        results = [b.train_step(x, y, s, masks) for b, s in zip(backends, states)]
        states = [r.state for r in results]
        steps.append(results)
    return steps, states


def assert_same_steps(steps, rtol: float = RTOL) -> None:
    """Loss, gradient norm and returned states of backend 0 equal backend 1's at every step."""
    for i, (a, b) in enumerate(steps):
        assert abs(a.loss - b.loss) <= rtol * abs(b.loss), (i, a.loss, b.loss)
        assert abs(a.grad_norm - b.grad_norm) <= rtol * b.grad_norm, (i, a.grad_norm,
                                                                       b.grad_norm)
        assert len(a.state) == len(b.state)
        for sa, sb in zip(a.state, b.state):
            assert sa.dtype == sb.dtype
            assert_close(sa, sb, rtol, f"state at step {i}")


# --------------------------------------------------------------------------------------------
# (a) whole training runs agree
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_run_matches_numpy_step_for_step_with_clipping(cell, schedule, dropout):
    # With dropout both backends apply the same driver-drawn masks: still the same run.
    nb, tb = make_backends(config(cell, dropout=dropout),
                           OptimConfig(name="adam", lr=1e-2, clip=CLIP))
    steps, _ = run([nb, tb], SCHEDULES[schedule](STEPS))
    assert_same_steps(steps)
    clipped = sum(t.grad_norm > CLIP for _, t in steps)
    assert clipped > 0, "clip never active: the test would not cover clipping"
    assert_same_weights(nb.state_dict(), tb.state_dict())
    assert_same_optimizer_state(nb.optimizer_state_dict(), tb.optimizer_state_dict())
    assert nb.optimizer_state_dict()["state"]["decoder.bias"]["step"] == STEPS
    # the run really trained: the loss dropped
    assert np.mean([t.loss for _, t in steps[-10:]]) < np.mean([t.loss for _, t in steps[:10]])


OPTIMIZERS = {
    "adam_l2": OptimConfig(name="adam", lr=1e-2, weight_decay=1e-2, clip=CLIP),
    "adamw": OptimConfig(name="adamw", lr=1e-2, betas=(0.8, 0.99), eps=1e-6,
                         weight_decay=0.1, clip=CLIP),
    "sgd_momentum": OptimConfig(name="sgd", lr=0.5, momentum=0.9, weight_decay=1e-3, clip=CLIP),
    "sgd_plain_no_clip": OptimConfig(name="sgd", lr=0.5, clip=None),
    "adam_no_clip": OptimConfig(name="adam", lr=1e-2, clip=None),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_matches_numpy(name):
    optim = OPTIMIZERS[name]
    nb, tb = make_backends(config("gru"), optim)
    steps, _ = run([nb, tb], stream_batches(8))
    assert_same_steps(steps)
    assert_same_weights(nb.state_dict(), tb.state_dict())
    on, ot = nb.optimizer_state_dict(), tb.optimizer_state_dict()
    assert_same_optimizer_state(on, ot)
    if name == "sgd_plain_no_clip":
        assert ot["state"] == {}       # no momentum: no per-parameter state, in either backend
    else:
        assert set(ot["state"]) == set(tb.state_dict())


def test_float32_training_runs_close_to_numpy():
    nb, tb = make_backends(config("lstm", dtype="float32"), OptimConfig(lr=1e-2, clip=CLIP))
    steps, _ = run([nb, tb], stream_batches(10))
    for a, b in steps:
        assert abs(a.loss - b.loss) <= 1e-5 * b.loss
        assert all(s.dtype == np.float32 for s in a.state + b.state)
    w = tb.state_dict()
    assert all(v.dtype == np.float32 for v in w.values())
    assert_same_weights(nb.state_dict(), w, rtol=1e-4)


def test_set_lr_applies_to_the_next_step_in_both():
    nb, tb = make_backends(config("rnn"), OptimConfig(lr=1e-2, clip=CLIP))
    batches = list(window_batches(6))
    run([nb, tb], batches[:3])
    for b in (nb, tb):
        b.set_lr(3e-2)
    steps, _ = run([nb, tb], batches[3:])
    assert_same_steps(steps)
    assert_same_weights(nb.state_dict(), tb.state_dict())
    assert tb.optimizer_state_dict()["hyperparams"]["lr"] == 3e-2
    with pytest.raises(ValueError):
        tb.set_lr(-1.0)


# --------------------------------------------------------------------------------------------
# (b) checkpoints move between the backends mid-run
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["torch", "numpy"])
def test_weights_and_optimizer_state_move_between_backends_mid_run(first):
    cfg, optim = config("lstm"), OptimConfig(name="adam", lr=1e-2, weight_decay=1e-3, clip=CLIP)
    nb, tb = make_backends(cfg, optim)
    a = tb if first == "torch" else nb
    batches = list(stream_batches(10))
    _, (state,) = run([a], batches[:5])

    # The checkpoint, as the driver writes it: weights and optimizer state as NumPy.
    weights, opt = a.state_dict(), a.optimizer_state_dict()
    b = (NumpyBackend if first == "torch" else TorchBackend)(cfg, optim)
    b.load_state_dict(weights)
    b.load_optimizer_state_dict(opt)
    assert_same_weights(b.state_dict(), weights, rtol=0.0)
    assert_same_optimizer_state(b.optimizer_state_dict(), opt, rtol=0.0)

    steps, _ = run([a, b], batches[5:], state=state)
    assert_same_steps(steps)
    assert_same_weights(b.state_dict(), a.state_dict())
    final = b.optimizer_state_dict()
    assert_same_optimizer_state(final, a.optimizer_state_dict())
    assert final["state"]["encoder.weight"]["step"] == 10


def test_load_optimizer_state_dict_refuses_bad_states_and_changes_nothing():
    nb, tb = make_backends(config("lstm"), OptimConfig(name="adam", clip=CLIP))
    run([nb, tb], window_batches(2))
    good = nb.optimizer_state_dict()
    before = tb.optimizer_state_dict()

    wrong_kind = dict(good, optimizer="SGD")
    with pytest.raises(ValueError, match="state is for 'SGD'"):
        tb.load_optimizer_state_dict(wrong_kind)
    unknown = dict(good, state=dict(good["state"], **{"lstm.weight_ih_l0": {}}))
    with pytest.raises(KeyError, match="unknown parameters"):
        tb.load_optimizer_state_dict(unknown)
    bad_shape = {k: dict(v) for k, v in good["state"].items()}
    bad_shape["decoder.bias"]["exp_avg"] = np.zeros(V + 1)
    with pytest.raises(ValueError, match="shape"):
        tb.load_optimizer_state_dict(dict(good, state=bad_shape))
    bad_step = {k: dict(v) for k, v in good["state"].items()}
    bad_step["decoder.bias"]["step"] = 0
    with pytest.raises(ValueError, match="positive int"):
        tb.load_optimizer_state_dict(dict(good, state=bad_step))
    with pytest.raises(KeyError):
        tb.load_optimizer_state_dict({"state": {}})
    assert_same_optimizer_state(tb.optimizer_state_dict(), before, rtol=0.0)


# --------------------------------------------------------------------------------------------
# (c) evaluation: logits and states
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_logits_match_numpy_from_a_nonzero_state_in_eval_mode(cell):
    # dropout > 0: equal results also show that logits() runs without dropout (eval mode)
    cfg = config(cell, dropout=0.5)
    nb, tb = make_backends(cfg, OptimConfig())
    rng = np.random.default_rng(3)
    x = rng.integers(0, V, (3, 11))
    state = tuple(rng.standard_normal((L, 3, H)) for _ in range(2 if cell == "lstm" else 1))
    (ln, sn), (lt, st) = nb.logits(x, state), tb.logits(x, state)
    assert lt.dtype == np.float64 and lt.shape == (3, 11, V)
    assert_close(lt, ln, 1e-12, "logits")
    for a, b in zip(st, sn):
        assert a.dtype == np.float64 and a.shape == (L, 3, H)
        assert_close(a, b, 1e-12, "final state")
    # the returned state continues the sequence: two halves == the whole
    l1, s1 = tb.logits(x[:, :5], state)
    l2, _ = tb.logits(x[:, 5:], s1)
    assert_close(np.concatenate([l1, l2], axis=1), lt, 1e-12, "logits in two halves")


def test_float32_logits_come_back_as_float64():
    nb, tb = make_backends(config("gru", dtype="float32"), OptimConfig())
    x = np.random.default_rng(0).integers(0, V, (2, 6))
    (ln, _), (lt, st) = nb.logits(x, None), tb.logits(x, None)
    assert lt.dtype == np.float64 and st[0].dtype == np.float32
    assert_close(lt, ln, 1e-5, "float32 logits")


def test_bad_inputs_and_states_raise_clear_errors():
    tb = TorchBackend(config("lstm"), OptimConfig())
    x = np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match="out of range"):
        tb.logits(np.full((2, 3), V), None)
    with pytest.raises(ValueError, match="2-D"):
        tb.logits(np.zeros(3, np.int64), None)
    with pytest.raises(TypeError, match="integer"):
        tb.logits(x.astype(np.float64), None)
    with pytest.raises(TypeError, match="tuple of 2"):
        tb.logits(x, (np.zeros((L, 2, H)),))
    with pytest.raises(TypeError, match="dtype float32"):
        tb.logits(x, (np.zeros((L, 2, H), np.float32), np.zeros((L, 2, H))))
    with pytest.raises(ValueError, match="shape"):
        tb.logits(x, (np.zeros((L, 3, H)), np.zeros((L, 3, H))))
    with pytest.raises(ValueError, match="targets"):
        tb.train_step(x, np.full((2, 3), V), None)


def test_state_dict_names_order_and_strict_loading_match_numpy():
    cfg = config("lstm")
    nb, tb = NumpyBackend(cfg, OptimConfig()), TorchBackend(cfg, OptimConfig())
    # both backends start from the same placeholder weights (numpy_rnn's seed 0)
    assert_same_weights(tb.state_dict(), nb.state_dict(), rtol=0.0)
    w = nb.state_dict()
    with pytest.raises(KeyError, match="missing"):
        tb.load_state_dict({k: v for k, v in w.items() if k != "decoder.bias"})
    with pytest.raises(ValueError, match="shape"):
        tb.load_state_dict(dict(w, **{"decoder.bias": np.zeros(V + 1)}))


# --------------------------------------------------------------------------------------------
# Dropout: the backends apply the driver's masks and draw nothing themselves
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_both_backends_apply_exactly_the_given_masks(cell):
    cfg = config(cell, dropout=0.5)
    nb, tb = make_backends(cfg, OptimConfig(clip=CLIP))
    x, y, _ = next(window_batches(1))
    weights, opt = nb.state_dict(), nb.optimizer_state_dict()
    masks = draw_dropout_masks(np.random.default_rng(0), 0.5, cfg.dropout_mask_shapes(T, B))
    first = [b.train_step(x, y, None, masks) for b in (nb, tb)]
    for b in (nb, tb):                        # the same step again, from the same start
        b.load_state_dict(weights)
        b.load_optimizer_state_dict(opt)
    torch.manual_seed(123)                    # torch's global generator plays no part
    again = [b.train_step(x, y, None, masks) for b in (nb, tb)]
    assert [r.loss for r in again] == [r.loss for r in first]
    assert abs(first[0].loss - first[1].loss) <= RTOL * first[1].loss
    for b in (nb, tb):                        # other masks, another loss: the masks act
        b.load_state_dict(weights)
        b.load_optimizer_state_dict(opt)
    other = [~m for m in masks]
    third = [b.train_step(x, y, None, other) for b in (nb, tb)]
    assert third[0].loss != first[0].loss
    assert abs(third[0].loss - third[1].loss) <= RTOL * third[1].loss


@pytest.mark.parametrize("backend_cls", [NumpyBackend, TorchBackend], ids=["numpy", "torch"])
def test_train_step_refuses_missing_or_misshapen_masks(backend_cls):
    cfg = config("gru", dropout=0.2)
    b = backend_cls(cfg, OptimConfig())
    x, y, _ = next(window_batches(1))
    with pytest.raises(ValueError, match="dropout masks"):
        b.train_step(x, y, None)               # dropout to apply, and no masks
    with pytest.raises(ValueError, match="dropout masks"):
        b.train_step(x, y, None, [np.ones((T, B, H + 1), bool)])
    plain = backend_cls(config("gru"), OptimConfig())
    with pytest.raises(ValueError, match="dropout masks"):
        plain.train_step(x, y, None, [np.ones((T, B, H), bool)])   # no dropout, masks given


# --------------------------------------------------------------------------------------------
# (d) the notebook's saved weights
# --------------------------------------------------------------------------------------------


class NotebookRNN(torch.nn.Module):
    """The notebook's model: the recurrent stack is called ``lstm``; embedding width = vocab."""

    def __init__(self, vocab: int, hidden: int = 512, layers: int = 3) -> None:
        super().__init__()
        self.encoder = torch.nn.Embedding(vocab, vocab, dtype=torch.float64)
        self.lstm = torch.nn.LSTM(vocab, hidden, layers, dtype=torch.float64)
        self.decoder = torch.nn.Linear(hidden, vocab, dtype=torch.float64)

    def forward(self, tokens, hx):   # tokens (B, T) -> logits (B, T, V)
        out, hx = self.lstm(self.encoder(tokens.t()), hx)
        return self.decoder(out).transpose(0, 1), hx


def test_notebook_state_loads_into_the_numpy_model_with_equal_logits(tmp_path):
    torch.manual_seed(0)
    nbk = NotebookRNN(30)            # the real 3 x 512 shape
    path = tmp_path / "rnn.pt"
    torch.save(nbk.state_dict(), path)

    cfg, state = load_notebook_state(path)
    assert cfg == ModelConfig(vocab_size=30, hidden_size=512, num_layers=3, cell="lstm",
                              embedding_dim=None, dtype="float64")
    want = {("rnn." + k[5:] if k.startswith("lstm.") else k): v
            for k, v in nbk.state_dict().items()}
    assert list(state) == list(want)
    for k, v in state.items():
        assert v.dtype == np.float64
        np.testing.assert_array_equal(v, want[k].numpy(), err_msg=k)

    model = NumpyCharRNN(cfg, seed=0)
    model.load_state_dict(state)
    model.eval()
    rng = np.random.default_rng(1)
    x = rng.integers(0, 30, (2, 7))
    h0, c0 = (rng.standard_normal((3, 2, 512)) * 0.5 for _ in range(2))
    got, (h, c) = model(x, (h0, c0))
    with torch.no_grad():
        ref, (rh, rc) = nbk(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    assert_close(got, ref.numpy(), 1e-12, "logits")
    assert_close(h, rh.numpy(), 1e-12, "h_n")
    assert_close(c, rc.numpy(), 1e-12, "c_n")


def test_notebook_loader_size_checks_are_parametric(tmp_path):
    small = NotebookRNN(V, hidden=H, layers=L)
    path = tmp_path / "small.pt"
    torch.save(small.state_dict(), path)
    with pytest.raises(ValueError, match="expected 3"):
        load_notebook_state(path)                       # the notebook's 3 x 512 by default
    cfg, state = load_notebook_state(path, num_layers=None, hidden_size=None)
    assert (cfg.num_layers, cfg.hidden_size, cfg.vocab_size) == (L, H, V)
    # the same weights in the torch reference model give the same logits
    ref = TorchCharRNN(cfg)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    x = np.random.default_rng(0).integers(0, V, (2, 5))
    with torch.no_grad():
        want, _ = small(torch.from_numpy(x), None)
        got, _ = ref(torch.from_numpy(x), None)
    assert torch.equal(got, want)


class Opaque:
    """An arbitrary pickled object: not something ``weights_only=True`` will load."""


def test_notebook_loader_refuses_what_is_not_a_notebook_state_dict(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="weights_only"):
        load_notebook_state(text)

    pickled = tmp_path / "object.pt"       # unpickling would have to import and build it
    with open(pickled, "wb") as f:
        pickle.dump(Opaque(), f, protocol=2)
    with pytest.raises(ValueError, match="weights_only"):
        load_notebook_state(pickled)

    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match="mapping"):
        load_notebook_state(tensor)

    sd = NotebookRNN(V, hidden=H, layers=L).state_dict()
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in sd.items() if k != "decoder.bias"}, partial)
    with pytest.raises(ValueError, match="missing keys"):
        load_notebook_state(partial, num_layers=None, hidden_size=None)

    gru = tmp_path / "gru.pt"
    torch.save({"encoder.weight": torch.zeros(V, V),
                **{f"lstm.{k}": v for k, v in torch.nn.GRU(V, H).state_dict().items()}}, gru)
    with pytest.raises(ValueError, match=r"\(4H, H\)"):
        load_notebook_state(gru, num_layers=None, hidden_size=None)

    with pytest.raises(FileNotFoundError):
        load_notebook_state(tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------
# (e) devices
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="--device cuda requested but torch sees no GPU"):
        TorchBackend(config(), OptimConfig(), device="cuda")


@pytest.mark.parametrize("device", ["gpu", "cuda:0", "mps", ""])
def test_unknown_device_strings_are_refused(device):
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        TorchBackend(config(), OptimConfig(), device=device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_backend_trains_like_numpy():
    # On CUDA the kernels differ (cuDNN, foreach optimizers): agreement to float64 rounding
    # accumulated over the run, not bit-for-bit.
    optim = OptimConfig(lr=1e-2, clip=CLIP)
    weights = NumpyCharRNN(config("lstm"), seed=7).state_dict()
    nb, tb = NumpyBackend(config("lstm"), optim), TorchBackend(config("lstm"), optim, "cuda")
    nb.load_state_dict(weights)
    tb.load_state_dict(weights)
    steps, _ = run([nb, tb], stream_batches(20))
    assert_same_steps(steps, rtol=1e-9)
    assert_same_optimizer_state(nb.optimizer_state_dict(), tb.optimizer_state_dict())
