"""A task from outside numpy_rnn, as another package would write it: tag each character of a
text as a vowel or not (many-to-many), with the library's layers and nothing from the driver.

Its options (:class:`VowelOptions`) add settings the driver has never heard of: ``window``, the
characters per training window, and ``logit_scale``, a factor on the tagger's logits (a fixed
inverse temperature, saved in the model's config so that evaluation applies it too).
``tests/test_external_task.py`` registers it and trains, resumes, evaluates and splits it
through the command line, with no change to numpy_rnn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from numpy_rnn.nn import Embedding, Linear, Recurrent, cross_entropy
from numpy_rnn.tasks.base import Batch, Predictor, Rows, State, Task, TaskModel
from numpy_rnn.tasks.commands import positive_float, positive_int
from numpy_rnn.tasks.corpus import Corpus, load_corpus
from numpy_rnn.tasks.model import ModelConfig, expose, make_rnn
from numpy_rnn.tasks.options import (
    RecurrentOptions,
    TaskOptions,
    changed,
    option,
    require_int,
    require_number,
)

VOWELS = frozenset("aeiouAEIOU")


@dataclass(frozen=True)
class VowelConfig(ModelConfig):
    task: ClassVar[str] = "vowels"

    logit_scale: float = 1.0


@dataclass(frozen=True)
class VowelOptions(RecurrentOptions):
    """The tagger's settings: a small stack, and two of its own."""

    hidden_size: int = changed(RecurrentOptions, "hidden_size", 12)
    num_layers: int = changed(RecurrentOptions, "num_layers", 1)
    window: int = option(12, "characters per training window (default: {default})",
                         group="data and batching", type=positive_int)
    logit_scale: float = option(1.0, "multiply the tagger's logits by this (default: {default})",
                                type=positive_float)

    def validate(self) -> None:
        super().validate()
        require_int("window", self.window)
        require_number("logit_scale", self.logit_scale, low=0.0, low_open=True)


def tags(tokens: np.ndarray, vowel_ids: np.ndarray) -> np.ndarray:
    """1 where the token is a vowel, else 0: ``(B, T)`` int64."""
    return np.isin(tokens, vowel_ids).astype(np.int64)


class Tagger(TaskModel):
    """Embedding -> recurrent stack -> Linear(H -> 2) at every step."""

    def __init__(self, config: VowelConfig, seed: int | None = None) -> None:
        super().__init__(config.dtype)
        self.config = config
        s_emb, s_rnn, s_out = np.random.SeedSequence(seed).spawn(3)
        self.embedding = Embedding(config.vocab_size, config.input_size, dtype=config.dtype,
                                   seed=s_emb)
        self.rnn = make_rnn(config, s_rnn)
        self.out = Linear(config.hidden_size, 2, dtype=config.dtype, seed=s_out)
        expose(self, {"embedding": self.embedding, "rnn": self.rnn, "out": self.out})

    def train(self, mode: bool = True) -> Tagger:
        super().train(mode)
        self.rnn.train(mode)
        return self

    def forward(self, tokens: np.ndarray, masks: Sequence[np.ndarray] | None = None
                ) -> np.ndarray:
        out, _ = Recurrent.forward(self.rnn, self.embedding(tokens.T), None,
                                   dropout_masks=masks)
        return self.out(out).transpose(1, 0, 2) * self.config.logit_scale   # (B, T, 2)

    def loss_and_backward(self, inputs: Any, targets: np.ndarray, state: State | None,
                          dropout_masks: Sequence[np.ndarray] | None
                          ) -> tuple[float, State | None]:
        logits = self(inputs, dropout_masks)
        loss, dlogits = cross_entropy(logits.reshape(-1, 2), targets.reshape(-1))
        dlogits = dlogits.reshape(logits.shape) * self.config.logit_scale
        dx, _ = Recurrent.backward(self.rnn, self.out.backward(dlogits.transpose(1, 0, 2)))
        self.embedding.backward(dx)
        return loss, None

    def tag_logits(self, tokens: np.ndarray) -> np.ndarray:
        self.eval()
        return self(tokens).astype(np.float64)


class Windows:
    """Random windows of the training text, from a seeded generator (its state: exact resume)."""

    def __init__(self, ids: np.ndarray, vowel_ids: np.ndarray, batch: int, T: int,
                 seed: int) -> None:
        self.ids, self.vowel_ids, self.batch, self.T = ids, vowel_ids, batch, T
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        starts = self.rng.integers(0, len(self.ids) - self.T, size=self.batch)
        tokens = np.stack([self.ids[s:s + self.T] for s in starts])
        return Batch(tokens, tags(tokens, self.vowel_ids))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]

    def describe(self) -> str:
        return f"random windows of {self.batch} x {self.T} characters"


class VowelTask(Task):
    """Many-to-many: is each character a vowel?"""

    name = "vowels"
    summary = "tag each character as a vowel or not (many-to-many)"
    loss_label = "cross-entropy (nats per character)"
    options = VowelOptions
    resume_keys = ("batch_size", "window")
    inference: ClassVar[dict[str, Rows]] = {"tag_logits": Rows((0,), (0,))}
    train_defaults: ClassVar[dict[str, Any]] = dict(batch_size=8, steps=30, eval_every=10)

    def config_class(self) -> type[ModelConfig]:
        return VowelConfig

    def load(self, data: str, options: TaskOptions | None = None) -> Corpus:
        return load_corpus(data)

    def model_config(self, settings: Any, corpus: Corpus) -> ModelConfig:
        o = settings.options
        return VowelConfig(vocab_size=len(corpus.vocab), hidden_size=o.hidden_size,
                           num_layers=o.num_layers, cell=o.cell, embedding_dim=o.embedding_dim,
                           dropout=o.dropout, dtype=o.dtype, logit_scale=o.logit_scale)

    def build(self, config: ModelConfig, seed: int | None) -> TaskModel:
        assert isinstance(config, VowelConfig)
        return Tagger(config, seed)

    def _vowel_ids(self, corpus: Corpus) -> np.ndarray:
        return np.array([i for i, c in enumerate(corpus.vocab.chars) if c in VOWELS])

    def batches(self, settings: Any, corpus: Corpus) -> Windows:
        ids = corpus.vocab.encode(corpus.train_text)
        return Windows(ids, self._vowel_ids(corpus), settings.batch_size,
                       settings.options.window, settings.seed)

    def validate(self, model: Predictor, corpus: Corpus) -> dict[str, float]:
        ids = corpus.vocab.encode(corpus.val_text)[None, :]
        logits = model.infer("tag_logits", ids)
        loss, _ = cross_entropy(logits.reshape(-1, 2),
                                tags(ids, self._vowel_ids(corpus)).reshape(-1))
        return {"val_loss": float(loss)}
