"""The memory guard: refuse, before allocating anything, a run that cannot fit in memory.

A 100,000-wide hidden layer, a trillion-wide embedding or a trillion samples used to end in a
40-line traceback from NumPy (``ArrayMemoryError``), or worse, in a process that grew until the
kernel killed it. The driver now counts what a run will hold from the shapes alone, compares it
with what the machine has, and stops with one line saying both:

* :func:`estimate_training_bytes`: the parameters with their gradients and optimizer state, and
  one training step's activations: the embedded batch, what the recurrent stack holds for
  backward (:func:`numpy_rnn.nn.held_for_backward`, the count ``recurrent.py`` documents),
  backward's transients, and the logits with their gradients.
* :func:`estimate_inference_bytes` / :func:`estimate_sampling_bytes`: the parameters and one
  forward call (sampling: the prime, then one step over every stream, and the text kept).
* :func:`estimate_model_bytes`: what building a model of a checkpoint's config allocates.
* :func:`available_bytes`: ``MemAvailable`` from ``/proc/meminfo``, or less when a cgroup limit
  (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) leaves less; ``$NUMPY_RNN_MEMORY_LIMIT``
  (bytes, or ``512M``, ``2G``, ``1.5GiB``) overrides both. Unknown: no check.
* :func:`check_fits` raises :class:`MemoryLimitError` (a ``ValueError``, so the command line
  prints it as one ``error:`` line) when an estimate is over what is available.

The counts are upper bounds within a small factor, not measurements (tests/test_memory_guard.py
keeps the training estimate between 1 and 4 times the peak ``tracemalloc`` measures): the point
is to refuse what is hopeless. A default run (LSTM 2 x 256, batch 32 x 150, float32) is
estimated at about 230 MiB, for a measured peak of about 180 MiB.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..nn.recurrent import held_for_backward
from ..tasks.model import ModelConfig

__all__ = [
    "MEMORY_LIMIT_ENV",
    "MemoryEstimate",
    "MemoryLimitError",
    "available_bytes",
    "check_fits",
    "check_training_fits",
    "estimate_inference_bytes",
    "estimate_model_bytes",
    "estimate_sampling_bytes",
    "estimate_training_bytes",
    "format_bytes",
    "parameter_count",
    "parse_bytes",
]

MEMORY_LIMIT_ENV = "NUMPY_RNN_MEMORY_LIMIT"

GATES = {"lstm": 4, "gru": 3, "rnn": 1}

#: Copies of the parameters a training run holds at once: the weights and their gradients, the
#: two moments of Adam, the starting model the driver builds from the seed (its weights and
#: gradients, alive while the backend loads them).
TRAINING_PARAMETER_COPIES = 6
#: Copies when a checkpoint is loaded for inference: the file's arrays, the model built to
#: check their shapes (weights and gradients), the backend's model (weights and gradients).
INFERENCE_PARAMETER_COPIES = 5


class MemoryLimitError(ValueError):
    """A run would need more memory than the machine has; the message is one line saying how
    much, for what, against what is available, and which setting to make smaller."""


@dataclass(frozen=True)
class MemoryEstimate:
    """What a run will hold, in bytes by part (``{"parameters and optimizer state": n, ...}``),
    for ``what`` (``"the model and batch need"``, the message's subject) of ``shape``
    (``"LSTM 2 x 256, ..."``)."""

    what: str
    shape: str
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------

def _itemsize(config: ModelConfig) -> int:
    return np.dtype(config.dtype).itemsize


def _directions(config: ModelConfig) -> int:
    return int(getattr(config, "num_directions", 1))


def parameter_count(config: ModelConfig) -> int:
    """The number of parameters of the model of ``config`` (its task's: the language model,
    the classifier or the conditional generator), counted from the shapes without building it."""
    V, E, H, L = config.vocab_size, config.input_size, config.hidden_size, config.num_layers
    G, D = GATES[config.cell], _directions(config)
    n = V * E                                                   # the embedding
    for layer in range(L):
        f_in = E if layer == 0 else D * H
        n += D * (G * H * f_in + G * H * H + 2 * G * H)         # W_ih, W_hh, b_ih, b_hh
    R = int(getattr(config, "num_labels", 0))
    if config.head == "labels":
        width, A = D * H, int(getattr(config, "attention_size", 0))
        if getattr(config, "pooling", "attention") == "attention":
            n += A * width + A + A                              # proj.weight, proj.bias, score
        n += width * R + R                                      # the decoder to R labels
    else:
        n += H * V + V                                          # the decoder to characters
        if config.conditioned:
            n += R * L * H + L * H                              # the condition's Linear
    return n


def _shape(config: ModelConfig) -> str:
    """``LSTM 2 x 256, embedding 30, vocabulary 60``: the sizes that decide the memory."""
    D = _directions(config)
    parts = [f"{'bidirectional ' if D == 2 else ''}{config.cell.upper()} "
             f"{config.num_layers:,} x {config.hidden_size:,}",
             f"embedding {config.input_size:,}", f"vocabulary {config.vocab_size:,}"]
    R = getattr(config, "num_labels", None)
    if R is not None:
        parts.append(f"{R:,} label{'' if R == 1 else 's'}")
    return ", ".join(parts) + f", {np.dtype(config.dtype).name}"


def _held(config: ModelConfig, B: int, T: int, *, training: bool, masked: bool) -> int:
    """What one forward call over ``(T, B)`` keeps until the next: the recurrent stack's
    context (:func:`held_for_backward`), the head's (the decoder's input and the logits, or the
    attention's copies) and the token arrays."""
    n, H, D = _itemsize(config), config.hidden_size, _directions(config)
    dropout = training and config.dropout > 0 and config.num_layers > 1
    rnn = sum(held_for_backward(config.cell, T, B, config.input_size, H, config.num_layers,
                                config.dtype, bidirectional=D == 2, dropout=dropout,
                                masked=masked).values())
    if config.head == "labels":
        # Attention keeps a batch-major copy of the outputs, Z and tanh(Z) (B, T, A); with
        # dropout, the input's mask and the dropped input (T, B, E).
        A = int(getattr(config, "attention_size", 0))
        head = n * T * B * (D * H + 2 * A + (2 * config.input_size if config.dropout else 0))
    else:
        # The decoder's input (T, B, H), the logits (B, T, V) and the loss's softmax of them.
        head = n * T * B * (H + 2 * config.vocab_size)
    return rnn + head + 8 * B * T * 3                # inputs, targets and the padding buffer


def _transient(config: ModelConfig, B: int, T: int, *, training: bool) -> int:
    """The largest buffers one call allocates on top of what it keeps: forward's input
    projection ``(T, B, G*H)``; in backward the gate gradients (two for the GRU; the LSTM's
    ``k_c``), the input gradient of a layer and the sum of its directions', and the logits'
    gradient with the softmax the loss computes (or the attention's ``dZ`` and ``dO``)."""
    n, H, D, G = _itemsize(config), config.hidden_size, _directions(config), GATES[config.cell]
    forward = n * T * B * G * H
    if not training:
        return forward
    widest_in = max(config.input_size, D * H)
    if config.head == "labels":
        head = n * T * B * (int(getattr(config, "attention_size", 0)) + D * H)
    else:
        head = n * T * B * 3 * config.vocab_size
    return max(forward, n * T * B * (2 * G * H + H + 2 * widest_in) + head)


def estimate_training_bytes(config: ModelConfig, batch_rows: int, seq_len: int, *,
                            masked: bool = False) -> MemoryEstimate:
    """The memory of training the model of ``config`` on batches of ``(batch_rows, seq_len)``
    tokens (``masked``: padded names run with their lengths), by part.

    A layer keeps its last forward's context until the next forward replaces it, so a step's
    peak holds two steps' activations (the previous one's and its own) and a step's transients.
    """
    n, B, T = _itemsize(config), batch_rows, seq_len
    held = _held(config, B, T, training=True, masked=masked)
    parts = {
        "parameters and optimizer state":
            TRAINING_PARAMETER_COPIES * n * parameter_count(config),
        "the activations kept for backward (this step's and the last one's)": 2 * held,
        "the step's transient buffers": _transient(config, B, T, training=True),
    }
    return MemoryEstimate("the model and batch need", f"{_shape(config)}, batch {B:,} x {T:,}",
                          parts)


def estimate_model_bytes(config: ModelConfig, what: str = "the model needs") -> MemoryEstimate:
    """What loading a checkpoint of ``config`` and building its model allocates (``what``:
    the subject of :func:`check_fits`'s message)."""
    return MemoryEstimate(what, _shape(config), {
        "parameters": INFERENCE_PARAMETER_COPIES * _itemsize(config) * parameter_count(config)})


def estimate_inference_bytes(config: ModelConfig, batch_rows: int, seq_len: int
                             ) -> MemoryEstimate:
    """The memory of one forward call of the model of ``config`` (evaluation mode) over
    ``(batch_rows, seq_len)`` tokens, the parameters included."""
    B, T = batch_rows, seq_len
    est = estimate_model_bytes(config)
    return MemoryEstimate("the model and batch need", f"{_shape(config)}, batch {B:,} x {T:,}", {
        **est.parts, "the activations": 2 * _held(config, B, T, training=False, masked=True)
        + _transient(config, B, T, training=False)})


def estimate_sampling_bytes(config: ModelConfig, num_samples: int, max_length: int,
                            prime_length: int = 1) -> MemoryEstimate:
    """The memory of sampling ``num_samples`` streams of up to ``max_length`` characters
    after a prime of ``prime_length`` characters (run once, batch 1), the parameters included."""
    est = estimate_model_bytes(config)
    prime = estimate_inference_bytes(config, 1, max(prime_length, 1))
    step = estimate_inference_bytes(config, num_samples, 1)
    # Every stream's characters as int64 ids and as Python strings (about 60 bytes per string).
    kept = num_samples * (max_length * 9 + 64)
    return MemoryEstimate("sampling needs", f"{_shape(config)}, {num_samples:,} samples of up to "
                                      f"{max_length:,} characters", {
        **est.parts,
        "the streams' activations": (prime.total - est.total) + (step.total - est.total),
        "the samples": kept})


# --------------------------------------------------------------------------------------------
# What the machine has
# --------------------------------------------------------------------------------------------

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """``"2G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"{MEMORY_LIMIT_ENV}={text!r} is not an amount of memory: give bytes, "
                         "or a number with K, M, G or T (e.g. 2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None     # "max": no limit


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024       # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    """What the cgroup's limit leaves (limit - usage), v2 then v1; None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(limit_file)
        if limit is not None and limit < 2**60:          # v1 writes "no limit" as ~2^63
            return max(limit - (_read_int(usage_file) or 0), 0)
    return None


def available_bytes() -> int | None:
    """The memory this process may still allocate, in bytes, or None when unknown (then
    nothing is refused): ``$NUMPY_RNN_MEMORY_LIMIT`` when set, else the least of
    ``MemAvailable`` and what the cgroup's limit leaves."""
    env = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if env:
        return parse_bytes(env)
    known = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(known) if known else None


# --------------------------------------------------------------------------------------------
# Refusing
# --------------------------------------------------------------------------------------------

def format_bytes(n: int) -> str:
    """``1.5 GiB``, ``320.0 MiB``, ``12.0 KiB``, ``100 bytes``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and (unit != "TiB" or n >= 2**50):
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} bytes"


def check_fits(estimate: MemoryEstimate, advice: str, available: int | None = None) -> None:
    """Raise :class:`MemoryLimitError` when ``estimate`` needs more than ``available`` bytes
    (default: :func:`available_bytes`; None there: no check). ``advice`` ends the message:
    what to make smaller (``"choose a smaller --hidden-size or --batch-size"``)."""
    if available is None:
        available = available_bytes()
    if available is None or estimate.total <= available:
        return
    parts = sorted(((v, k) for k, v in estimate.parts.items() if v > 0), reverse=True)
    shown = ", ".join(f"{format_bytes(v)} for {k}" for v, k in parts[:3])
    where = (f"the limit is {format_bytes(available)} ({MEMORY_LIMIT_ENV})"
             if os.environ.get(MEMORY_LIMIT_ENV, "").strip()
             else f"this machine has {format_bytes(available)} available")
    raise MemoryLimitError(f"{estimate.what} about {format_bytes(estimate.total)} "
                           f"({estimate.shape}: {shown}) but {where}: {advice}")


def check_training_fits(task: Any, settings: Any, corpus: Any, config: ModelConfig) -> None:
    """Refuse a training run (``settings``, a ``TrainConfig``) whose model and batch cannot fit.

    The largest batch is the task's (:meth:`Task.batch_shape`): ``(batch_size, seq_len)``
    windows, or names padded to the corpus's longest training name (and the newline before it).
    """
    B, T, by_name = task.batch_shape(settings, corpus)
    estimate = estimate_training_bytes(config, B, T, masked=by_name)
    sizes = "--hidden-size, --num-layers, --embedding-dim"
    check_fits(estimate, f"choose a smaller {sizes} or --batch-size (the batch's names are "
                         f"padded to the longest, {T - 1:,} characters)" if by_name else
               f"choose a smaller {sizes}, --batch-size or --seq-len")
