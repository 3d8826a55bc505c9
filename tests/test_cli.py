"""Tests for the command line (numpy_rnn.driver.cli): every command end to end on a tiny model,
--help, and user errors that end in one line on stderr and a non-zero exit status, never a
traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY, assert_user_error

from numpy_rnn.driver import backend as backend_mod
from numpy_rnn.driver import cli as cli_mod
from numpy_rnn.driver import train as train_mod
from numpy_rnn.driver.backend import NumpyBackend, StepResult
from numpy_rnn.driver.checkpoint import load_checkpoint
from numpy_rnn.driver.cli import main
from numpy_rnn.tasks.lm import NOTEBOOK

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def plants(cli_plants):
    return cli_plants


@pytest.fixture
def trained(plants, trained_lm):
    return trained_lm


def _torch_or_skip():
    torch = pytest.importorskip("torch")
    try:
        import torch_ref.backend  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"torch_ref.backend not importable: {exc}")
    return torch


# --------------------------------------------------------------------------------------------
# Help
# --------------------------------------------------------------------------------------------


def test_python_dash_m_help_lists_the_commands():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "numpy_rnn", "--help"], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    for command in ("train", "sample", "evaluate", "convert"):
        assert command in res.stdout


def test_the_numpy_rnn_console_command_is_the_same_cli():
    from importlib.metadata import entry_points
    script = Path(sys.executable).parent / "numpy-rnn"
    if not script.exists():
        pytest.skip("numpy_rnn is not installed in this environment (pip install -e .)")
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("numpy-rnn") == "numpy_rnn.driver.cli:main"      # declared in setup.cfg
    res = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("usage: numpy-rnn")
    for command in ("train", "sample", "evaluate", "convert"):
        assert command in res.stdout
    bad = subprocess.run([str(script), "train", "--steps", "0"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: argument --steps: must be an integer >= 1, got 0 (see 'numpy-rnn train --help')"]


@pytest.mark.parametrize("command, flags", [
    ("train", ["--backend", "--cell", "--hidden-size", "--num-layers", "--embedding-dim",
               "--dropout", "--seq-len", "--batch-size", "--schedule", "--steps", "--lr",
               "--clip", "--dtype", "--seed", "--data", "--out", "--eval-every",
               "--sample-every", "--resume", "--device", "--lr-decay", "--stream-groups"]),
    ("sample", ["--checkpoint", "--backend", "--num-samples", "--temperature", "--top-k",
                "--top-p", "--prime", "--prime-file", "--max-length", "--seed", "--label"]),
    ("evaluate", ["--checkpoint", "--backend", "--data", "--json"]),
    ("convert", ["--notebook-state", "--data", "--out"]),
])
def test_help_explains_every_flag(run, command, flags):
    status, out, _ = run(command, "--help")
    assert status == 0
    text = " ".join(out.split())
    for flag in flags:
        assert flag in out
        # every flag is followed by an explanation, not just listed in the usage line
        after = text.split(f" {flag}", 2)[-1]
        assert len(after.split("--")[0].split()) >= 3, flag


def test_train_defaults_are_the_measured_recipe():
    # The README's "What the default run reaches" measures exactly these settings.
    d = train_mod.TrainConfig()
    o = d.options
    assert (o.cell, o.num_layers, o.hidden_size, o.embedding_dim, o.dropout, o.seq_len) == \
        ("lstm", 2, 256, None, 0.1, 150)
    assert (d.batch_size, o.schedule, o.stream_groups, o.dtype, d.steps, d.eval_every) == \
        (32, "stream", 10, "float32", 2200, 275)
    assert (d.lr, d.lr_decay, d.lr_final, d.lr_decay_steps, d.clip) == \
        (0.003, "cosine", 0.1, 2200, 5.0)


def test_notebook_preset_is_the_original_run():
    c = train_mod.TrainConfig(**NOTEBOOK)
    o = c.options
    assert (o.cell, o.num_layers, o.hidden_size, o.embedding_dim, o.dropout, o.dtype) == \
        ("lstm", 3, 512, None, 0.0, "float64")
    assert (c.batch_size, o.seq_len, o.schedule, c.steps, c.lr, c.lr_decay, c.clip) == \
        (1, 150, "random", 700, 0.002, "none", None)


def test_train_notebook_flag_applies_the_preset_and_lets_flags_override(monkeypatch):
    seen = {}

    def fake_train(config):
        seen["config"] = config
        return train_mod.TrainSummary(out=config.out, start_step=0, step=0)

    monkeypatch.setattr(cli_mod, "train", fake_train)
    assert main(["train", "--notebook", "--steps", "5", "--out", "x"]) == 0
    c = seen["config"]
    o = c.options
    assert (o.num_layers, o.hidden_size, o.dtype, o.schedule, c.batch_size, c.clip) == \
        (3, 512, "float64", "random", 1, None)
    assert c.steps == 5
    assert main(["train", "--stream-groups", "3", "--out", "x"]) == 0
    assert seen["config"].options.stream_groups == 3


def test_train_notebook_with_resume_is_a_one_line_error(capsys):
    assert main(["train", "--notebook", "--resume", "--out", "nowhere"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--notebook" in err and "--resume" in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------------------------
# The commands, end to end
# --------------------------------------------------------------------------------------------


def test_train_sample_evaluate(trained, run):
    assert {p.name for p in trained.iterdir()} >= {"checkpoint.npz", "best.npz",
                                                   "metrics.jsonl"}
    ckpt = trained / "checkpoint.npz"

    status, out, _ = run("sample", "--checkpoint", ckpt, "--num-samples", "6", "--seed", "3")
    assert status == 0
    names = out.rstrip("\n").split("\n")
    assert len(names) == 6
    _, again, _ = run("sample", "--checkpoint", ckpt, "--num-samples", "6", "--seed", "3")
    assert again == out

    status, out, err = run("sample", "--checkpoint", ckpt, "--num-samples", "5", "--label",
                           "--prime", "ros", "--temperature", "0.7", "--top-k", "5",
                           "--top-p", "0.9", "--max-length", "30")
    assert status == 0
    rows = [line.split("\t") for line in out.rstrip("\n").split("\n")]
    assert len(rows) == 5
    assert all(name.startswith("ros") and tag in ("train", "val", "new") for name, tag in rows)
    assert "new" in err

    status, out, _ = run("evaluate", "--checkpoint", ckpt)
    assert status == 0 and "nats/char" in out and "bits/char" in out
    status, out, _ = run("evaluate", "--checkpoint", ckpt, "--json")
    result = json.loads(out)
    assert result["val_loss"] > 0
    assert result["val_bpc"] == pytest.approx(result["val_loss"] / np.log(2))
    metrics = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert result["val_loss"] == pytest.approx(metrics[-1]["val_loss"], rel=1e-12)


def test_prime_file_and_length_mode(trained, run, tmp_path):
    prime = tmp_path / "prime.txt"
    prime.write_text("acer\npi", encoding="utf-8")
    status, out, _ = run("sample", "--checkpoint", trained / "checkpoint.npz", "--prime-file",
                         prime, "--num-samples", "2", "--stop", "length", "--max-length", "12")
    assert status == 0
    samples = out[:-1].split("\n" + "-" * 20 + "\n")
    assert len(samples) == 2 and all(s.startswith("pi") and len(s) == 14 for s in samples)


def test_resume_from_the_command_line_needs_only_the_new_step_count(trained, run):
    status, _, err = run("train", "--out", trained, "--resume", "--steps", "15", "--quiet")
    assert status == 0, err
    _, meta = load_checkpoint(trained / "checkpoint.npz")
    assert meta["step"] == 15 and meta["model_config"]["hidden_size"] == 16


def test_both_backends_sample_the_same_names_from_a_cli_checkpoint(trained, run):
    torch = _torch_or_skip()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ("sample", "--checkpoint", trained / "checkpoint.npz", "--num-samples", "8")
        status_np, out_np, _ = run(*args, "--backend", "numpy")
        status_t, out_t, err = run(*args, "--backend", "torch")
        assert status_np == status_t == 0, err
        assert out_np == out_t
        _, ev_np, _ = run("evaluate", "--checkpoint", trained / "checkpoint.npz", "--json")
        _, ev_t, _ = run("evaluate", "--checkpoint", trained / "checkpoint.npz", "--json",
                         "--backend", "torch")
        assert json.loads(ev_np)["val_loss"] == pytest.approx(json.loads(ev_t)["val_loss"],
                                                              rel=1e-10)
    finally:
        torch.set_num_threads(threads)


def test_convert_the_notebooks_weights(plants, tmp_path, run):
    torch = _torch_or_skip()
    from numpy_rnn.tasks.corpus import load_corpus
    V = len(load_corpus("plants").vocab)
    torch.manual_seed(0)
    # The notebook's model: Embedding(V, V) -> LSTM(V, 512, 3) -> Linear(512, V), in float64.
    parts = {"encoder": torch.nn.Embedding(V, V), "lstm": torch.nn.LSTM(V, 512, 3),
             "decoder": torch.nn.Linear(512, V)}
    state = {f"{p}.{k}": v.double() for p, m in parts.items() for k, v in m.state_dict().items()}
    pt = tmp_path / "notebook.pt"
    torch.save(state, pt)

    out = tmp_path / "converted.npz"
    status, stdout, err = run("convert", "--notebook-state", pt, "--data", "plants", "--out", out)
    assert status == 0, err
    weights, meta = load_checkpoint(out)
    assert meta["step"] == 0 and meta["optimizer"] is None
    assert meta["model_config"]["hidden_size"] == 512 and meta["model_config"]["num_layers"] == 3
    np.testing.assert_array_equal(weights["rnn.weight_hh_l2"], state["lstm.weight_hh_l2"].numpy())
    status, stdout, _ = run("sample", "--checkpoint", out, "--num-samples", "2",
                            "--max-length", "5")
    assert status == 0 and len(stdout.rstrip("\n").split("\n")) == 2
    # a converted checkpoint holds no training state to resume
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "checkpoint.npz").write_bytes(out.read_bytes())
    assert_user_error(*run("train", "--out", tmp_path / "x", "--resume")[::2],
                      "no training state")

    # the vocabulary of another corpus does not fit
    other = tmp_path / "other.txt"
    other.write_text("abc\n" * 50, encoding="utf-8")
    status, _, err = run("convert", "--notebook-state", pt, "--data", other, "--out",
                         tmp_path / "bad.npz")
    assert_user_error(status, err, "vocabulary")
    assert not (tmp_path / "bad.npz").exists()


# --------------------------------------------------------------------------------------------
# User errors: one line on stderr, non-zero status, nothing lost
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, fragment", [
    (["--temperature", "0"], "temperature"),
    (["--temperature", "-1"], "temperature"),
    (["--temperature", "hot"], "temperature"),
    (["--top-p", "0"], "top-p"),
    (["--top-p", "1.5"], "top-p"),
    (["--top-k", "0"], "top-k"),
    (["--num-samples", "0"], "num-samples"),
    (["--prime", "rosa#"], "'#'"),
    (["--prime", "ab", "--prime-file", "x"], "not allowed"),
    (["--backend", "jax"], "backend"),
])
def test_bad_sample_flags(trained, run, extra, fragment):
    status, _, err = run("sample", "--checkpoint", trained / "checkpoint.npz", *extra)
    assert_user_error(status, err, fragment)


def test_bad_prime_files(trained, run, tmp_path):
    bad = tmp_path / "latin.txt"
    bad.write_bytes("ró\xbfa".encode("latin-1"))
    ckpt = trained / "checkpoint.npz"
    assert_user_error(*run("sample", "--checkpoint", ckpt, "--prime-file", bad)[::2], "UTF-8")
    assert_user_error(*run("sample", "--checkpoint", ckpt, "--prime-file",
                           tmp_path / "none.txt")[::2], "none.txt")


def test_bad_checkpoints(trained, run, tmp_path):
    good = trained / "checkpoint.npz"
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:1000])
    corrupted = tmp_path / "corrupted.npz"
    data = bytearray(good.read_bytes())
    start = data.index(b"\x93NUMPY") + 300
    data[start:start + 32] = bytes(32)
    corrupted.write_bytes(bytes(data))
    for path, fragment in ((tmp_path / "missing.npz", "no checkpoint"),
                           (truncated, "truncated"), (corrupted, "corrupted.npz")):
        for command in ("sample", "evaluate"):
            assert_user_error(*run(command, "--checkpoint", path)[::2], fragment)


def test_evaluate_on_a_corpus_with_another_vocabulary(trained, run, tmp_path):
    other = tmp_path / "digits.txt"
    other.write_text("0123456789\n" * 50, encoding="utf-8")
    status, _, err = run("evaluate", "--checkpoint", trained / "checkpoint.npz", "--data", other)
    assert_user_error(status, err, "vocabulary")


@pytest.mark.parametrize("content, fragment", [
    (b"", "empty"),
    (b"short text", "shorter|too short"),
    ("za\xbf\xf3\xb3\xe6 g\xea\xb6l\xb1 ".encode("latin-1") * 40, "UTF-8"),
])
def test_bad_corpora(plants, run, tmp_path, content, fragment):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    status, _, err = run("train", *TINY, "--data", corpus, "--out", tmp_path / "out")
    assert status == 2 and "Traceback" not in err
    import re
    assert re.search(fragment, err), err
    assert not (tmp_path / "out" / "checkpoint.npz").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--lr", "0"], "--lr"),
    (["train", "--steps", "-3"], "--steps"),
    (["train", "--dropout", "1"], "--dropout"),
    (["train", "--schedule", "shuffle"], "--schedule"),
    (["train", "--stream-groups", "0"], "--stream-groups"),
    (["train", "--dtype", "float16"], "--dtype"),
    (["train", "--lr-final", "2"], "--lr-final"),
    (["train", "--no-such-flag"], "unrecognized"),
    (["train", "--resume", "--out", "{tmp}/nothing-here"], "no checkpoint"),
    (["train", "--data", "{tmp}/no-file.txt", "--out", "{tmp}/o"], "does not exist"),
    (["train", "--backend", "numpy", "--device", "cuda", "--out", "{tmp}/o", *TINY], "cpu"),
    (["sample"], "--checkpoint"),
    (["evaluate", "--checkpoint", "{tmp}/no.npz"], "no checkpoint"),
    (["convert", "--notebook-state", "{tmp}/no.pt"], "no.pt"),
    ([], "command"),
])
def test_bad_command_lines(plants, run, tmp_path, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[:1] == ["convert"]:
        _torch_or_skip()
    assert_user_error(*run(*argv)[::2], fragment)


def test_resume_with_another_model_is_refused_and_keeps_the_checkpoint(trained, run):
    before = (trained / "checkpoint.npz").read_bytes()
    status, _, err = run("train", "--out", trained, "--resume", "--steps", "20",
                         "--hidden-size", "32")
    assert_user_error(status, err, "hidden_size")
    status, _, err = run("train", *TINY, "--out", trained, "--steps", "20")
    assert_user_error(status, err, "--resume", "--overwrite")
    assert (trained / "checkpoint.npz").read_bytes() == before


def test_diverged_training_exits_non_zero_with_one_line(plants, run, tmp_path, monkeypatch):
    original = NumpyBackend.train_step

    def nan_at_step_7(self, inputs, targets, state, dropout_masks=None):
        result = original(self, inputs, targets, state, dropout_masks)
        if self.optimizer.state["decoder.bias"]["step"] >= 7:
            return StepResult(float("nan"), result.grad_norm, result.state)
        return result

    monkeypatch.setattr(backend_mod.NumpyBackend, "train_step", nan_at_step_7)
    status, _, err = run("train", *TINY, "--steps", "10", "--out", tmp_path / "out")
    assert status == 1
    assert len(err.strip().splitlines()) == 1 and "nan" in err and "step 5" in err
    assert load_checkpoint(tmp_path / "out" / "checkpoint.npz")[1]["step"] == 5
