"""The seq2seq model's regularisation (issue 27): dropout on the embedded source and target
tokens (``embedding_dropout``), on the attentional vectors ã_t (``hidden_dropout``: what the
output layer reads and what input feeding feeds on), and label smoothing of the training loss.

* the config: the three fields, their checks, a checkpoint's config saved without them, the
  masks a step needs (appended, each with its own p, only when its rate is > 0, so a run
  without them draws exactly the masks it drew before);
* NumPy against torch with all three on, float64, random masks: the loss and every gradient
  within 1e-10, for every cell and attention, with and without input feeding, one and two
  layers (and ``score`` stays the plain NLL);
* finite differences of the NumPy loss through each new dropout;
* evaluation drops nothing, and with every rate at 0 nothing changes;
* through the driver, both backends train alike with all three on.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import product
from typing import Any

import numpy as np
import pytest

from numpy_rnn.nn.gradcheck import numerical_gradient, relative_error
from numpy_rnn.nn.losses import IGNORE_INDEX, cross_entropy
from numpy_rnn.nn.module import ShapeError
from numpy_rnn.tasks.base import DropoutMask
from numpy_rnn.tasks.seq2seq import BOS, EOS, PAD, Seq2Seq, Seq2SeqConfig, Seq2SeqInputs
from numpy_rnn.tasks.seq2seq.model import Seq2SeqMasks

CELLS = ("lstm", "gru", "rnn")
ATTENTIONS = ("additive", "general", "dot", "none")
VS, VT, ES, ET, H, A = 7, 9, 5, 3, 6, 4
SOURCE_LENGTHS = (5, 1, 3)
TARGET_LENGTHS = (2, 4, 1)
RATES = dict(embedding_dropout=0.3, hidden_dropout=0.2, label_smoothing=0.1)


def smoothing_supported() -> bool:
    try:
        cross_entropy(np.zeros((1, 3)), np.zeros(1, np.int64), label_smoothing=0.1)
    except TypeError:
        return False
    return True


needs_smoothing = pytest.mark.skipif(not smoothing_supported(),
                                     reason="numpy_rnn.nn.losses.cross_entropy has no "
                                            "label_smoothing yet")


def make_config(cell: str = "lstm", attention: str = "general", feed: bool = True,
                layers: int = 2, dtype: str = "float64", **kw: Any) -> Seq2SeqConfig:
    args: dict[str, Any] = dict(vocab_size=VS, hidden_size=H, num_layers=layers, cell=cell,
                                embedding_dim=ES, dropout=0.25 if layers > 1 else 0.0,
                                dtype=dtype, target_vocab_size=VT, target_embedding_dim=ET,
                                attention=attention, attention_size=A, input_feeding=feed)
    args.update(kw)
    return Seq2SeqConfig(**args)


def make_batch(rng: np.random.Generator) -> tuple[Seq2SeqInputs, np.ndarray]:
    B, S, T = len(SOURCE_LENGTHS), max(SOURCE_LENGTHS), max(TARGET_LENGTHS)
    src = np.full((B, S), PAD, np.int64)
    tin = np.full((B, T), PAD, np.int64)
    tgt = np.full((B, T), IGNORE_INDEX, np.int64)
    for b, (n_s, n_t) in enumerate(zip(SOURCE_LENGTHS, TARGET_LENGTHS)):
        src[b, :n_s] = rng.integers(1, VS, n_s)
        y = rng.integers(EOS + 1, VT, n_t - 1)
        tin[b, :n_t] = [BOS, *y]
        tgt[b, :n_t] = [*y, EOS]
    return Seq2SeqInputs(src, np.asarray(SOURCE_LENGTHS, np.int64), tin), tgt


def draw(config: Seq2SeqConfig, inputs: Seq2SeqInputs, rng: np.random.Generator
         ) -> list[np.ndarray]:
    """The driver's keep masks: each of ``config.dropout_masks`` drawn with its own p."""
    (B, S), T = inputs.source.shape, inputs.target_in.shape[1]
    return [rng.random(m.shape) >= m.p for m in config.dropout_masks(S, T, B)]


def model_of(config: Seq2SeqConfig, seed: int = 0, scale: float = 3.0) -> Seq2Seq:
    """Weights x3: at the initial scale some attention gradients are ~1e-7."""
    model = Seq2Seq(config, seed=seed)
    for p in model.params.values():
        p *= scale
    return model.train()


def numpy_grads(model: Seq2Seq, inputs: Seq2SeqInputs, targets: np.ndarray,
                masks: list[np.ndarray] | None) -> tuple[float, dict[str, np.ndarray]]:
    model.train()
    model.zero_grad()
    loss, _ = model.loss_and_backward(inputs, targets, None, masks)
    return loss, {k: g.copy() for k, g in model.grads.items()}


# --------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------

def test_the_three_rates_default_to_0_and_are_checked():
    base = make_config()
    assert (base.embedding_dropout, base.hidden_dropout, base.label_smoothing) == (0, 0, 0)
    ok = make_config(embedding_dropout=0.5, hidden_dropout=0, label_smoothing=1)
    assert isinstance(ok.hidden_dropout, float) and ok.label_smoothing == 1.0
    for name in ("embedding_dropout", "hidden_dropout"):
        for bad in (1.0, -0.1, float("nan"), True, "0.1", None):
            with pytest.raises(ValueError, match=rf"{name} must be a number in \[0, 1\)"):
                make_config(**{name: bad})
    for bad in (1.5, -0.1, float("nan"), False, "0"):
        with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\]"):
            make_config(label_smoothing=bad)


def test_a_config_saved_without_the_rates_loads_with_them_at_0():
    config = make_config(**RATES)
    saved = config.to_json()
    assert {saved[k] for k in RATES} == set(RATES.values())
    assert Seq2SeqConfig.from_json(saved) == config
    old = {k: v for k, v in saved.items() if k not in RATES}
    assert Seq2SeqConfig.from_json(old) == replace(config, embedding_dropout=0.0,
                                                   hidden_dropout=0.0, label_smoothing=0.0)


def test_the_masks_a_step_needs_in_order_each_with_its_own_p():
    S, T, B = 5, 4, 3
    plain = make_config(layers=3)
    before = [DropoutMask((S, B, H), 1, 0.25)] * 2 + [DropoutMask((T, B, H), 1, 0.25)] * 2
    assert plain.dropout_masks(S, T, B) == before           # today's, unchanged
    assert make_config(layers=3, label_smoothing=0.2).dropout_masks(S, T, B) == before
    every = make_config(layers=3, embedding_dropout=0.3, hidden_dropout=0.2)
    assert every.dropout_masks(S, T, B) == before + [
        DropoutMask((S, B, ES), 1, 0.3), DropoutMask((T, B, ET), 1, 0.3),
        DropoutMask((T, B, H), 1, 0.2)]
    assert every.seq2seq_mask_shapes(S, T, B) == [m.shape for m in every.dropout_masks(S, T,
                                                                                         B)]
    one = make_config(layers=1, hidden_dropout=0.4)
    assert one.dropout_masks(S, T, B) == [DropoutMask((T, B, H), 1, 0.4)]
    assert make_config(layers=1).dropout_masks(S, T, B) == []


def test_the_masks_are_split_by_where_they_act_and_checked():
    S, T, B = 5, 4, 3
    config = make_config(layers=2, embedding_dropout=0.3, hidden_dropout=0.2)
    masks = [np.full(m.shape, i) for i, m in enumerate(config.dropout_masks(S, T, B))]
    parts = config.split_dropout_masks(masks, S, T, B)
    assert isinstance(parts, Seq2SeqMasks)
    assert [m[0, 0, 0] for m in parts.encoder] == [0] and parts.decoder[0][0, 0, 0] == 1
    assert (parts.source_embedding[0, 0, 0], parts.target_embedding[0, 0, 0],
            parts.hidden[0, 0, 0]) == (2, 3, 4)
    assert config.split_dropout_masks(None, S, T, B) is None
    with pytest.raises(ShapeError, match="seq2seq_mask_shapes"):
        config.split_dropout_masks(masks[::-1], S, T, B)
    with pytest.raises(ShapeError, match="seq2seq_mask_shapes"):
        config.split_dropout_masks(masks[:-1], S, T, B)
    with pytest.raises(ValueError, match="applies no dropout"):
        config.split_dropout_masks(masks, S, T, B, training=False)
    scaled = config.scale_dropout_masks([np.ones(m.shape, bool) for m in
                                         config.dropout_masks(S, T, B)], S, T, B, np.float64)
    assert [float(m.flat[0]) for m in scaled] == [1 / 0.75, 1 / 0.75, 1 / 0.7, 1 / 0.7, 1 / 0.8]


# --------------------------------------------------------------------------------------------
# NumPy against torch
# --------------------------------------------------------------------------------------------

@needs_smoothing
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("feed", [True, False], ids=["feed", "nofeed"])
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cell", CELLS)
def test_numpy_equals_torch_with_every_regulariser_on(cell, attention, feed, layers):
    torch = pytest.importorskip("torch")
    from torch_ref.convert import load_numpy_state
    from torch_ref.seq2seq import Seq2Seq as TorchSeq2Seq

    torch.set_num_threads(1)
    seed = CELLS.index(cell) * 100 + ATTENTIONS.index(attention) * 10 + 2 * feed + layers
    config = make_config(cell, attention, feed, layers, **RATES)
    model = model_of(config, seed=seed)
    twin = TorchSeq2Seq(config)
    load_numpy_state(twin, model.state_dict())
    rng = np.random.default_rng(seed)
    inputs, targets = make_batch(rng)
    masks = draw(config, inputs, rng)
    assert len(masks) == 2 * (layers - 1) + 3
    loss, grads = numpy_grads(model, inputs, targets, masks)
    twin.train()
    twin.zero_grad(set_to_none=True)
    want, _ = twin.loss_and_backward(inputs, targets, None, masks)
    assert abs(loss - want) <= 1e-10 * abs(want)
    for name, p in twin.named_parameters():
        g = p.grad.detach().numpy()
        assert np.any(g != 0), f"{name}: no gradient"
        rel = np.max(np.abs(grads[name] - g)) / np.max(np.abs(g))
        assert rel < 1e-10, f"{name}: relative error {rel:.2e}"
    # the validation loss is the plain NLL, the same in both, whatever the smoothing
    got_sum, got_n = model.score(inputs, targets)
    want_sum, want_n = twin.eval().score(inputs, targets)
    np.testing.assert_allclose(got_sum, want_sum, rtol=1e-12)
    np.testing.assert_array_equal(got_n, want_n)


@needs_smoothing
def test_label_smoothing_is_for_training_only():
    config = make_config(layers=1, label_smoothing=0.3)
    model = model_of(config)
    plain = model_of(replace(config, label_smoothing=0.0))
    inputs, targets = make_batch(np.random.default_rng(1))
    smoothed, _ = numpy_grads(model, inputs, targets, None)
    nll, _ = numpy_grads(plain, inputs, targets, None)
    assert smoothed != nll
    loss_sum, tokens = model.score(inputs, targets)
    assert loss_sum.sum() / tokens.sum() == pytest.approx(nll, rel=1e-13)
    np.testing.assert_array_equal(loss_sum, plain.score(inputs, targets)[0])


# --------------------------------------------------------------------------------------------
# Finite differences
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell, attention, feed", [
    ("lstm", "additive", True), ("gru", "general", False), ("rnn", "none", True),
    ("gru", "dot", True), ("lstm", "none", False)])
def test_the_dropped_paths_match_finite_differences(cell, attention, feed):
    """Every parameter the new dropouts stand in front of or behind (the embeddings, the
    encoder's first layer, the decoder's input weights, combine, out), and the bridge."""
    config = make_config(cell, attention, feed, 2, embedding_dropout=0.3, hidden_dropout=0.4)
    model = model_of(config, seed=21)
    rng = np.random.default_rng(22)
    inputs, targets = make_batch(rng)
    masks = draw(config, inputs, rng)
    _, analytic = numpy_grads(model, inputs, targets, masks)

    def loss() -> float:
        logits = model.forward(inputs, masks)
        T, B, V = logits.shape
        return cross_entropy(logits.reshape(T * B, V), targets.T.reshape(-1))[0]

    names = ["encoder_embedding.weight", "encoder.weight_ih_l0", "decoder_embedding.weight",
             "decoder.weight_ih_l0", "decoder.weight_hh_l1", "bridge_h.0.weight",
             "out.weight", "out.bias"] + (["combine.weight"] if attention != "none" else [])
    for name in names:
        p = model.params[name]
        idx = rng.choice(p.size, size=min(p.size, 10), replace=False)
        numeric = numerical_gradient(loss, p, eps=1e-5, indices=idx)
        err = relative_error(analytic[name].reshape(-1)[idx], numeric.reshape(-1)[idx])
        assert err < 1e-6, f"{name}: relative error {err:.2e}"


@needs_smoothing
def test_label_smoothing_matches_finite_differences():
    config = make_config("lstm", "general", True, 1, label_smoothing=0.2)
    model = model_of(config, seed=23)
    inputs, targets = make_batch(np.random.default_rng(24))
    _, analytic = numpy_grads(model, inputs, targets, None)

    def loss() -> float:
        model.zero_grad()
        return model.loss_and_backward(inputs, targets, None, None)[0]

    for name in ("out.weight", "decoder.weight_hh_l0", "encoder_embedding.weight"):
        p = model.params[name]
        numeric = numerical_gradient(loss, p, eps=1e-5)
        assert relative_error(analytic[name], numeric) < 1e-6, name


# --------------------------------------------------------------------------------------------
# Nothing dropped in evaluation; nothing changed at 0
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("feed", [True, False], ids=["feed", "nofeed"])
def test_evaluation_drops_nothing(feed):
    on = model_of(make_config("gru", "dot", feed, 2, **RATES), seed=5)
    off = model_of(make_config("gru", "dot", feed, 2), seed=5)
    inputs, targets = make_batch(np.random.default_rng(6))
    np.testing.assert_array_equal(on.score(inputs, targets)[0], off.score(inputs, targets)[0])
    memory, state = on.encode(inputs.source, inputs.source_lengths)
    memory_off, _ = off.encode(inputs.source, inputs.source_lengths)
    np.testing.assert_array_equal(memory, memory_off)
    step = (np.full(3, BOS), state, np.zeros((3, H)), memory, inputs.source_lengths)
    for got, want in zip(on.decode_step(*step), off.decode_step(*step)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="applies no dropout"):
        on.eval().forward(inputs, draw(on.config, inputs, np.random.default_rng(0)))


@pytest.mark.parametrize("cell, attention, feed", list(product(CELLS, ("general", "none"),
                                                                (True, False))))
def test_with_every_rate_at_0_nothing_changes(cell, attention, feed):
    """At 0 the rates declare no masks (the driver draws what it drew before) and the model
    multiplies by nothing; the new masks' path, fed masks that keep everything at a rate whose
    factor 1 / (1 - p) rounds to 1, gives the same loss and gradients to the bit. (That the
    model with every rate at 0 computes what it did before this change, to the bit, in both
    twins, was checked against the previous commit's outputs, states, gradients and searches.)"""
    config = make_config(cell, attention, feed, 2)
    model = model_of(config, seed=7)
    inputs, targets = make_batch(np.random.default_rng(8))
    masks = draw(config, inputs, np.random.default_rng(9))
    assert len(masks) == 2
    loss, grads = numpy_grads(model, inputs, targets, masks)
    # the same model given the new masks as all-keep masks, scaled by 1 / (1 - 0) = 1
    on = model_of(replace(config, embedding_dropout=1e-300, hidden_dropout=1e-300), seed=7)
    ones = masks + [np.ones(m.shape, bool) for m in on.config.dropout_masks(5, 4, 3)[2:]]
    loss_on, grads_on = numpy_grads(on, inputs, targets, ones)
    assert loss_on == loss
    for name, g in grads.items():
        np.testing.assert_array_equal(grads_on[name], g, err_msg=name)


# --------------------------------------------------------------------------------------------
# Through the driver
# --------------------------------------------------------------------------------------------

@needs_smoothing
def test_both_backends_train_alike_with_every_regulariser(tmp_path, monkeypatch):
    """The driver draws each mask with its own p and both backends scale them alike: 20
    float64 steps with all three on log the same losses (measured 4e-16) and validate alike."""
    pytest.importorskip("torch")
    from helpers import read_metrics

    from numpy_rnn.driver.train import TrainConfig, train

    monkeypatch.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
    rng = np.random.default_rng(0)
    words = sorted({"".join(rng.choice(list("abcdefg"), rng.integers(2, 7))) for _ in range(300)})
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{w}\t{' '.join(reversed(w.upper()))}\n" for w in words),
                     encoding="utf-8")
    metrics = []
    for backend in ("numpy", "torch"):
        out = tmp_path / backend
        train(TrainConfig.for_task(
            "seq2seq", backend=backend, data=str(pairs), hidden_size=16, num_layers=2,
            dropout=0.2, batch_size=8, length_buckets=0, steps=20, eval_every=10,
            sample_every=1000, num_eval_samples=0, dtype="float64", lr=0.01, seed=7,
            out=str(out), quiet=True, **RATES))
        metrics.append(read_metrics(out))
    ours, theirs = metrics
    np.testing.assert_allclose([r["loss"] for r in theirs], [r["loss"] for r in ours],
                               rtol=1e-10, atol=0)
    val = [[r["val_loss"] for r in m if "val_loss" in r] for m in metrics]
    assert len(val[0]) == 2
    np.testing.assert_allclose(val[1], val[0], rtol=1e-10, atol=0)
