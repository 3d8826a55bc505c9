"""Tests for the sequence metrics of numpy_rnn.tasks.metrics: edit distance, WER and PER."""

from __future__ import annotations

import math

import numpy as np
import pytest

from numpy_rnn.tasks.metrics import (
    edit_distance,
    edit_distances,
    error_rates,
    phoneme_error_rate,
    word_error_rate,
)


def naive_levenshtein(a, b) -> int:
    """The textbook full-table DP, the oracle for the vectorised one."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


# --------------------------------------------------------------------------------------------
# Edit distance
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b, expected", [
    ("kitten", "sitting", 3),     # k->s, e->i, +g
    ("", "", 0),
    ("", "abc", 3),               # three insertions
    ("abc", "", 3),               # three deletions
    ("abc", "abc", 0),
    ("abc", "xyz", 3),            # all substituted
    ("ab", "ba", 2),              # no transpositions in Levenshtein
    ("flaw", "lawn", 2),          # -f, +n
    (("K", "AE", "T"), ("K", "AE1", "T"), 1),      # tokens, not characters
    (("HH", "AH", "L", "OW"), ("HH", "EH", "L", "OW", "W"), 2),
])
def test_edit_distance_of_hand_computed_pairs(a, b, expected):
    assert edit_distance(a, b) == expected
    assert edit_distance(b, a) == expected


def test_edit_distances_equal_the_naive_dp_on_random_pairs():
    rng = np.random.default_rng(0)
    # Lengths from 0 to 30 over a 3-token alphabet: many matches, all block paddings.
    hyps = [list(rng.integers(0, 3, rng.integers(0, 31))) for _ in range(600)]
    refs = [list(rng.integers(0, 3, rng.integers(0, 31))) for _ in range(600)]
    got = edit_distances(hyps, refs)
    assert got.dtype == np.int64 and got.shape == (600,)
    assert got.tolist() == [naive_levenshtein(h, r) for h, r in zip(hyps, refs)]


def test_edit_distance_one_pair_at_a_time_equals_the_naive_dp_short_and_long():
    rng = np.random.default_rng(1)
    # Up to 30 tokens the DP runs in Python; 60 to 120 (over 2,500 cells) in NumPy rows.
    for low, high in ((0, 31), (60, 121)):
        for _ in range(40):
            a = [str(t) for t in rng.integers(0, 4, rng.integers(low, high))]
            b = [str(t) for t in rng.integers(0, 4, rng.integers(low, high))]
            assert edit_distance(a, b) == naive_levenshtein(a, b)


def test_edit_distances_compare_tokens_across_pairs_consistently():
    # A token that occurs only in a hypothesis must not match padding or another new token.
    assert edit_distances([["x"], ["y", "x"], []], [["y"], ["y"], ["z"]]).tolist() == [1, 1, 1]
    assert edit_distances([], []).shape == (0,)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        edit_distances([[1], [2]], [[1]])


# --------------------------------------------------------------------------------------------
# WER and PER
# --------------------------------------------------------------------------------------------


def test_error_rates_of_a_hand_computed_set():
    hyps = [
        ("a", "b", "c"),     # 1: equals its only reference: right, d 0, len 3
        ("x", "b"),          # 2: d 3 to "abcd", d 1 to "ab": closest "ab", d 1, len 2
        (),                  # 3: empty: d 3 to "abc", d 2 to "ab": closest "ab", d 2, len 2
        ("a", "b", "c"),     # 4: tie, d 1 to "abcd" and to "ab": the shorter, len 2
        ("p", "q"),          # 5: equals its SECOND reference: right, d 0, len 2
    ]
    refs = [
        [("a", "b", "c")],
        [("a", "b", "c", "d"), ("a", "b")],
        [("a", "b", "c"), ("a", "b")],
        [("a", "b", "c", "d"), ("a", "b")],
        [("p",), ("p", "q")],
    ]
    r = error_rates(hyps, refs)
    assert (r.words, r.word_errors, r.edits, r.reference_tokens) == (5, 3, 4, 11)
    assert r.wer == pytest.approx(3 / 5)
    assert r.per == pytest.approx(4 / 11)     # (0+1+2+1+0) / (3+2+2+2+2); longer tie: 4/13
    assert word_error_rate(hyps, refs) == r.wer
    assert phoneme_error_rate(hyps, refs) == r.per


def test_error_rates_are_zero_when_every_hypothesis_is_a_reference():
    refs = [[("K", "AE", "T")], [("R", "EH", "D"), ("R", "IY", "D")]]
    r = error_rates([("K", "AE", "T"), ("R", "IY", "D")], refs)
    assert (r.wer, r.per, r.edits, r.reference_tokens) == (0.0, 0.0, 0, 6)


def test_error_rates_when_every_word_is_wrong():
    refs = [[("K", "AE", "T")], [("D", "AO", "G"), ("D", "AA", "G")]]
    r = error_rates([("Z", "Z", "Z"), ("D", "IY")], refs)
    # word 1: 3 substitutions of 3; word 2: d 2 to both (AO->IY, -G), tie of equal lengths.
    assert r.wer == 1.0
    assert (r.edits, r.reference_tokens) == (5, 6)
    assert r.per == pytest.approx(5 / 6)


def test_empty_hypotheses_cost_the_shortest_reference_and_long_ones_exceed_one():
    refs = [[("A", "B", "C"), ("A", "B")], [("Q",)]]
    r = error_rates([(), ()], refs)
    assert (r.wer, r.edits, r.reference_tokens, r.per) == (1.0, 3, 3, 1.0)
    long = error_rates([("Q", "Q", "Q", "Q")], [[("Q",)]])
    assert long.per == 3.0 and long.wer == 1.0


def test_error_rates_accept_any_hashable_tokens_and_strings():
    assert error_rates([[1, 2, 3]], [[[1, 2, 4]]]).per == pytest.approx(1 / 3)
    assert error_rates(["kitten"], [["sitting", "mitten"]]).per == pytest.approx(1 / 6)


def test_error_rates_per_is_nan_when_the_closest_references_are_empty():
    r = error_rates([()], [[()]])
    assert r.wer == 0.0 and math.isnan(r.per)


@pytest.mark.parametrize("hyps, refs, message", [
    ([("a",)], [], "1 hypotheses but 0 reference lists"),
    ([], [], "at least one word"),
    ([("a",), ("b",)], [[("a",)], []], "word 1 has no reference"),
])
def test_error_rates_reject_mismatched_or_missing_references(hyps, refs, message):
    with pytest.raises(ValueError, match=message):
        error_rates(hyps, refs)
