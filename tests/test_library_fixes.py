"""Issue 17: a tiny temperature is greedy decoding; gradcheck takes any strided input; the loss
plot's y label is the task's; the attention plot fits its text, shares one colour scale and
shows names as written; a local plants.data that is not the known corpus says so; the torch
backend trains small models on one thread unless the user chose."""

from __future__ import annotations

import hashlib
import io
import os
import warnings

import numpy as np
import pytest

import numpy_rnn as nr
from numpy_rnn.driver import train as train_mod
from numpy_rnn.driver.backend import NumpyBackend, OptimConfig
from numpy_rnn.tasks import corpus, get_task
from numpy_rnn.tasks.corpus import Vocabulary
from numpy_rnn.tasks.lm import CharRNN
from numpy_rnn.tasks.model import ModelConfig
from numpy_rnn.tasks.sampling import filter_logits, sample

VOCAB = Vocabulary.from_text("\n abcdefghijklmnop")


# --------------------------------------------------------------------------------------------
# 1. A temperature of 1e-310 is greedy decoding, without warnings
# --------------------------------------------------------------------------------------------


def _lm_weights(seed: int = 3) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    config = ModelConfig(vocab_size=len(VOCAB), hidden_size=12, num_layers=2, dtype="float64")
    return config, CharRNN(config, seed=seed).state_dict()


def _greedy(backend, num: int, max_length: int) -> list[str]:
    """Argmax decoding from a newline, one stream (every stream is the same)."""
    newline = VOCAB.chars.index("\n")
    logits, state = backend.logits(np.array([[newline]]), None)
    out = []
    for _ in range(max_length):
        nxt = int(np.argmax(logits[0, -1]))
        if nxt == newline:
            break
        out.append(nxt)
        logits, state = backend.logits(np.array([[nxt]]), state)
    return [VOCAB.decode(np.array(out, dtype=np.int64))] * num


def test_a_tiny_temperature_keeps_only_the_maxima_and_warns_nothing():
    logits = np.array([[1.0, 3.0, -2.0, 0.5], [1.0, 3.0, 3.0, -1e300], [0.0, 0.0, 0.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = filter_logits(logits, 1e-310)
        assert np.array_equal(filter_logits(logits, 1e-310, top_k=1), p)   # ties kept
    assert np.array_equal(p, [[0, 1, 0, 0], [0, 0.5, 0.5, 0], [0.25] * 4])
    # An ordinary temperature gives the same distribution as before, to rounding.
    z = logits[:1] / 0.7
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(filter_logits(logits[:1], 0.7), expected, rtol=1e-14)


def test_sampling_at_temperature_1e_310_is_greedy_decoding_in_both_backends():
    config, weights = _lm_weights()
    backend = NumpyBackend(config, OptimConfig())
    backend.load_state_dict(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        texts = sample(backend, VOCAB, 3, np.random.default_rng(0), temperature=1e-310,
                       max_length=40)
    assert texts == _greedy(backend, 3, 40)
    assert texts[0]                      # not three empty names
    pytest.importorskip("torch")
    from torch_ref.backend import TorchBackend
    twin = TorchBackend(config, OptimConfig())
    twin.load_state_dict(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sample(twin, VOCAB, 3, np.random.default_rng(5), temperature=1e-310,
                      max_length=40) == texts


# --------------------------------------------------------------------------------------------
# 2. gradcheck takes transposed and Fortran-order inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["transposed", "fortran"])
def test_gradcheck_takes_a_non_contiguous_input_and_still_catches_a_wrong_gradient(layout):
    rng = np.random.default_rng(7)
    if layout == "transposed":
        x = rng.standard_normal((3, 2, 4)).transpose(2, 1, 0)       # (T=4, B=2, F=3)
    else:
        x = np.asfortranarray(rng.standard_normal((4, 2, 3)))
    assert not x.flags.c_contiguous
    hx = (rng.standard_normal((1, 2, 5)), rng.standard_normal((1, 2, 5)))
    layer = nr.LSTM(3, 5, seed=0)
    seen = []
    forward = layer.forward

    def spy(inp, *args, **kwargs):
        seen.append(np.array(inp, copy=True))
        return forward(inp, *args, **kwargs)

    layer.forward = spy
    report = nr.gradcheck(layer, x, hx)
    assert report.ok(1e-6), str(report)
    assert report.checked["x"] == x.size
    assert all(np.array_equal(s, x) for s in seen[:1])   # the layer read the user's values
    # The same check against a contiguous copy gives exactly the same errors.
    same = nr.gradcheck(nr.LSTM(3, 5, seed=0), np.ascontiguousarray(x), hx)
    assert same.errors == report.errors
    # A planted wrong input gradient still fails.
    backward = layer.backward

    def wrong(*args, **kwargs):
        dx, dhx = backward(*args, **kwargs)
        return dx * 1.01, dhx

    layer.backward = wrong
    bad = nr.gradcheck(layer, x, hx)
    assert bad.errors["x"] > 1e-3 and not bad.ok(1e-6)


def test_numerical_gradient_of_a_transposed_array_perturbs_it_in_place_and_restores_it():
    x = np.arange(6.0).reshape(2, 3).T          # (3, 2), not C-contiguous
    before = x.copy()
    w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    g = nr.numerical_gradient(lambda: float(np.sum(w * x ** 2)), x, eps=1e-5)
    np.testing.assert_allclose(g, 2 * w * before, rtol=1e-9)
    assert np.array_equal(x, before)
    g2 = nr.numerical_gradient(lambda: float(np.sum(w * x ** 2)), x, eps=1e-5,
                               indices=np.array([1, 4]))
    assert g2.reshape(-1)[1] == g.reshape(-1)[1] and g2.reshape(-1)[4] == g.reshape(-1)[4]
    assert np.count_nonzero(g2) == 2


# --------------------------------------------------------------------------------------------
# 3. loss.png labels the task's own loss
# --------------------------------------------------------------------------------------------


def test_every_task_names_its_loss_and_the_classifier_its_binary_cross_entropy():
    assert get_task("lm").loss_label == "cross-entropy (nats/char)"
    assert get_task("conditional").loss_label == "cross-entropy (nats/char)"
    label = get_task("classify").loss_label
    assert "binary cross-entropy" in label and "nats/char" not in label


def test_plot_losses_writes_the_given_y_label(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 0.7}\n{"step": 2, "loss": 0.6, "val_loss": 0.65}\n')
    labels = []
    original = Axes.set_ylabel
    monkeypatch.setattr(Axes, "set_ylabel",
                        lambda self, text, *a, **k: labels.append(text) or original(self, text))
    train_mod.plot_losses(metrics, tmp_path / "a.png", ylabel="my loss")
    train_mod.plot_losses(metrics, tmp_path / "b.png")
    assert labels == ["my loss", "cross-entropy (nats/char)"]
    assert (tmp_path / "a.png").stat().st_size > 0


def test_training_the_classifier_plots_its_loss_label(labelled, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: calls.append(k))
    config = train_mod.TrainConfig.for_task(
        "classify", hidden_size=8, num_layers=1, batch_size=16, steps=2, eval_every=2,
        sample_every=2, num_eval_samples=1, dtype="float64", attention_size=6,
        out=str(tmp_path / "run"), quiet=True)
    train_mod.train(config)
    assert [k.get("ylabel") for k in calls] == [get_task("classify").loss_label]


# --------------------------------------------------------------------------------------------
# 4. The attention plot
# --------------------------------------------------------------------------------------------


def test_attention_plot_of_short_and_dollar_names_renders_them_as_written(monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from numpy_rnn.tasks import classify
    names = ["Ab", "$x$ plant", "a$b"]
    weights = [np.array([0.9, 0.1]), np.full(9, 1 / 9), np.array([0.2, 0.5, 0.3])]
    probs = np.array([[0.9, 0.1, 0.5], [0.2, 0.7, 0.1], [0.3, 0.3, 0.3]])
    figures = []
    savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig",
                        lambda fig, *a, **k: figures.append(fig) or savefig(fig, *a, **k))
    buf = io.BytesIO()
    classify.plot_attention(names, weights, probs, ["hi", "ak", "ca"], buf)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    ax = fig.axes[0]
    ticks = ax.get_yticklabels()
    assert [t.get_text().split("  (")[0] for t in ticks] == names
    assert all(not t.get_parse_math() for t in ticks)
    assert all(not t.get_parse_math() for t in ax.texts)
    assert not ax.title.get_parse_math()


def test_drawing_a_picture_leaves_the_programs_matplotlib_backend_alone(tmp_path):
    """A notebook's inline backend survives training and --plot: nothing calls
    matplotlib.use or pyplot."""
    matplotlib = pytest.importorskip("matplotlib")
    from numpy_rnn.driver.runfiles import plot_losses
    from numpy_rnn.tasks import classify

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        metrics = tmp_path / "metrics.jsonl"
        metrics.write_text("".join(f'{{"step": {i}, "loss": {1 / i}}}\n' for i in range(1, 9)))
        plot_losses(metrics, tmp_path / "loss.png")
        classify.plot_attention(["ab"], [np.array([0.5, 0.5])], np.array([[0.5]]), ["hi"],
                                tmp_path / "a.png")
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        matplotlib.use(before)


def test_text_colours_follow_the_shared_colour_scale_not_each_rows_maximum():
    pytest.importorskip("matplotlib")
    import matplotlib
    from matplotlib.colors import Normalize

    from numpy_rnn.tasks.classify import text_colours
    cmap = matplotlib.colormaps["viridis"]      # dark at 0, light at 1
    grid = np.array([[0.9, 0.1, np.nan], [0.05, 0.04, 0.03]])
    colours = text_colours(grid, Normalize(0.0, 0.9), cmap)
    # Row 2's largest weight is 0.05: dark on the shared scale, so white, not black.
    assert colours.tolist() == [["black", "white", "black"], ["white", "white", "white"]]


# --------------------------------------------------------------------------------------------
# 5. A local plants.data that is not the known corpus
# --------------------------------------------------------------------------------------------


def test_a_truncated_local_plants_data_is_named_with_its_size_and_hash(tmp_path, monkeypatch):
    real = corpus.plants_path(os.environ.get("NUMPY_RNN_DATA_DIR"))
    if not real.is_file():
        pytest.skip("the real plants.data is not here")
    body = real.read_bytes()[:1234]
    (tmp_path / "plants.data").write_bytes(body)
    with pytest.warns(corpus.DataWarning) as record:
        assert corpus.ensure_plants(tmp_path, progress=False) == tmp_path / "plants.data"
    message = str(record[0].message)
    assert f"size 1,234 bytes, sha256 {hashlib.sha256(body).hexdigest()}" in message
    assert f"expected {corpus.PLANTS_SIZE:,} bytes, sha256 {corpus.PLANTS_SHA256}" in message
    assert str(tmp_path / "plants.data") in message and "delete it" in message
    assert (tmp_path / "plants.data").read_bytes() == body        # never overwritten
    # The real corpus passes, and is hashed once per (path, size, mtime).
    calls = []
    sha = corpus.hashlib.sha256
    monkeypatch.setattr(corpus.hashlib, "sha256", lambda *a: calls.append(1) or sha(*a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        corpus._LOCAL_HASHES.clear()
        for _ in range(3):
            assert corpus.ensure_plants(real.parent, progress=False) == real
    assert len(calls) == 1


def test_an_edited_local_plants_data_is_hashed_again(tmp_path):
    path = tmp_path / "plants.data"
    path.write_bytes(b"abelia,fl\n")
    with pytest.warns(corpus.DataWarning, match="size 10 bytes"):
        corpus.ensure_plants(tmp_path, progress=False)
    path.write_bytes(b"abelia,fl,nc\n")
    with pytest.warns(corpus.DataWarning, match="size 13 bytes"):
        corpus.ensure_plants(tmp_path, progress=False)


# --------------------------------------------------------------------------------------------
# 6. Torch threads
# --------------------------------------------------------------------------------------------


@pytest.fixture
def torch_threads(monkeypatch):
    torch = pytest.importorskip("torch")
    from torch_ref import backend as tb
    n = torch.get_num_threads()
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(tb, "_DEFAULT_THREADS", 4)
    monkeypatch.setattr(tb, "_CHOSEN_THREADS", None)
    torch.set_num_threads(4)
    yield torch, tb
    torch.set_num_threads(n)


def _config(hidden: int) -> ModelConfig:
    return ModelConfig(vocab_size=10, hidden_size=hidden, num_layers=1, dtype="float32")


def test_a_small_torch_model_trains_on_one_thread_and_a_large_one_on_the_default(torch_threads):
    torch, tb = torch_threads
    tb.TorchBackend(_config(32), OptimConfig())
    assert torch.get_num_threads() == 1
    tb.TorchBackend(_config(256), OptimConfig())          # our own choice is not the user's
    assert torch.get_num_threads() == 4


def test_the_users_thread_choice_is_kept(torch_threads, monkeypatch):
    torch, tb = torch_threads
    torch.set_num_threads(3)
    tb.TorchBackend(_config(32), OptimConfig())
    assert torch.get_num_threads() == 3
    torch.set_num_threads(4)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    tb.TorchBackend(_config(32), OptimConfig())
    assert torch.get_num_threads() == 4

