"""Many-to-many: the character language model, the original notebook's task.

Read a text one character at a time and predict the next one at every step; sampled one
character at a time, it writes new text (new plant names). Everything the task is lives here
(its model's config, :class:`~numpy_rnn.tasks.model.ModelConfig`, is every task's base, in
:mod:`numpy_rnn.tasks.model`):

* :class:`CharRNN`: Embedding -> recurrent stack -> Linear over the characters, in NumPy, with
  the parameter names torch gives the same model (``torch_ref.CharRNN``): ``encoder.weight``,
  ``rnn.<torch layer keys>``, ``decoder.weight``, ``decoder.bias``, so one state dict serves both;
* :class:`LMBatches`: random windows, or the text as contiguous streams for truncated BPTT
  (the batchers themselves are :mod:`numpy_rnn.tasks.lm_batches`);
* :func:`validation_loss`: the validation measure, one way everywhere;
* :class:`LanguageModelTask`: the task as the driver sees it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from .._install import install_hint
from ..nn.dense import Embedding, Linear
from ..nn.losses import cross_entropy, log_softmax
from ..nn.recurrent import Recurrent
from .base import Batch, Predictor, Rows, State, Task, TaskModel, TrainedModel
from .commands import SAMPLE, Command, Services, positive_int, run_sample
from .corpus import Corpus, Vocabulary, load_corpus
from .lm_batches import NameStreamBatcher, StreamBatcher, random_windows, validation_segments
from .model import ModelConfig, expose, make_rnn
from .options import (
    Preset,
    RecurrentOptions,
    TaskOptions,
    label_smoothing_option,
    option,
    require_choice,
    require_int,
    require_number,
)
from .sampling import sample, tag_names
from .sizes import recurrent_parameters, sampling_estimate

if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace

    from ..driver.config import TrainConfig


class CharRNN(TaskModel):
    """Embedding ``(V, E)`` -> ``num_layers`` recurrent layers of ``H`` -> Linear ``(H -> V)``.

    ``logits, state = model(tokens, state)`` with ``tokens (B, T)`` integers and ``logits
    (B, T, V)``; ``state`` is a tuple of the recurrent stack's states (``(h, c)`` for the LSTM,
    ``(h,)`` otherwise), each ``(L, B, H)``, or None for zeros. ``model.backward(dlogits)`` adds
    every parameter's gradient into ``grads``.

    Initial weights: torch's distributions (Embedding N(0, 1), recurrent and Linear uniform),
    drawn from independent streams of ``np.random.SeedSequence(seed)``.
    """

    def __init__(self, config: ModelConfig, seed: int | None = None) -> None:
        super().__init__(config.dtype)
        self.config = config
        s_enc, s_rnn, s_dec = np.random.SeedSequence(seed).spawn(3)
        self.encoder = Embedding(config.vocab_size, config.input_size, dtype=config.dtype,
                                 seed=s_enc)
        self.rnn = make_rnn(config, s_rnn)
        self.decoder = Linear(config.hidden_size, config.vocab_size, dtype=config.dtype,
                              seed=s_dec)
        expose(self, {"encoder": self.encoder, "rnn": self.rnn, "decoder": self.decoder})

    @staticmethod
    def parameter_count(config: ModelConfig) -> int:
        """The parameters of the model of ``config``, from the shapes: the embedding ``(V, E)``,
        the stack, the decoder ``(V, H)`` and its bias."""
        V, H = config.vocab_size, config.hidden_size
        return (V * config.input_size + H * V + V
                + recurrent_parameters(config.cell, config.input_size, H, config.num_layers))

    def train(self, mode: bool = True) -> CharRNN:
        super().train(mode)
        self.rnn.train(mode)
        return self

    def forward(self, tokens: np.ndarray, state: tuple[np.ndarray, ...] | None = None,
                dropout_masks: Sequence[np.ndarray] | None = None
                ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """``tokens (B, T)`` -> ``logits (B, T, V)`` and the final states ``(L, B, H)`` each.

        ``dropout_masks``: in training mode with dropout, the keep masks between the layers
        (``config.dropout_mask_shapes(T, B)``), drawn by the caller; None: the stack draws its
        own.
        """
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be 2-D (B, T), got shape {tokens.shape}")
        x = self.encoder(tokens.T)                       # (T, B, E): the stack runs time-major
        out, final = Recurrent.forward(self.rnn, x, state, dropout_masks=dropout_masks)
        logits = self.decoder(out)                       # (T, B, V)
        return logits.transpose(1, 0, 2), final

    def backward(self, dlogits: np.ndarray,
                 dstate: tuple[np.ndarray | None, ...] | None = None) -> tuple[np.ndarray, ...]:
        """``dlogits (B, T, V)`` -> gradients w.r.t. the initial states; grads are added."""
        dout = self.decoder.backward(dlogits.transpose(1, 0, 2))
        dx, dinit = Recurrent.backward(self.rnn, dout, dstate)
        self.encoder.backward(dx)
        return dinit

    def loss_and_backward(self, inputs: Any, targets: np.ndarray, state: State | None,
                          dropout_masks: Sequence[np.ndarray] | None
                          ) -> tuple[float, State | None]:
        """The mean cross-entropy of predicting ``targets (B, T)`` from ``inputs (B, T)``
        (against targets smoothed by ``config.label_smoothing``)."""
        logits, final = self(inputs, state, dropout_masks)
        V = logits.shape[-1]
        loss, dlogits = cross_entropy(logits.reshape(-1, V), np.asarray(targets).reshape(-1),
                                      label_smoothing=self.config.label_smoothing)
        self.backward(dlogits.reshape(logits.shape))
        return loss, final

    def logits(self, inputs: np.ndarray, state: State | None) -> tuple[np.ndarray, State]:
        """Evaluation mode: ``inputs (B, T)`` -> float64 ``logits (B, T, V)``, final state."""
        self.eval()
        logits, final = self(inputs, state)
        return logits.astype(np.float64, copy=False), final


# --------------------------------------------------------------------------------------------
# Batches: random windows, or contiguous streams
# --------------------------------------------------------------------------------------------


class LMBatches:
    """The language model's training batches, B sequences of T characters each.

    * ``random``: B windows at random offsets, each from a zero hidden state (the notebook's,
      with B=1, T=150), drawn from a generator seeded by the run's seed;
    * ``stream``: the text as B contiguous streams walked T characters at a time (truncated
      BPTT); the hidden state carries from one batch to the next (``reset=False``) so each
      stream reads as one long sequence. For plant names the text of each epoch is the training
      names dealt into ``stream_groups`` random groups (``NameStreamBatcher``), so consecutive
      names are as far apart in the sorted file as consecutive validation names are; a plain
      text file streams in its own order.

    The whole state is the generator's state or the stream position (:meth:`state_dict`).
    """

    def __init__(self, settings: TrainConfig, corpus: Corpus) -> None:
        vocab, options = corpus.vocab, settings.options
        assert isinstance(options, LMOptions)
        self.schedule = options.schedule
        B, T = settings.batch_size, options.seq_len
        self.B, self.T = B, T
        self.train_ids = vocab.encode(corpus.train_text)
        self.rng = np.random.default_rng(settings.seed)   # the random schedule's offsets
        self.batcher: StreamBatcher | None
        if options.schedule == "stream" and corpus.train_names is not None:
            self.batcher = NameStreamBatcher([vocab.encode(n + "\n") for n in corpus.train_names],
                                             B, T, groups=options.stream_groups,
                                             seed=settings.seed)
        elif options.schedule == "stream":
            self.batcher = StreamBatcher(self.train_ids, B, T)
        else:
            self.batcher = None
            if len(self.train_ids) < T + 1:
                raise ValueError(f"training text shorter than one window: "
                                 f"{len(self.train_ids)} characters, need seq_len + 1 = {T + 1}")

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.batcher is None:
            inputs, targets = random_windows(self.train_ids, self.B, self.T, self.rng)
            return Batch(inputs, targets, reset=True)      # every window starts from zeros
        chunk = next(self.batcher)
        # Carry the hidden state across batches so each of the B streams is one long
        # sequence; start again from zeros when the streams wrap around.
        return Batch(chunk.inputs, chunk.targets, reset=chunk.reset)

    def state_dict(self) -> dict[str, Any]:
        return {"data_rng": self.rng.bit_generator.state,
                "batcher": self.batcher.state_dict() if self.batcher is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["data_rng"]
        if self.batcher is not None:
            if not state.get("batcher"):
                raise ValueError("the training state lacks the stream position")
            self.batcher.load_state_dict(state["batcher"])

    def describe(self) -> str:
        how = self.schedule
        if isinstance(self.batcher, NameStreamBatcher) and self.batcher.groups > 1:
            how += f" (names dealt into {self.batcher.groups} random groups each epoch)"
        return f"{how} batches of {self.B} x {self.T} characters"


# --------------------------------------------------------------------------------------------
# Validation: one measure everywhere
# --------------------------------------------------------------------------------------------

MAX_SEGMENTS = 16
# Time steps per call to the backend. The NumPy backend keeps every step's gate activations for a
# backward pass even in eval mode: 16 segments x 256 steps of a 3 x 512 LSTM is ~200 MB in
# float64, where the whole plants validation text (~4,900 steps per segment) would need ~4 GB.
CHUNK_LEN = 256


class Validation(NamedTuple):
    loss: float   # mean cross-entropy, nats per character
    bpc: float    # the same in bits per character
    chars: int    # number of predicted characters averaged over


def validation_loss(model: Predictor, vocab: Vocabulary, val_text: str, *,
                    max_segments: int = MAX_SEGMENTS, chunk_len: int = CHUNK_LEN) -> Validation:
    """The model's validation loss on ``val_text``, measured one way everywhere: during
    training, by ``evaluate`` and in the README.

    The validation text (for plants: the validation names in file order, each followed by
    "\\n") is read as one stream, cut into at most 16 contiguous segments that run as one batch
    from a zero hidden state (:func:`numpy_rnn.tasks.lm_batches.validation_segments`). The loss
    is the mean cross-entropy over every predicted character, in nats; bits per character is
    that divided by ln 2. The segments run through ``model.logits`` ``chunk_len`` time steps at a
    time with the hidden state carried from chunk to chunk, which is the same computation as
    one long call. Raises ``ValueError`` for a text shorter than 2 characters or with
    characters outside ``vocab``.
    """
    inputs, targets = validation_segments(vocab.encode(val_text), max_segments)
    total = 0.0
    state = None
    for t0 in range(0, inputs.shape[1], chunk_len):
        logits, state = model.infer("logits", inputs[:, t0:t0 + chunk_len], state)
        logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
        picked = np.take_along_axis(logp, targets[:, t0:t0 + chunk_len, None], axis=-1)
        total -= float(picked.sum())
    loss = total / targets.size
    return Validation(loss, loss / math.log(2), int(targets.size))


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The command line: the language model's train flags, its notebook preset, convert
# --------------------------------------------------------------------------------------------

SCHEDULES = ("random", "stream")

#: The original notebook's run, as ``TrainConfig`` fields: Embedding -> 3 x 512 LSTM -> Linear in
#: float64, one random window of 150 characters per step, Adam at 0.002 with no decay and no
#: clipping, 700 steps. ``TrainConfig(**NOTEBOOK)``, or ``train --notebook``.
NOTEBOOK: dict[str, Any] = dict(cell="lstm", hidden_size=512, num_layers=3, embedding_dim=None,
                                dropout=0.0, dtype="float64", seq_len=150, batch_size=1,
                                schedule="random",
                                steps=700, lr=2e-3, lr_decay="none", clip=None,
                                eval_every=100, sample_every=100)

@dataclass(frozen=True)
class LMOptions(RecurrentOptions):
    """The language model's own settings: the model's (:class:`RecurrentOptions`, whose
    defaults are this task's recipe) and how the text is cut into batches."""

    seq_len: int = option(150, "characters per window: the length of backpropagation through "
                               "time (default: {default})", group="data and batching",
                          type=positive_int)
    schedule: str = option("stream", "random: windows at random offsets, each from a zero "
                                     "hidden state (the notebook's, with batch 1); stream: the "
                                     "text as BATCH contiguous streams, the hidden state carried "
                                     "from one batch to the next (truncated BPTT) "
                                     "(default: {default})", group="data and batching",
                           choices=SCHEDULES)
    stream_groups: int = option(10, "stream schedule on plant names: each epoch deals the "
                                    "training names into this many random groups, each kept in "
                                    "file order, and streams the groups one after another, so "
                                    "consecutive names are about this far apart in the sorted "
                                    "file, as in validation (one name in ten); 1 streams the "
                                    "file order. A plain text file always streams in its own "
                                    "order (default: {default})", group="data and batching",
                                type=positive_int)

    label_smoothing: float = label_smoothing_option()

    def validate(self) -> None:
        super().validate()
        require_number("label_smoothing", self.label_smoothing, low=0.0, high=1.0,
                       high_open=False)
        require_int("seq_len", self.seq_len)
        require_choice("schedule", self.schedule, SCHEDULES)
        require_int("stream_groups", self.stream_groups)


NOTEBOOK_PRESET = Preset(
    "--notebook", "start from the original notebook's settings instead of the defaults (3 x 512 "
                  "LSTM, float64, one random 150-character window per step, Adam 0.002 without "
                  "decay or clipping, 700 steps); flags given with it still override them",
    NOTEBOOK)


def _add_convert_arguments(c: ArgumentParser) -> None:
    c.add_argument("--notebook-state", required=True, help="the notebook's .pt file")
    c.add_argument("--data", default="plants",
                   help="the corpus the notebook was trained on; its sorted characters are the "
                        "vocabulary (default: plants)")
    c.add_argument("--out", default="checkpoint.npz",
                   help="the checkpoint to write (default: checkpoint.npz); never into the "
                        "directory of a training run that is running")
    c.add_argument("--overwrite", action="store_true",
                   help="replace --out if it exists (without it, an existing file is refused)")


CONVERT = Command(
    "convert", help="turn the notebook's saved torch weights into a checkpoint",
    description="Read a state dict saved by the original notebook "
                "(torch.save(rnn.state_dict(), FILE.pt)) and write it as a numpy_rnn checkpoint "
                "(step 0, no optimizer state). Needs torch.",
    add_arguments=_add_convert_arguments, position=40, checkpoint=False)


def _refuse_existing(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is not a new ``.npz`` file in a directory that exists (or, with
    ``overwrite``, an existing one)."""
    if out.is_dir():
        raise ValueError(f"{out} is a directory: give --out the checkpoint file to write")
    if out.suffix.lower() != ".npz":
        raise ValueError(f"--out {out}: a checkpoint is an .npz archive; give a file name "
                         "ending in .npz")
    if not out.parent.is_dir():
        what = "is not a directory" if out.parent.exists() else "does not exist"
        raise ValueError(f"--out {out}: the directory {out.parent} {what}")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} already exists: pass --overwrite to replace it")


def convert_notebook(args: Namespace, services: Services) -> int:
    """``convert``: the notebook's saved torch weights as a checkpoint of this task."""
    try:
        notebook = importlib.import_module("torch_ref.notebook")
    except ImportError as exc:
        raise ImportError(f"convert needs torch and torch_ref ({exc}): "
                          f"{install_hint('torch')}") from exc
    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    config, state = notebook.load_notebook_state(args.notebook_state)
    corpus = load_corpus(args.data)
    vocab = corpus.vocab
    if len(vocab) != config.vocab_size:
        raise services.checkpoint_error(
            f"{args.notebook_state} has a vocabulary of {config.vocab_size} characters but the "
            f"corpus {args.data!r} has {len(vocab)}: pass the corpus the notebook was trained "
            "on with --data")
    services.check_weights(state, config, str(args.notebook_state))
    data = args.data if args.data == "plants" else str(Path(args.data).resolve())
    # Written under the lock of its directory: a training run there (whose checkpoint this
    # would replace) holds it, and gets the directory to itself.
    path = services.write_checkpoint(out, state, config, corpus, source=data,
                                     backend="notebook",
                                     check=lambda: _refuse_existing(out, args.overwrite))
    print(f"wrote {path}: {config.cell} {config.num_layers} x {config.hidden_size}, "
          f"vocabulary of {len(vocab)}, {config.dtype}")
    return 0


STOPS = ("auto", "newline", "length")


class Generator(TrainedModel):
    """A trained language model, ready to write: ``numpy_rnn.load("best.npz").sample(10)``.

    ``sample(n, ...)`` draws ``n`` texts as one batch (:func:`numpy_rnn.tasks.sampling.sample`):
    names, each ending at its newline, for a model of names (the plants corpus), or texts of
    ``max_length`` characters for a model of any other text (``stop="auto"``; ``"newline"`` or
    ``"length"`` choose). The same arguments as the ``sample`` command's flags::

        model = numpy_rnn.load("runs/plants/best.npz")
        names = model.sample(3, temperature=0.8, prime="ros", seed=0)   # 3 names that start
                                                                       # with "ros"
    """

    @property
    def characters(self) -> Vocabulary:
        """The characters the model reads and writes."""
        vocab = self.vocabularies["characters"]
        assert isinstance(vocab, Vocabulary)
        return vocab

    def stops_at_newline(self, stop: str = "auto") -> bool:
        """Whether ``stop`` ends each sample at its newline: ``"auto"`` does for a model of
        names (the plants corpus)."""
        if stop not in STOPS:
            raise ValueError(f"stop must be one of {', '.join(STOPS)}, got {stop!r}")
        return stop == "newline" or (stop == "auto" and self.meta.get("data") == "plants")

    def sample(self, n: int = 10, *, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, prime: str = "\n", max_length: int = 200,
               stop: str = "auto", seed: int | np.random.Generator | None = None
               ) -> list[str]:
        """``n`` samples (strings): temperature (below 1 safer, above 1 wilder), ``top_k`` /
        ``top_p`` (nucleus) filtering, a ``prime`` to start from, at most ``max_length``
        generated characters, where to ``stop``, and the ``seed`` of the draws (an int, a
        NumPy generator, or None: fresh randomness). ``ValueError`` for bad arguments (a prime
        with characters the model has never seen, ...), ``MemoryLimitError`` for more than the
        machine can hold."""
        return self._sample(n, None, temperature=temperature, top_k=top_k, top_p=top_p,
                            prime=prime, max_length=max_length, stop=stop, seed=seed)

    def _sample(self, n: int, state: State | None, *, stop: str, prime: str, max_length: int,
                seed: int | np.random.Generator | None, **options: Any) -> list[str]:
        stop_at_newline = self.stops_at_newline(stop)
        self.check_fits(sampling_estimate(self.config, self.task.parameter_count(self.config),
                                          n, max_length, len(prime) if isinstance(prime, str)
                                          else 1))
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return sample(self.model, self.characters, n, rng, state=state, prime=prime,
                      max_length=max_length, stop_at_newline=stop_at_newline, **options)


class LanguageModelTask(Task):
    """Many-to-many: predict every next character of a text (``train --task lm``)."""

    name = "lm"
    torch_model = "torch_ref.model:CharRNN"
    loss_label = "cross-entropy (nats/char)"
    # logits(tokens (B, T), state) -> (logits (B, T, V), final state)
    inference: ClassVar[dict[str, Rows]] = {"logits": Rows((0, 1), (0, 1))}
    options = LMOptions
    presets = (NOTEBOOK_PRESET,)
    resume_keys = ("schedule", "batch_size", "seq_len", "stream_groups")
    legacy_settings: ClassVar[dict[str, Any]] = {"stream_groups": 1}
    article = "an"
    summary = "predict the next character of the text (many-to-many)"
    evaluation_help = ("nats and bits per character of the validation text, as one stream cut "
                       "into at most 16 segments run from a zero hidden state")
    evaluation_json = '{"val_loss": nats/char, "val_bpc": bits/char, "chars": N}'
    commands = (SAMPLE, CONVERT)
    trained = Generator

    def run_command(self, name: str, args: Namespace, services: Services) -> int:
        if name == CONVERT.name:
            return convert_notebook(args, services)
        return run_sample(args, services)

    def training_state_problem(self, state: dict[str, Any], settings: TrainConfig) -> str | None:
        assert isinstance(settings.options, LMOptions)
        if settings.options.schedule == "stream" and not (
                state.get("batches") or {}).get("batcher", state.get("batcher")):
            return "training state lacks the stream position"
        return None

    def config_class(self) -> type[ModelConfig]:
        return ModelConfig

    def load(self, data: str, options: TaskOptions | None = None) -> Corpus:
        corpus = load_corpus(data)
        if len(corpus.val_text) < 2:
            raise ValueError(f"validation text too short: {len(corpus.val_text)} characters")
        return corpus

    def model_config(self, settings: TrainConfig, corpus: Corpus) -> ModelConfig:
        o = settings.options
        assert isinstance(o, LMOptions)
        return ModelConfig(vocab_size=len(corpus.vocab), hidden_size=o.hidden_size,
                           num_layers=o.num_layers, cell=o.cell, embedding_dim=o.embedding_dim,
                           dropout=o.dropout, dtype=o.dtype, label_smoothing=o.label_smoothing)

    def build(self, config: ModelConfig, seed: int | None) -> CharRNN:
        return CharRNN(config, seed=seed)

    def parameter_count(self, config: ModelConfig) -> int:
        return CharRNN.parameter_count(config)

    def batches(self, settings: TrainConfig, corpus: Corpus) -> LMBatches:
        return LMBatches(settings, corpus)

    def validate(self, model: Predictor, corpus: Corpus) -> dict[str, float]:
        val = validation_loss(model, corpus.vocab, corpus.val_text)
        return {"val_loss": val.loss, "val_bpc": val.bpc}

    def describe_validation(self, metrics: dict[str, float]) -> str:
        return (f"validation {metrics['val_loss']:.4f} nats/char "
                f"({metrics['val_bpc']:.4f} bits/char)")

    def evaluate(self, model: Predictor, corpus: Corpus) -> dict[str, float]:
        val = validation_loss(model, corpus.vocab, corpus.val_text)
        return {"val_loss": val.loss, "val_bpc": val.bpc, "chars": val.chars}

    def describe_evaluation(self, metrics: dict[str, float]) -> str:
        return (f"validation loss: {metrics['val_loss']:.4f} nats/char, "
                f"{metrics['val_bpc']:.4f} bits/char ({int(metrics['chars']):,} characters)")

    def log_samples(self, model: Predictor, corpus: Corpus, settings: TrainConfig,
                    step: int) -> list[str]:
        """A few samples, labelled makemore-style. Their generator is seeded by (seed, step) and
        independent of the batch generator, so sampling never changes the training
        trajectory."""
        rng = np.random.default_rng([settings.seed, step])
        vocab = corpus.vocab
        if corpus.names is not None:
            names = sample(model, vocab, settings.num_eval_samples, rng, max_length=100)
            tags = tag_names(names, corpus)
            return [f"sample at step {step}:"] + [f"  {n!r:<40} {t}"
                                                  for n, t in zip(names, tags)]
        prime = "\n" if "\n" in vocab.chars else corpus.train_text[0]
        text = sample(model, vocab, 1, rng, prime=prime, max_length=200,
                      stop_at_newline=False)[0]
        return [f"sample at step {step}:", text]
