"""The seq2seq model's size, from its shapes: its parameters (tested equal to the built model,
``tests/test_sizes.py``), and what a training step and a decoding hold, for the memory guard.

Shapes as in :mod:`.model`: B pairs, S source and T target steps, H = ``hidden_size``,
L = ``num_layers``, Es/Et the embedding widths, Vs/Vt the vocabularies, G the cell's gates.
"""

from __future__ import annotations

import numpy as np

from ...nn.attention import score_param_shapes
from ..sizes import (
    GATES,
    TRAINING_PARAMETER_COPIES,
    MemoryEstimate,
    describe_shape,
    model_estimate,
    recurrent_held,
    recurrent_parameters,
    recurrent_transient,
)
from .model import Seq2SeqConfig

__all__ = ["decoding_estimate", "parameter_count", "training_estimate"]


def parameter_count(config: Seq2SeqConfig) -> int:
    """The parameters of :class:`~.model.Seq2Seq` of ``config``: the source embedding
    ``(Vs, Es)``, the bidirectional encoder of ``H/2`` per direction, a bridge ``(H, H)`` with
    its bias per layer and state kind, the target embedding ``(Vt, Et)``, the decoder, the
    attention's score (:func:`numpy_rnn.nn.attention.score_param_shapes`) and the combine
    ``(H, 2H)`` (not without attention), the output layer ``(Vt, H)`` and its bias."""
    H, L, Vt = config.hidden_size, config.num_layers, config.target_vocab_size
    states = 2 if config.cell == "lstm" else 1
    n = config.vocab_size * config.input_size
    n += recurrent_parameters(config.cell, config.input_size, H // 2, L, directions=2)
    n += states * L * (H * H + H)
    n += Vt * config.target_input_size
    n += recurrent_parameters(config.cell, config.decoder_input_size, H, L)
    if config.attention != "none":
        size = config.attention_size if config.attention == "additive" else None
        n += sum(int(np.prod(s)) for s in score_param_shapes(config.attention, H, H,
                                                             size).values())
        n += H * 2 * H
    return n + Vt * H + Vt


def _shape(config: Seq2SeqConfig) -> str:
    return describe_shape(config, extra=f"target vocabulary {config.target_vocab_size:,}, "
                                        f"{config.attention} attention")


def training_estimate(config: Seq2SeqConfig, B: int, S: int, T: int) -> MemoryEstimate:
    """The memory of a training step on ``B`` pairs padded to ``S`` source and ``T`` target
    steps: the parameters with their gradients and Adam's moments; what the encoder (both
    directions, run with the lengths) and the decoder keep for backward (with input feeding its
    layers' step buffers hold the same as the layer would, and each step keeps its attention
    cache, ``(B, S)`` weights and the ``(B, 2H)`` ``[c; h]``); the memory, its keys and their
    gradients ``(S, B, H)``; the logits ``(T, B, Vt)`` with the loss's softmax; the scaled
    dropout masks (and, with hidden dropout, the attentional vectors kept apart); and the
    largest transients of backward. Two steps' activations at the peak, as
    :func:`numpy_rnn.tasks.sizes.training_estimate` counts."""
    n, H, L, Vt = np.dtype(config.dtype).itemsize, config.hidden_size, config.num_layers, \
        config.target_vocab_size
    encoder = recurrent_held(config, B, S, input_size=config.input_size, hidden_size=H // 2,
                             num_layers=L, directions=2, training=True, masked=True)
    decoder = recurrent_held(config, B, T, input_size=config.decoder_input_size, hidden_size=H,
                             num_layers=L, training=True, masked=False)
    G = GATES[config.cell]
    stepped = n * L * T * B * G * H if config.input_feeding else 0      # each layer's gx
    attention = n * T * B * (3 * S + 3 * H) + 2 * n * S * B * H          # alphas, [c; h], ã, keys
    head = n * T * B * (2 * Vt)                                          # logits and softmax
    embeddings = n * (S * B * config.input_size + T * B * config.target_input_size)
    # the scaled dropout masks kept for backward (a mask the shape of what it drops), and with
    # hidden dropout the attentional vectors kept apart from the dropped ones the output reads
    masks = n * sum(int(np.prod(m.shape)) for m in config.dropout_masks(S, T, B))
    dropped = n * T * B * H if config.hidden_dropout > 0 else 0
    held = (encoder + decoder + stepped + attention + head + embeddings + masks + dropped
            + 8 * B * (S + 2 * T))
    transient = max(
        recurrent_transient(config, B, S, input_size=config.input_size, hidden_size=H // 2,
                            directions=2, training=True),
        recurrent_transient(config, B, T, input_size=config.decoder_input_size, hidden_size=H,
                            training=True, head=n * T * B * (3 * Vt + 2 * H)))
    parts = {
        "parameters and optimizer state":
            TRAINING_PARAMETER_COPIES * n * parameter_count(config),
        "the activations kept for backward (this step's and the last one's)": 2 * held,
        "the step's transient buffers": transient,
    }
    return MemoryEstimate(
        "the model and batch need", f"{_shape(config)}, batch {B:,} pairs of up to {S:,} -> "
                                    f"{T:,} tokens", parts,
        "choose a smaller --hidden-size, --num-layers, --embedding-dim or --batch-size (the "
        f"batch's pairs are padded to the longest there are, {S:,} and {T:,} steps)")


def decoding_estimate(config: Seq2SeqConfig, sources: int, S: int, beam: int,
                      max_length: int, advice: str) -> MemoryEstimate:
    """The memory of decoding ``sources`` sources of up to ``S`` tokens at once with a beam of
    ``beam`` (1: greedy) for up to ``max_length`` steps, the model's parameters included:
    per row of the search (``R = sources * beam``) the repeated memory with its keys ``(S, H)``,
    the decoder's state and step buffers, the float64 log-probabilities of every token and
    their ranking, and, kept for every step, its attention ``(S,)`` and back-pointers."""
    n, H, L, Vt = np.dtype(config.dtype).itemsize, config.hidden_size, config.num_layers, \
        config.target_vocab_size
    R = sources * beam
    states = 2 if config.cell == "lstm" else 1
    per_row = (n * (3 * S * H + (2 * states * L + 4) * H + 2 * GATES[config.cell] * H)
               + 8 * 4 * Vt + 8 * max_length * (S + 2))
    base = model_estimate(config, parameter_count(config), shape=_shape(config))
    return MemoryEstimate("decoding needs", f"{_shape(config)}, {sources:,} source"
                                            f"{'s' if sources != 1 else ''} of up to {S:,} "
                                            f"tokens x beam {beam:,}",
                          {**base.parts, "the search's rows": R * per_row}, advice)
