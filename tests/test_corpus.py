"""Tests for numpy_rnn.tasks.corpus: corpus parsing, vocabulary, download.

The download tests talk only to an http.server on 127.0.0.1; an autouse fixture points the
default URL at a closed local port so that nothing here can reach the real network.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import REAL_PLANTS, REPO_ROOT, needs_real_plants
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_rnn.tasks import corpus as data
from numpy_rnn.tasks.corpus import (
    DataError,
    Vocabulary,
    download,
    ensure_plants,
    is_validation_name,
    load_corpus,
    plants_path,
)


@pytest.fixture(autouse=True)
def _no_real_network(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test that forgets to pass url= fails fast against a closed local port instead of
    # downloading 1.6 MB from GitHub.
    monkeypatch.setattr(data, "PLANTS_URL", "http://127.0.0.1:9/plants.data")


# --------------------------------------------------------------------------------------------
# Corpus parsing
# --------------------------------------------------------------------------------------------


@needs_real_plants
def test_real_plants_has_documented_counts(real_corpus: data.Corpus) -> None:
    assert len(real_corpus.names) == 34_781
    assert len(real_corpus.text) == 778_179
    assert len(real_corpus.vocab) == 30
    assert real_corpus.vocab.chars == tuple("\n -.") + tuple("abcdefghijklmnopqrstuvwxyz")
    assert max(len(n) for n in real_corpus.names) == 65
    assert real_corpus.text.count("\n") == 34_781


@needs_real_plants
def test_real_plants_text_is_first_comma_field_per_line_in_file_order(
    real_corpus: data.Corpus,
) -> None:
    lines = REAL_PLANTS.read_text(encoding="ascii").splitlines()
    assert real_corpus.names == [line.split(",")[0] for line in lines]
    assert real_corpus.text.startswith("abelia\nabelia x grandiflora\nabelmoschus\n")


@needs_real_plants
def test_real_plants_split_follows_crc_rule_and_is_about_ten_percent(
    real_corpus: data.Corpus,
) -> None:
    names = real_corpus.names
    assert real_corpus.val_names == [n for n in names if zlib.crc32(n.encode()) % 10 == 0]
    assert real_corpus.train_names == [n for n in names if zlib.crc32(n.encode()) % 10 != 0]
    assert set(real_corpus.train_names).isdisjoint(real_corpus.val_names)
    assert 0.09 < len(real_corpus.val_names) / len(names) < 0.11
    assert real_corpus.val_text == "".join(n + "\n" for n in real_corpus.val_names)
    assert real_corpus.train_text == "".join(n + "\n" for n in real_corpus.train_names)
    assert len(real_corpus.train_text) + len(real_corpus.val_text) == len(real_corpus.text)


@needs_real_plants
def test_real_plants_vocab_encodes_whole_corpus_and_round_trips(
    real_corpus: data.Corpus,
) -> None:
    ids = real_corpus.vocab.encode(real_corpus.text)
    assert ids.dtype == np.int64 and ids.shape == (778_179,)
    assert real_corpus.vocab.decode(ids) == real_corpus.text


def _write_plants(directory: Path, lines: list[str]) -> Path:
    path = directory / "plants.data"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_plants_parsing_takes_first_field_keeps_leading_space_drops_trailing(
    tmp_path: Path,
) -> None:
    _write_plants(tmp_path, ["abelia,fl,nc", " achnella,ca", "zea mays  ,ia\r", "", "rosa"])
    corpus = load_corpus("plants", data_dir=tmp_path)
    assert corpus.names == ["abelia", " achnella", "zea mays", "rosa"]
    assert corpus.text == "abelia\n achnella\nzea mays\nrosa\n"
    assert corpus.source == tmp_path / "plants.data"


def test_plants_split_puts_crc_multiples_of_ten_in_validation(tmp_path: Path) -> None:
    names = [f"plant {i}" for i in range(200)]
    _write_plants(tmp_path, [f"{n},xx" for n in names])
    corpus = load_corpus("plants", data_dir=tmp_path)
    expected_val = [n for n in names if zlib.crc32(n.encode()) % 10 == 0]
    assert expected_val, "the synthetic names should put some in validation"
    assert corpus.val_names == expected_val
    assert [is_validation_name(n) for n in names] == [n in expected_val for n in names]
    assert corpus.train_names == [n for n in names if n not in expected_val]


def test_vocab_covers_validation_only_characters(tmp_path: Path) -> None:
    # "plant 6" is in validation under the crc rule; "6" appears nowhere else, yet it must be
    # in the vocabulary, which is built from the whole corpus.
    assert is_validation_name("plant 6")
    _write_plants(tmp_path, ["plant 6", "abc", "abd"])
    corpus = load_corpus("plants", data_dir=tmp_path)
    assert "6" not in corpus.train_text
    assert "6" in corpus.vocab.chars
    corpus.vocab.encode(corpus.val_text)


def test_data_dir_comes_from_argument_then_env_then_repo_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NUMPY_RNN_DATA_DIR", raising=False)
    assert plants_path() == REPO_ROOT / "data" / "plants.data"
    monkeypatch.setenv("NUMPY_RNN_DATA_DIR", str(tmp_path / "env"))
    assert plants_path() == tmp_path / "env" / "plants.data"
    assert plants_path(tmp_path / "arg") == tmp_path / "arg" / "plants.data"


def test_load_corpus_reads_plants_from_env_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_plants(tmp_path, ["abelia,fl", "rosa,ca"])
    monkeypatch.setenv("NUMPY_RNN_DATA_DIR", str(tmp_path))
    assert load_corpus().names == ["abelia", "rosa"]


def test_plain_text_last_tenth_is_validation(tmp_path: Path) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(1000)) + "é\n"
    path = tmp_path / "book.txt"
    path.write_bytes(text.encode("utf-8"))
    corpus = load_corpus(str(path))
    assert corpus.text == text
    assert len(corpus.val_text) == 101  # ceil(1002 / 10)
    assert corpus.train_text + corpus.val_text == text
    assert corpus.names is None and corpus.train_names is None and corpus.val_names is None
    assert corpus.vocab.chars == tuple(sorted(set(text)))


def test_plain_text_keeps_crlf_verbatim_and_tiny_text_has_validation(tmp_path: Path) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"ab\r\ncd\r\n")
    corpus = load_corpus(str(path))
    assert corpus.text == "ab\r\ncd\r\n"
    assert corpus.val_text == "\n"
    one = tmp_path / "one.txt"
    one.write_bytes(b"x")
    assert load_corpus(str(one)).val_text == "x"


def test_empty_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty") as info:
        load_corpus(str(path))
    assert str(path) in str(info.value)


def test_non_utf8_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 na\u00efve".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8") as info:
        load_corpus(str(path))
    assert str(path) in str(info.value)


def test_missing_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(ValueError, match="does not exist") as info:
        load_corpus(str(path))
    assert str(path) in str(info.value)


def test_plants_file_with_no_names_is_a_value_error(tmp_path: Path) -> None:
    (tmp_path / "plants.data").write_text("\n\n,fl\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no plant names"):
        load_corpus("plants", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------


def test_vocabulary_is_sorted_and_indices_are_stable() -> None:
    vocab = Vocabulary.from_text("hello world\n")
    assert vocab.chars == ("\n", " ", "d", "e", "h", "l", "o", "r", "w")
    assert len(vocab) == 9
    np.testing.assert_array_equal(vocab.encode("hold"), [4, 6, 5, 2])
    assert vocab.encode("hold").dtype == np.int64
    assert Vocabulary.from_text("dlrow olleh\n") == vocab


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=0, max_size=60))
def test_vocabulary_round_trips_any_text(text: str) -> None:
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text)
    assert ids.shape == (len(text),)
    assert vocab.decode(ids) == text
    assert Vocabulary.from_json(vocab.to_json()) == vocab


def test_vocabulary_json_is_list_of_chars_and_rejects_unsorted() -> None:
    vocab = Vocabulary.from_text("cab")
    assert vocab.to_json() == ["a", "b", "c"]
    with pytest.raises(ValueError, match="sorted"):
        Vocabulary.from_json(["b", "a"])
    with pytest.raises(ValueError, match="sorted"):
        Vocabulary.from_json(["a", "a"])
    with pytest.raises(ValueError, match="single characters"):
        Vocabulary.from_json(["ab"])


def test_encode_unknown_characters_names_them() -> None:
    vocab = Vocabulary.from_text("abc")
    with pytest.raises(ValueError, match=r"'z'.*'\{'|'\{'.*'z'") as info:
        vocab.encode("abz{a")
    assert "'a'" not in str(info.value)


def test_decode_rejects_out_of_range_indices() -> None:
    vocab = Vocabulary.from_text("abc")
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([0, 3])
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode(np.array([-1]))
    assert vocab.decode(np.array([2, 0], dtype=np.int32)) == "ca"


# --------------------------------------------------------------------------------------------
# Download (local server only)
# --------------------------------------------------------------------------------------------


class _Server:
    """A one-file HTTP server on 127.0.0.1 with a chosen misbehaviour."""

    def __init__(self, body: bytes, mode: str = "ok") -> None:
        self.body = body
        self.mode = mode
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5  # bound a stuck client

            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if outer.mode == "drop":
                    # Promise more bytes than are sent, then close: a dropped connection.
                    self.send_header("Content-Length", str(len(outer.body) * 2))
                    self.end_headers()
                    self.wfile.write(outer.body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/plants.data"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator:
    servers: list[_Server] = []

    def start(body: bytes, mode: str = "ok") -> _Server:
        server = _Server(body, mode)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def refused_url() -> Iterator[str]:
    # A bound socket that never listens: connecting to it is refused at once (no timeout wait).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/plants.data"
    finally:
        sock.close()


BODY = b"abelia,fl,nc\nrosa,ca\nzea mays,ia\n" * 50
BODY_SHA = hashlib.sha256(BODY).hexdigest()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_good_file_writes_verified_bytes(tmp_path: Path, serve) -> None:
    server = serve(BODY)
    path = ensure_plants(tmp_path, url=server.url, sha256=BODY_SHA, progress=True)
    assert path == tmp_path / "plants.data"
    assert path.read_bytes() == BODY
    assert _leftovers(tmp_path) == ["plants.data"]
    assert load_corpus("plants", data_dir=tmp_path).names == ["abelia", "rosa", "zea mays"] * 50


def test_download_into_missing_directory_creates_it(tmp_path: Path, serve) -> None:
    server = serve(BODY)
    target = tmp_path / "a" / "b" / "plants.data"
    assert download(server.url, target, BODY_SHA, progress=False) == target
    assert target.read_bytes() == BODY


def test_load_corpus_downloads_when_missing(tmp_path: Path, serve) -> None:
    server = serve(BODY)
    corpus = load_corpus("plants", data_dir=tmp_path, url=server.url, sha256=BODY_SHA)
    assert corpus.names[:2] == ["abelia", "rosa"]
    assert server.requests == 1


def test_download_checksum_mismatch_leaves_no_file(tmp_path: Path, serve) -> None:
    server = serve(BODY)
    with pytest.raises(DataError, match="checksum mismatch") as info:
        ensure_plants(tmp_path, url=server.url, progress=False)  # real PLANTS_SHA256
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "plants.data") in message and server.url in message
    assert _leftovers(tmp_path) == []


def test_download_dropped_connection_leaves_no_partial_file(tmp_path: Path, serve) -> None:
    server = serve(BODY, mode="drop")
    with pytest.raises(DataError, match=f"dropped after {len(BODY)} of {2 * len(BODY)}") as info:
        ensure_plants(tmp_path, url=server.url, sha256=BODY_SHA, timeout=5, progress=False)
    assert str(tmp_path / "plants.data") in str(info.value)
    assert _leftovers(tmp_path) == []


def test_download_unreachable_server_says_where_to_put_the_file(
    tmp_path: Path, refused_url: str
) -> None:
    with pytest.raises(DataError) as info:
        load_corpus("plants", data_dir=tmp_path, url=refused_url, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "refused" in message.lower()
    assert f"put it at {tmp_path / 'plants.data'}" in message
    assert refused_url in message
    assert _leftovers(tmp_path) == []


def test_default_url_is_used_when_none_given(tmp_path: Path) -> None:
    # The autouse fixture redirected PLANTS_URL to a closed local port; the error names it.
    with pytest.raises(DataError, match=r"127\.0\.0\.1:9"):
        ensure_plants(tmp_path, progress=False)


def test_data_error_is_a_runtime_error() -> None:
    assert issubclass(DataError, RuntimeError)


def test_existing_file_is_never_overwritten_but_a_different_one_warns(tmp_path: Path,
                                                                     serve) -> None:
    mine = b"my own plants,xx\n"
    (tmp_path / "plants.data").write_bytes(mine)
    server = serve(BODY)
    with pytest.warns(data.DataWarning, match="not the plants corpus this project knows"):
        assert ensure_plants(tmp_path, url=server.url, sha256=BODY_SHA) == tmp_path / "plants.data"
    assert (tmp_path / "plants.data").read_bytes() == mine
    assert server.requests == 0
    with pytest.warns(data.DataWarning):
        assert load_corpus("plants", data_dir=tmp_path, url=server.url).names == ["my own plants"]
