"""Tests for numpy_rnn.tasks.data: corpus parsing, vocabulary, download, batching.

The download tests talk only to an http.server on 127.0.0.1; an autouse fixture points the
default URL at a closed local port so that nothing here can reach the real network.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_rnn.tasks import data
from numpy_rnn.tasks.data import (
    DataError,
    NameStreamBatcher,
    StreamBatcher,
    Vocabulary,
    download,
    ensure_plants,
    is_validation_name,
    load_corpus,
    plants_path,
    random_windows,
    validation_segments,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _shared_data_dir() -> Path:
    return Path(os.environ.get("NUMPY_RNN_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


REAL_PLANTS = _shared_data_dir() / "plants.data"
needs_real_plants = pytest.mark.skipif(
    not REAL_PLANTS.is_file(), reason=f"{REAL_PLANTS} not present"
)


@pytest.fixture(autouse=True)
def _no_real_network(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test that forgets to pass url= fails fast against a closed local port instead of
    # downloading 1.6 MB from GitHub.
    monkeypatch.setattr(data, "PLANTS_URL", "http://127.0.0.1:9/plants.data")


# --------------------------------------------------------------------------------------------
# Corpus parsing
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_corpus() -> data.Corpus:
    if not REAL_PLANTS.is_file():
        pytest.skip(f"{REAL_PLANTS} not present")
    return load_corpus("plants", data_dir=REAL_PLANTS.parent, progress=False)


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


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


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


def test_validation_segments_on_real_plants_validation(real_corpus: data.Corpus) -> None:
    encoded = real_corpus.vocab.encode(real_corpus.val_text)
    inputs, targets = validation_segments(encoded, max_segments=16)
    n = len(encoded)
    assert inputs.shape == (16, (n - 1) // 16)
    np.testing.assert_array_equal(targets.ravel(), encoded[1 : 16 * ((n - 1) // 16) + 1])


def test_validation_segments_rejects_fewer_than_two_characters() -> None:
    with pytest.raises(ValueError, match="too short"):
        validation_segments(np.arange(1))
