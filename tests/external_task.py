"""A task from outside numpy_rnn, as another package would write it: tag each character of a
text as a vowel or not (many-to-many), with the library's layers and nothing from the driver.

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
from numpy_rnn.tasks.corpus import Corpus, load_corpus
from numpy_rnn.tasks.model import ModelConfig, expose, make_rnn

VOWELS = frozenset("aeiouAEIOU")


@dataclass(frozen=True)
class VowelConfig(ModelConfig):
    task: ClassVar[str] = "vowels"


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
        return self.out(out).transpose(1, 0, 2)           # (B, T, 2)

    def loss_and_backward(self, inputs: Any, targets: np.ndarray, state: State | None,
                          dropout_masks: Sequence[np.ndarray] | None
                          ) -> tuple[float, State | None]:
        logits = self(inputs, dropout_masks)
        loss, dlogits = cross_entropy(logits.reshape(-1, 2), targets.reshape(-1))
        dx, _ = Recurrent.backward(self.rnn, self.out.backward(
            dlogits.reshape(logits.shape).transpose(1, 0, 2)))
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
    reads = frozenset({"seq_len", "embedding_dim"})
    resume_keys = ("batch_size", "seq_len")
    inference: ClassVar[dict[str, Rows]] = {"tag_logits": Rows((0,), (0,))}
    train_defaults: ClassVar[dict[str, Any]] = dict(hidden_size=12, num_layers=1, seq_len=12,
                                                    batch_size=8, steps=30, eval_every=10)

    def config_class(self) -> type[ModelConfig]:
        return VowelConfig

    def load(self, data: str) -> Corpus:
        return load_corpus(data)

    def model_config(self, settings: Any, corpus: Corpus) -> ModelConfig:
        return VowelConfig(vocab_size=len(corpus.vocab), hidden_size=settings.hidden_size,
                           num_layers=settings.num_layers, cell=settings.cell,
                           embedding_dim=settings.embedding_dim, dropout=settings.dropout,
                           dtype=settings.dtype)

    def build(self, config: ModelConfig, seed: int | None) -> TaskModel:
        assert isinstance(config, VowelConfig)
        return Tagger(config, seed)

    def _vowel_ids(self, corpus: Corpus) -> np.ndarray:
        return np.array([i for i, c in enumerate(corpus.vocab.chars) if c in VOWELS])

    def batches(self, settings: Any, corpus: Corpus) -> Windows:
        ids = corpus.vocab.encode(corpus.train_text)
        return Windows(ids, self._vowel_ids(corpus), settings.batch_size, settings.seq_len,
                       settings.seed)

    def validate(self, model: Predictor, corpus: Corpus) -> dict[str, float]:
        ids = corpus.vocab.encode(corpus.val_text)[None, :]
        logits = model.infer("tag_logits", ids)
        loss, _ = cross_entropy(logits.reshape(-1, 2),
                                tags(ids, self._vowel_ids(corpus)).reshape(-1))
        return {"val_loss": float(loss)}
