"""Helpers the test files share (the fixtures are in conftest.py): the small corpora they
write, the CLI's tiny-model flags, and readers of a run's metrics."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from labelled import SYLLABLES

REPO_ROOT = Path(__file__).resolve().parent.parent


def _shared_data_dir() -> Path:
    return Path(os.environ.get("NUMPY_RNN_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


#: The real plants corpus, where the environment has it.
REAL_PLANTS = _shared_data_dir() / "plants.data"
needs_real_plants = pytest.mark.skipif(
    not REAL_PLANTS.is_file(), reason=f"{REAL_PLANTS} not present"
)


NAMES = ["abelia", "abelia grandiflora", "rosa canina", "rosa rugosa", "pinus nigra", "pinus",
         "acer campestre", "acer", "quercus robur", "salix alba", "betula pendula", "fagus",
         "tilia cordata", "ulmus minor", "sorbus aucuparia", "prunus avium", "malus", "pyrus"]
TINY = ["--hidden-size", "16", "--num-layers", "1", "--seq-len", "16", "--batch-size", "4",
        "--eval-every", "5", "--sample-every", "5", "--dtype", "float64", "--quiet"]


def write_plants(directory: Path, n: int = 300, seed: int = 0) -> Path:
    """A small plants.data: unique made-up names, then comma-separated state codes."""
    rng = np.random.default_rng(seed)
    names: list[str] = []
    while len(names) < n:
        genus = "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4))))
        name = genus if rng.random() < 0.5 else genus + " " + "".join(rng.choice(SYLLABLES, 2))
        if name not in names:
            names.append(name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "plants.data"
    path.write_text("".join(f"{n},fl,nc\n" for n in names), encoding="utf-8")
    return path


def write_cli_plants(directory: Path) -> None:
    """A small plants.data: the names of NAMES with made-up suffixes, a few hundred in all."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"{n}{' ' + s if s else ''},fl,nc" for s in ["", "var. alba", "ssp. minor", "x",
                                                          "nana", "lutea", "major", "rubra",
                                                          "ssp. nova", "var. bella", "hybrida"]
             for n in NAMES]
    (directory / "plants.data").write_text("\n".join(lines) + "\n", encoding="utf-8")


def assert_user_error(status: int, err: str, *fragments: str) -> None:
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f.lower() in err.lower(), err


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def read_losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


#: A tiny seq2seq run: small enough for a test, float64 so both backends agree to rounding.
SEQ2SEQ_TINY = ["--hidden-size", "16", "--batch-size", "8", "--dtype", "float64", "--lr", "0.01",
                "--quiet"]


def write_reversed_pairs(directory: Path, n: int = 400, seed: int = 0) -> Path:
    """``directory/pairs.tsv``: ``n`` made-up words of the letters a-g, each with its letters
    reversed, upper-cased and spaced as its target (a task a small seq2seq model learns fast)."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice("abcdefg") for _ in range(rng.randint(2, 6))))
    path = directory / "pairs.tsv"
    path.write_text("".join(f"{w}\t{' '.join(reversed(w.upper()))}\n" for w in sorted(words)),
                    encoding="utf-8")
    return path
