"""Tests for the memory guard (numpy_rnn.driver.memory, the corpus limits of tasks.corpus): runs
that cannot fit are refused before anything is allocated, in one line naming what they need and
what the machine has; the estimates stay honest against what the layers hold and what a training
step allocates."""

from __future__ import annotations

import json
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.memory import held_bytes
from numpy_rnn.driver.backend import NumpyBackend, OptimConfig
from numpy_rnn.driver.checkpoint import load_checkpoint
from numpy_rnn.driver.cli import main
from numpy_rnn.driver.memory import (
    MEMORY_LIMIT_ENV,
    MemoryLimitError,
    available_bytes,
    check_fits,
)
from numpy_rnn.nn import GRU, LSTM, RNN, held_for_backward
from numpy_rnn.tasks import get_task
from numpy_rnn.tasks.corpus import MAX_NAME_LENGTH, MAX_VOCAB, load_corpus, load_labelled_corpus
from numpy_rnn.tasks.lm import CharRNN
from numpy_rnn.tasks.model import ModelConfig
from numpy_rnn.tasks.sizes import training_estimate


def estimate_training_bytes(config: ModelConfig, B: int, T: int):
    """The language model's training estimate of ``config`` on ``(B, T)`` windows."""
    return training_estimate(config, CharRNN.parameter_count(config), B, T)

TINY = ["--hidden-size", "16", "--num-layers", "1", "--seq-len", "16", "--batch-size", "4",
        "--eval-every", "5", "--sample-every", "5", "--dtype", "float64", "--quiet"]
NAMES_TINY = [*TINY[:4], *TINY[6:]]           # no --seq-len: names set their own length
GENERA = ["abelia", "rosa", "pinus", "acer", "quercus", "salix", "betula", "fagus", "tilia",
          "ulmus", "sorbus", "prunus", "malus", "pyrus", "carex", "viola", "iris", "allium",
          "juncus", "poa"]
EPITHETS = ["alba", "minor", "nana", "lutea", "major", "rubra", "nova", "bella", "hybrida",
            "canina", "nigra", "robur", "pendula", "cordata", "avium", "campestre", "grandis",
            "humilis", "repens", "vulgaris"]


def plant_lines() -> list[str]:
    """400 distinct names in plants.data's format (``name,region,region``)."""
    return [f"{g} {e},{'fl' if i % 2 else 'ca'},nc"
            for i, (g, e) in enumerate((g, e) for g in GENERA for e in EPITHETS)]


@pytest.fixture
def plants(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "plants.data").write_text("\n".join(plant_lines()) + "\n", encoding="utf-8")
    monkeypatch.setenv("NUMPY_RNN_DATA_DIR", str(data))
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "16G")      # the same answer on every machine
    monkeypatch.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
    return data


@pytest.fixture
def run(capsys):
    """``run(*argv) -> (status, stderr, seconds, peak traced bytes)`` through ``main``."""
    def _run(*argv: object) -> tuple[int, str, float, int]:
        tracemalloc.start()
        try:
            t0 = time.perf_counter()
            status = main([str(a) for a in argv])
            seconds = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return status, capsys.readouterr().err, seconds, peak
    return _run


def assert_refused(status: int, err: str, *fragments: str) -> None:
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# --------------------------------------------------------------------------------------------
# The refusals of the issue, each one line, fast, before any big allocation
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, shown", [
    ("--hidden-size", "100000", "x 100,000"),
    ("--embedding-dim", str(10**12), "embedding 1,000,000,000,000"),
])
def test_train_of_a_model_too_big_is_refused_in_one_line_before_allocating(
        plants, run, tmp_path, flag, value, shown):
    status, err, seconds, peak = run("train", *TINY, flag, value, "--out", tmp_path / "o")
    assert_refused(status, err, "GiB", shown, "16.0 GiB", MEMORY_LIMIT_ENV, "--hidden-size")
    assert seconds < 2 and peak < 50 * 2**20, (seconds, peak)
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


def test_train_message_says_the_machine_has_when_no_limit_is_set(plants, monkeypatch):
    monkeypatch.setattr("numpy_rnn.driver.memory.available_bytes", lambda: 21 * 2**30)
    monkeypatch.delenv(MEMORY_LIMIT_ENV)
    config = ModelConfig(vocab_size=60, hidden_size=100_000, num_layers=2, dtype="float32")
    with pytest.raises(MemoryLimitError, match=r"the model and batch need about [\d,.]+ GiB "
                                               r"\(LSTM 2 x 100,000, .*\) but this machine has "
                                               r"21\.0 GiB available: choose"):
        check_fits(estimate_training_bytes(config, 32, 150), "choose a smaller --hidden-size")


@pytest.fixture
def trained(plants, tmp_path, run):
    out = tmp_path / "run"
    status, err, _, _ = run("train", *TINY, "--steps", "2", "--out", out)
    assert status == 0, err
    return out / "checkpoint.npz"


def test_sample_of_a_trillion_streams_is_refused_at_once(trained, run):
    status, err, seconds, peak = run("sample", "--checkpoint", trained, "--num-samples",
                                     10**12)
    assert_refused(status, err, "sampling needs about", "1,000,000,000,000 samples",
                   "--num-samples")
    assert seconds < 1 and peak < 50 * 2**20, (seconds, peak)


def _claim(path: Path, out: Path, **config: object) -> Path:
    """A copy of checkpoint ``path`` whose metadata claims ``config``'s model fields."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    meta["model_config"].update(config)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(out, **arrays)
    assert zipfile.is_zipfile(out)
    return out


def test_a_checkpoint_claiming_a_huge_model_is_refused_before_building_it(trained, run,
                                                                          tmp_path):
    forged = _claim(trained, tmp_path / "forged.npz", hidden_size=10**9)
    with pytest.raises(MemoryLimitError, match=r"forged\.npz: its model needs about .* TiB"):
        load_checkpoint(forged)
    status, err, seconds, peak = run("sample", "--checkpoint", forged)
    assert_refused(status, err, "forged.npz", "x 1,000,000,000", "model config is damaged")
    assert seconds < 2 and peak < 50 * 2**20, (seconds, peak)


def test_a_name_of_a_million_characters_is_refused_naming_its_line(plants, run, tmp_path):
    corpus = tmp_path / "names.data"
    lines = plant_lines()
    corpus.write_text("\n".join(lines + ["x" * 10**6 + ",fl"]) + "\n", encoding="utf-8")
    status, err, seconds, _ = run("train", *NAMES_TINY, "--task", "classify", "--data", corpus,
                                  "--out", tmp_path / "o")
    assert_refused(status, err, f"names.data line {len(lines) + 1}: a name of 1,000,000 "
                                f"characters; names are at most {MAX_NAME_LENGTH:,} "
                                "(MAX_NAME_LENGTH)")
    assert seconds < 2


def test_names_up_to_the_limit_are_read(tmp_path):
    corpus = tmp_path / "names.data"
    corpus.write_text("\n".join(plant_lines() + ["y" * MAX_NAME_LENGTH + ",fl"]),
                      encoding="utf-8")
    assert max(map(len, load_labelled_corpus(str(corpus)).names or [])) == MAX_NAME_LENGTH


def test_the_longest_name_bounds_the_classifiers_batch_in_the_estimate(plants, run, tmp_path,
                                                                        monkeypatch):
    corpus = tmp_path / "names.data"
    corpus.write_text("\n".join(plant_lines() + ["z" * MAX_NAME_LENGTH + ",fl"]),
                      encoding="utf-8")
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "20M")
    status, err, _, _ = run("train", *NAMES_TINY, "--task", "classify", "--data", corpus,
                            "--batch-size", "256", "--out", tmp_path / "o")
    assert_refused(status, err, "batch 256 x 1,001", "padded to the longest, 1,000 characters")


def test_a_vocabulary_over_the_cap_is_refused_naming_the_line(tmp_path):
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + MAX_VOCAB + 3000)
             if not 0xD800 <= c <= 0xDFFF]                     # surrogates are not text
    per_line = 1000
    lines = ["".join(chars[i:i + per_line]) for i in range(0, len(chars), per_line)]
    corpus = tmp_path / "wide.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    # With the newline, the vocabulary passes the cap at the line holding the MAX_VOCAB-th
    # other character.
    line = (MAX_VOCAB - 1) // per_line + 1
    with pytest.raises(ValueError, match=rf"wide\.txt line {line}: the vocabulary passes "
                                         rf"65,536 distinct characters \(MAX_VOCAB\)"):
        load_corpus(str(corpus))


# --------------------------------------------------------------------------------------------
# The limit, and what the default run needs
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("2G", 2 * 2**30), ("512M", 512 * 2**20),
                                            ("1.5GiB", 3 * 2**29), ("1000", 1000)])
def test_the_limit_variable_takes_bytes_or_units(monkeypatch, text, expected):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, text)
    assert available_bytes() == expected


def test_a_bad_limit_variable_is_a_one_line_error(plants, run, tmp_path, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    status, err, _, _ = run("train", *TINY, "--out", tmp_path / "o")
    assert_refused(status, err, MEMORY_LIMIT_ENV, "'lots'")


def test_the_machine_reports_some_memory():
    got = available_bytes()
    assert got is None or got > 0


def test_the_default_run_needs_little_and_a_tiny_limit_refuses_it(monkeypatch):
    config = ModelConfig(vocab_size=60, hidden_size=256, num_layers=2, embedding_dim=60,
                         dtype="float32")
    estimate = estimate_training_bytes(config, 32, 150)
    assert estimate.total < 400 * 2**20
    check_fits(estimate, "x", available=2**30)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1M")
    with pytest.raises(MemoryLimitError,
                       match=rf"but the limit is 1\.0 MiB \({MEMORY_LIMIT_ENV}\)"):
        check_fits(estimate, "x")


# --------------------------------------------------------------------------------------------
# The counts against reality
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell, proj_size", [("lstm", 0), ("lstm", 3), ("gru", 0), ("rnn", 0)])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("dropout, masked", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_held_for_backward_is_what_the_layer_holds(cell, proj_size, bidirectional, dropout,
                                                   masked):
    T, B, F, H, L = 5, 3, 4, 6, 3
    kwargs = dict(num_layers=L, bidirectional=bidirectional, dtype=np.float32, seed=1,
                  dropout=0.5 if dropout else 0.0)
    layer = (LSTM(F, H, proj_size=proj_size, **kwargs) if cell == "lstm"
             else {"gru": GRU, "rnn": RNN}[cell](F, H, **kwargs))
    x = np.random.default_rng(0).standard_normal((T, B, F)).astype(np.float32)
    lengths = np.array([5, 2, 4]) if masked else None
    layer(x, None, lengths)
    held, _ = held_bytes(layer._ctx, exclude=list(layer.params.values()))
    parts = held_for_backward(cell, T, B, F, H, L, np.float32, bidirectional=bidirectional,
                              proj_size=proj_size, dropout=dropout, masked=masked)
    assert held == sum(parts.values()), parts


def test_the_training_estimate_bounds_a_measured_step_within_a_factor_of_four():
    config = ModelConfig(vocab_size=40, hidden_size=128, num_layers=2, cell="lstm",
                         embedding_dim=40, dtype="float32")
    B, T = 16, 100
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 40, (B, T + 1))
    tracemalloc.start()
    try:
        start = get_task("lm").build(config, seed=0).state_dict()   # as the driver does
        backend = NumpyBackend(config, OptimConfig(name="adam", lr=1e-3))
        backend.load_state_dict(start)
        for _ in range(2):                          # the first step also makes Adam's moments
            backend.train_step(tokens[:, :-1], tokens[:, 1:], None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = estimate_training_bytes(config, B, T).total
    assert peak <= estimate <= 4 * peak, (estimate, peak)
