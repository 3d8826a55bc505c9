"""The NumPy seq2seq model (numpy_rnn.tasks.seq2seq) on its own: every gradient against finite
differences (every attention, both decoder paths, every cell, one and two layers, dropout
masks, uneven lengths, float64), padding (source steps get zero attention and no gradient,
padded target positions change nothing), the evaluation methods against the training forward
(decode_step step by step, score), the input-feeding path against the whole-layer path, dtypes,
the config and the parameter names. Parity with torch is tests/test_seq2seq_model.py.

Parameters are redrawn from N(0, 0.7^2) so that no gradient is vanishingly small (the default
initialisation leaves some attention gradients near 1e-6, where finite differences say little).
"""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest

from numpy_rnn.nn.gradcheck import numerical_gradient
from numpy_rnn.nn.losses import IGNORE_INDEX, cross_entropy, log_softmax
from numpy_rnn.tasks.seq2seq import (
    ATTENTIONS,
    BOS,
    EOS,
    PAD,
    Seq2Seq,
    Seq2SeqConfig,
    Seq2SeqInputs,
)

CELLS = ("lstm", "gru", "rnn")
SCORES = ("additive", "general", "dot")
VS, VT = 7, 8                  # vocabularies: source tokens 1..VS-2 (VS-1 is kept unused)
UNUSED = VS - 1                # a source token that only ever sits on padded steps
SOURCE_LENGTHS = (5, 2, 1)     # uneven: the longest, one in between, one of length 1
TARGET_TOKENS = (3, 1, 0)      # y_1 .. y_n per row (EOS makes it n + 1 targets)
P_DROP = 0.3


def make_config(cell: str = "lstm", attention: str = "general", feeding: bool = True,
                layers: int = 2, dtype: str = "float64", **kw: object) -> Seq2SeqConfig:
    args: dict = dict(vocab_size=VS, target_vocab_size=VT, hidden_size=4, num_layers=layers,
                      cell=cell, embedding_dim=3, target_embedding_dim=2,
                      dropout=P_DROP if layers > 1 else 0.0, dtype=dtype,
                      attention=attention, attention_size=3, input_feeding=feeding)
    args.update(kw)
    return Seq2SeqConfig(**args)


def make_model(config: Seq2SeqConfig, seed: int = 0) -> Seq2Seq:
    """A model whose every parameter is redrawn from N(0, 0.7^2) (biases too)."""
    model = Seq2Seq(config, seed=seed)
    rng = np.random.default_rng([seed, 1])
    for p in model.params.values():
        p[...] = rng.normal(0.0, 0.7, p.shape)
    return model.train()


def make_batch(seed: int = 0, extra_source: int = 0, extra_target: int = 0
               ) -> tuple[Seq2SeqInputs, np.ndarray]:
    """Three pairs of uneven lengths, padded as the task pads them (plus ``extra_*`` padded
    steps at the end)."""
    rng = np.random.default_rng([seed, 2])
    B = len(SOURCE_LENGTHS)
    S = max(SOURCE_LENGTHS) + extra_source
    T = max(TARGET_TOKENS) + 1 + extra_target
    source = np.full((B, S), PAD, np.int64)
    target_in = np.full((B, T), PAD, np.int64)
    targets = np.full((B, T), IGNORE_INDEX, np.int64)
    for b, (s, n) in enumerate(zip(SOURCE_LENGTHS, TARGET_TOKENS)):
        source[b, :s] = rng.integers(1, UNUSED, s)
        y = rng.integers(EOS + 1, VT, n)
        target_in[b, :n + 1] = [BOS, *y]
        targets[b, :n + 1] = [*y, EOS]
    return Seq2SeqInputs(source, np.array(SOURCE_LENGTHS, np.int64), target_in), targets


def make_masks(config: Seq2SeqConfig, inputs: Seq2SeqInputs, seed: int = 0) -> list[np.ndarray]:
    B, S = inputs.source.shape
    T = inputs.target_in.shape[1]
    rng = np.random.default_rng([seed, 3])
    return [rng.random(shape) >= P_DROP for shape in config.seq2seq_mask_shapes(S, T, B)]


def training_loss(model: Seq2Seq, inputs: Seq2SeqInputs, targets: np.ndarray,
                  masks: list[np.ndarray]) -> float:
    """The training loss without a backward (for finite differences)."""
    logits = model.forward(inputs, masks or None)
    T, B, V = logits.shape
    return cross_entropy(logits.reshape(T * B, V), targets.T.reshape(-1))[0]


def gradients(model: Seq2Seq, inputs: Seq2SeqInputs, targets: np.ndarray,
              masks: list[np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
    model.zero_grad()
    loss, state = model.loss_and_backward(inputs, targets, None, masks or None)
    assert state is None
    return loss, {k: g.copy() for k, g in model.grads.items()}


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float, name: str) -> None:
    scale = max(1e-300, float(np.max(np.abs(want), initial=0.0)))
    err = float(np.max(np.abs(got - want), initial=0.0))
    assert err <= rtol * max(scale, 1e-12), f"{name}: max|err| {err:.3e}, scale {scale:.3e}"


# --------------------------------------------------------------------------------------------
# Finite differences
# --------------------------------------------------------------------------------------------

GRID_2_LAYERS = list(product(CELLS, ATTENTIONS, (True, False)))
# One layer (no dropout): every cell and both paths, the attentions taken in turn.
GRID_1_LAYER = [(cell, att, feed) for (cell, att), feed in
                product(zip(CELLS, ("additive", "dot", "none")), (True, False))] + \
               [("lstm", "general", True)]


def check_finite_differences(config: Seq2SeqConfig, entries: int = 8) -> None:
    """Every parameter array: all entries when it is small, else ``entries`` random ones;
    ``max|analytic - numeric| <= 1e-5 * max(1e-3, max|analytic|)`` per array (finite
    differences in float64 are good to about 1e-10 here)."""
    model = make_model(config)
    inputs, targets = make_batch()
    masks = make_masks(config, inputs)
    _, analytic = gradients(model, inputs, targets, masks)
    rng = np.random.default_rng(4)
    failures = []
    for name, p in model.params.items():
        idx = None if p.size <= 2 * entries else rng.choice(p.size, entries, replace=False)
        numeric = numerical_gradient(lambda: training_loss(model, inputs, targets, masks), p,
                                     eps=1e-6, indices=idx)
        a, n = analytic[name].reshape(-1), numeric.reshape(-1)
        if idx is not None:
            a, n = a[idx], n[idx]
        err, scale = float(np.max(np.abs(a - n))), float(np.max(np.abs(a)))
        if err > 1e-5 * max(1e-3, scale):
            failures.append(f"{name}: max|err| {err:.2e}, max|grad| {scale:.2e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("cell,attention,feeding", GRID_2_LAYERS)
def test_gradients_match_finite_differences_two_layers_with_dropout(cell, attention, feeding):
    check_finite_differences(make_config(cell, attention, feeding, layers=2))


@pytest.mark.parametrize("cell,attention,feeding", GRID_1_LAYER)
def test_gradients_match_finite_differences_one_layer(cell, attention, feeding):
    check_finite_differences(make_config(cell, attention, feeding, layers=1))


def test_gradients_of_every_parameter_are_nonzero():
    """The finite-difference checks are not vacuous: every parameter array gets a gradient
    (each attention's and the combine's included)."""
    for attention in ATTENTIONS:
        config = make_config("lstm", attention, True)
        model = make_model(config)
        inputs, targets = make_batch()
        _, grads = gradients(model, inputs, targets, make_masks(config, inputs))
        assert all(np.any(g != 0) for g in grads.values()), attention


# --------------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,attention,feeding",
                         list(product(CELLS, SCORES, (True, False))))
def test_padded_source_steps_get_zero_attention_and_no_gradient(cell, attention, feeding):
    """More padded source steps, filled with a token no valid step has, change neither the
    loss nor any gradient, that token's embedding gets exactly 0, the memory is 0 there and
    decode_step's attention gives those steps exactly 0 weight."""
    config = make_config(cell, attention, feeding)
    model = make_model(config)
    inputs, targets = make_batch()
    masks = make_masks(config, inputs)
    loss, grads = gradients(model, inputs, targets, masks)

    padded, _ = make_batch(extra_source=3)
    source = padded.source.copy()
    valid = np.arange(source.shape[1])[None, :] < padded.source_lengths[:, None]
    source[~valid] = UNUSED
    padded = padded._replace(source=source)
    n = config.num_layers - 1
    rng = np.random.default_rng(5)
    wide = [np.concatenate([m, rng.random((3, *m.shape[1:])) >= P_DROP]) for m in masks[:n]]
    loss2, grads2 = gradients(model, padded, targets, wide + masks[n:])
    assert abs(loss2 - loss) <= 1e-13 * abs(loss)
    for name, g in grads.items():
        assert_close(grads2[name], g, 1e-12, name)
    assert np.all(grads2["encoder_embedding.weight"][UNUSED] == 0)

    memory, state = model.encode(padded.source, padded.source_lengths)
    assert np.all(memory[~valid] == 0)
    feed = np.zeros((len(source), config.hidden_size))
    _, _, _, alpha = model.decode_step(padded.target_in[:, 0], state, feed, memory,
                                       padded.source_lengths)
    assert alpha is not None and alpha.shape == source.shape
    assert np.all(alpha[~valid] == 0) and np.all(alpha[valid] > 0)
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-14)


@pytest.mark.parametrize("cell,attention,feeding",
                         list(product(CELLS, ATTENTIONS, (True, False))))
def test_padded_target_positions_change_nothing(cell, attention, feeding):
    """Other tokens at the padded positions of target_in, and more padded positions, change
    neither the loss nor any gradient."""
    config = make_config(cell, attention, feeding)
    model = make_model(config)
    inputs, targets = make_batch()
    masks = make_masks(config, inputs)
    loss, grads = gradients(model, inputs, targets, masks)

    padded, targets2 = make_batch(extra_target=2)
    target_in = padded.target_in.copy()
    pad = targets2 == IGNORE_INDEX
    target_in[pad] = np.random.default_rng(6).integers(0, VT, int(pad.sum()))
    padded = padded._replace(target_in=target_in)
    n = config.num_layers - 1
    rng = np.random.default_rng(7)
    wide = [np.concatenate([m, rng.random((2, *m.shape[1:])) >= P_DROP]) for m in masks[n:]]
    loss2, grads2 = gradients(model, padded, targets2, masks[:n] + wide)
    assert abs(loss2 - loss) <= 1e-13 * abs(loss)
    for name, g in grads.items():
        assert_close(grads2[name], g, 1e-12, name)


# --------------------------------------------------------------------------------------------
# Evaluation methods against the training forward; the two decoder paths
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,attention,feeding",
                         list(product(CELLS, ATTENTIONS, (True, False))))
def test_decode_step_with_teacher_forcing_reproduces_the_training_forward(cell, attention,
                                                                            feeding):
    """encode, then decode_step fed the true previous tokens, gives the log-probabilities of
    the training forward (evaluation mode) at every step; score sums them per row; the
    training loss without dropout is their mean."""
    config = make_config(cell, attention, feeding, dropout=0.0)
    model = make_model(config)
    inputs, targets = make_batch()
    model.eval()
    want = log_softmax(model.forward(inputs), axis=-1)                   # (T, B, V)
    B, T = inputs.target_in.shape

    memory, state = model.encode(inputs.source, inputs.source_lengths)
    assert memory.shape == (B, inputs.source.shape[1], config.hidden_size)
    assert all(s.shape == (config.num_layers, B, config.hidden_size) for s in state)
    assert len(state) == (2 if cell == "lstm" else 1)
    feed = np.zeros((B, config.hidden_size))
    loss_sum = np.zeros(B)
    for t in range(T):
        log_probs, state, feed, alpha = model.decode_step(inputs.target_in[:, t], state, feed,
                                                          memory, inputs.source_lengths)
        assert log_probs.dtype == np.float64 and log_probs.shape == (B, VT)
        assert (alpha is None) == (attention == "none")
        assert_close(log_probs, want[t], 1e-12, f"log_probs at step {t}")
        valid = targets[:, t] != IGNORE_INDEX
        loss_sum[valid] -= log_probs[valid, targets[valid, t]]

    got_sum, tokens = model.score(inputs, targets)
    assert got_sum.dtype == np.float64 and tokens.dtype == np.float64
    assert_close(got_sum, loss_sum, 1e-12, "score")
    np.testing.assert_array_equal(tokens, (targets != IGNORE_INDEX).sum(axis=1))
    loss, _ = model.train().loss_and_backward(inputs, targets)
    assert abs(loss - got_sum.sum() / tokens.sum()) <= 1e-12 * loss


@pytest.mark.parametrize("cell,attention", list(product(CELLS, ATTENTIONS)))
def test_step_by_step_path_with_zero_feed_weights_equals_the_whole_layer_path(cell,
                                                                               attention):
    """The input-feeding path (the decoder driven one step at a time, attention inside the
    loop, backward through it) with the fed columns of the decoder's input weights set to 0
    computes the no-input-feeding model (one layer call, attention over all steps at once):
    the same loss and the same gradient for every shared parameter, with dropout masks."""
    whole = make_model(make_config(cell, attention, False))
    fed = Seq2Seq(make_config(cell, attention, True), seed=1).train()
    Et = whole.config.target_input_size
    for name, p in fed.params.items():
        if name == "decoder.weight_ih_l0":
            p[...] = 0.0
            p[:, :Et] = whole.params[name]
        else:
            p[...] = whole.params[name]
    inputs, targets = make_batch()
    masks = make_masks(whole.config, inputs)
    loss_w, grads_w = gradients(whole, inputs, targets, masks)
    loss_f, grads_f = gradients(fed, inputs, targets, masks)
    assert abs(loss_f - loss_w) <= 1e-13 * loss_w
    for name, g in grads_w.items():
        got = grads_f[name][:, :Et] if name == "decoder.weight_ih_l0" else grads_f[name]
        assert_close(got, g, 1e-11, name)


# --------------------------------------------------------------------------------------------
# dtypes, config, parameters
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("feeding", [True, False])
@pytest.mark.parametrize("attention", ["additive", "none"])
def test_float32_stays_float32(attention, feeding):
    """A float32 model computes in float32 (every gradient, the memory, the states, the fed
    state) and agrees with the same weights in float64 to float32 precision; the
    log-probabilities, attention and scores are float64 by contract."""
    c64 = make_config("lstm", attention, feeding)
    c32 = make_config("lstm", attention, feeding, dtype="float32")
    m64, m32 = make_model(c64), Seq2Seq(c32, seed=0).train()
    m32.load_state_dict(m64.state_dict())
    inputs, targets = make_batch()
    masks = make_masks(c64, inputs)
    loss64, g64 = gradients(m64, inputs, targets, masks)
    loss32, g32 = gradients(m32, inputs, targets, masks)
    assert isinstance(loss32, float) and abs(loss32 - loss64) <= 1e-5 * loss64
    for name, g in g64.items():
        assert g32[name].dtype == np.float32, name
        assert_close(g32[name].astype(np.float64), g, 1e-4, name)
    memory, state = m32.encode(inputs.source, inputs.source_lengths)
    assert memory.dtype == np.float32 and all(s.dtype == np.float32 for s in state)
    feed = np.zeros((len(memory), c32.hidden_size), np.float32)
    log_probs, state, feed, alpha = m32.decode_step(inputs.target_in[:, 0], state, feed, memory,
                                                    inputs.source_lengths)
    assert log_probs.dtype == np.float64 and feed.dtype == np.float32
    assert all(s.dtype == np.float32 for s in state)
    assert alpha is None if attention == "none" else alpha.dtype == np.float64
    loss_sum, tokens = m32.score(inputs, targets)
    assert loss_sum.dtype == np.float64 and tokens.dtype == np.float64


def test_parameter_names_and_shapes_follow_the_spec():
    H, Es, Et, A = 4, 3, 2, 3
    model = Seq2Seq(make_config("lstm", "additive", True))
    G = 4 * H // 2
    want = {"encoder_embedding.weight": (VS, Es)}
    for l in range(2):
        for sfx in ("", "_reverse"):
            want |= {f"encoder.weight_ih_l{l}{sfx}": (G, Es if l == 0 else H),
                     f"encoder.weight_hh_l{l}{sfx}": (G, H // 2),
                     f"encoder.bias_ih_l{l}{sfx}": (G,), f"encoder.bias_hh_l{l}{sfx}": (G,)}
    for kind, l in product("hc", range(2)):
        want |= {f"bridge_{kind}.{l}.weight": (H, H), f"bridge_{kind}.{l}.bias": (H,)}
    want["decoder_embedding.weight"] = (VT, Et)
    for l in range(2):
        want |= {f"decoder.weight_ih_l{l}": (4 * H, Et + H if l == 0 else H),
                 f"decoder.weight_hh_l{l}": (4 * H, H),
                 f"decoder.bias_ih_l{l}": (4 * H,), f"decoder.bias_hh_l{l}": (4 * H,)}
    want |= {"attention.query.weight": (A, H), "attention.key.weight": (A, H),
             "attention.key.bias": (A,), "attention.score.weight": (1, A),
             "combine.weight": (H, 2 * H), "out.weight": (VT, H), "out.bias": (VT,)}
    assert {k: p.shape for k, p in model.params.items()} == want
    assert model.params.keys() == model.grads.keys()

    plain = Seq2Seq(make_config("gru", "none", False, layers=1, embedding_dim=None,
                                target_embedding_dim=None))
    names = set(plain.params)
    assert not any(k.startswith(("attention.", "combine.", "bridge_c.")) for k in names)
    assert plain.params["decoder.weight_ih_l0"].shape == (3 * H, H)          # Et = H, no feed
    assert plain.params["encoder_embedding.weight"].shape == (VS, H)         # Es = H
    dot = Seq2Seq(make_config("rnn", "dot", True))
    assert not any(k.startswith("attention.") for k in dot.params)
    assert "combine.weight" in dot.params


def test_same_seed_same_weights_and_independent_streams():
    a, b = Seq2Seq(make_config(), seed=3), Seq2Seq(make_config(), seed=3)
    c = Seq2Seq(make_config(), seed=4)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["out.weight"], c.params["out.weight"])
    assert not np.array_equal(a.params["bridge_h.0.weight"], a.params["bridge_h.1.weight"])


def test_config_validation_and_mask_shapes():
    with pytest.raises(ValueError, match="even"):
        make_config(hidden_size=5)
    with pytest.raises(ValueError, match="attention"):
        make_config(attention="luong")
    with pytest.raises(ValueError, match="target_vocab_size"):
        make_config(target_vocab_size=2)
    with pytest.raises(TypeError, match="input_feeding"):
        make_config(feeding=1)
    config = make_config(layers=3)
    assert config.seq2seq_mask_shapes(5, 4, 3) == [(5, 3, 4)] * 2 + [(4, 3, 4)] * 2
    assert make_config(layers=1).seq2seq_mask_shapes(5, 4, 3) == []
    assert make_config(dropout=0.0).seq2seq_mask_shapes(5, 4, 3) == []
    # the one-sequence form every config answers: sources and targets both T long
    assert config.dropout_mask_shapes(4, 3) == config.seq2seq_mask_shapes(4, 4, 3)
    assert Seq2SeqConfig.from_json(config.to_json()) == config
    assert config.task == "seq2seq"


def test_masks_must_fit_and_are_refused_in_evaluation():
    config = make_config()
    model = make_model(config)
    inputs, targets = make_batch()
    masks = make_masks(config, inputs)
    with pytest.raises(ValueError, match="seq2seq_mask_shapes"):
        model.loss_and_backward(inputs, targets, None, masks[::-1])
    with pytest.raises(ValueError, match="no dropout"):
        model.eval().forward(inputs, masks)
