"""One-to-many: from one input vector, a whole sequence. Names for a place.

The input is the multi-hot set of a plant's regions (any label set of a ``text,label...``
corpus); the output, a plant name, one character at a time:

    regions (B, R) -> Linear -> tanh -> h0 of every layer (c0 = 0 for the LSTM)
    "\\n" + name -> Embedding -> recurrent stack from h0 -> Linear -> the next characters

    z  = regions W_c^T + b_c          (B, L*H)     condition.weight (L*H, R), condition.bias
    h0 = tanh(z), as (L, B, H)        layer l's initial state is z's columns l*H .. (l+1)*H-1

Trained with teacher forcing: one name per sequence, read from the newline token and predicted
up to the newline that ends it, the batch's names padded and run with their lengths, the loss
the mean cross-entropy over every valid character. A fraction of the training names
(``label_dropout``, 0.1) is shown with no regions at all (zeros), so the same model also
generates with no region given. ``sample --condition hi`` generates names for Hawaii.

Parameter names, as torch gives the same model (``torch_ref.conditional``): the language
model's (``encoder``, ``rnn``, ``decoder``) and ``condition.weight``, ``condition.bias``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from ..nn.dense import Linear
from ..nn.losses import IGNORE_INDEX, cross_entropy, log_softmax
from ..nn.recurrent import Recurrent
from .base import Batch, Predictor, Rows, State
from .commands import (
    SAMPLE,
    Services,
    dropout_rate,
    nonnegative_int,
    positive_int,
    run_sample,
)
from .corpus import Corpus, load_labelled_corpus
from .lm import CharRNN, Generator
from .model import ModelConfig, expose
from .names import LabelledTask, NameBatches, longest_name, names_advice, pad
from .options import (
    RecurrentOptions,
    TaskOptions,
    label_smoothing_option,
    option,
    require_number,
    require_rate,
)
from .sampling import sample, tag_names
from .sizes import MemoryEstimate, training_estimate

if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace

    from ..driver.config import TrainConfig

__all__ = ["JUDGED_LABELS", "ConditionalCharRNN", "ConditionalConfig", "ConditionalInputs",
           "ConditionalTask", "conditions_for", "judge", "sample_conditioned"]

EVAL_BATCH = 512
#: The regions the README's classifier-judge table is about.
JUDGED_LABELS = ("hi", "ak", "pr", "fl", "ca")
# Mixed into the seed of the label-dropout generator (see NameBatches for the batches').
_LABEL_DROPOUT_TAG = 0x6C61626C


@dataclass(frozen=True)
class ConditionalConfig(ModelConfig):
    """The conditional generator's shapes: the language model's fields and the number of
    labels the condition vector has."""

    task: ClassVar[str] = "conditional"

    num_labels: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, (int, np.integer)) \
                or self.num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {self.num_labels!r}")


@dataclass(frozen=True)
class ConditionalOptions(RecurrentOptions):
    """The conditional generator's own settings: the model's (the language model's recipe)
    and the share of names it is shown without their labels."""

    label_dropout: float = option(0.1, "the share of training names shown with no labels each "
                                       "epoch, so the model also generates with none given, in "
                                       "[0, 1) (default: {default})", group="data and batching",
                                  type=dropout_rate)

    label_smoothing: float = label_smoothing_option()

    def validate(self) -> None:
        super().validate()
        require_rate("label_dropout", self.label_dropout)
        require_number("label_smoothing", self.label_smoothing, low=0.0, high=1.0,
                       high_open=False)


class ConditionalInputs(NamedTuple):
    """What the generator reads: ``conditions (B, R)`` (0/1, the model's dtype), the padded
    input characters ``tokens (B, T)`` ("\\n" + name) and their ``lengths (B,)``."""

    conditions: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray


class ConditionalCharRNN(CharRNN):
    """The language model started from a state computed from the conditions.

    ``logits = model.forward_conditioned(conditions, tokens, lengths)``: ``conditions (B, R)``,
    ``tokens (B, T)`` -> ``logits (B, T, V)``. ``initial_state(conditions)`` is the state the
    stack starts from (``(h0,)`` or ``(h0, c0)``, each ``(L, B, H)``), after which
    :meth:`CharRNN.logits` continues as the language model does.
    """

    def __init__(self, config: ConditionalConfig, seed: int | None = None) -> None:
        super().__init__(config, seed=seed)      # streams 0-2 of SeedSequence(seed)
        cond = np.random.SeedSequence(seed).spawn(4)[3]
        self.condition = Linear(config.num_labels, config.num_layers * config.hidden_size,
                                dtype=config.dtype, seed=cond)
        expose(self, {"condition": self.condition})
        self._h0: np.ndarray | None = None

    @staticmethod
    def parameter_count(config: ModelConfig) -> int:
        """The language model's parameters and the condition's Linear ``(L*H, R)`` with its
        bias."""
        assert isinstance(config, ConditionalConfig)
        LH = config.num_layers * config.hidden_size
        return CharRNN.parameter_count(config) + config.num_labels * LH + LH

    def _initial(self, conditions: np.ndarray) -> tuple[State, np.ndarray]:
        """h0 = tanh(conditions W_c^T + b_c) as ``(L, B, H)`` (and c0 = 0): the state, and h0."""
        L, H = self.config.num_layers, self.config.hidden_size
        B = conditions.shape[0]
        h0 = np.tanh(self.condition(conditions)).reshape(B, L, H).transpose(1, 0, 2)
        h0 = np.ascontiguousarray(h0)
        if self.config.cell == "lstm":
            return (h0, np.zeros_like(h0)), h0
        return (h0,), h0

    def initial_state(self, conditions: np.ndarray) -> State:
        """Evaluation mode: the stack's initial state for ``conditions (B, R)``."""
        self.eval()
        state, _ = self._initial(conditions)
        return state

    def forward_conditioned(self, conditions: np.ndarray, tokens: np.ndarray,
                            lengths: np.ndarray,
                            dropout_masks: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """``conditions (B, R)``, ``tokens (B, T)``, ``lengths (B,)`` -> ``logits (B, T, V)``."""
        state, self._h0 = self._initial(conditions)
        x = self.encoder(np.asarray(tokens).T)                   # (T, B, E), time-major
        out, _ = Recurrent.forward(self.rnn, x, state, lengths, dropout_masks=dropout_masks)
        return self.decoder(out).transpose(1, 0, 2)

    def backward_conditioned(self, dlogits: np.ndarray) -> None:
        """``dlogits (B, T, V)`` -> every gradient, the condition's included:
        ``dz = dh0 ⊙ (1 - h0^2)`` (tanh's derivative), then the Linear's backward."""
        assert self._h0 is not None
        dinit = self.backward(dlogits)                           # (dh0, [dc0]), (L, B, H)
        L, B, H = self._h0.shape
        dz = (dinit[0] * (1.0 - self._h0 * self._h0)).transpose(1, 0, 2).reshape(B, L * H)
        self.condition.backward(np.ascontiguousarray(dz))

    def loss_and_backward(self, inputs: Any, targets: np.ndarray, state: State | None,
                          dropout_masks: Sequence[np.ndarray] | None
                          ) -> tuple[float, State | None]:
        """The mean cross-entropy over the valid characters of ``targets (B, T)`` (padding is
        ``IGNORE_INDEX``)."""
        logits = self.forward_conditioned(inputs.conditions, inputs.tokens, inputs.lengths,
                                          dropout_masks)
        V = logits.shape[-1]
        loss, dlogits = cross_entropy(logits.reshape(-1, V), np.asarray(targets).reshape(-1),
                                      ignore_index=IGNORE_INDEX,
                                      label_smoothing=self.config.label_smoothing)
        self.backward_conditioned(dlogits.reshape(logits.shape))
        return loss, None


# --------------------------------------------------------------------------------------------
# Conditions, sampling, and the classifier as a judge
# --------------------------------------------------------------------------------------------


def conditions_for(codes: Sequence[str], labels: Sequence[str], dtype: Any) -> np.ndarray:
    """The multi-hot ``(1, R)`` vector of ``codes`` (none: all zeros, no region given).
    Raises ``ValueError`` for an unknown code, listing the valid ones."""
    vector = np.zeros((1, len(labels)), dtype=dtype)
    for code in codes:
        if code not in labels:
            raise ValueError(f"unknown region code {code!r}: the model knows "
                             f"{', '.join(labels)}")
        vector[0, list(labels).index(code)] = 1
    return vector


def sample_conditioned(model: Predictor, corpus_vocab: Any, labels: Sequence[str],
                       codes: Sequence[str], num_samples: int, rng: np.random.Generator,
                       dtype: Any, **options: Any) -> list[str]:
    """``num_samples`` names generated for the regions ``codes`` (none: no region given), with
    the language model's sampling options (temperature, top-k, top-p, prime, max_length)."""
    state = model.infer("initial_state", conditions_for(codes, labels, dtype))
    return sample(model, corpus_vocab, num_samples, rng, state=state, stop_at_newline=True,
                  **options)


def judge(generator: Predictor, classifier: Predictor, vocab: Any, labels: Sequence[str],
          classifier_labels: Sequence[str], dtype: Any, regions: Sequence[str] = JUDGED_LABELS,
          num_samples: int = 200, seed: int = 1337) -> list[dict[str, Any]]:
    """Let a classifier judge the generator: for each region R, the classifier's mean
    probability of R for names generated with the condition R, against names generated with no
    region. One dict per region: ``region``, ``conditioned``, ``unconditioned``, ``new`` (the
    share of conditioned names that are in neither split)."""
    from .classify import predict_names  # the other task, as a tool

    def probabilities(codes: Sequence[str], stream: int) -> np.ndarray:
        names = sample_conditioned(generator, vocab, labels, codes, num_samples,
                                   np.random.default_rng([seed, stream]), dtype, max_length=100)
        names = [n for n in names if n]            # an empty name (a newline first): no name
        if not names:
            return np.full((0, len(classifier_labels)), np.nan)
        probs, _ = predict_names(classifier, vocab, names)
        return probs

    blank = probabilities([], 0)
    rows = []
    for i, region in enumerate(regions):
        if region not in labels or region not in classifier_labels:
            continue
        given = probabilities([region], i + 1)
        j = list(classifier_labels).index(region)
        rows.append({"region": region,
                     "conditioned": float(given[:, j].mean()) if len(given) else math.nan,
                     "unconditioned": float(blank[:, j].mean()) if len(blank) else math.nan,
                     "samples": len(given)})
    return rows


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


def _sequences(vocab: Any, names: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each name as the generator reads it, "\\n" + name, and as it predicts it, name + "\\n"."""
    newline = vocab.encode("\n")
    body = [vocab.encode(n) for n in names]
    return [np.concatenate([newline, b]) for b in body], [np.concatenate([b, newline])
                                                           for b in body]


class ConditionalGenerator(Generator):
    """A trained conditional generator: names for the regions asked for,
    ``model.sample(10, condition=["hi"])`` (none: no region given). Every sample is a name,
    ending at its newline."""

    @property
    def labels(self) -> tuple[str, ...]:
        """The regions (labels) the model knows."""
        labels = self.vocabularies["labels"]
        assert isinstance(labels, tuple)
        return labels

    def stops_at_newline(self, stop: str = "auto") -> bool:
        if stop == "length":
            raise ValueError("a conditional model generates names: it stops at the end of "
                             "each name (--stop newline)")
        super().stops_at_newline(stop)
        return True

    def sample(self, n: int = 10, *, condition: str | Sequence[str] = (), **options: Any
               ) -> list[str]:
        """``n`` names for the regions ``condition`` (a code, or a sequence of them, as the
        corpus spells them; none: no region given), with :meth:`Generator.sample`'s options.
        ``ValueError`` for an unknown code, listing the known ones."""
        codes = [condition] if isinstance(condition, str) else list(condition)
        conditions = conditions_for(codes, self.labels, np.dtype(self.config.dtype))
        state = self.model.infer("initial_state", conditions)
        return self._sample(n, state, **{"stop": "auto", "prime": "\n", "max_length": 200,
                                         "seed": None, **options})


class ConditionalTask(LabelledTask):
    """One-to-many: a plant name from the regions where it grows (``train --task
    conditional``)."""

    name = "conditional"
    torch_model = "torch_ref.conditional:ConditionalCharRNN"
    loss_label = "cross-entropy (nats/char)"
    # initial_state(conditions (B, R)) -> state; logits as the language model's
    inference: ClassVar[dict[str, Rows]] = {"initial_state": Rows((0,), 1),
                                            "logits": Rows((0, 1), (0, 1))}
    options = ConditionalOptions
    resume_keys = ("batch_size", "label_dropout")
    summary = "labels -> a name (one-to-many)"
    evaluation_help = "nats per character with the true regions and with none"
    evaluation_json = '{"val_loss", "val_loss_no_labels", ...}'
    flag_help: ClassVar[dict[str, str]] = {
        "batch_size": "names per step, each padded to the longest of its batch "
                      "(default: {default})",
    }
    commands = (SAMPLE,)
    trained = ConditionalGenerator
    #: The recipe measured to train best in 20 minutes on the project's 2 cores (README).
    train_defaults: ClassVar[dict[str, Any]] = dict(
        batch_size=64, steps=10000, lr=3e-3, lr_decay="cosine", lr_final=0.1, lr_decay_steps=10000,
        eval_every=1000, sample_every=2000, num_eval_samples=4)


    def loss_terms(self, targets: np.ndarray) -> int:
        """The valid characters: the mean cross-entropy skips the padding."""
        return int(np.count_nonzero(np.asarray(targets) != IGNORE_INDEX))
    def config_class(self) -> type[ModelConfig]:
        return ConditionalConfig

    def add_command_arguments(self, name: str, parser: ArgumentParser) -> None:
        if name == SAMPLE.name:
            parser.add_argument("--condition", default=None, metavar="CODES",
                                help="conditional models: the regions to generate names for, "
                                     "as the corpus spells them, comma-separated (hi, or "
                                     "ca,or,wa); without it the model generates with no region "
                                     "given")
        elif name == "evaluate":
            parser.add_argument("--judge", default=None, metavar="CLASSIFIER.npz",
                                help="conditional models: let this classify checkpoint judge "
                                     "the names generated for hi, ak, pr, fl and ca against "
                                     "names generated with no region (its mean probability of "
                                     "the region)")
            parser.add_argument("--judge-samples", type=positive_int, default=200,
                                help="names generated per region for --judge (default: 200)")
            parser.add_argument("--seed", type=nonnegative_int, default=1337,
                                help="seed of the names generated for --judge (default: 1337)")

    def check_command_arguments(self, name: str, args: Namespace, services: Services) -> None:
        from .classify import ClassifyTask  # the other task, as a judge

        if name == "evaluate" and args.judge is not None and services.task_of(
                services.read_meta(args.judge)) != ClassifyTask.name:
            raise ValueError(f"--judge needs a {ClassifyTask.name} checkpoint; {args.judge} is "
                             "not one")

    def run_command(self, name: str, args: Namespace, services: Services) -> int:
        codes = [c.strip() for c in (args.condition or "").split(",") if c.strip()]
        return run_sample(args, services, condition=codes)

    def extend_evaluation(self, args: Namespace, metrics: dict[str, Any],
                          services: Services) -> list[str]:
        if args.judge is None:
            return []

        generator = services.load(args.checkpoint, args)
        classifier = services.load(args.judge, args)
        vocab, labels = generator.characters, generator.labels
        judged = classifier.vocabularies
        if judged["characters"] != vocab:
            raise services.checkpoint_error(f"{args.judge} reads another vocabulary than "
                                            f"{args.checkpoint} writes: train both on one "
                                            "corpus")
        judge_labels = judged["labels"]
        assert isinstance(judge_labels, tuple)
        rows = judge(generator.model, classifier.model, vocab, labels, judge_labels,
                     generator.config.dtype, num_samples=args.judge_samples, seed=args.seed)
        metrics["judge"] = rows
        return [f"classifier's mean probability of the region, {args.judge_samples} names each:",
                f"{'region':<8}{'--condition R':>15}{'no region':>12}"] + [
            f"{row['region']:<8}{row['conditioned']:>15.3f}{row['unconditioned']:>12.3f}"
            for row in rows]

    def training_memory(self, config: ModelConfig, settings: TrainConfig,
                        corpus: Corpus) -> MemoryEstimate:
        """The language model's step over names padded to the longest training name (with
        the newline before it), run with their lengths."""
        T = longest_name(corpus.train_names) + 1
        return training_estimate(config, self.parameter_count(config), settings.batch_size, T,
                                 masked=True, advice=names_advice(T - 1))

    def parameter_count(self, config: ModelConfig) -> int:
        return ConditionalCharRNN.parameter_count(config)

    def load(self, data: str, options: TaskOptions | None = None) -> Corpus:
        corpus = load_labelled_corpus(data)
        if "\n" not in corpus.vocab.chars:          # always there: names end with a newline
            raise ValueError("the vocabulary has no newline to start and end the names with")
        return corpus

    def model_config(self, settings: TrainConfig, corpus: Corpus) -> ConditionalConfig:
        assert corpus.labels is not None
        o = settings.options
        assert isinstance(o, ConditionalOptions)
        return ConditionalConfig(vocab_size=len(corpus.vocab), hidden_size=o.hidden_size,
                                 num_layers=o.num_layers, cell=o.cell,
                                 embedding_dim=o.embedding_dim, dropout=o.dropout, dtype=o.dtype,
                                 num_labels=len(corpus.labels),
                                 label_smoothing=o.label_smoothing)

    def build(self, config: ModelConfig, seed: int | None) -> ConditionalCharRNN:
        assert isinstance(config, ConditionalConfig)
        return ConditionalCharRNN(config, seed=seed)

    def batches(self, settings: TrainConfig, corpus: Corpus) -> NameBatches:
        assert corpus.train_names is not None and corpus.train_targets is not None
        inputs, targets = _sequences(corpus.vocab, corpus.train_names)
        o = settings.options
        assert isinstance(o, ConditionalOptions)
        regions = corpus.train_targets.astype(o.dtype)
        p, seed = o.label_dropout, settings.seed

        def make(indices: np.ndarray, epoch: int) -> Batch:
            tokens, lengths = pad([inputs[i] for i in indices])
            y, _ = pad([targets[i] for i in indices], fill=IGNORE_INDEX)
            conditions = regions[indices]
            if p > 0:
                # Each epoch, a fraction p of the names is shown with no regions: a draw per
                # name, from a generator seeded by (seed, epoch), so it is the same whichever
                # batch the name falls in.
                drop = np.random.default_rng([seed, epoch, _LABEL_DROPOUT_TAG]).random(
                    len(inputs)) < p
                conditions = np.where(drop[indices, None], 0, conditions).astype(regions.dtype)
            return Batch(ConditionalInputs(conditions, tokens, lengths), y)

        return NameBatches(np.array([len(s) for s in inputs]), settings.batch_size, seed, make,
                           f"batches of {settings.batch_size} names with their regions "
                           f"(dropped for {p:.0%} of the names each epoch)")

    def _loss(self, model: Predictor, corpus: Corpus, conditions: np.ndarray) -> float:
        """Mean nats per character over every validation name (its characters and the newline
        that ends it), from the state the given ``conditions (N, R)`` start it in."""
        assert corpus.val_names is not None
        inputs, targets = _sequences(corpus.vocab, corpus.val_names)
        order = np.argsort([len(s) for s in inputs], kind="stable")
        total, count = 0.0, 0
        for start in range(0, len(order), EVAL_BATCH):
            idx = order[start:start + EVAL_BATCH]
            tokens, _ = pad([inputs[i] for i in idx])
            y, _ = pad([targets[i] for i in idx], fill=IGNORE_INDEX)
            # One direction: the padding at the end never reaches a valid step, so the batch
            # runs whole and the padded steps are left out of the sum.
            logits, _ = model.infer("logits", tokens,
                                    model.infer("initial_state", conditions[idx]))
            logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
            valid = y != IGNORE_INDEX
            picked = np.take_along_axis(logp, np.where(valid, y, 0)[..., None], axis=-1)[..., 0]
            total -= float(picked[valid].sum())
            count += int(valid.sum())
        return total / count

    def validate(self, model: Predictor, corpus: Corpus) -> dict[str, float]:
        """Validation nats per character of each name given its true regions (``val_loss``)
        and given none (``val_loss_no_labels``): conditioning must help."""
        assert corpus.val_targets is not None
        dtype = self._dtype(model)
        true = corpus.val_targets.astype(dtype)
        with_labels = self._loss(model, corpus, true)
        without = self._loss(model, corpus, np.zeros_like(true))
        return {"val_loss": with_labels, "val_bpc": with_labels / math.log(2),
                "val_loss_no_labels": without}

    @staticmethod
    def _dtype(model: Predictor) -> Any:
        config = getattr(model, "config", None)
        return np.dtype(getattr(config, "dtype", "float64"))

    def describe_validation(self, metrics: dict[str, float]) -> str:
        return (f"validation {metrics['val_loss']:.4f} nats/char with the true regions, "
                f"{metrics['val_loss_no_labels']:.4f} with none")

    def log_samples(self, model: Predictor, corpus: Corpus, settings: TrainConfig,
                    step: int) -> list[str]:
        """A few names for a region of the corpus and for none, labelled train/val/new."""
        assert corpus.labels is not None
        n = settings.num_eval_samples
        if not n:
            return []
        region = next((c for c in JUDGED_LABELS if c in corpus.labels), corpus.labels[0])
        lines = [f"sample at step {step}:"]
        dtype = self._dtype(model)
        for codes in ([region], []):
            rng = np.random.default_rng([settings.seed, step, len(codes)])
            names = sample_conditioned(model, corpus.vocab, corpus.labels, codes, n, rng, dtype,
                                       max_length=100)
            tags = tag_names(names, corpus)
            lines += [f"  {','.join(codes) or '(none)':<6} {n!r:<40} {t}"
                      for n, t in zip(names, tags)]
        return lines
