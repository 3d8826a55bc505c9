"""Tests for numpy_rnn.driver.checkpoint: the portable .npz format, atomic writes, validation on
load, and the round trip between the NumPy and torch backends."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from numpy_rnn.driver import checkpoint as ckpt
from numpy_rnn.driver.backend import NumpyBackend, OptimConfig
from numpy_rnn.driver.checkpoint import (
    CheckpointError,
    backend_from_checkpoint,
    load_checkpoint,
    make_meta,
    read_checkpoint,
    read_meta,
    save_checkpoint,
)
from numpy_rnn.tasks import get_task
from numpy_rnn.tasks.base import RecordError
from numpy_rnn.tasks.corpus import Vocabulary
from numpy_rnn.tasks.lm import CharRNN
from numpy_rnn.tasks.model import ModelConfig

VOCAB = Vocabulary.from_text("\n abcdefgh")
CONFIG = ModelConfig(vocab_size=len(VOCAB), hidden_size=8, num_layers=2, cell="lstm",
                     dtype="float64")


def _trained_backend(cls=NumpyBackend, config=CONFIG, steps=2, seed=0):
    """A backend with non-trivial weights and Adam state after a few steps."""
    backend = cls(config, OptimConfig(), "cpu")
    backend.load_state_dict(CharRNN(config, seed=seed).state_dict())
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.integers(0, config.vocab_size, size=(3, 5))
        y = rng.integers(0, config.vocab_size, size=(3, 5))
        backend.train_step(x, y, None)
    return backend


def _meta(config, vocab=VOCAB, **kw):
    """A language model checkpoint's metadata for ``config`` and the characters ``vocab``."""
    return make_meta(get_task("lm"), config, SimpleNamespace(vocab=vocab), source="plants", **kw)


def _save(path, backend, step=2, train=None):
    meta = _meta(backend.config, step=step, backend=backend.name,
                 optimizer=backend.optimizer_state_dict(), optim_config=backend.optim,
                 train=train)
    return save_checkpoint(path, backend.state_dict(), meta)


@pytest.fixture
def torch_backend_cls():
    """torch_ref's TorchBackend, run on one thread (tiny models are ~10x faster than on two
    threads competing with NumPy's BLAS threads), or skip."""
    torch = pytest.importorskip("torch")
    try:
        from torch_ref.backend import TorchBackend
    except ImportError as exc:  # the torch backend is written elsewhere; may not exist yet
        pytest.skip(f"torch_ref.backend not importable: {exc}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TorchBackend
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# Format and round trip
# --------------------------------------------------------------------------------------------


def test_round_trip_restores_weights_optimizer_and_training_state(tmp_path):
    backend = _trained_backend()
    carried = (np.full((2, 3, 8), 0.25), np.full((2, 3, 8), -0.5))
    rng_state = np.random.default_rng(7).bit_generator.state
    path = _save(tmp_path / "c.npz", backend, train={"carried": list(carried),
                                                      "data_rng": rng_state, "note": [1, "x"]})
    weights, meta = load_checkpoint(path)

    for k, w in backend.state_dict().items():
        np.testing.assert_array_equal(weights[k], w)
        assert weights[k].dtype == w.dtype
    assert meta["step"] == 2 and meta["format_version"] == ckpt.FORMAT_VERSION
    record = read_checkpoint(path).record
    assert record.config == CONFIG and record.vocabularies == {"characters": VOCAB}
    want_opt = backend.optimizer_state_dict()
    got_opt = meta["optimizer"]
    assert got_opt["optimizer"] == want_opt["optimizer"]
    for name, st in want_opt["state"].items():
        assert got_opt["state"][name]["step"] == st["step"]
        np.testing.assert_array_equal(got_opt["state"][name]["exp_avg"], st["exp_avg"])
        np.testing.assert_array_equal(got_opt["state"][name]["exp_avg_sq"], st["exp_avg_sq"])
    np.testing.assert_array_equal(meta["train"]["carried"][1], carried[1])
    assert meta["train"]["data_rng"] == rng_state
    assert meta["train"]["note"] == [1, "x"]

    # The restored optimizer continues exactly where the original would.
    other = NumpyBackend(CONFIG, OptimConfig(), "cpu")
    other.load_state_dict(weights)
    other.load_optimizer_state_dict(meta["optimizer"])
    x = np.arange(15).reshape(3, 5) % CONFIG.vocab_size
    a = backend.train_step(x, x[:, ::-1].copy(), None)
    b = other.train_step(x, x[:, ::-1].copy(), None)
    assert a.loss == b.loss
    for k, w in backend.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], w)


def test_file_layout_is_plain_npz_without_pickle(tmp_path):
    path = _save(tmp_path / "c.npz", _trained_backend())
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        meta = json.loads(npz["meta"].tobytes().decode("utf-8"))
        assert npz["meta"].dtype == np.uint8
    assert {f"param/{k}" for k in CharRNN(CONFIG).params} <= keys
    assert "optim/rnn.weight_ih_l0/exp_avg" in keys
    assert "optim/decoder.bias/exp_avg_sq" in keys
    assert meta["format"] == "numpy_rnn.checkpoint"       # the format's name, not a module path
    assert meta["model_config"]["hidden_size"] == 8
    assert meta["vocabularies"]["characters"] == {"unit": "chars", "entries": list(VOCAB.chars)}
    assert read_meta(path)["step"] == 2


def test_save_is_atomic_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = _save(tmp_path / "c.npz", _trained_backend(steps=1))
    before = path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt.np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(path, _trained_backend(steps=3), step=3)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]   # no temporary left
    monkeypatch.undo()
    assert load_checkpoint(path)[1]["step"] == 2


def test_saved_file_gets_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = _save(tmp_path / "c.npz", _trained_backend(steps=1))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------------------
# Bad files give one clear CheckpointError naming the file
# --------------------------------------------------------------------------------------------


def _assert_clear(exc_info, path):
    msg = str(exc_info.value)
    assert str(path) in msg and "\n" not in msg


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint") as e:
        load_checkpoint(tmp_path / "nope.npz")
    _assert_clear(e, tmp_path / "nope.npz")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.02])
def test_truncated_checkpoint_is_a_clear_error(tmp_path, keep):
    path = _save(tmp_path / "c.npz", _trained_backend())
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    _assert_clear(e, path)


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    path = _save(tmp_path / "c.npz", _trained_backend())
    data = bytearray(path.read_bytes())
    # Flip bytes inside the first stored array (after its local header): the CRC catches it.
    start = data.index(b"\x93NUMPY") + 200
    for i in range(start, start + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    _assert_clear(e, path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_garbage_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "c.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    _assert_clear(e, path)


def test_npy_array_and_foreign_npz_are_refused(tmp_path):
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(CheckpointError, match="not"):
        load_checkpoint(npy)
    foreign = tmp_path / "f.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="no 'meta'"):
        load_checkpoint(foreign)


def test_newer_format_version_is_refused(tmp_path):
    backend = _trained_backend()
    meta = _meta(CONFIG, step=1)
    meta["format_version"] = ckpt.FORMAT_VERSION + 1
    path = save_checkpoint(tmp_path / "c.npz", backend.state_dict(), meta)
    with pytest.raises(CheckpointError, match=r"newer|upgrade"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_recorded_config_are_refused(tmp_path):
    backend = _trained_backend()
    bigger = ModelConfig(vocab_size=len(VOCAB), hidden_size=12, num_layers=2, dtype="float64")
    path = save_checkpoint(tmp_path / "c.npz", backend.state_dict(),
                           _meta(bigger, step=1))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path)
    weights = backend.state_dict()
    del weights["decoder.bias"]
    path = save_checkpoint(tmp_path / "d.npz", weights,
                           _meta(CONFIG, step=1))
    with pytest.raises(CheckpointError, match=r"decoder\.bias"):
        load_checkpoint(path)


def test_vocabulary_size_must_match_the_config(tmp_path):
    backend = _trained_backend()
    meta = _meta(CONFIG, step=1)
    meta["vocabularies"]["characters"]["entries"] = meta["vocabularies"]["characters"][
        "entries"][:-1]
    path = save_checkpoint(tmp_path / "c.npz", backend.state_dict(), meta)
    with pytest.raises(CheckpointError, match="vocab"):
        load_checkpoint(path)


def test_data_with_another_vocabulary_is_refused_naming_what_differs(tmp_path):
    path = _save(tmp_path / "c.npz", _trained_backend())
    checkpoint = read_checkpoint(path)
    lm = checkpoint.task
    other = SimpleNamespace(vocab=Vocabulary.from_text("\n abcdefgz"))
    with pytest.raises(RecordError, match=r"another vocabulary .*'h'.*'z'") as e:
        lm.check_data(checkpoint.record, other, path)
    _assert_clear(e, path)
    lm.check_data(checkpoint.record, SimpleNamespace(vocab=VOCAB), path)   # the right one


def test_non_finite_weights_are_refused(tmp_path):
    backend = _trained_backend()
    weights = backend.state_dict()
    weights["decoder.bias"][0] = np.nan
    path = save_checkpoint(tmp_path / "c.npz", weights,
                           _meta(CONFIG, step=1))
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(path)


# --------------------------------------------------------------------------------------------
# Across backends: either writes, either reads
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["numpy", "torch"])
def test_checkpoint_round_trip_across_backends(tmp_path, writer, torch_backend_cls):
    classes = {"numpy": NumpyBackend, "torch": torch_backend_cls}
    reader = "torch" if writer == "numpy" else "numpy"
    written = _trained_backend(classes[writer], steps=3)
    path = _save(tmp_path / "c.npz", written, step=3)

    weights, meta = load_checkpoint(path)
    read = backend_from_checkpoint(weights, meta, reader)
    assert read.name == reader
    read.load_optimizer_state_dict(meta["optimizer"])
    x = np.random.default_rng(1).integers(0, CONFIG.vocab_size, size=(2, 7))
    want, want_state = written.logits(x, None)
    got, got_state = read.logits(x, None)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    for g, w in zip(got_state, want_state):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)

    # One more step in each from the same state: the optimizer state crossed over too.
    y = np.roll(x, 1, axis=1)
    a = written.train_step(x, y, None)
    b = read.train_step(x, y, None)
    assert a.loss == pytest.approx(b.loss, abs=1e-12)
    for k, w in written.state_dict().items():
        np.testing.assert_allclose(read.state_dict()[k], w, rtol=0, atol=1e-10)

    # And the reader's checkpoint reads back in the writer's backend.
    path2 = _save(tmp_path / "d.npz", read, step=4)
    w2, m2 = load_checkpoint(path2)
    again = backend_from_checkpoint(w2, m2, writer)
    np.testing.assert_allclose(again.logits(x, None)[0], read.logits(x, None)[0],
                               rtol=0, atol=1e-12)
