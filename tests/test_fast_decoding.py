"""Decoding one word at a time without the general path's overhead (issue 26): the seq2seq
model's ``encode`` and ``decode_step`` read their embeddings' input projections from tables per
token and check a memory once, and must decode exactly what the general path decodes.

Checked here, from the library up:

* ``Recurrent.forward_projected`` and ``Recurrent.forward_step(projected=...)`` are the layer's
  ``forward`` and ``forward_step`` to the bit when given the projection those compute, and a
  ``StackStep`` (``forward_step`` prepared once) is ``forward_step`` to the bit;
* the model's ``encode`` and ``decode_step`` are the general path's (``_encode_general``,
  ``_decode_step_general``: the embedding, the layer's forward, ``forward_step`` over ``[x; f]``)
  to float rounding, for every cell, attention and decoder path, float32 and float64;
* greedy (batch 1 and batched) and beam search write the same tokens with both, and the same
  log-probabilities and scores to float rounding, over a few hundred sources;
* the tables follow the weights: after ``load_state_dict``, an optimizer step or an edit of an
  embedding the decoder uses the new weights (equal to a fresh model given them), and while
  nothing changes they are not rebuilt;
* a step over a known memory still refuses bad tokens and feeds with the general check's
  errors.
"""

from __future__ import annotations

from itertools import product
from typing import Any

import numpy as np
import pytest

import numpy_rnn.tasks.seq2seq.model as model_module
from numpy_rnn.nn.attention import SCORES
from numpy_rnn.nn.optim import Adam
from numpy_rnn.nn.recurrent import GRU, LSTM, RNN, Recurrent, input_biases
from numpy_rnn.tasks.decoding import beam_search, greedy_decode
from numpy_rnn.tasks.seq2seq import BOS, EOS, PAD, Seq2Seq, Seq2SeqConfig, Seq2SeqInputs

VS, VT = 9, 11
CELLS = ("lstm", "gru", "rnn")
ATTENTIONS = (*SCORES, "none")

# --------------------------------------------------------------------------------------------
# The library's entries: forward_projected, forward_step(projected=), StackStep
# --------------------------------------------------------------------------------------------

LAYER_KINDS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def random_layer(kind: str, F: int, H: int, dtype: str, **kw: Any) -> Recurrent:
    layer = LAYER_KINDS[kind](F, H, dtype=dtype, seed=0, **kw)
    rng = np.random.default_rng(1)
    for p in layer.params.values():
        p[...] = rng.normal(0.0, 0.5, p.shape)
    return layer


def projection(layer: Recurrent, x: np.ndarray, direction: int = 0) -> np.ndarray:
    """``x (..., F) W_ih^T`` plus the biases a whole-sequence run adds, as the layer adds them."""
    p = layer.step_params(0, direction)
    biases, _ = input_biases(layer.step, p, stepwise=False)
    gx = (x.reshape(-1, x.shape[-1]) @ p["weight_ih"].T).reshape(x.shape[:-1] + (-1,))
    for b in biases:
        gx += b
    return gx


@pytest.mark.parametrize("kind,dtype,layers,bidirectional,padded",
                         list(product(CELLS, ("float32", "float64"), (1, 2), (False, True),
                                      (False, True))))
def test_forward_projected_is_the_layers_forward_to_the_bit(kind, dtype, layers, bidirectional,
                                                           padded):
    layer = random_layer(kind, 5, 4, dtype, num_layers=layers, bidirectional=bidirectional)
    rng = np.random.default_rng(2)
    T, B = 6, 3
    x = rng.standard_normal((T, B, 5)).astype(dtype)
    lengths = np.array([6, 2, 4]) if padded else None
    layer.eval()
    want, want_finals = Recurrent.forward(layer, x, None, lengths)
    gx = [projection(layer, x, d) for d in range(layer.num_directions)]
    got, finals = layer.forward_projected(gx, lengths)
    np.testing.assert_array_equal(got, want)
    for a, b in zip(finals, want_finals):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind,dtype,layers", list(product(CELLS, ("float32", "float64"),
                                                          (1, 2))))
def test_forward_step_with_projected_input_is_forward_step_to_the_bit(kind, dtype, layers):
    layer = random_layer(kind, 5, 4, dtype, num_layers=layers)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5)).astype(dtype)
    hx = tuple(rng.standard_normal((layers, 2, n)).astype(dtype)
               for n in layer.step.state_sizes())
    want, want_states = layer.forward_step(x, hx)
    got, states = layer.forward_step(None, hx, projected=projection(layer, x))
    np.testing.assert_array_equal(got, want)
    for a, b in zip(states, want_states):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind,dtype,layers", list(product(CELLS, ("float32", "float64"),
                                                          (1, 2))))
def test_a_kept_stack_step_is_a_step_of_forward_and_follows_the_weights(kind, dtype, layers):
    layer = random_layer(kind, 5, 4, dtype, num_layers=layers)
    stepper = layer.stepper()
    rng = np.random.default_rng(4)
    layer.eval()
    for B in (3, 1, 3):              # a kept stepper keeps its scratch buffers per batch size
        x = rng.standard_normal((B, 5)).astype(dtype)
        hx = tuple(rng.standard_normal((layers, B, n)).astype(dtype)
                   for n in layer.step.state_sizes())
        out, finals = Recurrent.forward(layer, x[None], hx)     # one step of the sequence loop
        want = (out[0], finals)
        for got in (stepper(x, hx), stepper(None, hx, projected=projection(layer, x)),
                    layer.forward_step(x, hx)):
            np.testing.assert_array_equal(got[0], want[0])
            for a, b in zip(got[1], want[1]):
                np.testing.assert_array_equal(a, b)
        for p in layer.params.values():               # an optimizer step, in place
            p *= 1.1
    with pytest.raises(TypeError):
        stepper(x, hx[:1] if len(hx) > 1 else hx[0])


def test_projected_inputs_are_checked():
    layer = random_layer("lstm", 5, 4, "float64", bidirectional=True)
    gx = np.zeros((3, 2, 16))
    with pytest.raises(ValueError, match="one array per direction"):
        layer.forward_projected([gx])
    with pytest.raises(ValueError, match="num_gates"):
        layer.forward_projected([gx, gx[..., :12]])
    with pytest.raises(TypeError, match="dtype"):
        layer.forward_projected([gx, gx.astype(np.float32)])
    one = random_layer("gru", 5, 4, "float64")
    with pytest.raises(ValueError, match="num_gates"):
        one.forward_step(None, (np.zeros((1, 2, 4)),), projected=np.zeros((2, 16)))


# --------------------------------------------------------------------------------------------
# The model: encode and decode_step against the general path
# --------------------------------------------------------------------------------------------

def make_model(cell: str = "lstm", attention: str = "general", feeding: bool = True,
               layers: int = 1, dtype: str = "float64", H: int = 8, seed: int = 0,
               scale: float = 0.8) -> Seq2Seq:
    """A model whose every parameter is redrawn from N(0, scale^2) (biases too): peaked
    distributions, so outputs end at many different lengths."""
    config = Seq2SeqConfig(vocab_size=VS, target_vocab_size=VT, hidden_size=H,
                           num_layers=layers, cell=cell, embedding_dim=5,
                           target_embedding_dim=6, attention=attention, attention_size=5,
                           input_feeding=feeding, dtype=dtype,
                           dropout=0.2 if layers > 1 else 0.0)
    model = Seq2Seq(config, seed=seed)
    rng = np.random.default_rng([seed, 5])
    for p in model.params.values():
        p[...] = rng.normal(0.0, scale, p.shape)
    return model.eval()


class General:
    """The model's general path, as a Predictor (the reference the fast path must equal)."""

    def __init__(self, model: Seq2Seq) -> None:
        self.model = model
        self.config = model.config

    def infer(self, name: str, *args: Any) -> Any:
        method = {"encode": self.model._encode_general,
                  "decode_step": self.model._decode_step_general}[name]
        return method(*args)


class Fast(General):
    def infer(self, name: str, *args: Any) -> Any:
        return getattr(self.model, name)(*args)


def sources(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VS, size=int(rng.integers(1, 10))) for _ in range(n)]


def padded(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(r) for r in rows])
    source = np.full((len(rows), lengths.max()), PAD)
    for i, r in enumerate(rows):
        source[i, :len(r)] = r
    return source, lengths


def assert_close(got: Any, want: Any, dtype: str, what: str, steps: int = 1) -> None:
    """Equal to float rounding: within ``1e-5`` (float32) or ``1e-11`` (float64) of the
    largest value, per step of recurrence the value went through (``steps``)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    err = float(np.abs(got - want).max(initial=0.0)) / scale
    assert err <= steps * (1e-5 if dtype == "float32" else 1e-11), f"{what}: {err:.3g}"


MODEL_CASES = [(c, a, f, 1, d) for c in CELLS for a in ATTENTIONS for f in (True, False)
               for d in ("float64", "float32")] + [("lstm", "general", True, 2, "float64"),
                                                   ("gru", "additive", False, 2, "float32")]


@pytest.mark.parametrize("cell,attention,feeding,layers,dtype", MODEL_CASES)
def test_encode_and_decode_steps_equal_the_general_path(cell, attention, feeding, layers,
                                                        dtype):
    """Teacher-forced steps over a padded batch and over one source: memory, states, feeds,
    log-probabilities and attention of every step."""
    model = make_model(cell, attention, feeding, layers, dtype)
    rng = np.random.default_rng(6)
    for rows in (sources(4, seed=1), sources(1, seed=2)):
        source, lengths = padded(rows)
        fast, general = model.encode(source, lengths), model._encode_general(source, lengths)
        assert_close(fast[0], general[0], dtype, "memory")
        for a, b in zip(fast[1], general[1]):
            assert_close(a, b, dtype, "initial state")
        memory, state = fast
        feed = np.zeros((len(rows), model.config.hidden_size), dtype)
        for t in range(5):
            # Both steps from the same inputs (the fast path's state and feed).
            tokens = rng.integers(0, VT, size=len(rows)) if t else np.full(len(rows), BOS)
            got = model.decode_step(tokens, state, feed, memory, lengths)
            want = model._decode_step_general(tokens, state, feed, memory, lengths)
            assert_close(got[0], want[0], dtype, f"log_probs at step {t}")
            for a, b in zip(got[1], want[1]):
                assert_close(a, b, dtype, f"state at step {t}")
            assert_close(got[2], want[2], dtype, f"feed at step {t}")
            assert (got[3] is None) == (attention == "none")
            if got[3] is not None:
                assert_close(got[3], want[3], dtype, f"alpha at step {t}")
            assert got[0].dtype == np.float64 and got[2].dtype == np.dtype(dtype)
            _, state, feed, _ = got


def same_hypotheses(got: list, want: list, dtype: str) -> None:
    """The same tokens; log-probabilities, scores and attention to rounding over the at most
    12 steps of a search."""
    assert [h.tokens for h in got] == [h.tokens for h in want]
    assert_close([h.log_prob for h in got], [h.log_prob for h in want], dtype, "log_prob", 12)
    assert_close([h.score for h in got], [h.score for h in want], dtype, "score", 12)
    for a, b in zip(got, want):
        assert (a.alpha is None) == (b.alpha is None)
        if a.alpha is not None:
            assert a.alpha.shape == b.alpha.shape
            assert_close(a.alpha, b.alpha, dtype, "alpha", 12)


@pytest.mark.parametrize("cell,attention,dtype,layers", [("lstm", "general", "float32", 1),
                                                         ("lstm", "general", "float64", 1),
                                                         ("lstm", "general", "float32", 2),
                                                         ("gru", "additive", "float32", 1),
                                                         ("rnn", "dot", "float64", 1)])
def test_greedy_and_beam_write_what_the_general_path_writes(cell, attention, dtype, layers):
    """Many sources: greedy one at a time (a speech front end's batch of 1), greedy batched
    and beam search with n-best lists: the same tokens, and the same log-probabilities,
    scores and attention to float rounding."""
    model = make_model(cell, attention, layers=layers, dtype=dtype, H=12, scale=1.0)
    model.params["out.bias"][EOS] += 1.0                  # outputs of many lengths
    fast, general = Fast(model), General(model)
    rows = sources(150, seed=7)
    kw = dict(bos=BOS, eos=EOS, max_length=12)
    lengths_seen = set()
    for r in rows:
        source, lengths = padded([r])
        got = greedy_decode(fast, source, lengths, **kw)
        same_hypotheses(got, greedy_decode(general, source, lengths, **kw), dtype)
        lengths_seen.add(len(got[0].tokens))
    assert len(lengths_seen) >= 5                         # not all cut at max_length
    source, lengths = padded(rows)
    same_hypotheses(greedy_decode(fast, source, lengths, **kw),
                    greedy_decode(general, source, lengths, **kw), dtype)
    got = beam_search(fast, source[:60], lengths[:60], beam=5, nbest=3, **kw)
    want = beam_search(general, source[:60], lengths[:60], beam=5, nbest=3, **kw)
    for g, w in zip(got, want):
        same_hypotheses(g, w, dtype)
    source, lengths = padded(rows[:1])
    got = beam_search(fast, source, lengths, beam=4, nbest=4, **kw)[0]
    same_hypotheses(got, beam_search(general, source, lengths, beam=4, nbest=4, **kw)[0], dtype)


# --------------------------------------------------------------------------------------------
# The tables follow the weights
# --------------------------------------------------------------------------------------------

def decode_two_steps(model: Seq2Seq, source: np.ndarray, lengths: np.ndarray,
                     memory: np.ndarray | None = None) -> list[np.ndarray]:
    """encode (unless ``memory`` is given, then its initial state is encoded anew), then two
    decoder steps: everything they return."""
    encoded, state = model.encode(source, lengths)
    memory = encoded if memory is None else memory
    feed = np.zeros((len(source), model.config.hidden_size), model.dtype)
    out = [encoded, *state]
    tokens = np.full(len(source), BOS)
    for _ in range(2):
        log_probs, state, feed, alpha = model.decode_step(tokens, state, feed, memory, lengths)
        out += [log_probs, *state, feed, alpha]
        tokens = log_probs.argmax(axis=1)
    return out


def fresh_copy(model: Seq2Seq) -> Seq2Seq:
    fresh = Seq2Seq(model.config, seed=1)
    fresh.load_state_dict(model.state_dict())
    return fresh.eval()


def assert_decodes_like(model: Seq2Seq, other: Seq2Seq, source: np.ndarray,
                        lengths: np.ndarray) -> None:
    for a, b in zip(decode_two_steps(model, source, lengths),
                    decode_two_steps(other, source, lengths)):
        np.testing.assert_array_equal(a, b)


def test_after_load_state_dict_the_same_memory_decodes_with_the_new_weights():
    model, other = make_model(seed=0), make_model(seed=1)
    source, lengths = padded(sources(3, seed=3))
    memory, state = model.encode(source, lengths)
    feed = np.zeros((3, 8))
    tokens = np.full(3, BOS)
    model.decode_step(tokens, state, feed, memory, lengths)          # a session over memory
    model.load_state_dict(other.state_dict())
    got = model.decode_step(tokens, state, feed, memory, lengths)
    want = other.decode_step(tokens, state, feed, memory, lengths)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert_decodes_like(model, other, source, lengths)


def test_after_an_optimizer_step_decoding_uses_the_new_weights():
    model = make_model(dtype="float32")
    source, lengths = padded(sources(3, seed=4))
    before = decode_two_steps(model, source, lengths)
    target_in = np.array([[BOS, 3, 4], [BOS, 5, PAD], [BOS, PAD, PAD]])
    targets = np.array([[3, 4, EOS], [5, EOS, -100], [EOS, -100, -100]])
    optimizer = Adam(model.params, model.grads, lr=1e-2)
    model.train()
    model.zero_grad()
    model.loss_and_backward(Seq2SeqInputs(source, lengths, target_in), targets)
    optimizer.step()
    model.eval()
    after = decode_two_steps(model, source, lengths)
    assert not np.array_equal(after[0], before[0])
    assert_decodes_like(model, fresh_copy(model), source, lengths)


@pytest.mark.parametrize("name", ["decoder_embedding.weight", "encoder_embedding.weight",
                                  "decoder.bias_ih_l0", "encoder.bias_hh_l0_reverse"])
def test_an_edit_of_an_embedding_row_or_a_bias_is_seen(name):
    model = make_model()
    source, lengths = padded(sources(3, seed=5))
    decode_two_steps(model, source, lengths)
    param = model.params[name]
    index = (BOS,) if name == "decoder_embedding.weight" else (int(source[0, 0]),)
    param[index if param.ndim == 2 else (0,)] += 0.5
    assert_decodes_like(model, fresh_copy(model), source, lengths)


def test_weights_changed_makes_any_edit_seen():
    model = make_model()
    source, lengths = padded(sources(3, seed=6))
    decode_two_steps(model, source, lengths)
    model.params["decoder.weight_ih_l0"][1, 2] += 0.5     # one element of a matrix
    model.weights_changed()
    assert_decodes_like(model, fresh_copy(model), source, lengths)


def test_the_tables_are_built_once_while_the_weights_stay(monkeypatch):
    built = []
    real = model_module.build_tables
    monkeypatch.setattr(model_module, "build_tables",
                        lambda *a, **k: built.append(1) or real(*a, **k))
    model = make_model()
    for seed in range(3):
        source, lengths = padded(sources(2, seed=seed))
        decode_two_steps(model, source, lengths)
    assert len(built) == 1
    model.params["decoder.weight_ih_l0"] *= 1.01          # what an optimizer step does
    decode_two_steps(model, source, lengths)
    assert len(built) == 2


# --------------------------------------------------------------------------------------------
# A step over a known memory still checks what it reads
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case,error", [
    ("tokens out of range", "out of range"), ("tokens negative", "out of range"),
    ("tokens floats", "integer"), ("tokens of another batch", "shape"),
    ("feed float32", "dtype"), ("feed of another width", "feed must have shape"),
    ("state float32", "dtype")])
def test_later_steps_refuse_what_the_first_step_refuses(case, error):
    model = make_model()
    source, lengths = padded(sources(3, seed=8))
    memory, state = model.encode(source, lengths)
    feed = np.zeros((3, 8))
    tokens = np.full(3, BOS)
    model.decode_step(tokens, state, feed, memory, lengths)          # the session starts
    args: dict[str, Any] = dict(tokens=tokens, state=state, feed=feed)
    args.update({
        "tokens out of range": dict(tokens=tokens + VT),
        "tokens negative": dict(tokens=tokens - 2),
        "tokens floats": dict(tokens=tokens * 1.0),
        "tokens of another batch": dict(tokens=tokens[:2]),
        "feed float32": dict(feed=feed.astype(np.float32)),
        "feed of another width": dict(feed=feed[:, :5]),
        "state float32": dict(state=tuple(s.astype(np.float32) for s in state)),
    }[case])
    with pytest.raises((TypeError, ValueError), match=error) as later:
        model.decode_step(args["tokens"], args["state"], args["feed"], memory, lengths)
    fresh = make_model()                       # the same error at a memory's first step
    fresh.encode(source, lengths)
    with pytest.raises((TypeError, ValueError), match=error) as first:
        fresh.decode_step(args["tokens"], args["state"], args["feed"], memory, lengths)
    assert (type(later.value), str(later.value)) == (type(first.value), str(first.value))
