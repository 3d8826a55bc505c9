"""Validation loss, measured one way everywhere: during training, by ``evaluate`` and in the README.

The validation text (for plants: the validation names in file order, each followed by "\\n") is
read as one stream, cut into at most 16 contiguous segments that run as one batch from a zero
hidden state (:func:`numpy_rnn.data.validation_segments`). The loss is the mean cross-entropy
over every predicted character, in nats; bits per character is that divided by ln 2.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from .backend import Backend
from .checkpoint import backend_from_checkpoint, check_compatible, load_checkpoint, vocab_of
from .data import Vocabulary, load_corpus, validation_segments
from .losses import log_softmax

__all__ = ["Validation", "evaluate_checkpoint", "validation_loss"]

MAX_SEGMENTS = 16
# Time steps per call to the backend. The NumPy backend keeps every step's gate activations for a
# backward pass even in eval mode: 16 segments x 256 steps of a 3 x 512 LSTM is ~200 MB in
# float64, where the whole plants validation text (~4,900 steps per segment) would need ~4 GB.
CHUNK_LEN = 256


class Validation(NamedTuple):
    loss: float   # mean cross-entropy, nats per character
    bpc: float    # the same in bits per character
    chars: int    # number of predicted characters averaged over


def validation_loss(backend: Backend, vocab: Vocabulary, val_text: str, *,
                    max_segments: int = MAX_SEGMENTS, chunk_len: int = CHUNK_LEN) -> Validation:
    """The model's validation loss on ``val_text`` (see the module docstring).

    The segments run through ``backend.logits`` ``chunk_len`` time steps at a time with the
    hidden state carried from chunk to chunk, which is the same computation as one long call.
    Raises ``ValueError`` for a text shorter than 2 characters or with characters outside
    ``vocab``.
    """
    inputs, targets = validation_segments(vocab.encode(val_text), max_segments)
    total = 0.0
    state = None
    for t0 in range(0, inputs.shape[1], chunk_len):
        logits, state = backend.logits(inputs[:, t0:t0 + chunk_len], state)
        logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
        picked = np.take_along_axis(logp, targets[:, t0:t0 + chunk_len, None], axis=-1)
        total -= float(picked.sum())
    loss = total / targets.size
    return Validation(loss, loss / math.log(2), int(targets.size))


def evaluate_checkpoint(path: str | os.PathLike[str], *, backend: str = "numpy",
                        device: str = "cpu", data: str | None = None) -> Validation:
    """The validation loss of a checkpoint on ``data`` (default: the corpus it was trained on).

    The corpus must have the checkpoint's vocabulary (``CheckpointError`` otherwise), since a
    different character set would give the output layer another meaning.
    """
    weights, meta = load_checkpoint(path)
    corpus = load_corpus(data if data is not None else meta["data"])
    check_compatible(meta, path, vocab=corpus.vocab)
    model = backend_from_checkpoint(weights, meta, backend, device)
    return validation_loss(model, vocab_of(meta), corpus.val_text)
