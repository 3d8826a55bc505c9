"""Tests for numpy_rnn.driver.train: exact resume, metrics, checkpoints, lr schedule, and errors
that lose nothing. Tiny models on a small corpus written to a temporary directory."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import read_metrics

from numpy_rnn.driver import backend as backend_mod
from numpy_rnn.driver import train as train_mod
from numpy_rnn.driver.backend import NumpyBackend, StepResult
from numpy_rnn.driver.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpy_rnn.driver.train import (
    TrainConfig,
    TrainingDiverged,
    lr_at,
    resume_config,
    train,
)
from numpy_rnn.nn.losses import cross_entropy
from numpy_rnn.tasks import get_task
from numpy_rnn.tasks.corpus import load_corpus
from numpy_rnn.tasks.lm import CharRNN, validation_loss
from numpy_rnn.tasks.lm_batches import NameStreamBatcher, StreamBatcher, validation_segments


@pytest.fixture(autouse=True)
def _no_plots_unless_tested(request, monkeypatch):
    # Drawing the PNG takes ~1 s (and importing matplotlib ~3 s): only the tests about the plot
    # draw it.
    if "plot" not in request.node.name:
        monkeypatch.setattr(train_mod, "plot_losses", lambda *a, **k: None)


def tiny(out: Path, **kw) -> TrainConfig:
    base = dict(hidden_size=16, num_layers=1, seq_len=16, batch_size=4, steps=20,
                eval_every=10, sample_every=10, num_eval_samples=2, dtype="float64",
                out=str(out), quiet=True)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def torch():
    """torch, with the torch backend importable, on one thread for the test (tiny models run
    ~10x faster than on two threads that compete with NumPy's BLAS threads); else skip."""
    torch = pytest.importorskip("torch")
    try:
        import torch_ref.backend  # noqa: F401
    except ImportError as exc:  # written elsewhere; may not exist yet
        pytest.skip(f"torch_ref.backend not importable: {exc}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# Resume equals uninterrupted
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule, cell, layers, dropout, dtype", [
    ("random", "lstm", 1, 0.0, "float64"),
    ("stream", "lstm", 2, 0.2, "float64"),
    ("stream", "gru", 1, 0.0, "float32"),
])
def test_resume_logs_the_same_losses_as_an_uninterrupted_run(plants, tmp_path, schedule, cell,
                                                             layers, dropout, dtype):
    kw = dict(schedule=schedule, cell=cell, num_layers=layers, dropout=dropout, dtype=dtype)
    # The stream schedule must wrap around inside the run (the reset path) for the test to
    # cover it: 8 x 16 characters per step against ~3,500 of training text.
    if schedule == "stream":
        kw["batch_size"] = 8
    straight = train(tiny(tmp_path / "straight", steps=40, **kw))
    first = train(tiny(tmp_path / "resumed", steps=20, **kw))
    assert first.step == 20
    second = train(resume_config(tmp_path / "resumed", {"steps": 40}))
    assert second.start_step == 20 and second.step == 40

    want = read_metrics(tmp_path / "straight")
    got = read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in got] == list(range(1, 41))
    assert [r["loss"] for r in got] == [r["loss"] for r in want]        # exactly, every step
    assert [r.get("val_loss") for r in got] == [r.get("val_loss") for r in want]
    assert second.val_loss == straight.val_loss


def test_resume_is_exact_in_the_torch_backend_too(plants, tmp_path, torch):
    kw = dict(backend="torch", schedule="stream", num_layers=2, dropout=0.2, batch_size=8)
    torch.manual_seed(5)     # torch's own generator plays no part: the driver draws the masks
    train(tiny(tmp_path / "straight", steps=16, eval_every=8, **kw))
    torch.manual_seed(6)
    train(tiny(tmp_path / "resumed", steps=8, eval_every=8, **kw))
    torch.manual_seed(99)   # the resumed part must not depend on the global state: restored
    train(resume_config(tmp_path / "resumed", {"steps": 16}))
    assert [r["loss"] for r in read_metrics(tmp_path / "resumed")] == \
        [r["loss"] for r in read_metrics(tmp_path / "straight")]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_the_seed_fixes_the_dropout_masks(plants, tmp_path, backend, request):
    if backend == "torch":
        request.getfixturevalue("torch")
    kw = dict(backend=backend, num_layers=2, dropout=0.5, steps=4, eval_every=4)
    a = train(tiny(tmp_path / "a", **kw)).losses
    b = train(tiny(tmp_path / "b", **kw)).losses
    c = train(tiny(tmp_path / "c", seed=7, **kw)).losses
    d = train(tiny(tmp_path / "d", seed=7, dropout=0.0, num_layers=2, steps=4, eval_every=4,
                   backend=backend)).losses
    assert a == b
    assert c != d            # dropout really acts, so equal runs mean equal masks


@pytest.mark.parametrize("schedule", ["random", "stream"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_both_backends_log_the_same_losses_with_dropout(plants, tmp_path, torch, cell, schedule):
    # The driver draws every dropout mask: with one seed both backends take the same steps.
    kw = dict(cell=cell, schedule=schedule, num_layers=2, dropout=0.3, steps=50, eval_every=25,
              batch_size=8)
    a = read_metrics_of(train(tiny(tmp_path / "np", backend="numpy", **kw)))
    b = read_metrics_of(train(tiny(tmp_path / "torch", backend="torch", **kw)))
    assert len(a) == len(b) == 50
    for ra, rb in zip(a, b):
        assert abs(ra["loss"] - rb["loss"]) <= 1e-9 * abs(rb["loss"]), (ra, rb)
    nodrop = train(tiny(tmp_path / "nodrop", backend="numpy", **{**kw, "dropout": 0.0}))
    assert nodrop.losses[1:] != [r["loss"] for r in a][1:]   # the masks really act


@pytest.mark.parametrize("first, then", [("numpy", "torch"), ("torch", "numpy")])
def test_resume_across_backends_with_dropout_is_exact(plants, tmp_path, torch, first, then):
    kw = dict(schedule="stream", num_layers=2, dropout=0.3, batch_size=8, eval_every=10)
    straight = {b: train(tiny(tmp_path / f"straight-{b}", steps=40, backend=b, **kw)).losses
                for b in ("numpy", "torch")}
    train(tiny(tmp_path / "resumed", steps=20, backend=first, **kw))
    train(resume_config(tmp_path / "resumed", {"steps": 40, "backend": then}))
    got = [r["loss"] for r in read_metrics(tmp_path / "resumed")]
    for want in straight.values():
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)


def test_a_checkpoint_from_before_driver_masks_still_resumes(plants, tmp_path):
    kw = dict(schedule="stream", num_layers=2, dropout=0.3, batch_size=8, eval_every=10)
    train(tiny(tmp_path / "old", steps=10, **kw))
    path = tmp_path / "old" / "checkpoint.npz"
    weights, meta = load_checkpoint(path)
    del meta["train"]["dropout_rng"]            # as written before the driver drew the masks
    meta["train"]["backend_rng"] = {"cpu": np.zeros(8, np.uint8)}
    save_checkpoint(path, weights, meta)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in (tmp_path / "old").iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    lines: list[str] = []
    a = train(dataclasses.replace(resume_config(tmp_path / "old", {"steps": 20}), quiet=False),
              log=lines.append)
    b = train(resume_config(copy, {"steps": 20}))
    assert a.start_step == 10 and a.step == 20
    assert a.losses == b.losses                   # deterministic: seeded by (seed, step)
    assert any("predates dropout masks drawn by the driver" in line for line in lines)
    _, meta = load_checkpoint(path)
    assert "dropout_rng" in meta["train"]         # and saved the new way from then on


def read_metrics_of(summary) -> list[dict]:
    return read_metrics(Path(summary.out))


def test_one_seed_is_the_same_start_in_both_backends(plants, tmp_path, torch):
    a = train(tiny(tmp_path / "np", steps=3, backend="numpy"))
    b = train(tiny(tmp_path / "torch", steps=3, backend="torch"))
    np.testing.assert_allclose(b.losses, a.losses, rtol=0, atol=1e-9)
    wa, _ = load_checkpoint(tmp_path / "np" / "checkpoint.npz")
    wb, _ = load_checkpoint(tmp_path / "torch" / "checkpoint.npz")
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=0, atol=1e-9)


def test_initial_weights_come_from_the_seed(plants, tmp_path, monkeypatch):
    seen = {}
    original = NumpyBackend.train_step

    def spy(self, inputs, targets, state, dropout_masks=None):
        seen.setdefault("weights", self.state_dict())
        return original(self, inputs, targets, state, dropout_masks)

    monkeypatch.setattr(NumpyBackend, "train_step", spy)
    config = tiny(tmp_path / "out", steps=1, seed=42)
    train(config)
    want = CharRNN(get_task("lm").model_config(config, load_corpus("plants")),
                   seed=42).state_dict()
    for k, w in want.items():
        np.testing.assert_array_equal(seen["weights"][k], w)


# --------------------------------------------------------------------------------------------
# What a run writes
# --------------------------------------------------------------------------------------------


def test_run_writes_metrics_checkpoints_and_plot(plants, tmp_path):
    out = tmp_path / "out"
    summary = train(tiny(out, steps=25, eval_every=10))
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 26))
    assert all(isinstance(r["loss"], float) and math.isfinite(r["loss"]) for r in records)
    assert [r["step"] for r in records if "val_loss" in r] == [10, 20, 25]
    for r in records:
        if "val_loss" in r:
            assert r["val_bpc"] == pytest.approx(r["val_loss"] / math.log(2))
    assert summary.losses == [r["loss"] for r in records]
    assert summary.val_loss == records[-1]["val_loss"]
    assert summary.best_val_loss == min(r["val_loss"] for r in records if "val_loss" in r)
    assert summary.chars_per_s > 0
    elapsed = [r["elapsed_s"] for r in records]
    assert elapsed == sorted(elapsed) and 0 < elapsed[0] <= elapsed[-1] <= summary.wall_time_s

    _, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["step"] == 25 and meta["data"] == "plants"
    assert meta["options"]["hidden_size"] == 16 and meta["train"]["config"]["steps"] == 25
    assert "hidden_size" not in meta["train"]["config"]      # the loop's and the task's apart
    _, best = load_checkpoint(out / "best.npz")
    assert best["step"] == summary.best_step
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_lines_report_validation_in_nats_and_bits(plants, tmp_path):
    lines: list[str] = []
    train(tiny(tmp_path / "out", steps=10, quiet=False), log=lines.append)
    text = "\n".join(lines)
    assert "nats/char" in text and "bits/char" in text and "chars/s" in text
    assert "sample at step 10" in text


def test_resume_drops_metrics_lines_after_the_checkpoint(plants, tmp_path):
    out = tmp_path / "out"
    train(tiny(out, steps=10))
    with open(out / "metrics.jsonl", "a") as f:   # steps logged after the last checkpoint
        f.write(json.dumps({"step": 11, "loss": 9.0}) + "\n")
        f.write('{"step": 12, "lo')                 # and a line cut short by a kill
    train(resume_config(out, {"steps": 15}))
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 16))
    assert records[10]["loss"] != 9.0


def test_text_file_corpus_trains_and_samples_text(tmp_path):
    text_file = tmp_path / "story.txt"
    text_file.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    lines: list[str] = []
    summary = train(tiny(tmp_path / "out", data=str(text_file), steps=10, quiet=False),
                    log=lines.append)
    assert math.isfinite(summary.val_loss)
    _, meta = load_checkpoint(tmp_path / "out" / "checkpoint.npz")
    assert meta["data"] == str(text_file.resolve())


# --------------------------------------------------------------------------------------------
# The learning rate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_lr_decays_from_lr_to_the_final_fraction(decay):
    config = TrainConfig(steps=300, lr=0.01, lr_decay=decay, lr_final=0.1, lr_decay_steps=101)
    rates = [lr_at(s, config) for s in range(1, 102)]
    assert lr_at(300, config) == pytest.approx(0.001)       # constant after the horizon
    assert rates[0] == pytest.approx(0.01) and rates[-1] == pytest.approx(0.001)
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert lr_at(51, config) == pytest.approx(0.0055)


def test_lr_is_constant_without_decay(plants, tmp_path):
    assert lr_at(7, TrainConfig(lr=0.003, lr_decay="none")) == 0.003
    train(tiny(tmp_path / "out", steps=5, lr_decay="cosine", lr_decay_steps=5, lr=0.01))
    rates = [r["lr"] for r in read_metrics(tmp_path / "out")]
    assert rates[0] == pytest.approx(0.01) and rates[-1] == pytest.approx(0.001)


# --------------------------------------------------------------------------------------------
# Validation loss, measured one way
# --------------------------------------------------------------------------------------------


def test_validation_loss_is_the_mean_over_segments_run_from_zero(plants):
    corpus = load_corpus("plants")
    config = get_task("lm").model_config(tiny(Path("unused")), corpus)
    backend = NumpyBackend(config, backend_mod.OptimConfig())
    backend.load_state_dict(CharRNN(config, seed=3).state_dict())
    inputs, targets = validation_segments(corpus.vocab.encode(corpus.val_text))
    logits, _ = backend.logits(inputs, None)
    want, _ = cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    for chunk in (7, 256, 10_000):   # chunking in time, state carried, changes nothing
        val = validation_loss(backend, corpus.vocab, corpus.val_text, chunk_len=chunk)
        assert val.loss == pytest.approx(want, rel=1e-12)
        assert val.bpc == pytest.approx(want / math.log(2), rel=1e-12)
        assert val.chars == targets.size
    assert inputs.shape[0] == 16


# --------------------------------------------------------------------------------------------
# Bad input: a clear error, nothing lost
# --------------------------------------------------------------------------------------------


def _write_and_expect(tmp_path, content: bytes, match: str, **kw):
    f = tmp_path / "corpus.txt"
    f.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        train(tiny(out, data=str(f), **kw))
    assert not (out / "checkpoint.npz").exists()


def test_empty_corpus_is_refused(tmp_path):
    _write_and_expect(tmp_path, b"", "empty")


def test_corpus_shorter_than_one_window_is_refused(tmp_path):
    _write_and_expect(tmp_path, b"abcdefghij", "too short|shorter", schedule="random")
    _write_and_expect(tmp_path, b"abcdefghij" * 2, "too short|shorter", schedule="stream")


def test_non_utf8_corpus_is_refused(tmp_path):
    _write_and_expect(tmp_path, "zażółć gęślą jaźń ".encode("iso8859_2") * 50, "UTF-8")


def test_missing_corpus_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        train(tiny(tmp_path / "out", data=str(tmp_path / "nope.txt")))


def test_resume_without_a_checkpoint_is_refused(plants, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(tiny(tmp_path / "out", resume=True))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resume_config(tmp_path / "out", {"steps": 5})


def test_resume_with_another_model_or_batching_is_refused(plants, tmp_path):
    out = tmp_path / "out"
    train(tiny(out, steps=5))
    before = (out / "checkpoint.npz").read_bytes()
    with pytest.raises(CheckpointError, match="hidden_size=16"):
        train(resume_config(out, {"steps": 10, "hidden_size": 32}))
    with pytest.raises(CheckpointError, match="batch_size"):
        train(resume_config(out, {"steps": 10, "batch_size": 2}))
    with pytest.raises(ValueError, match="already at step 5"):
        train(resume_config(out, {"steps": 5}))
    assert (out / "checkpoint.npz").read_bytes() == before


def test_stream_schedule_deals_the_training_names_into_random_groups(plants, tmp_path,
                                                                    monkeypatch):
    # The driver's stream over plant names is NameStreamBatcher's, seeded by --seed, across
    # a re-deal (wraparound) inside the run; --stream-groups 1 is the file order.
    seen: list[np.ndarray] = []
    original = NumpyBackend.train_step

    def spy(self, inputs, targets, state, dropout_masks=None):
        seen.append(inputs.copy())
        return original(self, inputs, targets, state, dropout_masks)

    monkeypatch.setattr(NumpyBackend, "train_step", spy)
    corpus = load_corpus("plants")
    names = [corpus.vocab.encode(n + "\n") for n in corpus.train_names]
    for groups in (10, 1):
        seen.clear()
        config = tiny(tmp_path / f"g{groups}", schedule="stream", batch_size=8, steps=40,
                      seed=7, stream_groups=groups)
        train(config)
        want = NameStreamBatcher(names, 8, config.options.seq_len, groups=groups, seed=7)
        assert want.chunks_per_epoch < 40
        for got in seen:
            np.testing.assert_array_equal(got, next(want).inputs)
    first_epoch = StreamBatcher(corpus.vocab.encode(corpus.train_text), 8, 16)
    np.testing.assert_array_equal(seen[0], next(first_epoch).inputs)    # groups=1: file order


def test_resume_with_other_stream_groups_is_refused_and_old_runs_keep_file_order(plants,
                                                                                 tmp_path):
    out = tmp_path / "out"
    kw = dict(schedule="stream", batch_size=8)
    train(tiny(out, steps=5, **kw))
    with pytest.raises(CheckpointError, match="stream_groups 10 \\(asked for 3\\)"):
        train(resume_config(out, {"steps": 10, "stream_groups": 3}))
    # A run saved before --stream-groups existed streamed the file order: it resumes so. (Its
    # settings were one flat config then, the task's among the loop's.)
    train(tiny(tmp_path / "old", steps=5, stream_groups=1, **kw))
    weights, meta = load_checkpoint(tmp_path / "old" / "checkpoint.npz")
    meta["train"]["config"].update(meta.pop("options"))
    del meta["train"]["config"]["stream_groups"]
    save_checkpoint(tmp_path / "old" / "checkpoint.npz", weights, meta)
    assert resume_config(tmp_path / "old", {"steps": 10}).options.stream_groups == 1
    with pytest.raises(CheckpointError, match="stream_groups 1"):
        train(dataclasses.replace(resume_config(tmp_path / "old", {"steps": 10}),
                                  stream_groups=10))
    straight = train(tiny(tmp_path / "straight", steps=10, stream_groups=1, **kw))
    resumed = train(resume_config(tmp_path / "old", {"steps": 10}))
    assert resumed.losses == straight.losses[5:]


def test_resume_on_a_corpus_with_another_vocabulary_is_refused(plants, tmp_path):
    out = tmp_path / "out"
    train(tiny(out, steps=5))
    other = tmp_path / "other.txt"
    other.write_text("0123456789 " * 100)
    with pytest.raises(CheckpointError, match="vocabulary"):
        train(resume_config(out, {"steps": 10, "data": str(other)}))


def test_a_new_run_does_not_overwrite_an_existing_one(plants, tmp_path):
    out = tmp_path / "out"
    train(tiny(out, steps=5))
    before = (out / "checkpoint.npz").read_bytes()
    with pytest.raises(ValueError, match=r"--resume|--overwrite"):
        train(tiny(out, steps=5))
    assert (out / "checkpoint.npz").read_bytes() == before
    (out / "best.npz").write_bytes(b"stale")
    train(tiny(out, steps=6, eval_every=100, overwrite=True))
    assert load_checkpoint(out / "checkpoint.npz")[1]["step"] == 6
    assert load_checkpoint(out / "best.npz")[1]["step"] == 6
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 7))


def test_invalid_options_are_refused():
    for bad in (dict(steps=0), dict(lr=0.0), dict(lr=float("nan")), dict(schedule="x"),
                dict(dtype="float16"), dict(clip=-1.0), dict(dropout=1.0), dict(cell="tcn"),
                dict(resume=True, overwrite=True), dict(lr_final=0.0)):
        with pytest.raises(ValueError):
            dataclasses.replace(TrainConfig(), **bad)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(plants, tmp_path,
                                                                  monkeypatch, bad_value):
    out = tmp_path / "out"
    original = NumpyBackend.train_step
    calls = {"n": 0}

    def diverging(self, inputs, targets, state, dropout_masks=None):
        calls["n"] += 1
        result = original(self, inputs, targets, state, dropout_masks)
        if calls["n"] >= 15:   # weights go bad after the step-10 checkpoint
            for p in self.model.params.values():
                p[...] = bad_value
            return StepResult(bad_value, result.grad_norm, result.state)
        return result

    monkeypatch.setattr(NumpyBackend, "train_step", diverging)
    with pytest.raises(TrainingDiverged, match="step 15") as e:
        train(tiny(out, steps=30, eval_every=10))
    assert "step 10" in str(e.value)              # says which checkpoint it kept
    weights, meta = load_checkpoint(out / "checkpoint.npz")   # still loads: finite weights
    assert meta["step"] == 10
    assert all(np.isfinite(w).all() for w in weights.values())
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 15))

    # The kept checkpoint resumes (with the bug gone) as if nothing had happened.
    monkeypatch.setattr(NumpyBackend, "train_step", original)
    assert train(resume_config(out, {"steps": 20})).step == 20


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_resume_is_exact(plants, tmp_path,
                                                                          monkeypatch):
    kw = dict(schedule="stream", steps=20, eval_every=50)
    train(tiny(tmp_path / "straight", **kw))

    original = NumpyBackend.train_step
    calls = {"n": 0}

    def interrupted(self, inputs, targets, state, dropout_masks=None):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)   # arrives mid-step; handled after it
        return original(self, inputs, targets, state, dropout_masks)

    monkeypatch.setattr(NumpyBackend, "train_step", interrupted)
    summary = train(tiny(tmp_path / "resumed", **kw))
    assert summary.interrupted and summary.step == 7
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.npz")[1]["step"] == 7
    monkeypatch.setattr(NumpyBackend, "train_step", original)
    train(resume_config(tmp_path / "resumed", {}))
    assert [r["loss"] for r in read_metrics(tmp_path / "resumed")] == \
        [r["loss"] for r in read_metrics(tmp_path / "straight")]
