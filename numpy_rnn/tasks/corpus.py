"""The corpus: from a text file to the split text and the vocabulary every task reads.

The path a reader follows, top to bottom:

1. **Where the corpus lives.** ``plants_path`` finds ``plants.data`` (argument, else the
   ``NUMPY_RNN_DATA_DIR`` environment variable, else ``data/`` next to the ``numpy_rnn``
   package); ``ensure_plants`` downloads it there once when it is missing.
2. **What the model reads.** ``load_corpus`` turns the file into a ``Corpus``: the full text,
   a train/validation split and a ``Vocabulary`` (the sorted characters of the whole corpus);
   ``load_labelled_corpus`` adds the labels after each name (the plants' regions).

The language model's batches of this text are in :mod:`numpy_rnn.tasks.lm_batches`, the
batches of names in :mod:`numpy_rnn.tasks.names`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "DATA_DIR_ENV",
    "PLANTS_FILENAME",
    "PLANTS_SHA256",
    "PLANTS_URL",
    "Corpus",
    "MAX_NAME_LENGTH",
    "MAX_VOCAB",
    "DataError",
    "DataWarning",
    "TokenVocabulary",
    "Vocabulary",
    "default_data_dir",
    "download",
    "ensure_plants",
    "is_validation_name",
    "load_corpus",
    "load_labelled_corpus",
    "parse_labelled_lines",
    "parse_plant_names",
    "plants_path",
]

PLANTS_FILENAME = "plants.data"
PLANTS_URL = "https://raw.githubusercontent.com/Argenni/GUiAO_lab/main/utils/plants.data"
PLANTS_SHA256 = "db1f8b102e4e557de8fce2349772e2ca085bbb79e1c5c90a00e933b2e2e4d00f"
PLANTS_SIZE = 1_690_798   # bytes of the file PLANTS_SHA256 is the hash of
DATA_DIR_ENV = "NUMPY_RNN_DATA_DIR"

# One name in ten goes to validation. Hashing the name (rather than shuffling with a seed) keeps
# each name's side fixed whatever the file order, the Python version or the RNG.
_VAL_MODULUS = 10
_CHUNK_BYTES = 1 << 16


class DataWarning(UserWarning):
    """A local corpus file is not the one this project knows (``ensure_plants``)."""


#: The longest name a corpus of one name per line may hold (plants.data's longest has 65
#: characters). The name tasks pad each batch to its longest name, so one runaway line would
#: make every batch it falls in that long: a name of a million characters once grew a
#: classifier to 23.6 GB before the kernel killed it. Longer names are refused, naming the line.
MAX_NAME_LENGTH = 1000
#: The most distinct characters a corpus's vocabulary may have: the embedding and the output
#: layer have a row per character. A corpus with more is refused, naming the line that passes it.
MAX_VOCAB = 65536


class DataError(RuntimeError):
    """The corpus could not be obtained (download failed, checksum mismatch, ...).

    The message is one line that says what went wrong and where to put the file by hand.
    """


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """The characters a model reads and writes, in sorted order; index i is ``chars[i]``.

    Sorting makes the index of each character the same on every run and machine (unlike
    ``list(set(text))``), so a checkpoint's output layer keeps its meaning.
    """

    chars: tuple[str, ...]
    #: What an entry is: one character (``"chars"``); :class:`TokenVocabulary`'s are words.
    unit: ClassVar[str] = "chars"
    #: What joins a sequence of entries into the text :meth:`encode` reads.
    separator: ClassVar[str] = ""
    # Code points of ``chars`` as a sorted array: encode() looks characters up with
    # searchsorted instead of a Python dict, which is ~50x faster on the 778k-char corpus.
    _codes: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chars = tuple(self.chars)
        for ch in chars:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"vocabulary entries must be single characters, got {ch!r}")
        if list(chars) != sorted(set(chars)):
            raise ValueError("vocabulary characters must be sorted and unique")
        object.__setattr__(self, "chars", chars)
        object.__setattr__(self, "_codes", np.array([ord(c) for c in chars], dtype=np.int64))

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        """The vocabulary of every distinct character in ``text``, sorted."""
        return cls(tuple(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Map a string to indices.

        Returns an int64 array of shape (len(text),). Raises ``ValueError`` naming the
        characters of ``text`` that are not in the vocabulary.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        if len(self.chars) == 0:
            idx = np.zeros(codes.shape, dtype=np.int64)
            known = np.zeros(codes.shape, dtype=bool)
        else:
            idx = np.searchsorted(self._codes, codes)
            idx = np.minimum(idx, len(self.chars) - 1)
            known = self._codes[idx] == codes
        if not known.all():
            unknown = sorted({chr(c) for c in codes[~known].tolist()})
            shown = ", ".join(repr(c) for c in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise ValueError(f"characters not in the vocabulary: {shown}{more}")
        return idx.astype(np.int64, copy=False)

    def encode_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Map a sequence of entries (here characters) to indices: int64 ``(len(tokens),)``;
        ``ValueError`` naming those not in the vocabulary."""
        return self.encode(self.separator.join(tokens))

    def decode(self, indices: Sequence[int] | np.ndarray) -> str:
        """Map indices, shape (N,), back to the string of their characters."""
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise ValueError(f"decode expects a 1-D sequence of indices, got shape {idx.shape}")
        if idx.size == 0:
            return ""
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"decode expects integer indices, got dtype {idx.dtype}")
        bad = (idx < 0) | (idx >= len(self.chars))
        if bad.any():
            raise ValueError(
                f"indices out of range for a vocabulary of {len(self.chars)}: "
                f"{sorted(set(idx[bad].tolist()))[:10]}"
            )
        return "".join(self.chars[i] for i in idx.tolist())

    def to_json(self) -> list[str]:
        """A JSON-ready value: the list of characters in index order."""
        return list(self.chars)

    @classmethod
    def from_json(cls, data: Sequence[str]) -> Vocabulary:
        """Rebuild a vocabulary from ``to_json()``'s list; it must be sorted and unique."""
        if isinstance(data, str) or not isinstance(data, Sequence):
            raise ValueError("Vocabulary.from_json expects a list of single characters")
        return cls(tuple(data))


@dataclass(frozen=True)
class TokenVocabulary(Vocabulary):
    """The tokens a model reads, each a whole word (a side of a pairs file read as
    space-separated tokens: seq2seq's ``--source-tokens words``), in sorted order; index i is
    ``chars[i]`` (the name :class:`Vocabulary` gives its entries). Sorted, so the index of each
    token is the same on every run and machine.

    An entry is a string without whitespace; the empty string may be one (it sorts first: a
    padding entry, which no text encodes to). :meth:`encode` reads a text's whitespace-separated
    words, :meth:`decode` joins tokens with one space.
    """

    unit: ClassVar[str] = "words"
    separator: ClassVar[str] = " "
    # Each token's index: encode() looks tokens up in it.
    _index: dict[str, int] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        tokens = tuple(self.chars)
        for tok in tokens:
            if not isinstance(tok, str) or tok.split() != ([tok] if tok else []):
                raise ValueError(f"vocabulary tokens must be strings without whitespace, "
                                 f"got {tok!r}")
        if list(tokens) != sorted(set(tokens)):
            raise ValueError("vocabulary tokens must be sorted and unique")
        object.__setattr__(self, "chars", tokens)
        object.__setattr__(self, "_codes", np.zeros(0, dtype=np.int64))   # unused: a dict
        object.__setattr__(self, "_index", {tok: i for i, tok in enumerate(tokens)})

    def encode(self, text: str) -> np.ndarray:
        """Map the whitespace-separated words of ``text`` to indices: int64 ``(n,)`` for n
        words; ``ValueError`` naming the words not in the vocabulary."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return self.encode_tokens(text.split())

    def encode_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Map a sequence of tokens to indices: int64 ``(len(tokens),)``; ``ValueError``
        naming the tokens not in the vocabulary (the empty padding entry is never one)."""
        index = self._index
        unknown = sorted({t for t in tokens if not t or t not in index})
        if unknown:
            shown = ", ".join(repr(t) for t in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise ValueError(f"tokens not in the vocabulary: {shown}{more}")
        return np.array([index[t] for t in tokens], dtype=np.int64)

    def decode(self, indices: Sequence[int] | np.ndarray) -> str:
        """Map indices, shape (N,), back to their tokens joined by one space."""
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise ValueError(f"decode expects a 1-D sequence of indices, got shape {idx.shape}")
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"decode expects integer indices, got dtype {idx.dtype}")
        bad = (idx < 0) | (idx >= len(self.chars))
        if bad.any():
            raise ValueError(f"indices out of range for a vocabulary of {len(self.chars)}: "
                             f"{sorted(set(idx[bad].tolist()))[:10]}")
        return " ".join(self.chars[i] for i in idx.tolist())


# --------------------------------------------------------------------------------------------
# Where plants.data lives, and fetching it once
# --------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """``data/`` in the repository root, i.e. the directory next to the ``numpy_rnn`` package."""
    return Path(__file__).resolve().parents[2] / "data"


def plants_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``plants.data`` is looked for: ``data_dir``, else ``$NUMPY_RNN_DATA_DIR``, else
    ``default_data_dir()``. The file need not exist."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or default_data_dir()
    return Path(data_dir) / PLANTS_FILENAME


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def download(
    url: str,
    target: str | os.PathLike[str],
    sha256: str,
    *,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``target`` atomically, checking the bytes' sha256.

    The bytes go to a temporary ``*.part`` file in the target's directory, which is fsynced and
    then renamed over ``target`` with ``os.replace``, so ``target`` either does not exist or
    holds the complete, verified file; it is never partial. On any failure (network error,
    HTTP error, dropped connection, short read, checksum mismatch) the temporary file is
    removed and ``DataError`` is raised. A progress bar goes to stderr when ``progress`` and
    tqdm is installed (tqdm is optional).

    Returns the target path.
    """
    target = Path(target)
    hint = f"download {url} yourself and put it at {target}"

    def fail(what: str, exc: BaseException | None = None) -> DataError:
        err = DataError(_one_line(f"could not download {target.name}: {what}; {hint}"))
        err.__cause__ = exc
        return err

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f"{target.name}.", suffix=".part", dir=target.parent
        )
    except OSError as exc:
        raise fail(f"cannot write to {target.parent} ({exc})", exc) from exc
    tmp = Path(tmp_name)
    done = False
    try:
        with os.fdopen(fd, "wb") as out:
            digest, received, expected_len = _fetch(url, out, timeout=timeout, progress=progress)
            # http.client returns b"" rather than raising when the server closes early, so the
            # length check is ours; the checksum below would catch it too, less clearly.
            if expected_len is not None and received < expected_len:
                raise fail(f"connection dropped after {received} of {expected_len} bytes")
            if digest != sha256.lower():
                raise fail(
                    f"checksum mismatch for {url} (expected sha256 {sha256}, got {digest}, "
                    f"{received} bytes)"
                )
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a data file should be readable
        os.replace(tmp, target)
        done = True
    except DataError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) if isinstance(exc, urllib.error.URLError) else None
        raise fail(f"{type(exc).__name__}: {reason or exc} (from {url})", exc) from exc
    finally:
        if not done:
            with contextlib.suppress(OSError):
                tmp.unlink()
    fsync_dir(target.parent)
    return target


def _fetch(url: str, out: Any, *, timeout: float, progress: bool) -> tuple[str, int, int | None]:
    """Stream ``url`` into the open binary file ``out``.

    Returns (sha256 hex digest, bytes received, Content-Length or None).
    """
    hasher = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        length_header = resp.headers.get("Content-Length") if resp.headers else None
        expected_len = int(length_header) if length_header and length_header.isdigit() else None
        bar = _progress_bar(expected_len, url) if progress else None
        try:
            while True:
                try:
                    chunk = resp.read(_CHUNK_BYTES)
                except http.client.IncompleteRead as exc:
                    # Some servers/versions raise here instead of returning b"": keep what
                    # came and let the caller's length check report the dropped connection.
                    chunk = exc.partial
                    if chunk:
                        hasher.update(chunk)
                        out.write(chunk)
                        received += len(chunk)
                    break
                if not chunk:
                    break
                hasher.update(chunk)
                out.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    return hasher.hexdigest(), received, expected_len


def _progress_bar(total: int | None, url: str) -> Any:
    # tqdm is an optional extra: without it the download runs silently.
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"downloading {url.rsplit('/', 1)[-1]}",
        file=sys.stderr,
        leave=False,
    )


def fsync_dir(directory: Path) -> None:
    """fsync a directory after an os.replace into it (atomic writes here and in checkpoints)."""
    # Makes the rename itself durable; best effort, since not every OS can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_plants(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Return the path of ``plants.data``, downloading it first if it is missing.

    The directory is resolved by ``plants_path``. ``url`` and ``sha256`` default to
    ``PLANTS_URL`` and ``PLANTS_SHA256`` (looked up at call time).

    An existing file is never overwritten, but it is checked against ``sha256``: one that differs
    (a truncated copy, an edited one, another corpus under this name) is still used, with a
    :class:`DataWarning` that gives its size and hash, the expected ones, and what to do. The
    hash is computed once per process for each (path, size, mtime).
    """
    path = plants_path(data_dir)
    if path.is_file():
        problem = _local_plants_problem(path, sha256 if sha256 is not None else PLANTS_SHA256)
        if problem is not None:
            warnings.warn(problem, DataWarning, stacklevel=2)
        return path
    return download(
        url if url is not None else PLANTS_URL,
        path,
        sha256 if sha256 is not None else PLANTS_SHA256,
        timeout=timeout,
        progress=progress,
    )


# (resolved path, size, mtime in ns) -> sha256 of the file: a local plants.data is hashed
# once per process, however many times it is loaded.
_LOCAL_HASHES: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> tuple[str, int]:
    """The sha256 hex digest and size of ``path``, cached by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _LOCAL_HASHES.get(key)
    if digest is None:
        hasher = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
                hasher.update(chunk)
        digest = _LOCAL_HASHES[key] = hasher.hexdigest()
    return digest, st.st_size


def _local_plants_problem(path: Path, sha256: str) -> str | None:
    """None when the local ``path`` has the hash ``sha256``; else one line saying how it differs
    and what to do."""
    digest, size = _file_sha256(path)
    if digest == sha256.lower():
        return None
    expected = (f"{PLANTS_SIZE:,} bytes, sha256 {sha256.lower()}"
                if sha256.lower() == PLANTS_SHA256 else f"sha256 {sha256.lower()}")
    return (f"{path} is not the plants corpus this project knows (size {size:,} bytes, sha256 "
            f"{digest}; expected {expected}): it is used as it is; delete it to download the "
            f"known corpus again")


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """A text split into training and validation, with the vocabulary of the whole.

    text:        the full corpus as the model reads it.
    train_text:  the training part (plants: training names in file order, each + "\\n").
    val_text:    the validation part (plants: validation names in file order, each + "\\n").
    names:       plants: every name in file order; ``None`` for a plain text file.
    train_names: plants: names in training, file order; ``None`` for a plain text file.
    val_names:   plants: names in validation, file order; ``None`` for a plain text file.
    vocab:       sorted characters of ``text`` (train and validation together), so validation
                 never holds a character the model cannot represent.
    source:      the file the corpus was read from.
    labels:      a labelled corpus (plants: the region codes after each name): the label
                 vocabulary, the sorted set of every label in the file; else ``None``.
    train_targets, val_targets: a labelled corpus: bool ``(N, R)``, row i the labels of
                 ``train_names[i]`` / ``val_names[i]`` (column j is ``labels[j]``); else ``None``.
    """

    text: str
    train_text: str
    val_text: str
    names: list[str] | None
    train_names: list[str] | None
    val_names: list[str] | None
    vocab: Vocabulary
    source: Path
    labels: tuple[str, ...] | None = None
    train_targets: np.ndarray | None = None
    val_targets: np.ndarray | None = None

    def describe(self) -> str:
        """``corpus plants.data: 620,178 training and 69,102 validation characters, vocabulary
        of 60, 70 labels``: the log's line."""
        return (f"corpus {self.source}: {len(self.train_text):,} training and "
                f"{len(self.val_text):,} validation characters, vocabulary of {len(self.vocab)}"
                + (f", {len(self.labels)} labels" if self.labels is not None else ""))

    def fingerprint(self) -> str:
        """A digest of what a run reads from the corpus (text, vocabulary, labels), to check
        that every process of a job reads the same."""
        h = hashlib.sha256()
        for part in (self.train_text, self.val_text, "\x00".join(self.vocab.chars),
                     "\x00".join(self.labels or ())):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()


def is_validation_name(name: str) -> bool:
    """The split rule for names: validation when ``zlib.crc32(name.encode()) % 10 == 0``."""
    return zlib.crc32(name.encode("utf-8")) % _VAL_MODULUS == 0


def _read_text(path: Path, what: str = "corpus", encoding: str = "utf-8") -> str:
    """The whole of the UTF-8 text file ``path``; ``ValueError`` with one line naming the
    ``what`` file (and the line of a byte that is not UTF-8) when it is missing, not a file,
    empty or not UTF-8. ``encoding="utf-8-sig"`` drops a byte-order mark."""
    if not path.exists():
        raise ValueError(f"{what} file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} path {path} is not a file")
    raw = path.read_bytes()
    if not raw:
        raise ValueError(f"{what} file {path} is empty")
    try:
        # Decoded from bytes, not opened in text mode: the text is kept verbatim ("\r\n"
        # stays as two characters) whatever the platform's newline convention.
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(f"{what} file {path} line {line}: not UTF-8 text "
                         f"(byte {exc.start}: {exc.reason})") from exc


def _check_name(name: str, lineno: int, source: Any) -> None:
    """``ValueError`` naming ``source``'s line ``lineno`` when ``name`` is over
    :data:`MAX_NAME_LENGTH` characters."""
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{source or 'the corpus'} line {lineno}: a name of {len(name):,} "
                         f"characters; names are at most {MAX_NAME_LENGTH:,} (MAX_NAME_LENGTH)")


def parse_plant_names(text: str, source: Any = None) -> list[str]:
    """The names of a plants.data text: the first comma field of each non-blank line.

    Trailing whitespace (a "\\r" line end included) is removed; leading whitespace is KEPT. The
    file writes 49 hybrid genera (e.g. " achnella", "×Achnella" with the "×" lost) with a leading
    space, and the documented corpus (778,179 characters, data/README.md) keeps it. A name over
    :data:`MAX_NAME_LENGTH` characters is a ``ValueError`` naming ``source`` (the file) and its
    line.
    """
    names = []
    for lineno, line in enumerate(text.split("\n"), 1):
        name = line.split(",", 1)[0].rstrip()
        if name.strip():
            _check_name(name, lineno, source)
            names.append(name)
    return names


def parse_labelled_lines(text: str, source: Any = None
                         ) -> tuple[list[str], list[tuple[str, ...]]]:
    """The names and labels of a ``text,label[,label...]`` file, in file order.

    The name is the first comma field with trailing whitespace removed (as
    :func:`parse_plant_names` reads it); the labels are the other fields, stripped, the empty
    ones dropped. A name that appears on several lines gets the union of their labels, at its
    first line's place. Blank lines are skipped. A name over :data:`MAX_NAME_LENGTH` characters
    is a ``ValueError`` naming ``source`` (the file) and the line.
    """
    order: list[str] = []
    sets: dict[str, list[str]] = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        fields = line.split(",")
        name = fields[0].rstrip()
        if not name.strip():
            continue
        _check_name(name, lineno, source)
        codes = [c.strip() for c in fields[1:] if c.strip()]
        if name not in sets:
            order.append(name)
            sets[name] = []
        sets[name].extend(c for c in codes if c not in sets[name])
    return order, [tuple(sets[n]) for n in order]


def _check_vocabulary(vocab: Vocabulary, path: Path, names: bool) -> None:
    """``ValueError`` when ``vocab`` has over :data:`MAX_VOCAB` characters, naming the first line
    of ``path`` that brings it over (``names``: only each line's name counts, as read)."""
    if len(vocab) <= MAX_VOCAB:
        return
    seen, lineno = {"\n"}, 0
    for i, line in enumerate(_read_text(path).split("\n"), 1):
        seen.update(line.split(",", 1)[0].rstrip() if names else line)
        if len(seen) > MAX_VOCAB:
            lineno = i
            break
    raise ValueError(f"{path} line {lineno}: the vocabulary passes {MAX_VOCAB:,} distinct "
                     f"characters (MAX_VOCAB) here, {len(vocab):,} in all: the embedding and the "
                     "output layer have a row per character")


def _names_corpus(path: Path, names: list[str], **labelled: Any) -> Corpus:
    """The corpus of a list of names: split by :func:`is_validation_name`, in file order, with
    the vocabulary of the names' text (each name + "\\n", as the language model reads them);
    ``labelled`` are the label fields of :class:`Corpus`, when there are labels."""
    train_names = [n for n in names if not is_validation_name(n)]
    val_names = [n for n in names if is_validation_name(n)]
    text = "".join(n + "\n" for n in names)
    vocab = Vocabulary.from_text(text)
    _check_vocabulary(vocab, path, names=True)
    return Corpus(
        text=text,
        train_text="".join(n + "\n" for n in train_names),
        val_text="".join(n + "\n" for n in val_names),
        names=names,
        train_names=train_names,
        val_names=val_names,
        vocab=vocab,
        source=path,
        **labelled,
    )


def _labelled(path: Path, names: list[str], label_sets: list[tuple[str, ...]]) -> Corpus:
    """The corpus of labelled names (:func:`_names_corpus`) with the label vocabulary (the sorted
    set of codes) and the multi-hot label matrices of the training and validation names."""
    labels = tuple(sorted({c for codes in label_sets for c in codes}))
    column = {c: j for j, c in enumerate(labels)}
    targets = np.zeros((len(names), len(labels)), dtype=bool)
    for i, codes in enumerate(label_sets):
        targets[i, [column[c] for c in codes]] = True
    val = np.array([is_validation_name(n) for n in names], dtype=bool)
    return _names_corpus(path, names, labels=labels, train_targets=targets[~val],
                         val_targets=targets[val])


def load_labelled_corpus(
    source: str = "plants",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Corpus:
    """A corpus of names with labels, for the classifier and the conditional generator.

    ``source="plants"``: ``plants.data`` as :func:`load_corpus` finds it, the labels being the
    region codes after each name. Any other ``source`` is a UTF-8 file of lines
    ``text,label[,label...]`` (:func:`parse_labelled_lines`), a list of names with their
    languages, say. Either way the split is the names' (:func:`is_validation_name`), the
    vocabulary the language model's (the sorted characters of every name and the newline), and
    the label vocabulary the sorted set of every label in the file.

    Raises ``ValueError`` with one line naming the file when it is missing, empty, not UTF-8,
    holds no names, no label at all (a plain list of names: train ``--task lm`` on it), or no
    validation or no training name.
    """
    if source == "plants":
        path = ensure_plants(data_dir, url=url, sha256=sha256, progress=progress)
    else:
        path = Path(source)
    names, label_sets = parse_labelled_lines(_read_text(path), path)
    if not names:
        raise ValueError(f"corpus file {path} holds no names")
    if not any(label_sets):
        raise ValueError(f"corpus file {path} has no labels: each line must be "
                         "text,label[,label...] (for a plain list of names use --task lm)")
    corpus = _labelled(path, names, label_sets)
    assert corpus.train_names is not None and corpus.val_names is not None
    if not corpus.val_names or not corpus.train_names:
        raise ValueError(f"corpus file {path} has {len(corpus.train_names)} training and "
                         f"{len(corpus.val_names)} validation names (one in ten names goes to "
                         "validation, by a hash of the name): it needs both")
    return corpus


def load_corpus(
    source: str = "plants",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Corpus:
    """Load a corpus for character-level training.

    ``source="plants"`` (the default): the plant-name corpus. ``plants.data`` is found (or
    downloaded, see ``ensure_plants``; ``url``/``sha256`` override the download) in
    ``data_dir`` / ``$NUMPY_RNN_DATA_DIR`` / ``<repo>/data``. The text is one name per line
    (``parse_plant_names``), each followed by "\\n", in file order. A name is in validation
    when ``is_validation_name(name)`` (about 10%).

    Any other ``source`` is the path of a UTF-8 text file, read verbatim; its last
    ``ceil(len/10)`` characters are validation (so validation is never empty), the rest training.
    ``names``/``train_names``/``val_names`` are ``None``.

    Raises ``ValueError`` naming the file when it is missing, empty, not UTF-8, or (plants) has
    no names; ``DataError`` when plants.data is missing and cannot be downloaded.
    """
    if source == "plants":
        path = ensure_plants(data_dir, url=url, sha256=sha256, progress=progress)
        text = _read_text(path)
        names = parse_plant_names(text, path)
        if not names:
            raise ValueError(f"corpus file {path} holds no plant names")
        label_names, label_sets = parse_labelled_lines(text, path)
        if label_names == names:     # every name once: the regions come along
            return _labelled(path, names, label_sets)
        return _names_corpus(path, names)

    path = Path(source)
    text = _read_text(path)
    cut = len(text) - (len(text) + _VAL_MODULUS - 1) // _VAL_MODULUS
    vocab = Vocabulary.from_text(text)
    _check_vocabulary(vocab, path, names=False)
    return Corpus(
        text=text,
        train_text=text[:cut],
        val_text=text[cut:],
        names=None,
        train_names=None,
        val_names=None,
        vocab=vocab,
        source=path,
    )
