"""The many-to-one task: the name classifier, against torch, by finite differences, and through the
driver and the command line; average precision; labelled corpora."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import read_losses
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_rnn.driver.checkpoint import backend_from_checkpoint, load_checkpoint
from numpy_rnn.driver.train import TrainConfig, draw_dropout_masks, resume_config, train
from numpy_rnn.nn.gradcheck import check_function
from numpy_rnn.nn.recurrent import scale_dropout_mask
from numpy_rnn.tasks.classify import Classifier, ClassifierConfig, predict_names
from numpy_rnn.tasks.corpus import load_labelled_corpus, parse_labelled_lines
from numpy_rnn.tasks.metrics import (
    average_precision,
    macro_average_precision,
    micro_average_precision,
)

torch = pytest.importorskip("torch")

from torch_ref.classify import Classifier as TorchClassifier  # noqa: E402

RTOL = 1e-10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(out: Path, **kw) -> TrainConfig:
    base = dict(hidden_size=8, num_layers=1, batch_size=16, steps=50, eval_every=25,
                sample_every=25, num_eval_samples=1, dtype="float64", attention_size=6,
                out=str(out), quiet=True)
    return TrainConfig.for_task("classify", **{**base, **kw})


# --------------------------------------------------------------------------------------------
# The model against torch autograd
# --------------------------------------------------------------------------------------------

@st.composite
def classifier_cases(draw):
    cfg = ClassifierConfig(
        vocab_size=draw(st.integers(2, 7)), hidden_size=draw(st.integers(1, 5)),
        num_layers=draw(st.integers(1, 2)), cell=draw(st.sampled_from(["lstm", "gru", "rnn"])),
        embedding_dim=draw(st.one_of(st.none(), st.integers(1, 4))), dtype="float64",
        dropout=draw(st.sampled_from([0.0, 0.4])), num_labels=draw(st.integers(1, 4)),
        bidirectional=draw(st.booleans()), pooling=draw(st.sampled_from(["attention", "last"])),
        attention_size=draw(st.integers(1, 4)))
    B, T = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    lengths = np.array(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    lengths[draw(st.integers(0, B - 1))] = T          # the batch is as long as its longest
    return cfg, lengths, draw(st.integers(0, 2**16)), draw(st.booleans())


def torch_twin(model: Classifier) -> TorchClassifier:
    twin = TorchClassifier(model.config)
    with torch.no_grad():
        for name, p in twin.named_parameters():
            p.copy_(torch.from_numpy(model.params[name]))
    return twin


@settings(max_examples=40)
@given(case=classifier_cases())
def test_forward_and_every_gradient_match_torch_autograd(case):
    cfg, lengths, seed, training = case
    rng = np.random.default_rng(seed)
    model = Classifier(cfg, seed=seed)
    twin = torch_twin(model)
    B, T = lengths.size, int(lengths.max())
    tokens = rng.integers(0, cfg.vocab_size, (B, T))
    masks = None
    model.train(training)
    twin.train(training)
    if training and cfg.dropout_mask_shapes(T, B):
        masks = draw_dropout_masks(rng, cfg.dropout, cfg.dropout_mask_shapes(T, B))
    upstream = rng.standard_normal((B, cfg.num_labels))
    model.zero_grad()
    logits, weights = model(tokens, lengths, masks)
    model.backward(upstream)
    t_masks = None if masks is None else [
        torch.from_numpy(scale_dropout_mask(m, cfg.dropout, np.float64)) for m in masks]
    t_logits, t_weights = twin(torch.from_numpy(tokens), torch.from_numpy(lengths), t_masks)
    (t_logits * torch.from_numpy(upstream)).sum().backward()
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=0, atol=RTOL)
    if cfg.pooling == "attention":
        np.testing.assert_allclose(weights, t_weights.detach().numpy(), rtol=0, atol=RTOL)
        assert np.all(weights[np.arange(T)[:, None] >= lengths[None]] == 0)   # padding
    else:
        assert weights is None and t_weights is None
    for name, p in twin.named_parameters():
        scale = max(1.0, float(p.grad.abs().max()))
        np.testing.assert_allclose(model.grads[name], p.grad.numpy(), rtol=0, atol=RTOL * scale,
                                   err_msg=name)


@pytest.mark.parametrize("pooling", ["attention", "last"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_every_gradient_matches_finite_differences(pooling, cell):
    cfg = ClassifierConfig(vocab_size=5, hidden_size=3, num_layers=2, cell=cell,
                           dtype="float64", num_labels=3, pooling=pooling, attention_size=2)
    model = Classifier(cfg, seed=4)
    rng = np.random.default_rng(0)
    tokens, lengths = rng.integers(0, 5, (3, 4)), np.array([4, 1, 3])

    def vjp(upstream):
        model.zero_grad()
        model(tokens, lengths)
        model.backward(upstream)
        return {k: g.copy() for k, g in model.grads.items()}

    report = check_function(lambda: model(tokens, lengths)[0], model.params, vjp)
    assert report.ok(1e-6), str(report)


def test_a_name_gives_the_same_logits_alone_as_in_a_padded_batch():
    """Each sequence closes at its length: the padding after it changes nothing, in either
    direction, neither the logits nor the attention."""
    cfg = ClassifierConfig(vocab_size=6, hidden_size=4, num_layers=2, dtype="float64",
                           num_labels=3, attention_size=3)
    model = Classifier(cfg, seed=1).eval()
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 6, (3, 7))
    lengths = np.array([7, 2, 5])
    logits, weights = model.classify(tokens, lengths)
    for b in range(3):
        alone, w = model.classify(tokens[b:b + 1, :lengths[b]], lengths[b:b + 1])
        np.testing.assert_allclose(logits[b], alone[0], rtol=0, atol=1e-13)
        np.testing.assert_allclose(weights[b, :lengths[b]], w[0], rtol=0, atol=1e-13)


def test_parameter_names_are_torchs_for_the_same_model():
    cfg = ClassifierConfig(vocab_size=6, hidden_size=4, dtype="float64", num_labels=3)
    model = Classifier(cfg, seed=0)
    assert list(model.params) == [n for n, _ in TorchClassifier(cfg).named_parameters()]
    assert {"attention.proj.weight", "attention.score.weight", "rnn.weight_hh_l0_reverse",
            "decoder.bias"} <= set(model.params)
    last = Classifier(ClassifierConfig(vocab_size=6, hidden_size=4, num_labels=3,
                                       pooling="last"), seed=0)
    assert not any(k.startswith("attention") for k in last.params)
    assert last.params["decoder.weight"].shape == (3, 8)      # both directions' final h


# --------------------------------------------------------------------------------------------
# Through the driver: both backends, checkpoints, resume
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_both_backends_log_the_same_losses(labelled, tmp_path, cell):
    kw = dict(cell=cell, num_layers=2, dropout=0.2)
    train(tiny(tmp_path / "np", backend="numpy", **kw))
    train(tiny(tmp_path / "torch", backend="torch", **kw))
    a, b = read_losses(tmp_path / "np"), read_losses(tmp_path / "torch")
    assert len(a) == 50
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=0)
    assert np.mean(a[-10:]) < np.mean(a[:10])                 # it learns


def test_a_checkpoint_predicts_the_same_in_both_backends(labelled, tmp_path):
    train(tiny(tmp_path / "run", pooling="attention"))
    weights, meta = load_checkpoint(tmp_path / "run" / "best.npz")
    corpus = load_labelled_corpus("plants")
    names = corpus.val_names[:20]
    got = [predict_names(backend_from_checkpoint(weights, meta, b), corpus.vocab, names)
           for b in ("numpy", "torch")]
    np.testing.assert_allclose(got[0][0], got[1][0], rtol=0, atol=1e-12)
    for wa, wb in zip(got[0][1], got[1][1]):
        np.testing.assert_allclose(wa, wb, rtol=0, atol=1e-12)
    assert meta["task"] == "classify"
    assert meta["vocabularies"]["labels"]["entries"] == list(corpus.labels)


def test_resume_equals_an_uninterrupted_run_and_crosses_backends(labelled, tmp_path):
    train(tiny(tmp_path / "straight", steps=40))
    train(tiny(tmp_path / "resumed", steps=20))
    train(resume_config(tmp_path / "resumed", {"steps": 40, "backend": "torch"}))
    np.testing.assert_allclose(read_losses(tmp_path / "resumed"),
                               read_losses(tmp_path / "straight"), rtol=1e-9, atol=0)


def test_validation_reports_bce_and_average_precisions(labelled, tmp_path):
    summary = train(tiny(tmp_path / "run", steps=150, eval_every=150, hidden_size=16,
                         lr=1e-2))
    metrics = summary.val_metrics
    assert {"val_loss", "micro_ap", "macro_ap", "ap_hi", "ap_ak", "ap_pr", "ap_ca",
            "ap_fl"} <= set(metrics)
    corpus = load_labelled_corpus("plants")
    base = micro_average_precision(np.tile(corpus.train_targets.mean(0),
                                           (len(corpus.val_names), 1)), corpus.val_targets)
    assert metrics["micro_ap"] > base + 0.1         # beats each region's frequency by far


# --------------------------------------------------------------------------------------------
# Average precision
# --------------------------------------------------------------------------------------------


def brute_force_ap(scores, positives):
    """AP from its definition: at each distinct threshold, precision times the recall gained."""
    thresholds = sorted(set(scores), reverse=True)
    total, prev_recall, n_pos = 0.0, 0.0, sum(positives)
    for th in thresholds:
        picked = [p for s, p in zip(scores, positives) if s >= th]
        recall = sum(picked) / n_pos
        total += (recall - prev_recall) * (sum(picked) / len(picked))
        prev_recall = recall
    return total


@settings(max_examples=60)
@given(data=st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=30))
def test_average_precision_is_its_definition_with_ties_as_one_threshold(data):
    scores = [float(s) for s, _ in data]
    positives = [p for _, p in data]
    got = average_precision(np.array(scores), np.array(positives))
    if not any(positives):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(brute_force_ap(scores, positives), abs=1e-12)


def test_average_precision_known_values():
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 1])) == \
        pytest.approx((1 / 2) * 1 + (1 / 2) * (2 / 3))
    assert average_precision(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 0, 0])) == 0.25
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.3]])
    targets = np.array([[1, 0], [0, 1], [1, 0]], bool)
    assert macro_average_precision(scores, targets) == pytest.approx(1.0)
    assert micro_average_precision(scores, targets) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# Labelled corpora
# --------------------------------------------------------------------------------------------


def test_labelled_lines_merge_repeated_names_and_drop_empty_codes():
    names, codes = parse_labelled_lines("b,x, y\n\na,z\nb,x,w\nc\n")
    assert names == ["b", "a", "c"]
    assert codes == [("x", "y", "w"), ("z",), ()]


def test_any_text_label_file_loads_with_the_names_split_and_sorted_labels(tmp_path):
    lines = [f"name{i},{'fr' if i % 2 else 'de'}{',en' if i % 3 == 0 else ''}" for i in range(60)]
    path = tmp_path / "languages.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    corpus = load_labelled_corpus(str(path))
    assert corpus.labels == ("de", "en", "fr")
    assert len(corpus.train_names) + len(corpus.val_names) == 60
    row = corpus.names.index("name3")
    where = corpus.val_names if "name3" in corpus.val_names else corpus.train_names
    targets = corpus.val_targets if where is corpus.val_names else corpus.train_targets
    assert targets[where.index("name3")].tolist() == [False, True, True]
    assert row == 3


def test_a_file_without_labels_is_refused_with_one_line(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("rosa\nabies\npinus\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no labels: each line must be text,label"):
        load_labelled_corpus(str(path))


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------





@pytest.fixture
def classifier(labelled, tmp_path, cli):
    status, _, err = cli("train", "--task", "classify", "--out", tmp_path / "cls",
                         "--hidden-size", "8", "--steps", "20", "--eval-every", "10",
                         "--batch-size", "16", "--dtype", "float64", "--quiet")
    assert status == 0, err
    return tmp_path / "cls" / "best.npz"


def test_predict_prints_the_top_regions_json_and_a_plot(classifier, cli, tmp_path,
                                                        monkeypatch):
    names = load_labelled_corpus("plants").val_names[:3]
    status, out, _ = cli("predict", "--checkpoint", classifier, "--top", "2", *names)
    assert status == 0
    lines = out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == names
    assert all(len(line.split("\t")[1].split("  ")) == 2 for line in lines)
    status, out, _ = cli("predict", "--checkpoint", classifier, "--json", names[0])
    record = json.loads(out)
    assert record["name"] == names[0]
    assert sorted(record["probabilities"]) == list(load_labelled_corpus("plants").labels)
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(names) + "\n"))
    png = tmp_path / "attention.png"
    status, out, _ = cli("predict", "--checkpoint", classifier, "--plot", png, "-")
    assert status == 0 and len(out.strip().splitlines()) == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status, out_torch, _ = cli("predict", "--checkpoint", classifier, "--backend", "torch",
                               *names)
    status, out_np, _ = cli("predict", "--checkpoint", classifier, *names)
    assert out_torch == out_np


def test_cli_errors_are_one_line_and_touch_nothing(classifier, cli, tmp_path):
    lm = tmp_path / "lm"
    status, _, err = cli("train", "--out", lm, "--hidden-size", "8", "--steps", "2",
                         "--eval-every", "2", "--seq-len", "8", "--batch-size", "2", "--quiet")
    assert status == 0, err
    png = tmp_path / "never.png"
    cases = [
        (("predict", "--checkpoint", lm / "best.npz", "rosa"), "predict needs a classify"),
        (("sample", "--checkpoint", classifier), "is a classifier"),
        (("predict", "--checkpoint", classifier, "Rosa!", "--plot", png),
         "characters not in the vocabulary"),
        (("evaluate", "--checkpoint", classifier, "--judge", classifier), "--judge needs a "
                                                                           "conditional"),
        (("train", "--task", "classify", "--seq-len", "5", "--out", tmp_path / "x"),
         "--seq-len does not apply to --task classify"),
    ]
    for argv, fragment in cases:
        status, _, err = cli(*argv)
        assert status == 2, argv
        assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not png.exists() and not (tmp_path / "x").exists()


def test_classify_on_a_corpus_without_labels_is_a_one_line_error(tmp_path, cli):
    path = tmp_path / "names.txt"
    path.write_text("rosa\nabies\n" * 20, encoding="utf-8")
    status, _, err = cli("train", "--task", "classify", "--data", path, "--out",
                         tmp_path / "run", "--quiet")
    assert status == 2 and "has no labels" in err and len(err.strip().splitlines()) == 1


def test_evaluate_json_has_the_metrics(classifier, cli):
    status, out, _ = cli("evaluate", "--checkpoint", classifier, "--json")
    assert status == 0
    metrics = json.loads(out)
    assert {"val_loss", "micro_ap", "macro_ap"} <= set(metrics)
    status, text, _ = cli("evaluate", "--checkpoint", classifier)
    assert "micro-AP" in text and "AP per region" in text
