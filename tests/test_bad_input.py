"""Bad input that must end in one line ``error: ...`` and exit status 2, never a traceback, and
never lose a file (issue 17): convert over an existing checkpoint or into a live run, evaluate
of a language model on a labelled corpus, ``--resume --overwrite``, hand-edited checkpoint
metadata, standard input that is not UTF-8, paths that are files, directories or missing, the
install hints and ``--version``."""

from __future__ import annotations

import configparser
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY, assert_user_error

import numpy_rnn
from numpy_rnn._install import install_hint
from numpy_rnn.driver import backend as backend_mod
from numpy_rnn.driver.checkpoint import load_checkpoint, save_checkpoint
from numpy_rnn.driver.rundir import run_lock

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def plants(cli_plants):
    return cli_plants


@pytest.fixture
def lm_run(plants, trained_lm):
    return trained_lm


@pytest.fixture
def classifier(labelled, tmp_path, run):
    out = tmp_path / "cls"
    status, _, err = run("train", "--task", "classify", "--out", out, "--hidden-size", "8",
                         "--steps", "2", "--eval-every", "2", "--batch-size", "8", "--quiet")
    assert status == 0, err
    return out / "checkpoint.npz"


@pytest.fixture
def notebook_pt(plants, tmp_path):
    """A state dict as the notebook saves it: Embedding(V, V) -> LSTM(V, 512, 3) -> Linear."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch_ref.notebook")
    from numpy_rnn.tasks.corpus import load_corpus
    V = len(load_corpus("plants").vocab)
    torch.manual_seed(0)
    parts = {"encoder": torch.nn.Embedding(V, V), "lstm": torch.nn.LSTM(V, 512, 3),
             "decoder": torch.nn.Linear(512, V)}
    state = {f"{p}.{k}": v.double() for p, m in parts.items() for k, v in m.state_dict().items()}
    pt = tmp_path / "notebook.pt"
    torch.save(state, pt)
    return pt


# --------------------------------------------------------------------------------------------
# convert: --overwrite, and the run lock of the directory written into
# --------------------------------------------------------------------------------------------


def test_convert_refuses_an_existing_file_without_overwrite(notebook_pt, lm_run, run):
    ckpt = lm_run / "checkpoint.npz"
    before = ckpt.read_bytes()
    status, _, err = run("convert", "--notebook-state", notebook_pt, "--out", ckpt)
    assert_user_error(status, err, f"{ckpt} already exists: pass --overwrite to replace it")
    assert ckpt.read_bytes() == before
    # a directory of a run that is running (its lock is held): refused even with --overwrite
    with run_lock(lm_run, log=lambda msg: None):
        status, _, err = run("convert", "--notebook-state", notebook_pt, "--out", ckpt,
                             "--overwrite")
        assert_user_error(status, err, f"{lm_run} is in use by another training run")
        assert ckpt.read_bytes() == before
        status, _, err = run("convert", "--notebook-state", notebook_pt, "--out",
                             lm_run / "new.npz")
        assert_user_error(status, err, "in use")
        assert not (lm_run / "new.npz").exists()
    status, _, err = run("convert", "--notebook-state", notebook_pt, "--out", ckpt,
                         "--overwrite")
    assert status == 0, err
    assert load_checkpoint(ckpt)[1]["backend"] == "notebook"
    assert not (lm_run / ".lock").exists()
    status, _, err = run("convert", "--notebook-state", notebook_pt, "--out", lm_run)
    assert_user_error(status, err, f"{lm_run} is a directory")


# --------------------------------------------------------------------------------------------
# evaluate: a language model has no labels to check
# --------------------------------------------------------------------------------------------


def test_evaluate_a_converted_notebook_model_on_plants(notebook_pt, tmp_path, run):
    out = tmp_path / "nb.npz"
    assert run("convert", "--notebook-state", notebook_pt, "--out", out)[0] == 0
    status, stdout, err = run("evaluate", "--checkpoint", out, "--json")
    assert status == 0, err
    assert json.loads(stdout)["val_loss"] > 0


def test_evaluate_an_lm_of_a_plain_name_list_on_plants(plants, tmp_path, run):
    names = tmp_path / "names.txt"
    text = (plants / "plants.data").read_text(encoding="utf-8")
    names.write_text("".join(line.split(",")[0] + "\n" for line in text.splitlines()),
                     encoding="utf-8")
    out = tmp_path / "plain"
    status, _, err = run("train", *TINY, "--steps", "2", "--eval-every", "2", "--data", names,
                         "--out", out)
    assert status == 0, err
    status, stdout, err = run("evaluate", "--checkpoint", out / "checkpoint.npz", "--data",
                              "plants", "--json")
    assert status == 0, err
    assert json.loads(stdout)["val_loss"] > 0


# --------------------------------------------------------------------------------------------
# train --resume --overwrite
# --------------------------------------------------------------------------------------------


def test_resume_with_overwrite_is_a_one_line_error(lm_run, run):
    before = (lm_run / "checkpoint.npz").read_bytes()
    status, _, err = run("train", "--out", lm_run, "--resume", "--overwrite", "--steps", "12")
    assert_user_error(status, err, "--resume continues the run in OUT; --overwrite replaces "
                                   "it: give one of them")
    assert (lm_run / "checkpoint.npz").read_bytes() == before


# --------------------------------------------------------------------------------------------
# Hand-edited metadata: every field, junk of every JSON type
# --------------------------------------------------------------------------------------------

JUNK = [{"junk": 1}, [], "x", 1e308, None, -1]


def _rewrite_meta(src: Path, dst: Path, edit) -> None:
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    edit(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dst, **arrays)


def _works_or_one_line(status: int, err: str, what: str) -> None:
    assert "Traceback" not in err, what
    if status != 0:
        assert status == 2, f"{what}: {err}"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: {err}"


def test_junk_in_any_metadata_field_is_refused_in_one_line(lm_run, tmp_path, run):
    good = lm_run / "checkpoint.npz"
    with np.load(good) as npz:
        fields = list(json.loads(npz["meta"].tobytes().decode("utf-8")))
    assert {"optim_config", "optimizer", "train", "vocabularies", "options", "model_config",
            "data", "task"} <= set(fields)
    for field in fields:
        for junk in JUNK:
            out = tmp_path / "edited"
            shutil.rmtree(out, ignore_errors=True)
            ckpt = out / "checkpoint.npz"
            _rewrite_meta(good, ckpt, lambda m, f=field, j=junk: m.__setitem__(f, j))
            what = f"{field}={junk!r}"
            _works_or_one_line(*run("sample", "--checkpoint", ckpt, "--num-samples", "1",
                                    "--max-length", "4")[::2], what + " sample")
            _works_or_one_line(*run("evaluate", "--checkpoint", ckpt)[::2], what + " evaluate")
            _works_or_one_line(*run("train", "--out", out, "--resume", "--steps", "11",
                                    "--quiet")[::2], what + " resume")


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m.__setitem__("optim_config", {"junk": 1}), "bad optim_config"),
    (lambda m: m["optim_config"].__setitem__("eps", "x"), "eps must be a number"),
    (lambda m: m.__setitem__("optimizer", {"junk": 1}), "bad optimizer state"),
    (lambda m: m["train"].__setitem__("carried", []), "carried"),
    (lambda m: m["train"].__setitem__("processes", None), "processes"),
    (lambda m: m["train"]["config"].__setitem__("data", None), "data must be a string"),
    (lambda m: m["vocabularies"].__setitem__("characters", -1),
     "the vocabulary 'characters' must be a unit and a list of strings"),
    (lambda m: m["options"].__setitem__("seq_len", 0), "seq_len must be an integer >= 1"),
])
def test_bad_metadata_names_the_file(lm_run, tmp_path, run, edit, fragment):
    out = tmp_path / "edited"
    _rewrite_meta(lm_run / "checkpoint.npz", out / "checkpoint.npz", edit)
    assert_user_error(*run("train", "--out", out, "--resume", "--steps", "11")[::2],
                      str(out / "checkpoint.npz"), fragment)


# --------------------------------------------------------------------------------------------
# predict: standard input is read as UTF-8, whatever the locale says
# --------------------------------------------------------------------------------------------


def _stdin(monkeypatch, data: bytes) -> None:
    # A text stream in another encoding over the bytes, as a Latin-1 or C locale gives.
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="ascii"))


def test_predict_reads_standard_input_as_utf8(classifier, run, monkeypatch):
    _stdin(monkeypatch, "acer\nrosa canina\n\nr\u00e9sum\u00e9 x\n".encode("latin-1"))
    assert_user_error(*run("predict", "--checkpoint", classifier)[::2],
                      "standard input is not UTF-8 text (line 4, byte 2: invalid continuation "
                      "byte)")
    _stdin(monkeypatch, b"acer\r\nrosa canina\n\n")
    status, out, err = run("predict", "--checkpoint", classifier, "--top", "1")
    assert status == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == ["acer", "rosa canina"]


# --------------------------------------------------------------------------------------------
# Paths: the user's path and what is wrong with it, never a temporary file or a bare errno
# --------------------------------------------------------------------------------------------


def _no_errno(err: str) -> None:
    assert "[Errno" not in err and ".tmp" not in err, err


def test_train_out_that_is_a_file(plants, tmp_path, run):
    path = tmp_path / "afile"
    path.write_text("mine\n")
    status, _, err = run("train", *TINY, "--steps", "2", "--out", path)
    assert_user_error(status, err, f"output directory {path} is an existing file, not a "
                                   "directory")
    _no_errno(err)
    assert path.read_text() == "mine\n"


def test_predict_plot_into_a_directory_or_onto_a_file_is_refused_as_translate_does(
        classifier, tmp_path, run):
    for target, why in ((tmp_path / "plots", "must be a file name ending in .png"),
                        (tmp_path / "plots.png", "is a directory")):
        target.mkdir()
        status, _, err = run("predict", "--checkpoint", classifier, "--plot", target, "rosa")
        assert_user_error(status, err, why)
        _no_errno(err)
        assert list(target.iterdir()) == [] and not list(tmp_path.glob(".plots*.tmp"))
    existing = tmp_path / "a.png"
    existing.write_bytes(b"kept")
    assert_user_error(*run("predict", "--checkpoint", classifier, "--plot", existing,
                           "rosa")[::2], "already exists: pass --overwrite")
    assert existing.read_bytes() == b"kept"
    status, _, err = run("predict", "--checkpoint", classifier, "--plot", existing,
                         "--overwrite", "rosa")
    assert status == 0, err
    assert existing.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "attention of 1 name drawn in" in err


def test_sample_prime_file_missing_or_a_directory(lm_run, tmp_path, run):
    ckpt = lm_run / "checkpoint.npz"
    for path, what in ((tmp_path / "missing.txt", "does not exist"), (tmp_path, "is a directory")):
        status, _, err = run("sample", "--checkpoint", ckpt, "--prime-file", path)
        assert_user_error(status, err, f"prime file {path} {what}")
        _no_errno(err)


def test_save_checkpoint_errors_name_the_target(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    with pytest.raises(OSError) as info:
        save_checkpoint(target, {}, {"format": "x"})
    assert str(info.value) == f"cannot write {target}: it is a directory"
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError) as info:
        save_checkpoint(blocker / "c.npz", {}, {"format": "x"})
    assert str(info.value) == f"cannot write {blocker / 'c.npz'}: {blocker} is not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "file"]


# --------------------------------------------------------------------------------------------
# Install hints and --version
# --------------------------------------------------------------------------------------------


def test_install_hints_name_the_clone_and_the_package():
    assert install_hint("torch") == ('pip install -e ".[torch]" (or pip install '
                                     '"numpy_rnn[torch]" when installed)')
    stale = re.compile(r"pip install '?numpy_rnn\[")
    for package in ("numpy_rnn", "torch_ref"):
        for source in (REPO / package).rglob("*.py"):
            assert not stale.search(source.read_text(encoding="utf-8")), source


def test_a_missing_backend_dependency_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(backend_mod.BACKENDS, "torch", "numpy_rnn_no_such_module:Backend")
    with pytest.raises(ImportError, match=re.escape(install_hint("torch"))):
        backend_mod.get_backend("torch")


def test_version(run):
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["metadata"]["version"] == numpy_rnn.__version__
    status, out, err = run("--version")
    assert status == 0 and out == f"numpy_rnn {numpy_rnn.__version__}\n", err

