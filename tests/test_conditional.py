"""The one-to-many task: names generated from regions, against torch, by finite differences, and
through the driver and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import read_losses
from hypothesis import given, settings
from hypothesis import strategies as st
from labelled import REGIONS

from numpy_rnn.driver.checkpoint import backend_from_checkpoint, load_checkpoint
from numpy_rnn.driver.train import TrainConfig, draw_dropout_masks, resume_config, train
from numpy_rnn.nn.gradcheck import check_function
from numpy_rnn.nn.recurrent import scale_dropout_mask
from numpy_rnn.tasks.conditional import (
    ConditionalCharRNN,
    ConditionalConfig,
    ConditionalTask,
    conditions_for,
    sample_conditioned,
)
from numpy_rnn.tasks.corpus import load_labelled_corpus

torch = pytest.importorskip("torch")

from torch_ref.conditional import ConditionalCharRNN as TorchConditional  # noqa: E402

RTOL = 1e-10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(out: Path, **kw) -> TrainConfig:
    base = dict(hidden_size=8, num_layers=1, batch_size=16, steps=50, eval_every=25,
                sample_every=25, num_eval_samples=1, dtype="float64", out=str(out), quiet=True)
    return TrainConfig.for_task("conditional", **{**base, **kw})


# --------------------------------------------------------------------------------------------
# The model against torch autograd
# --------------------------------------------------------------------------------------------


@settings(max_examples=30)
@given(cell=st.sampled_from(["lstm", "gru", "rnn"]), layers=st.integers(1, 2),
       hidden=st.integers(1, 5), labels=st.integers(1, 4), B=st.integers(1, 4),
       T=st.integers(1, 6), dropout=st.sampled_from([0.0, 0.4]), seed=st.integers(0, 2**16))
def test_forward_and_every_gradient_match_torch_autograd(cell, layers, hidden, labels, B, T,
                                                          dropout, seed):
    cfg = ConditionalConfig(vocab_size=6, hidden_size=hidden, num_layers=layers, cell=cell,
                            dropout=dropout, dtype="float64", num_labels=labels)
    rng = np.random.default_rng(seed)
    model = ConditionalCharRNN(cfg, seed=seed).train()
    twin = TorchConditional(cfg)
    with torch.no_grad():
        for name, p in twin.named_parameters():
            p.copy_(torch.from_numpy(model.params[name]))
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    tokens = rng.integers(0, 6, (B, T))
    targets = rng.integers(0, 6, (B, T))
    targets[np.arange(T)[None] >= lengths[:, None]] = -100
    conditions = (rng.random((B, labels)) < 0.5).astype(np.float64)
    masks = draw_dropout_masks(rng, dropout, cfg.dropout_mask_shapes(T, B))
    model.zero_grad()
    from numpy_rnn.tasks.conditional import ConditionalInputs
    inputs = ConditionalInputs(conditions, tokens, lengths)
    loss, _ = model.loss_and_backward(inputs, targets, None, masks)
    t_masks = None if masks is None else [
        torch.from_numpy(scale_dropout_mask(m, dropout, np.float64)) for m in masks]
    t_loss, _ = twin.train_loss(inputs, targets, None, t_masks)
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=RTOL)
    for name, p in twin.named_parameters():
        scale = max(1.0, float(p.grad.abs().max()))
        np.testing.assert_allclose(model.grads[name], p.grad.numpy(), rtol=0, atol=RTOL * scale,
                                   err_msg=name)
    state, t_state = model.initial_state(conditions), twin.initial_state(conditions)
    for a, b in zip(state, t_state):
        np.testing.assert_allclose(a, b, rtol=0, atol=RTOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_every_gradient_matches_finite_differences(cell):
    cfg = ConditionalConfig(vocab_size=5, hidden_size=3, num_layers=2, cell=cell,
                            dtype="float64", num_labels=3)
    model = ConditionalCharRNN(cfg, seed=2)
    rng = np.random.default_rng(0)
    tokens, lengths = rng.integers(0, 5, (3, 4)), np.array([4, 2, 3])
    conditions = np.array([[1.0, 0, 1], [0, 0, 0], [0, 1, 0]])

    def fn():
        return model.forward_conditioned(conditions, tokens, lengths)

    def vjp(upstream):
        model.zero_grad()
        fn()
        model.backward_conditioned(upstream)
        return {k: g.copy() for k, g in model.grads.items()}

    report = check_function(fn, model.params, vjp)
    assert report.ok(1e-6), str(report)
    assert report.errors["condition.weight"] < 1e-6    # the gradient reaches the condition


def test_padding_after_a_name_changes_nothing_before_it():
    cfg = ConditionalConfig(vocab_size=6, hidden_size=4, num_layers=2, dtype="float64",
                            num_labels=2)
    model = ConditionalCharRNN(cfg, seed=3).eval()
    rng = np.random.default_rng(1)
    tokens, lengths = rng.integers(0, 6, (2, 6)), np.array([6, 3])
    conditions = np.array([[1.0, 0.0], [0.0, 1.0]])
    logits = model.forward_conditioned(conditions, tokens, lengths)
    alone = model.forward_conditioned(conditions[1:], tokens[1:, :3], lengths[1:])
    np.testing.assert_allclose(logits[1, :3], alone[0], rtol=0, atol=1e-13)


# --------------------------------------------------------------------------------------------
# Through the driver
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_both_backends_log_the_same_losses(labelled, tmp_path, cell):
    kw = dict(cell=cell, num_layers=2, dropout=0.2)
    train(tiny(tmp_path / "np", backend="numpy", **kw))
    train(tiny(tmp_path / "torch", backend="torch", **kw))
    a, b = read_losses(tmp_path / "np"), read_losses(tmp_path / "torch")
    assert len(a) == 50
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=0)


def test_resume_equals_an_uninterrupted_run_and_crosses_backends(labelled, tmp_path):
    train(tiny(tmp_path / "straight", steps=40))
    train(tiny(tmp_path / "resumed", steps=20, backend="torch"))
    train(resume_config(tmp_path / "resumed", {"steps": 40, "backend": "numpy"}))
    np.testing.assert_allclose(read_losses(tmp_path / "resumed"),
                               read_losses(tmp_path / "straight"), rtol=1e-9, atol=0)


def test_label_dropout_shows_a_fixed_share_of_names_without_regions(labelled):
    task = ConditionalTask()
    corpus = load_labelled_corpus("plants")
    settings_ = TrainConfig.for_task("conditional", batch_size=32, label_dropout=0.25, seed=5)
    batches = task.batches(settings_, corpus)
    dropped = total = 0
    for _ in range(batches.batches_per_epoch):
        batch = next(batches)
        empty = ~batch.inputs.conditions.any(axis=1)
        dropped += int(empty.sum())
        total += empty.size
        y, tokens = batch.targets, batch.inputs.tokens
        assert np.all(tokens[:, 0] == corpus.vocab.encode("\n")[0])   # each starts at "\n"
        ends = batch.inputs.lengths - 1
        assert np.all(y[np.arange(len(y)), ends] == corpus.vocab.encode("\n")[0])  # and ends
    assert total == len(corpus.train_names)
    assert 0.18 < dropped / total < 0.32
    again = task.batches(settings_, corpus)
    np.testing.assert_array_equal(next(again).inputs.conditions,
                                  next(task.batches(settings_, corpus)).inputs.conditions)


def test_conditioning_helps_and_validation_reports_both_losses(labelled, tmp_path):
    summary = train(tiny(tmp_path / "run", steps=300, eval_every=300, hidden_size=24,
                         lr=1e-2, dropout=0.0))
    m = summary.val_metrics
    assert {"val_loss", "val_loss_no_labels"} <= set(m)
    assert m["val_loss"] < m["val_loss_no_labels"]       # the regions tell it the genus


def test_sampling_for_a_region_is_the_same_in_both_backends(labelled, tmp_path):
    train(tiny(tmp_path / "run", steps=30))
    weights, meta = load_checkpoint(tmp_path / "run" / "best.npz")
    corpus = load_labelled_corpus("plants")
    got = []
    for backend in ("numpy", "torch"):
        model = backend_from_checkpoint(weights, meta, backend)
        got.append(sample_conditioned(model, corpus.vocab, corpus.labels, ["hi"], 8,
                                      np.random.default_rng(3), np.float64, max_length=40))
    assert got[0] == got[1]
    with pytest.raises(ValueError, match="unknown region code 'zz': the model knows ak, ca"):
        conditions_for(["zz"], corpus.labels, np.float64)


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------





def test_sample_condition_evaluate_and_the_judge(labelled, tmp_path, cli):
    common = ["--hidden-size", "8", "--steps", "20", "--eval-every", "10", "--batch-size",
              "16", "--dtype", "float64", "--quiet"]
    assert cli("train", "--task", "conditional", "--out", tmp_path / "gen", *common)[0] == 0
    assert cli("train", "--task", "classify", "--out", tmp_path / "cls", *common)[0] == 0
    gen = tmp_path / "gen" / "best.npz"
    status, out, err = cli("sample", "--checkpoint", gen, "--condition", "hi,ca",
                           "--num-samples", "5", "--label")
    assert status == 0 and len(out.strip().splitlines()) == 5
    assert all(line.rsplit("\t", 1)[1] in ("train", "val", "new") for line in out.splitlines())
    _, plain, _ = cli("sample", "--checkpoint", gen, "--num-samples", "5", "--seed", "4")
    _, torch_out, _ = cli("sample", "--checkpoint", gen, "--num-samples", "5", "--seed", "4",
                          "--backend", "torch")
    assert plain == torch_out
    status, out, _ = cli("evaluate", "--checkpoint", gen, "--json", "--judge",
                         tmp_path / "cls" / "best.npz", "--judge-samples", "10")
    metrics = json.loads(out)
    assert {"val_loss", "val_loss_no_labels"} <= set(metrics)
    judged = {row["region"] for row in metrics["judge"]}
    assert judged == {"hi", "ak", "pr", "fl", "ca"} & set(REGIONS)
    status, out, _ = cli("evaluate", "--checkpoint", gen, "--judge",
                         tmp_path / "cls" / "best.npz", "--judge-samples", "10")
    assert status == 0 and "--condition R" in out
    for argv, fragment in [
        (("sample", "--checkpoint", gen, "--condition", "zz"), "unknown region code 'zz'"),
        (("sample", "--checkpoint", gen, "--stop", "length"), "stops at the end of each"),
        (("predict", "--checkpoint", gen, "rosa"), "predict needs a classify checkpoint"),
        (("evaluate", "--checkpoint", gen, "--judge", gen), "--judge needs a classify"),
    ]:
        status, _, err = cli(*argv)
        assert status == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
