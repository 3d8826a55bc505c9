"""The seq2seq task on a file of word sequences (issue 19: ``--source-tokens`` and
``--target-tokens``): a made-up word-for-word "translation" file, each source a few English
number words and each target their made-up translations in reverse order. It trains with word
sources and word targets, records its token vocabulary and units in the checkpoint, evaluates,
translates (splitting each input on spaces, refusing unknown words in one line), resumes
exactly; bad values of the flags are refused; the character defaults and checkpoints saved
before the token vocabulary existed work as before."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_user_error, read_losses

from numpy_rnn.driver.checkpoint import CheckpointError, read_checkpoint, read_meta
from numpy_rnn.driver.train import TrainConfig
from numpy_rnn.tasks import get_task
from numpy_rnn.tasks.corpus import TokenVocabulary, Vocabulary
from numpy_rnn.tasks.pairs import load_pairs
from numpy_rnn.tasks.seq2seq import PAD_CHAR, PAD_TOKEN, encode_sources
from numpy_rnn.tasks.seq2seq.task import Seq2SeqOptions


def as_version_1(meta: dict) -> dict:
    """The metadata ``meta`` (format 2) as numpy_rnn wrote it before the tasks recorded their
    own parts (format 1): one ``vocab`` (the sources') with its ``vocab_unit``, the target
    tokens as ``labels``, every setting in one flat training config."""
    old = {k: v for k, v in meta.items() if k not in ("vocabularies", "options")}
    old["format_version"] = 1
    source, target = meta["vocabularies"]["source"], meta["vocabularies"]["target"]
    old.update(vocab=source["entries"], vocab_unit=source["unit"], labels=target["entries"])
    old["train"] = dict(meta["train"], config={**meta["train"]["config"], **meta["options"]})
    return old

TINY = ["--hidden-size", "16", "--batch-size", "8", "--dtype", "float64", "--lr", "0.01",
        "--quiet", "--length-buckets", "0"]
WORDS = {"one": "UNO", "two": "DOS", "three": "TRES", "four": "CUATRO", "five": "CINCO",
         "six": "SEIS", "seven": "SIETE"}
WORD_FLAGS = ("--source-tokens", "words", "--target-tokens", "words")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """300 distinct sources of 1 to 4 number words, each with its words translated and
    reversed ("one two" -> "DOS UNO"); some lines with extra spaces, as a user's file has."""
    rng = random.Random(0)
    sources: set[tuple[str, ...]] = set()
    while len(sources) < 300:
        sources.add(tuple(rng.choice(sorted(WORDS)) for _ in range(rng.randint(1, 4))))
    lines = []
    for i, s in enumerate(sorted(sources)):
        gap = "  " if i % 7 == 0 else " "
        lines.append(f"{gap.join(s)}\t{' '.join(WORDS[w] for w in reversed(s))}\n")
    path = tmp_path_factory.mktemp("pairs") / "numbers.tsv"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _train(pairs: Path, out: Path, *flags: str) -> None:
    from numpy_rnn.driver.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
        assert main(["train", "--task", "seq2seq", "--data", str(pairs), "--out", str(out),
                     *TINY, *flags]) == 0


@pytest.fixture(scope="module")
def run_dir(pairs, tmp_path_factory) -> Path:
    """A word -> word run: 12 steps, validated at 6 and 12."""
    out = tmp_path_factory.mktemp("words") / "run"
    _train(pairs, out, *WORD_FLAGS, "--steps", "12", "--eval-every", "6")
    return out


@pytest.fixture(scope="module")
def checkpoint(run_dir) -> Path:
    return run_dir / "checkpoint.npz"


# -- the corpus and the checkpoint --------------------------------------------------------------


def test_word_sources_get_a_sorted_token_vocabulary_with_pad_first(pairs):
    corpus = get_task("seq2seq").load(str(pairs), Seq2SeqOptions(source_tokens="words",
                                                                  target_tokens="words"))
    assert isinstance(corpus.source_vocab, TokenVocabulary)
    assert corpus.source_vocab.chars == (PAD_TOKEN, *sorted(WORDS)) and PAD_TOKEN == ""
    assert corpus.target_vocab == tuple(sorted(WORDS.values()))
    # the split is load_pairs's: by the hash of the source's words joined by one space
    split = load_pairs(pairs, source_tokens="words", target_tokens="words")
    assert corpus.pairs is not None and corpus.pairs.test == split.test and split.test
    ids, lengths = encode_sources([("two", "one"), ("seven",)], corpus.source_vocab)
    index = {w: i for i, w in enumerate(corpus.source_vocab.chars)}
    np.testing.assert_array_equal(ids, [[index["two"], index["one"]], [index["seven"], 0]])
    np.testing.assert_array_equal(lengths, [2, 1])


def test_the_checkpoint_records_the_tokens_and_the_units(checkpoint):
    meta = read_meta(checkpoint)
    assert meta["vocabularies"] == {
        "source": {"unit": "words", "entries": ["", *sorted(WORDS)]},
        "target": {"unit": "tokens", "entries": sorted(WORDS.values())}}
    options = meta["options"]
    assert (options["source_tokens"], options["target_tokens"]) == ("words", "words")
    loaded = read_checkpoint(checkpoint)
    source = loaded.record.vocabularies["source"]
    assert source == TokenVocabulary(("", *sorted(WORDS)))
    # read again as its run read it: the same ids, whatever the defaults
    corpus = loaded.task.load_for(loaded.record, loaded.meta["data"])
    assert corpus.source_vocab == source


@pytest.mark.parametrize("unit, fragment", [
    ("letters", "the vocabulary 'source' has an unknown unit 'letters'"),
    (["words"], "the vocabulary 'source' has an unknown unit"),
    ("chars", "the vocabulary 'source' is damaged"),     # words are not single characters
])
def test_a_bad_vocab_unit_is_a_one_line_checkpoint_error(checkpoint, tmp_path, unit, fragment):
    with np.load(checkpoint) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    meta["vocabularies"]["source"]["unit"] = unit
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path = tmp_path / "edited.npz"
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=fragment) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# -- evaluate and translate ---------------------------------------------------------------------


def test_evaluate_reads_the_file_with_the_run_units(checkpoint, pairs, run):
    status, out, err = run("evaluate", "--checkpoint", checkpoint, "--json", "--beam", "2")
    assert status == 0, err
    metrics = json.loads(out)
    test = load_pairs(pairs, source_tokens="words", target_tokens="words").test
    assert metrics["words"] == len(test) and metrics["beam"] == 2
    assert np.isfinite(metrics["val_loss"]) and 0 <= metrics["wer"] <= 1


def test_translate_splits_sources_on_spaces_and_prints_tokens(checkpoint, run, monkeypatch):
    status, out, err = run("translate", "--checkpoint", checkpoint, "--beam", "1",
                           "one two", "seven")
    assert status == 0, err
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["one two", "seven"]
    for line in lines:
        tokens = line.split("\t")[1].split(" ")
        assert set(tokens) <= set(WORDS.values()), line    # target words joined by spaces
    # the same from standard input, and as JSON
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("one two\n\nseven\n"))
    status, out2, err = run("translate", "--checkpoint", checkpoint, "--beam", "1")
    assert status == 0 and out2 == out, err
    status, out3, err = run("translate", "--checkpoint", checkpoint, "--beam", "1", "--json",
                            "one \t two")
    assert status == 0, err
    record = json.loads(out3)
    assert record["source"] == "one two"            # its words, one space apart: no tab
    assert " ".join(record["outputs"][0]["tokens"]) == lines[0].split("\t")[1]


def test_translate_reports_unknown_words_naming_each_source(checkpoint, run):
    status, out, err = run("translate", "--checkpoint", checkpoint, "one zebra two", "ocho",
                           "two one", "  ")
    assert status == 2 and out.startswith("two one\t") and len(out.splitlines()) == 1
    assert err.splitlines() == [
        "error: argument 1 ('one zebra two'): words the model has never seen: 'zebra'",
        "error: argument 2 ('ocho'): words the model has never seen: 'ocho'",
        "error: 2 of 3 sources could not be translated (arguments 1, 2); the others were"]


# -- resume -------------------------------------------------------------------------------------


def test_resume_continues_exactly(pairs, run_dir, tmp_path):
    out = tmp_path / "resumed"
    _train(pairs, out, *WORD_FLAGS, "--steps", "6", "--eval-every", "6")
    from numpy_rnn.driver.cli import main
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
        assert main(["train", "--out", str(out), "--resume", "--steps", "12", "--quiet"]) == 0
    assert read_losses(out) == read_losses(run_dir)
    assert read_meta(out / "checkpoint.npz")["vocabularies"] == read_meta(
        run_dir / "checkpoint.npz")["vocabularies"]


def test_the_units_are_settings_of_a_new_run(run_dir, run):
    assert_user_error(*run("train", "--out", run_dir, "--resume", "--steps", "13",
                           "--source-tokens", "chars")[::2],
                      "--source-tokens picks the settings of a new run")


# -- the flags ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--source-tokens", "--target-tokens"])
def test_bad_values_of_the_flags_are_argparse_errors(flag, run, pairs, tmp_path):
    assert_user_error(*run("train", "--task", "seq2seq", "--data", pairs, "--out",
                           tmp_path / "x", flag, "bytes")[::2],
                      f"argument {flag}: invalid choice: 'bytes' (choose from 'chars', 'words')")
    assert not (tmp_path / "x").exists()


def test_the_flags_are_refused_for_other_tasks_and_with_cmudict(run, tmp_path):
    assert_user_error(*run("train", "--task", "lm", "--source-tokens", "words", "--out",
                           tmp_path / "lm")[::2], "--source-tokens does not apply to --task lm")
    with pytest.raises(ValueError, match="--data cmudict is read as letters"):
        get_task("seq2seq").load("cmudict", Seq2SeqOptions(source_tokens="words"))
    with pytest.raises(ValueError, match="target_tokens must be one of chars, words"):
        TrainConfig.for_task("seq2seq", target_tokens="bytes")


# -- the character defaults, and checkpoints saved before the token vocabulary ---------------------


def test_char_defaults_are_unchanged(pairs, tmp_path):
    config = TrainConfig.for_task("seq2seq")
    assert (config.options.source_tokens, config.options.target_tokens) == ("chars", "words")
    # a file of spelled-out words read as before: letters in, space-separated tokens out
    path = tmp_path / "lexicon.tsv"
    path.write_text("".join(f"{w}\t{' '.join(reversed(w.upper()))}\n" for w in
                            ("cat", "dog", "bird", "fish", "cow", "hen", "ant", "bee", "eel",
                             "owl", "pig", "rat", "yak", "elk", "emu", "gnu", "ape", "bat",
                             "cod", "doe", "fox", "gar", "jay", "koi", "ram", "asp", "boa",
                             "cub", "kid", "kit", "pup", "ewe", "sow", "tom", "nag", "cob")),
                    encoding="utf-8")
    task = get_task("seq2seq")
    corpus = task.load(str(path))
    assert type(corpus.source_vocab) is Vocabulary and corpus.source_vocab.chars[0] == PAD_CHAR
    assert corpus.pairs.target_unit == "words"
    assert task.load(str(path), config.options) == corpus


def test_a_char_checkpoint_without_the_new_field_loads_as_characters(pairs, tmp_path, run):
    lexicon = tmp_path / "lexicon.tsv"
    rng = random.Random(1)
    found: set[str] = set()
    while len(found) < 300:
        found.add("".join(rng.choice("abcdef") for _ in range(rng.randint(2, 6))))
    words = sorted(found)
    lexicon.write_text("".join(f"{w}\t{' '.join(w.upper())}\n" for w in words),
                       encoding="utf-8")
    out = tmp_path / "chars"
    _train(lexicon, out, "--steps", "2", "--eval-every", "2", "--num-layers", "1")
    old = tmp_path / "old" / "checkpoint.npz"
    old.parent.mkdir()
    with np.load(out / "checkpoint.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = as_version_1(json.loads(arrays["meta"].tobytes().decode("utf-8")))
    assert meta.pop("vocab_unit") == "chars"
    for key in ("source_tokens", "target_tokens"):     # a run saved before the flags existed
        del meta["train"]["config"][key]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(old, **arrays)
    source = read_checkpoint(old).record.vocabularies["source"]
    assert type(source) is Vocabulary and source.chars[0] == PAD_CHAR
    status, out_text, err = run("translate", "--checkpoint", old, "--beam", "1", "abc")
    assert status == 0, err
    assert out_text.startswith("abc\t")
    status, _, err = run("evaluate", "--checkpoint", old, "--beam", "1")
    assert status == 0, err
    shutil.copy(out / "metrics.jsonl", old.parent / "metrics.jsonl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
        status, _, err = run("train", "--out", old.parent, "--resume", "--steps", "3")
    assert status == 0, err
    assert read_meta(old)["vocabularies"]["source"]["unit"] == "chars"   # written anew
