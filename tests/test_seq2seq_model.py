"""The seq2seq model (numpy_rnn.tasks.seq2seq) against its torch twin (torch_ref.seq2seq),
whose gradients are autograd's.

Weights are copied NumPy -> torch; then the loss, the per-row validation score and EVERY
parameter gradient must agree (float64 to ~1e-10 scaled, float32 to ~1e-4) for every attention
(additive, general, dot, none) x input feeding on/off x cell (lstm, gru, rnn), with one layer
and with two under the driver's dropout masks, over sources and targets of uneven lengths
(down to 1). ``encode``, ``decode_step`` and ``score`` agree between the two; decoding step by
step reproduces the teacher-forced score in both; padding (source steps past a length, target
positions past the end) changes nothing and gets no attention and no gradient; and the NumPy
gradients match finite differences on a tiny model.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
s2s = pytest.importorskip("numpy_rnn.tasks.seq2seq")

from numpy_rnn.nn.gradcheck import numerical_gradient, relative_error  # noqa: E402
from numpy_rnn.nn.losses import IGNORE_INDEX  # noqa: E402
from torch_ref.convert import load_numpy_state  # noqa: E402
from torch_ref.seq2seq import Seq2Seq as TorchSeq2Seq  # noqa: E402

Seq2SeqConfig, Seq2SeqInputs = s2s.Seq2SeqConfig, s2s.Seq2SeqInputs
NumpySeq2Seq = s2s.Seq2Seq
PAD, BOS, EOS = s2s.PAD, s2s.BOS, s2s.EOS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CELLS = ("lstm", "gru", "rnn")
ATTENTIONS = ("additive", "general", "dot", "none")
SUITE = "seq2seq"
REL_GRAD = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-3}

# Small and uneven on purpose: source and target vocabularies, embedding widths, attention
# width and hidden size all differ, so a transposed or misplaced matrix cannot fit by chance.
VS, VT, ES, ET, H, A = 7, 9, 5, 3, 6, 4
SOURCE_LENGTHS = (5, 1, 3)      # B = 3, S = 5: the longest, the shortest, one between
TARGET_LENGTHS = (2, 4, 1)      # y_1 .. y_n EOS: T = 4 (the longest row), one target of length 1


def make_config(cell: str, attention: str, feed: bool, layers: int, dtype: str = "float64",
                dropout: float = 0.0) -> Any:
    return Seq2SeqConfig(vocab_size=VS, hidden_size=H, num_layers=layers, cell=cell,
                         embedding_dim=ES, dropout=dropout, dtype=dtype, target_vocab_size=VT,
                         target_embedding_dim=ET, attention=attention, attention_size=A,
                         input_feeding=feed)


def make_batch(rng: np.random.Generator, source_lengths=SOURCE_LENGTHS,
               target_lengths=TARGET_LENGTHS, S: int | None = None) -> tuple[Any, np.ndarray]:
    """Random inputs: sources padded with PAD, ``target_in = BOS y_1 .. y_n`` padded with PAD,
    ``targets = y_1 .. y_n EOS`` padded with IGNORE_INDEX (``n + 1`` = the target length)."""
    B = len(source_lengths)
    S = max(source_lengths) if S is None else S
    T = max(target_lengths)
    src = np.full((B, S), PAD, np.int64)
    tin = np.full((B, T), PAD, np.int64)
    tgt = np.full((B, T), IGNORE_INDEX, np.int64)
    for b, (n_s, n_t) in enumerate(zip(source_lengths, target_lengths)):
        src[b, :n_s] = rng.integers(1, VS, n_s)
        y = rng.integers(EOS + 1, VT, n_t - 1)
        tin[b, :n_t] = np.concatenate([[BOS], y])
        tgt[b, :n_t] = np.concatenate([y, [EOS]])
    return Seq2SeqInputs(src, np.asarray(source_lengths, np.int64), tin), tgt


def keep_masks(config: Any, inputs: Any, rng: np.random.Generator) -> list[np.ndarray] | None:
    """The driver's keep masks (0/1) for one batch: the encoder's, then the decoder's."""
    (B, S), T = inputs.source.shape, inputs.target_in.shape[1]
    shapes = config.seq2seq_mask_shapes(S, T, B)
    if not shapes:
        return None
    return [(rng.random(s) >= config.dropout).astype(config.dtype) for s in shapes]


def twins(config: Any, seed: int = 0, scale: float = 1.0) -> tuple[Any, Any]:
    """The NumPy model (seeded weights, times ``scale``) and its torch twin holding them."""
    model = NumpySeq2Seq(config, seed=seed)
    if scale != 1.0:
        for p in model.params.values():
            p *= scale
    twin = TorchSeq2Seq(config)
    load_numpy_state(twin, model.state_dict())
    return model, twin


def numpy_step(model: Any, inputs: Any, targets: np.ndarray,
               masks: list[np.ndarray] | None) -> float:
    model.train()
    model.zero_grad()
    loss, state = model.loss_and_backward(inputs, targets, None, masks)
    assert state is None
    return float(loss)


def torch_step(twin: Any, inputs: Any, targets: np.ndarray,
               masks: list[np.ndarray] | None) -> float:
    twin.train()
    twin.zero_grad(set_to_none=True)
    loss, state = twin.loss_and_backward(inputs, targets, None, masks)
    assert state is None
    return loss


def torch_grads(twin: Any) -> dict[str, np.ndarray]:
    return {n: (np.zeros(tuple(p.shape), np.float64) if p.grad is None
                else p.grad.detach().cpu().numpy()) for n, p in twin.named_parameters()}


def check_all(parity, kind: str, pairs: list[tuple[str, Any, np.ndarray, str]],
              dtype: Any) -> None:
    """Every (name, NumPy, torch, stage) pair through the parity checker; all failures at once."""
    failures = [msg for name, got, want, stage in pairs
                if (msg := parity.check(SUITE, kind, name, got, np.asarray(want), dtype,
                                        stage)) is not None]
    assert not failures, "\n".join(failures)


def as_array(x: Any, dtype: Any) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Loss, score and every gradient
# --------------------------------------------------------------------------------------------

def run_parity(parity, cell: str, attention: str, feed: bool, layers: int, dtype: str,
               seed: int) -> None:
    dropout = 0.25 if layers > 1 else 0.0
    config = make_config(cell, attention, feed, layers, dtype, dropout)
    # Weights x3: at the initial scale the attention is nearly uniform and its gradients are
    # ~1e-7, which the parity check's absolute floor (scaled by max(1, max|torch|)) would pass
    # whatever they were; x3 lifts every gradient above 3e-4.
    model, twin = twins(config, seed=seed, scale=3.0)
    assert list(model.state_dict()) == [n for n, _ in twin.named_parameters()], \
        "parameter names or order differ"
    rng = np.random.default_rng(seed)
    inputs, targets = make_batch(rng)
    masks = keep_masks(config, inputs, rng)
    assert (masks is not None) == (layers > 1)
    np_dtype = np.dtype(dtype)
    loss = numpy_step(model, inputs, targets, masks)
    want = torch_step(twin, inputs, targets, masks)
    pairs = [("loss", as_array(loss, np_dtype), np.asarray(want, np_dtype), "forward")]
    grads = torch_grads(twin)
    assert set(grads) == set(model.grads)
    for name, g in grads.items():
        assert np.any(g != 0), f"{name}: no gradient"
        pairs.append((f"grad {name}", model.grads[name], g, "backward"))
        # and relative to each gradient's own size, however small (observed: 1.3e-13, 5e-5)
        rel = np.max(np.abs(model.grads[name] - g)) / np.max(np.abs(g))
        assert rel < REL_GRAD[np_dtype], f"grad {name}: relative error {rel:.2e}"
    model.eval()
    twin.eval()
    got_sum, got_n = model.score(inputs, targets)
    want_sum, want_n = twin.score(inputs, targets)
    np.testing.assert_array_equal(got_n, want_n)
    pairs.append(("score", np.asarray(got_sum, np.float64).astype(np_dtype),
                  want_sum.astype(np_dtype), "forward"))
    check_all(parity, cell, pairs, np_dtype)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("feed", [True, False], ids=["feed", "nofeed"])
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cell", CELLS)
def test_loss_score_and_gradients_float64(parity, cell, attention, feed, layers):
    seed = CELLS.index(cell) * 100 + ATTENTIONS.index(attention) * 10 + 2 * feed + layers
    run_parity(parity, cell, attention, feed, layers, "float64", seed)


@pytest.mark.parametrize("feed", [True, False], ids=["feed", "nofeed"])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_loss_score_and_gradients_float32(parity, attention, feed):
    # every cell over the eight cases (two layers, dropout): the cell cycles with the case
    cell = CELLS[(ATTENTIONS.index(attention) * 2 + feed) % 3]
    run_parity(parity, cell, attention, feed, 2, "float32", 7 + ATTENTIONS.index(attention))


# --------------------------------------------------------------------------------------------
# Inference: encode, decode_step, score
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("feed", [True, False], ids=["feed", "nofeed"])
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cell", CELLS)
def test_encode_and_decode_step_match(parity, cell, attention, feed):
    config = make_config(cell, attention, feed, 2)
    model, twin = twins(config, seed=3, scale=1.5)
    model.eval()
    twin.eval()
    rng = np.random.default_rng(4)
    inputs, _ = make_batch(rng)
    src, lens = inputs.source, inputs.source_lengths
    memory, state = model.encode(src, lens)
    t_memory, t_state = twin.encode(src, lens)
    pairs = [("memory", memory, t_memory, "forward")]
    assert isinstance(state, tuple) and len(state) == (2 if cell == "lstm" else 1)
    pairs += [(f"state[{j}]", s, ts, "forward") for j, (s, ts) in enumerate(zip(state, t_state))]
    B = len(src)
    feed_in = np.zeros((B, H))
    t_feed = feed_in
    tokens = np.full(B, BOS, np.int64)
    for t in range(3):
        lp, state, feed_in, alpha = model.decode_step(tokens, state, feed_in, memory, lens)
        t_lp, t_state, t_feed, t_alpha = twin.decode_step(tokens, t_state, t_feed, t_memory,
                                                          lens)
        assert lp.dtype == np.float64 and lp.shape == (B, VT)
        pairs += [(f"log_probs[{t}]", lp, t_lp, "forward"), (f"feed[{t}]", feed_in, t_feed,
                                                             "forward")]
        pairs += [(f"state[{j}][{t}]", s, ts, "forward")
                  for j, (s, ts) in enumerate(zip(state, t_state))]
        if attention == "none":
            assert alpha is None and t_alpha is None
        else:
            assert alpha.dtype == np.float64 and alpha.shape == (B, src.shape[1])
            pairs.append((f"alpha[{t}]", alpha, t_alpha, "forward"))
            # padded source steps get exactly zero weight
            assert np.all(alpha[np.arange(src.shape[1])[None] >= lens[:, None]] == 0)
            np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-12)
        tokens = rng.integers(EOS + 1, VT, B)
    check_all(parity, cell, pairs, np.float64)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("feed", [True, False], ids=["feed", "nofeed"])
@pytest.mark.parametrize("attention", ["general", "none"])
def test_decoding_step_by_step_reproduces_the_score(backend, attention, feed):
    """Teacher forcing through ``decode_step`` one token at a time gives ``score``'s sums: the
    step path and the training path (both decoder paths) compute the same model."""
    cell = "lstm" if feed else "gru"
    model, twin = twins(make_config(cell, attention, feed, 2), seed=5, scale=1.5)
    m = model if backend == "numpy" else twin
    m.eval()
    inputs, targets = make_batch(np.random.default_rng(6))
    memory, state = m.encode(inputs.source, inputs.source_lengths)
    B, T = targets.shape
    fed = np.zeros((B, H))
    total = np.zeros(B)
    for t in range(T):
        lp, state, fed, _ = m.decode_step(inputs.target_in[:, t], state, fed, memory,
                                          inputs.source_lengths)
        valid = targets[:, t] != IGNORE_INDEX
        total[valid] -= lp[valid, targets[valid, t]]
    loss_sum, tokens = m.score(inputs, targets)
    np.testing.assert_allclose(total, loss_sum, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(tokens, np.asarray(TARGET_LENGTHS))


# --------------------------------------------------------------------------------------------
# Padding changes nothing
# --------------------------------------------------------------------------------------------

def _loss_and_grads(m: Any, backend: str, inputs: Any, targets: np.ndarray,
                    masks=None) -> tuple[float, dict[str, np.ndarray]]:
    if backend == "numpy":
        loss = numpy_step(m, inputs, targets, masks)
        return loss, {k: g.copy() for k, g in m.grads.items()}
    loss = torch_step(m, inputs, targets, masks)
    return loss, torch_grads(m)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("feed", [True, False], ids=["feed", "nofeed"])
@pytest.mark.parametrize("attention", ["additive", "dot"])
def test_padding_changes_nothing(backend, attention, feed):
    """Extra source steps past every length (holding any tokens), and any tokens at padded
    target positions, change neither the loss nor any gradient; the PAD embedding rows and a
    token seen only in the padding get no gradient."""
    cell = "lstm" if attention == "additive" else "rnn"
    config = make_config(cell, attention, feed, 2)
    model, twin = twins(config, seed=8)
    m = model if backend == "numpy" else twin
    rng = np.random.default_rng(9)
    inputs, targets = make_batch(rng)
    # the same batch with 3 more source steps, and junk in every padded position
    B, S = inputs.source.shape
    lens = inputs.source_lengths
    junk = VS - 1                               # a token that appears only in the padding
    real = np.arange(S + 3)[None] < lens[:, None]
    src = np.concatenate([inputs.source, np.full((B, 3), PAD, np.int64)], axis=1)
    src[real & (src == junk)] = 1
    base = Seq2SeqInputs(src[:, :S].copy(), lens, inputs.target_in)
    src[~real] = junk
    tin = inputs.target_in.copy()
    tin[targets == IGNORE_INDEX] = VT - 1
    padded = Seq2SeqInputs(src, lens, tin)
    loss_base, grads_base = _loss_and_grads(m, backend, base, targets)
    loss_pad, grads_pad = _loss_and_grads(m, backend, padded, targets)
    assert loss_pad == pytest.approx(loss_base, rel=1e-13, abs=1e-13)
    for name in grads_base:
        np.testing.assert_allclose(grads_pad[name], grads_base[name], rtol=1e-11, atol=1e-13,
                                   err_msg=name)
    emb = grads_pad["encoder_embedding.weight"]
    assert np.all(emb[junk] == 0), "a token seen only in the padding got a gradient"
    assert np.all(emb[PAD] == 0) and np.all(grads_pad["decoder_embedding.weight"][PAD] == 0)


# --------------------------------------------------------------------------------------------
# Finite differences of the NumPy loss
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("feed", [True, False], ids=["feed", "nofeed"])
def test_numpy_gradients_match_finite_differences(feed):
    config = make_config("lstm", "additive" if feed else "general", feed, 2, dropout=0.3)
    model = NumpySeq2Seq(config, seed=11)
    for p in model.params.values():
        p *= 3.0          # attention gradients ~1e-7 at the initial scale: lift them
    rng = np.random.default_rng(12)
    inputs, targets = make_batch(rng)
    masks = keep_masks(config, inputs, rng)
    numpy_step(model, inputs, targets, masks)
    analytic = {k: g.copy() for k, g in model.grads.items()}

    def loss() -> float:
        model.zero_grad()
        value, _ = model.loss_and_backward(inputs, targets, None, masks)
        return float(value)

    names = ["encoder.weight_hh_l0_reverse", "bridge_c.1.weight", "decoder.weight_ih_l0",
             "combine.weight", "out.bias"] + (["attention.query.weight"] if feed else
                                              ["attention.key.weight"])
    for name in names:
        p = model.params[name]
        idx = rng.choice(p.size, size=min(p.size, 8), replace=False)
        # eps 1e-4: a smaller step drowns in the loss's rounding
        numeric = numerical_gradient(loss, p, eps=1e-4, indices=idx)
        err = relative_error(analytic[name].reshape(-1)[idx], numeric.reshape(-1)[idx])
        assert err < 1e-6, f"{name}: relative error {err:.2e}"


# --------------------------------------------------------------------------------------------
# The twin's own contract
# --------------------------------------------------------------------------------------------

def test_twin_masks_of_ones_equal_no_masks():
    """The layer-at-a-time path under masks of ones is the fused stacks' computation."""
    config = make_config("gru", "general", True, 2, dropout=0.25)
    _, twin = twins(config, seed=13)
    inputs, targets = make_batch(np.random.default_rng(14))
    (B, S), T = inputs.source.shape, inputs.target_in.shape[1]
    ones = [torch.ones(s, dtype=torch.float64) for s in config.seq2seq_mask_shapes(S, T, B)]
    with torch.no_grad():
        with_masks, _ = twin.train_loss(inputs, targets, None, ones)
        without, _ = twin.train_loss(inputs, targets, None, None)
    assert float(with_masks) == pytest.approx(float(without), rel=1e-14)


def test_twin_refuses_bad_input():
    _, twin = twins(make_config("lstm", "dot", True, 1))
    inputs, targets = make_batch(np.random.default_rng(15))
    with pytest.raises(ValueError, match="lengths"):
        twin.score(inputs._replace(source_lengths=np.array([6, 1, 3])), targets)
    with pytest.raises(ValueError, match="out of range"):
        twin.score(inputs._replace(target_in=inputs.target_in + VT), targets)
    with pytest.raises(ValueError, match="targets"):
        twin.score(inputs, targets[:, :2])
    bad = np.full_like(targets, IGNORE_INDEX)
    with pytest.raises(ValueError, match="ignore_index"):
        twin.train_loss(inputs, bad, None, None)


def test_config_shapes_the_twin():
    base = make_config("lstm", "none", False, 2)
    _, twin = twins(base)
    names = [n for n, _ in twin.named_parameters()]
    assert not any(n.startswith(("attention.", "combine.")) for n in names)
    assert twin.decoder.input_size == ET
    _, twin = twins(replace(base, input_feeding=True, attention="additive",
                            embedding_dim=None, target_embedding_dim=None))
    assert twin.decoder.input_size == 2 * H and twin.encoder.input_size == H
    assert twin.attention.query.weight.shape == (A, H)
