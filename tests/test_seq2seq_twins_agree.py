"""What the two seq2seq twins (numpy_rnn.tasks.seq2seq.model.Seq2Seq and
torch_ref.seq2seq.Seq2Seq) share, written once in numpy_rnn: the checks of every input (the same
bad input raises the same exception type with the same message in both, through every entry
point: training, score, encode, decode_step), the dropout masks' rules, the cell-name map, and
decode_step's reuse of the attention's key side per memory (both twins compute the keys once
per memory, and decode exactly as a fresh model does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from numpy_rnn.nn.losses import IGNORE_INDEX  # noqa: E402
from numpy_rnn.nn.recurrent import LAYERS  # noqa: E402
from numpy_rnn.tasks.seq2seq import (  # noqa: E402
    BOS,
    EOS,
    PAD,
    Seq2Seq,
    Seq2SeqConfig,
    Seq2SeqInputs,
)
from torch_ref.convert import load_numpy_state  # noqa: E402
from torch_ref.model import TORCH_LAYERS  # noqa: E402
from torch_ref.seq2seq import Seq2Seq as TorchSeq2Seq  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VS, VT, H = 7, 9, 6


def twins(cell: str = "lstm", attention: str = "general", feed: bool = True, layers: int = 2,
          **kw: Any) -> tuple[Seq2Seq, TorchSeq2Seq]:
    config = Seq2SeqConfig(vocab_size=VS, hidden_size=H, num_layers=layers, cell=cell,
                           embedding_dim=5, dropout=0.25 if layers > 1 else 0.0,
                           target_vocab_size=VT, target_embedding_dim=3, attention=attention,
                           attention_size=4, input_feeding=feed, **kw)
    model = Seq2Seq(config, seed=0)
    twin = TorchSeq2Seq(config)
    load_numpy_state(twin, model.state_dict())
    return model, twin


def batch() -> tuple[Seq2SeqInputs, np.ndarray]:
    src = np.array([[3, 4, 5, 2, 1], [2, PAD, PAD, PAD, PAD], [5, 6, 1, PAD, PAD]])
    tin = np.array([[BOS, 4, PAD, PAD], [BOS, 3, 5, 7], [BOS, PAD, PAD, PAD]])
    tgt = np.array([[4, EOS, IGNORE_INDEX, IGNORE_INDEX], [3, 5, 7, EOS],
                    [EOS, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    return Seq2SeqInputs(src, np.array([5, 1, 3]), tin), tgt


def raised(call: Any) -> tuple[type[BaseException], str]:
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


def assert_same_error(np_call: Any, torch_call: Any) -> None:
    got, want = raised(np_call), raised(torch_call)
    assert got == want, f"NumPy raised {got}, torch {want}"


INPUTS, TARGETS = batch()
BAD_BATCHES = {
    "source floats": (INPUTS._replace(source=INPUTS.source.astype(float)), TARGETS),
    "source 1-D": (INPUTS._replace(source=INPUTS.source[0]), TARGETS),
    "source empty": (INPUTS._replace(source=INPUTS.source[:, :0]), TARGETS),
    "source id too large": (INPUTS._replace(source=INPUTS.source + VS), TARGETS),
    "source id negative": (INPUTS._replace(source=INPUTS.source - 1), TARGETS),
    "lengths too long": (INPUTS._replace(source_lengths=np.array([6, 1, 3])), TARGETS),
    "lengths 0": (INPUTS._replace(source_lengths=np.array([5, 0, 3])), TARGETS),
    "lengths floats": (INPUTS._replace(source_lengths=np.array([5.0, 1.0, 3.0])), TARGETS),
    "lengths per row": (INPUTS._replace(source_lengths=np.array([5, 1])), TARGETS),
    "target_in rows": (INPUTS._replace(target_in=INPUTS.target_in[:2]), TARGETS[:2]),
    "target_in out of range": (INPUTS._replace(target_in=INPUTS.target_in + VT), TARGETS),
    "target_in floats": (INPUTS._replace(target_in=INPUTS.target_in * 1.0), TARGETS),
    "targets shape": (INPUTS, TARGETS[:, :2]),
    "targets floats": (INPUTS, TARGETS.astype(float)),
    "targets out of range": (INPUTS, np.where(TARGETS == EOS, VT, TARGETS)),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_the_same_bad_batch_raises_the_same_error_in_both(case):
    model, twin = twins()
    inputs, targets = BAD_BATCHES[case]
    assert_same_error(lambda: model.loss_and_backward(inputs, targets, None, None),
                      lambda: twin.loss_and_backward(inputs, targets, None, None))
    assert_same_error(lambda: model.score(inputs, targets),
                      lambda: twin.score(inputs, targets))
    if case.startswith(("source", "lengths")):
        assert_same_error(lambda: model.encode(inputs.source, inputs.source_lengths),
                          lambda: twin.encode(inputs.source, inputs.source_lengths))


def test_every_target_ignored_is_refused_in_training_only():
    model, twin = twins()
    ignored = np.full_like(TARGETS, IGNORE_INDEX)
    assert_same_error(lambda: model.loss_and_backward(INPUTS, ignored, None, None),
                      lambda: twin.loss_and_backward(INPUTS, ignored, None, None))
    np.testing.assert_array_equal(model.score(INPUTS, ignored)[0], 0.0)
    np.testing.assert_array_equal(twin.score(INPUTS, ignored)[0], 0.0)


@pytest.mark.parametrize("case", ["reversed", "one missing", "one more", "given in eval"])
def test_the_same_bad_masks_raise_the_same_error_in_both(case):
    model, twin = twins(embedding_dropout=0.2, hidden_dropout=0.1)
    (B, S), T = INPUTS.source.shape, INPUTS.target_in.shape[1]
    masks = [np.ones(m.shape, bool) for m in model.config.dropout_masks(S, T, B)]
    masks = {"reversed": masks[::-1], "one missing": masks[:-1],
             "one more": masks + masks[-1:], "given in eval": masks}[case]
    if case == "given in eval":
        model.eval()
        twin.eval()
    else:
        model.train()
        twin.train()
    assert_same_error(lambda: model.loss_and_backward(INPUTS, TARGETS, None, masks),
                      lambda: twin.train_loss(INPUTS, TARGETS, None, masks))


def test_the_twin_takes_keep_masks_or_the_torch_backends_scaled_ones_alike():
    """The driver's keep masks, scaled by the twin each with its own p, and the same masks
    scaled so by the torch backend (tensors) give the same loss."""
    _, twin = twins(layers=2, embedding_dropout=0.3, hidden_dropout=0.1)
    (B, S), T = INPUTS.source.shape, INPUTS.target_in.shape[1]
    rng = np.random.default_rng(3)
    declared = twin.config.dropout_masks(S, T, B)
    keep = [rng.random(m.shape) >= m.p for m in declared]
    scaled = [torch.as_tensor(m) for m in twin.config.scale_dropout_masks(keep, S, T, B,
                                                                           np.float64)]
    assert sorted({round(float(m.max()), 12) for m in scaled}) == [round(1 / 0.9, 12),
                                                                   round(1 / 0.75, 12),
                                                                   round(1 / 0.7, 12)]
    twin.train()
    with torch.no_grad():
        from_keep, _ = twin.train_loss(INPUTS, TARGETS, None, keep)
        from_scaled, _ = twin.train_loss(INPUTS, TARGETS, None, scaled)
    assert float(from_keep) == float(from_scaled)


def decode_args(model: Seq2Seq) -> dict[str, Any]:
    memory, state = model.encode(INPUTS.source, INPUTS.source_lengths)
    return dict(tokens=np.full(3, BOS), state=state, feed=np.zeros((3, H)), memory=memory,
                lengths=INPUTS.source_lengths)


def bad_decode_args(case: str, args: dict[str, Any]) -> dict[str, Any]:
    h, c = args["state"]
    changes: dict[str, Any] = {
        "tokens 2-D": dict(tokens=args["tokens"][None]),
        "tokens floats": dict(tokens=args["tokens"] * 1.0),
        "tokens out of range": dict(tokens=args["tokens"] + VT),
        "state of one array": dict(state=(h,)),
        "state not a tuple": dict(state=h),
        "state float32": dict(state=(h.astype(np.float32), c)),
        "state of another batch": dict(state=(h[:, :2], c[:, :2])),
        "feed float32": dict(feed=args["feed"].astype(np.float32)),
        "feed of another width": dict(feed=args["feed"][:, :2]),
        "memory 2-D": dict(memory=args["memory"][0]),
        "memory of another batch": dict(memory=args["memory"][:2]),
        "memory float32": dict(memory=args["memory"].astype(np.float32)),
        "lengths too long": dict(lengths=np.array([6, 1, 3])),
        "lengths of another batch": dict(lengths=np.array([5, 1])),
    }[case]
    return {**args, **changes}


DECODE_CASES = ["tokens 2-D", "tokens floats", "tokens out of range", "state of one array",
                "state not a tuple", "state float32", "state of another batch",
                "feed float32", "feed of another width", "memory 2-D",
                "memory of another batch", "memory float32", "lengths too long",
                "lengths of another batch"]


@pytest.mark.parametrize("case", DECODE_CASES)
def test_the_same_bad_decode_step_raises_the_same_error_in_both(case):
    model, twin = twins()
    args = bad_decode_args(case, decode_args(model))
    assert_same_error(lambda: model.decode_step(**args), lambda: twin.decode_step(**args))


def test_without_input_feeding_feed_is_not_read_by_either():
    model, twin = twins(feed=False)
    args = decode_args(model)
    args["feed"] = "not read"
    for got, want in zip(model.decode_step(**args), twin.decode_step(**args)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_the_twins_name_the_same_cells_and_halve_the_same_hidden_size():
    assert set(TORCH_LAYERS) == set(LAYERS)
    assert all(TORCH_LAYERS[cell].__name__ == LAYERS[cell].__name__ for cell in LAYERS)
    with pytest.raises(ValueError, match="hidden_size must be even"):
        Seq2SeqConfig(vocab_size=VS, target_vocab_size=VT, hidden_size=7)   # the twins' config


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_decode_steps_compute_the_keys_once_per_memory(backend, monkeypatch):
    """Both twins project the memory's keys once while the memory object, the lengths and the
    key weights stay the same, and again when any changes; the log-probabilities are those of
    a fresh model each time."""
    import numpy_rnn.tasks.seq2seq.model as numpy_model
    from torch_ref.attention import Attention as TorchAttention

    model, twin = twins(attention="additive")
    m = model if backend == "numpy" else twin
    calls = []
    if backend == "numpy":
        real = numpy_model.prepare_keys
        monkeypatch.setattr(numpy_model, "prepare_keys",
                            lambda *a, **k: calls.append(1) or real(*a, **k))
    else:
        real_project = TorchAttention.project_keys
        monkeypatch.setattr(TorchAttention, "project_keys",
                            lambda self, *a: calls.append(1) or real_project(self, *a))
    args = decode_args(model)
    first = m.decode_step(**args)[0]
    np.testing.assert_array_equal(m.decode_step(**args)[0], first)
    assert len(calls) == 1
    m.decode_step(**{**args, "memory": args["memory"].copy()})     # another memory object
    assert len(calls) == 2
    m.decode_step(**{**args, "lengths": np.array([4, 1, 3])})      # other lengths
    assert len(calls) == 3
    if backend == "numpy":
        model.params["attention.key.weight"] *= 1.5
    else:
        with torch.no_grad():
            twin.attention.key.weight *= 1.5
    changed = m.decode_step(**args)[0]                                 # an optimizer step
    assert len(calls) == 4 and not np.array_equal(changed, first)
    fresh_np, fresh_torch = twins(attention="additive")
    if backend == "numpy":
        fresh_np.load_state_dict(model.state_dict())
        fresh = fresh_np
    else:
        fresh_torch.load_state_dict(twin.state_dict())
        fresh = fresh_torch
    np.testing.assert_array_equal(changed, fresh.decode_step(**args)[0])
