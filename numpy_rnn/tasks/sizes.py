"""What a model holds in memory, counted from its shapes: the pieces every task's estimate is
made of, and the estimate itself (:class:`MemoryEstimate`).

A model states its own size: each task counts its model's parameters from the shapes
(``Task.parameter_count``, tested equal to the built model) and the memory of its own steps
from the batches it will actually make (``Task.training_memory``, its longest sequence, not a
constant). The driver's guard (:mod:`numpy_rnn.driver.memory`) only compares the total with
what the machine has and names the flag to lower. The counts here are upper bounds within a
small factor, not measurements (``tests/test_memory_guard.py`` keeps a training estimate between
1 and 4 times the peak ``tracemalloc`` measures): the point is to refuse what is hopeless.

The pieces:

* :func:`recurrent_parameters`: a stack's weights (torch's layout, see
  :mod:`numpy_rnn.nn.recurrent`);
* :func:`recurrent_held` / :func:`recurrent_transient`: what a stack keeps from a forward call
  for backward (:func:`numpy_rnn.nn.held_for_backward`, the count ``recurrent.py`` documents)
  and the largest buffers a call allocates on top;
* :func:`training_estimate`: a whole step of an embedding -> stack -> head over the vocabulary
  model, the language model's shape, which the other tasks extend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..nn.recurrent import held_for_backward

__all__ = ["GATES", "INFERENCE_PARAMETER_COPIES", "TRAINING_PARAMETER_COPIES", "MemoryEstimate",
           "describe_shape", "inference_estimate", "model_estimate", "recurrent_held",
           "recurrent_parameters", "recurrent_transient", "sampling_estimate",
           "training_estimate"]

#: Gates per cell: the rows of W_ih and W_hh are ``G * H``.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
#: Copies of the parameters a training run holds at once: the weights and their gradients, the
#: two moments of Adam, the starting model the driver builds from the seed (its weights and
#: gradients, alive while the backend loads them).
TRAINING_PARAMETER_COPIES = 6
#: Copies when a checkpoint is loaded for inference: the file's arrays, the model built to
#: check their shapes (weights and gradients), the backend's model (weights and gradients).
INFERENCE_PARAMETER_COPIES = 5


@dataclass(frozen=True)
class MemoryEstimate:
    """What a run will hold, in bytes by part (``{"parameters and optimizer state": n, ...}``),
    for ``what`` (``"the model and batch need"``, the message's subject) of ``shape``
    (``"LSTM 2 x 256, ..."``), and ``advice``: what to make smaller when it does not fit
    (``"choose a smaller --beam"``), the end of the guard's message."""

    what: str
    shape: str
    parts: dict[str, int] = field(default_factory=dict)
    advice: str = "choose a smaller model or batch"

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def _itemsize(config: Any) -> int:
    return np.dtype(config.dtype).itemsize


def recurrent_parameters(cell: str, input_size: int, hidden_size: int, num_layers: int,
                         directions: int = 1) -> int:
    """The weights of a stack of ``num_layers`` ``cell`` layers of ``hidden_size`` in
    ``directions`` directions over inputs of ``input_size``: per layer and direction
    ``W_ih (G*H, F)``, ``W_hh (G*H, H)``, ``b_ih`` and ``b_hh (G*H,)``, the layers above the
    first reading ``D*H`` features."""
    G, H, D = GATES[cell], hidden_size, directions
    n = 0
    for layer in range(num_layers):
        f_in = input_size if layer == 0 else D * H
        n += D * (G * H * f_in + G * H * H + 2 * G * H)
    return n


def describe_shape(config: Any, directions: int = 1, extra: str = "") -> str:
    """``LSTM 2 x 256, embedding 30, vocabulary 60, float32``: the sizes that decide the memory
    (``extra`` after the vocabulary: ``"45 labels"``)."""
    parts = [f"{'bidirectional ' if directions == 2 else ''}{config.cell.upper()} "
             f"{config.num_layers:,} x {config.hidden_size:,}",
             f"embedding {config.input_size:,}", f"vocabulary {config.vocab_size:,}"]
    if extra:
        parts.append(extra)
    return ", ".join(parts) + f", {np.dtype(config.dtype).name}"


def recurrent_held(config: Any, B: int, T: int, *, input_size: int, hidden_size: int,
                   num_layers: int, directions: int = 1, training: bool,
                   masked: bool) -> int:
    """What one forward call of a stack (``config``'s cell, dropout and dtype) over ``(T, B)``
    keeps until the next (:func:`numpy_rnn.nn.held_for_backward`)."""
    dropout = training and config.dropout > 0 and num_layers > 1
    return sum(held_for_backward(config.cell, T, B, input_size, hidden_size, num_layers,
                                 config.dtype, bidirectional=directions == 2, dropout=dropout,
                                 masked=masked).values())


def recurrent_transient(config: Any, B: int, T: int, *, input_size: int, hidden_size: int,
                        directions: int = 1, training: bool, head: int = 0) -> int:
    """The largest buffers one call of a stack allocates on top of what it keeps: forward's
    input projection ``(T, B, G*H)``; in backward the gate gradients (two for the GRU; the
    LSTM's ``k_c``), the input gradient of a layer and the sum of its directions', with the
    ``head`` bytes the model's head allocates in its own backward at the same time."""
    n, H, G = _itemsize(config), hidden_size, GATES[config.cell]
    forward = n * T * B * G * H
    if not training:
        return forward
    widest_in = max(input_size, directions * H)
    return max(forward, n * T * B * (2 * G * H + H + 2 * widest_in) + head)


def training_estimate(config: Any, parameters: int, B: int, T: int, *, masked: bool = False,
                      directions: int = 1, head_held: int | None = None,
                      head_transient: int | None = None, shape: str | None = None,
                      advice: str | None = None) -> MemoryEstimate:
    """The memory of a training step of an Embedding -> recurrent stack -> head model of
    ``config`` (``parameters`` weights) on batches of ``(B, T)`` tokens (``masked``: padded
    sequences run with their lengths), by part. The head defaults to the language model's,
    a distribution over the vocabulary at every step: it keeps the decoder's input ``(T, B, H)``,
    the logits ``(B, T, V)`` and the loss's softmax of them, and backward the logits' gradient
    with the softmax; another head gives its own ``head_held`` / ``head_transient`` bytes.

    A layer keeps its last forward's context until the next forward replaces it, so a step's
    peak holds two steps' activations (the previous one's and its own) and a step's transients.
    """
    n, H, V = _itemsize(config), config.hidden_size, config.vocab_size
    if head_held is None:
        head_held = n * T * B * (H + 2 * V)
    if head_transient is None:
        head_transient = n * T * B * 3 * V
    held = recurrent_held(config, B, T, input_size=config.input_size, hidden_size=H,
                          num_layers=config.num_layers, directions=directions, training=True,
                          masked=masked) + head_held + 8 * B * T * 3  # + the token arrays
    parts = {
        "parameters and optimizer state": TRAINING_PARAMETER_COPIES * n * parameters,
        "the activations kept for backward (this step's and the last one's)": 2 * held,
        "the step's transient buffers": recurrent_transient(
            config, B, T, input_size=config.input_size, hidden_size=H, directions=directions,
            training=True, head=head_transient),
    }
    sizes = "--hidden-size, --num-layers, --embedding-dim"
    return MemoryEstimate(
        "the model and batch need",
        shape or f"{describe_shape(config, directions)}, batch {B:,} x {T:,}", parts,
        advice or (f"choose a smaller {sizes} or --batch-size (the batch's sequences are "
                   f"padded to the longest, {T:,} steps)" if masked else
                   f"choose a smaller {sizes}, --batch-size or --seq-len"))


def model_estimate(config: Any, parameters: int, what: str = "the model needs",
                   shape: str | None = None) -> MemoryEstimate:
    """What loading a checkpoint of ``config`` (``parameters`` weights) and building its model
    allocates (``what``: the subject of the guard's message)."""
    return MemoryEstimate(what, shape or describe_shape(config), {
        "parameters": INFERENCE_PARAMETER_COPIES * _itemsize(config) * parameters},
        "its model config is damaged, or it needs a machine with more memory")


def inference_estimate(config: Any, parameters: int, B: int, T: int, *, directions: int = 1,
                       what: str = "the model and batch need", advice: str | None = None,
                       extra: dict[str, int] | None = None) -> MemoryEstimate:
    """The memory of one forward call of an embedding -> stack -> head over the vocabulary model
    (evaluation mode) over ``(B, T)`` tokens, the parameters included, and ``extra`` parts."""
    n, H, V = _itemsize(config), config.hidden_size, config.vocab_size
    held = recurrent_held(config, B, T, input_size=config.input_size, hidden_size=H,
                          num_layers=config.num_layers, directions=directions, training=False,
                          masked=True) + n * T * B * (H + 2 * V) + 8 * B * T * 3
    transient = recurrent_transient(config, B, T, input_size=config.input_size, hidden_size=H,
                                    directions=directions, training=False)
    base = model_estimate(config, parameters)
    return MemoryEstimate(what, f"{describe_shape(config, directions)}, batch {B:,} x {T:,}", {
        **base.parts, "the activations": 2 * held + transient, **(extra or {})},
        advice or "choose a smaller batch")


def sampling_estimate(config: Any, parameters: int, num_samples: int, max_length: int,
                      prime_length: int = 1) -> MemoryEstimate:
    """The memory of sampling ``num_samples`` streams of up to ``max_length`` characters from
    the model of ``config`` (``parameters`` weights) after a prime of ``prime_length``
    characters (run once, batch 1), the parameters included."""
    base = model_estimate(config, parameters)
    prime = inference_estimate(config, parameters, 1, max(prime_length, 1))
    step = inference_estimate(config, parameters, num_samples, 1)
    # Every stream's characters as int64 ids and as Python strings (about 60 bytes per string).
    kept = num_samples * (max_length * 9 + 64)
    return MemoryEstimate("sampling needs", f"{describe_shape(config)}, {num_samples:,} samples "
                                            f"of up to {max_length:,} characters", {
        **base.parts,
        "the streams' activations": (prime.total - base.total) + (step.total - base.total),
        "the samples": kept}, "choose a smaller --num-samples or --max-length")
