"""Tests for numpy_rnn.tasks.lm_batches: the language model's random windows, streams and
validation segments."""

from __future__ import annotations

import numpy as np
import pytest

from numpy_rnn.tasks.corpus import Corpus
from numpy_rnn.tasks.lm_batches import (
    NameStreamBatcher,
    StreamBatcher,
    random_windows,
    validation_segments,
)


def test_random_windows_shapes_and_targets_shifted_by_one() -> None:
    encoded = np.arange(100, dtype=np.int64)
    inputs, targets = random_windows(encoded, 8, 12, np.random.default_rng(0))
    assert inputs.shape == targets.shape == (8, 12)
    assert inputs.dtype == targets.dtype == np.int64
    # With encoded[i] == i each row is a run of consecutive offsets.
    np.testing.assert_array_equal(inputs, inputs[:, :1] + np.arange(12))
    np.testing.assert_array_equal(targets, inputs + 1)


def test_random_windows_offsets_cover_the_full_range() -> None:
    n, t = 20, 5
    inputs, _ = random_windows(np.arange(n), 4000, t, np.random.default_rng(1))
    starts = set(inputs[:, 0].tolist())
    assert starts == set(range(n - t))  # every start in [0, N - T - 1], nothing beyond


def test_random_windows_is_reproducible_from_the_generator() -> None:
    encoded = np.arange(50)
    a = random_windows(encoded, 3, 4, np.random.default_rng(7))
    b = random_windows(encoded, 3, 4, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])


def test_random_windows_rejects_corpus_shorter_than_one_window() -> None:
    random_windows(np.arange(6), 2, 5, np.random.default_rng(0))  # exactly T + 1 is enough
    with pytest.raises(ValueError, match="corpus shorter than one window"):
        random_windows(np.arange(5), 2, 5, np.random.default_rng(0))


def test_stream_batcher_shapes_and_targets_shifted_by_one() -> None:
    batcher = StreamBatcher(np.arange(1000), batch_size=4, seq_len=10)
    inputs, targets, reset = next(batcher)
    assert inputs.shape == targets.shape == (4, 10)
    assert inputs.dtype == targets.dtype == np.int64
    np.testing.assert_array_equal(targets, inputs + 1)
    assert reset is True


@pytest.mark.parametrize(("n", "b", "t"), [(1000, 4, 10), (101, 3, 7), (41, 4, 10), (64, 1, 5)])
def test_stream_batcher_chunks_concatenate_to_contiguous_streams(n: int, b: int, t: int) -> None:
    encoded = np.random.default_rng(n).integers(0, 30, size=n)
    batcher = StreamBatcher(encoded, b, t)
    chunks = [next(batcher) for _ in range(batcher.chunks_per_epoch)]
    length = batcher.stream_len
    assert length == (n - 1) // b // t * t
    streams_in = np.concatenate([c.inputs for c in chunks], axis=1)
    streams_out = np.concatenate([c.targets for c in chunks], axis=1)
    for row in range(b):
        # Row b of consecutive chunks is one contiguous stretch of the text: carrying the
        # hidden state across chunks is the same as running the stream in one go.
        np.testing.assert_array_equal(streams_in[row], encoded[row * length : (row + 1) * length])
        np.testing.assert_array_equal(
            streams_out[row], encoded[row * length + 1 : (row + 1) * length + 1]
        )
    assert [c.reset for c in chunks] == [True] + [False] * (len(chunks) - 1)


def test_stream_batcher_wraps_around_and_flags_reset() -> None:
    batcher = StreamBatcher(np.arange(61), batch_size=2, seq_len=10)  # 3 chunks per epoch
    assert batcher.chunks_per_epoch == 3
    seen = [next(batcher) for _ in range(7)]
    assert [c.reset for c in seen] == [True, False, False, True, False, False, True]
    np.testing.assert_array_equal(seen[3].inputs, seen[0].inputs)
    assert batcher.epochs_completed == 2
    assert batcher.position == 7


def test_stream_batcher_resumes_exactly_from_state_dict() -> None:
    encoded = np.random.default_rng(3).integers(0, 30, size=500)
    original = StreamBatcher(encoded, 3, 8)
    for _ in range(25):  # past a wraparound (20 chunks per epoch)
        next(original)
    state = original.state_dict()
    assert all(type(v) is int for v in state.values())
    resumed = StreamBatcher(encoded, 3, 8)
    resumed.load_state_dict(state)
    for _ in range(30):
        a, b = next(original), next(resumed)
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.targets, b.targets)
        assert a.reset == b.reset
    assert original.position == resumed.position == 55


def test_stream_batcher_refuses_state_from_another_setup() -> None:
    state = StreamBatcher(np.arange(500), 3, 8).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        StreamBatcher(np.arange(500), 4, 8).load_state_dict(state)
    with pytest.raises(ValueError, match="num_chars"):
        StreamBatcher(np.arange(400), 3, 8).load_state_dict(state)
    with pytest.raises(ValueError, match=">= 0"):
        StreamBatcher(np.arange(500), 3, 8).load_state_dict({"position": -1})


def test_stream_batcher_rejects_text_shorter_than_one_chunk() -> None:
    StreamBatcher(np.arange(21), 2, 10)  # B * T + 1 is enough
    with pytest.raises(ValueError, match="too short"):
        StreamBatcher(np.arange(20), 2, 10)


def _names(n: int, seed: int = 0) -> list[np.ndarray]:
    """n "names" of 1-6 characters, each ending in a terminator 0; name i's characters are
    i + 1 (mod 1000), so a batch tells which names it came from."""
    lengths = np.random.default_rng(seed).integers(1, 7, size=n)
    return [np.r_[np.full(k, i % 1000 + 1), 0] for i, k in enumerate(lengths)]


def test_name_stream_batcher_with_one_group_is_stream_batcher_over_the_names() -> None:
    names = _names(300)
    grouped = NameStreamBatcher(names, 4, 9, groups=1, seed=5)
    plain = StreamBatcher(np.concatenate(names), 4, 9)
    for _ in range(3 * plain.chunks_per_epoch + 2):    # several epochs: file order every time
        a, b = next(grouped), next(plain)
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.targets, b.targets)
        assert a.reset == b.reset


@pytest.mark.parametrize("groups", [2, 10])
def test_name_stream_batcher_epoch_is_every_name_once_groups_in_file_order(groups: int) -> None:
    names = _names(400)
    batcher = NameStreamBatcher(names, 3, 8, groups=groups, seed=11)
    orders = []
    for epoch in range(3):
        order = batcher.epoch_order(epoch)
        assert sorted(order) == list(range(len(names)))    # every name once
        # The order is the groups one after another, each in file order: at most `groups`
        # increasing runs.
        assert 1 + int(np.sum(np.diff(order) < 0)) <= groups
        text = np.concatenate([names[i] for i in order])
        # The streams tile that text, and targets are inputs shifted by one, as StreamBatcher.
        plain = StreamBatcher(text, 3, 8)
        for _ in range(plain.chunks_per_epoch):
            a, b = next(batcher), next(plain)
            np.testing.assert_array_equal(a.inputs, b.inputs)
            np.testing.assert_array_equal(a.targets, b.targets)
            assert a.reset == b.reset
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])           # dealt afresh each epoch
    assert not np.array_equal(orders[1], orders[2])


def test_name_stream_batcher_spaces_names_like_a_one_in_k_subsample() -> None:
    # Within a group, the gaps between consecutive names (in file positions) are those of a
    # random 1-in-K subsample: mean K. Validation is 1 in 10, hence the default groups=10.
    order = NameStreamBatcher(_names(20_000), 4, 8, groups=10, seed=0).epoch_order(0)
    gaps = np.diff(order)
    gaps = gaps[gaps > 0]                                      # drop the 9 group boundaries
    assert len(gaps) == 20_000 - 10
    assert 9.5 < gaps.mean() < 10.5
    assert np.mean(gaps == 1) < 0.15                           # file order would be all ones


def test_name_stream_batcher_order_depends_on_seed_and_epoch_only() -> None:
    names = _names(200)
    a = NameStreamBatcher(names, 2, 8, groups=10, seed=3)
    b = NameStreamBatcher(names, 2, 8, groups=10, seed=3)
    c = NameStreamBatcher(names, 2, 8, groups=10, seed=4)
    for epoch in (0, 1, 7):
        np.testing.assert_array_equal(a.epoch_order(epoch), b.epoch_order(epoch))
    assert not np.array_equal(a.epoch_order(0), c.epoch_order(0))


def test_name_stream_batcher_resumes_exactly_from_state_dict() -> None:
    names = _names(300)
    original = NameStreamBatcher(names, 3, 8, groups=10, seed=9)
    per_epoch = original.chunks_per_epoch
    for _ in range(per_epoch + 5):                 # into the second epoch's order
        next(original)
    state = original.state_dict()
    assert all(type(v) is int for v in state.values())
    resumed = NameStreamBatcher(names, 3, 8, groups=10, seed=9)
    resumed.load_state_dict(state)
    for _ in range(2 * per_epoch):                 # and across the next re-deal
        a, b = next(original), next(resumed)
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.targets, b.targets)
        assert a.reset == b.reset


def test_name_stream_batcher_refuses_state_and_arguments_it_cannot_honour() -> None:
    names = _names(300)
    state = NameStreamBatcher(names, 3, 8, groups=10, seed=9).state_dict()
    with pytest.raises(ValueError, match="groups=10"):
        NameStreamBatcher(names, 3, 8, groups=5, seed=9).load_state_dict(state)
    with pytest.raises(ValueError, match="seed=9"):
        NameStreamBatcher(names, 3, 8, groups=10, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        NameStreamBatcher(names, 4, 8, groups=10, seed=9).load_state_dict(state)
    with pytest.raises(ValueError, match="groups"):
        NameStreamBatcher(names, 3, 8, groups=0)
    with pytest.raises(ValueError, match="seed"):
        NameStreamBatcher(names, 3, 8, seed=-1)
    with pytest.raises(ValueError, match="at least one name"):
        NameStreamBatcher([], 3, 8)
    with pytest.raises(ValueError, match="too short"):
        NameStreamBatcher(names[:3], 3, 8)


@pytest.mark.parametrize("n", [2, 3, 16, 17, 18, 100, 1234])
def test_validation_segments_cover_exactly_the_documented_characters(n: int) -> None:
    encoded = np.arange(n)
    inputs, targets = validation_segments(encoded)
    s = min(16, n - 1)
    length = (n - 1) // s
    assert inputs.shape == targets.shape == (s, length)
    assert inputs.dtype == targets.dtype == np.int64
    np.testing.assert_array_equal(targets, inputs + 1)
    # Predicted: encoded[1 : S*L + 1], each exactly once, in order; dropped: the tail
    # encoded[S*L + 1 :], fewer than S characters.
    np.testing.assert_array_equal(targets.ravel(), encoded[1 : s * length + 1])
    assert n - 1 - s * length == (n - 1) % s < s


def test_validation_segments_on_real_plants_validation(real_corpus: Corpus) -> None:
    encoded = real_corpus.vocab.encode(real_corpus.val_text)
    inputs, targets = validation_segments(encoded, max_segments=16)
    n = len(encoded)
    assert inputs.shape == (16, (n - 1) // 16)
    np.testing.assert_array_equal(targets.ravel(), encoded[1 : 16 * ((n - 1) // 16) + 1])


def test_validation_segments_rejects_fewer_than_two_characters() -> None:
    with pytest.raises(ValueError, match="too short"):
        validation_segments(np.arange(1))
