"""Many-to-one: read a whole name, return one value per label. Where does this plant grow?

After each name, ``plants.data`` lists the codes of the regions where the plant occurs
(``abelmoschus moschatus,hi,pr``); any file of ``text,label[,label...]`` lines works the same
way. The classifier reads the characters of a name and gives one logit per label:

    tokens (B, T) -> Embedding -> recurrent stack (bidirectional by default; run with the
    names' lengths, so it never runs over padding) -> pooling -> Linear -> logits (B, R)

With ``dropout`` the units are dropped in the embedded characters the stack reads and between
the stack's layers (so a one-layer stack is regularised too). Pooling ``attention`` (the
default) is :class:`numpy_rnn.nn.AttentionPooling` over the stack's
outputs: the model learns which characters matter (a picture of its weights over each name is
``predict --plot``). Pooling ``last`` concatenates the final states of both directions, as
torch's ``h_n`` gives them. The loss is the mean binary cross-entropy over every (name, label)
pair; the metrics are average precisions (:mod:`numpy_rnn.tasks.metrics`).

Parameter names, as torch gives the same model (``torch_ref.classify.Classifier``):
``encoder.weight``, ``rnn.*``, ``attention.proj.weight``, ``attention.proj.bias``,
``attention.score.weight``, ``decoder.weight``, ``decoder.bias``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, NamedTuple

import numpy as np

from .._install import install_hint
from ..nn.attention import AttentionPooling
from ..nn.dense import Embedding, Linear
from ..nn.losses import binary_cross_entropy_with_logits
from ..nn.recurrent import Recurrent, scale_dropout_mask
from .base import (
    Batch,
    Predictor,
    Rows,
    State,
    TaskModel,
    TrainedModel,
)
from .commands import PREDICT, Services, png_file, positive_int, read_names
from .corpus import Corpus, Vocabulary, load_labelled_corpus
from .metrics import label_average_precisions, micro_average_precision
from .model import ModelConfig, expose, make_rnn
from .names import LabelledTask, NameBatches, longest_name, names_advice, pad
from .options import (
    RecurrentOptions,
    TaskOptions,
    changed,
    option,
    require_choice,
    require_int,
)
from .sizes import MemoryEstimate, recurrent_parameters, training_estimate

if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace

    from ..driver.config import TrainConfig

__all__ = ["POOLINGS", "REPORTED_LABELS", "Classifier", "ClassifierConfig", "ClassifyOptions",
           "ClassifyTask", "NameInputs", "TrainedClassifier", "plot_attention", "predict_names",
           "text_colours"]

POOLINGS = ("attention", "last")
#: The labels whose own AP validation reports, where the corpus has them (the plant regions
#: the README discusses); a corpus without them reports its five most frequent labels.
REPORTED_LABELS = ("hi", "ak", "pr", "ca", "fl")
EVAL_BATCH = 512
MAX_PLOT_ROWS = 60   # predict --plot: one row per name, readable up to about this many


@dataclass(frozen=True)
class ClassifierConfig(ModelConfig):
    """The classifier's shapes: the language model's fields, the number of labels, the
    directions and the pooling."""

    task: ClassVar[str] = "classify"

    num_labels: int = 1
    bidirectional: bool = True
    pooling: str = "attention"
    attention_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_labels", "attention_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.bidirectional, bool):
            raise TypeError(f"bidirectional must be a bool, got {self.bidirectional!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be attention or last, got {self.pooling!r}")
        if self.label_smoothing:
            raise ValueError("the classifier's loss is a binary cross-entropy: it takes no "
                             f"label_smoothing, got {self.label_smoothing!r}")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def dropout_mask_shapes(self, T: int, B: int) -> list[tuple[int, ...]]:
        """One ``(T, B, E)`` mask for the embedded characters the stack reads, then the
        stack's masks between its layers, ``(T, B, D*H)`` each: the classifier drops units of
        its input too, so a one-layer stack is regularised as well."""
        if self.dropout == 0:
            return []
        return [(T, B, self.input_size), *super().dropout_mask_shapes(T, B)]


class NameInputs(NamedTuple):
    """What the classifier reads: padded tokens ``(B, T)`` int64 and ``lengths (B,)``."""

    tokens: np.ndarray
    lengths: np.ndarray


class Classifier(TaskModel):
    """Embedding -> recurrent stack -> attention or last-state pooling -> Linear ``(D*H -> R)``.

    ``logits, weights = model(tokens, lengths)``: ``tokens (B, T)`` padded integers, ``lengths
    (B,)`` in ``[1, T]``; ``logits (B, R)``; ``weights (T, B)``, the attention over each name's
    characters (None with ``last`` pooling). ``model.backward(dlogits)`` adds every parameter's
    gradient into ``grads``. Initial weights from independent streams of
    ``np.random.SeedSequence(seed)``, torch's distributions.
    """

    def __init__(self, config: ClassifierConfig, seed: int | None = None) -> None:
        super().__init__(config.dtype)
        self.config = config
        s_enc, s_rnn, s_att, s_dec = np.random.SeedSequence(seed).spawn(4)
        width = config.num_directions * config.hidden_size
        self.encoder = Embedding(config.vocab_size, config.input_size, dtype=config.dtype,
                                 seed=s_enc)
        self.rnn = make_rnn(config, s_rnn)
        self.attention = (AttentionPooling(width, config.attention_size, dtype=config.dtype,
                                           seed=s_att)
                          if config.pooling == "attention" else None)
        self.decoder = Linear(width, config.num_labels, dtype=config.dtype, seed=s_dec)
        children: dict[str, Any] = {"encoder": self.encoder, "rnn": self.rnn}
        if self.attention is not None:
            children["attention"] = self.attention
        children["decoder"] = self.decoder
        expose(self, children)
        self._final_shape: tuple[int, ...] = (0,)   # of the last forward's h_n (last pooling)
        self._keep: np.ndarray | None = None          # the input's scaled dropout mask
        self._rng = np.random.default_rng(s_dec.spawn(1)[0])  # its own draws, masks not given

    @staticmethod
    def parameter_count(config: ClassifierConfig) -> int:
        """The parameters of the model of ``config``, from the shapes: the embedding, the stack,
        the attention pooling's ``proj (A, D*H)``, its bias and ``score (1, A)``, the decoder
        ``(R, D*H)`` and its bias."""
        D, H, R, A = config.num_directions, config.hidden_size, config.num_labels, \
            config.attention_size
        n = config.vocab_size * config.input_size + recurrent_parameters(
            config.cell, config.input_size, H, config.num_layers, D)
        if config.pooling == "attention":
            n += A * D * H + A + A
        return n + D * H * R + R

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        self.rnn.train(mode)
        return self

    def forward(self, tokens: np.ndarray, lengths: np.ndarray,
                dropout_masks: Sequence[np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """``tokens (B, T)``, ``lengths (B,)`` -> ``logits (B, R)``, ``weights (T, B)`` or None.

        ``dropout_masks``: in training mode with dropout, the keep masks of
        ``config.dropout_mask_shapes(T, B)`` (the stack's, then the pooled vector's), drawn by
        the caller; None: drawn here (the stack's by the stack, the last by this model)."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be 2-D (B, T), got shape {tokens.shape}")
        B, T = tokens.shape
        keep, between = None, None
        if self.training and self.config.dropout > 0:
            if dropout_masks is None:
                keep = self._rng.random((T, B, self.config.input_size)) >= self.config.dropout
            else:
                keep, *rest = dropout_masks
                between = rest or None
        x = self.encoder(tokens.T)                                  # (T, B, E), time-major
        self._keep = None
        if keep is not None:                      # inverted dropout on the embedded input
            self._keep = scale_dropout_mask(keep, self.config.dropout, self.dtype)
            x = x * self._keep
        out, final = Recurrent.forward(self.rnn, x, None, lengths,
                                       dropout_masks=between)       # out (T, B, D*H)
        if self.attention is not None:
            context, weights = self.attention(out, lengths)         # (B, D*H), (T, B)
        else:
            # The final h of the top layer's directions, [forward, reverse], as torch's h_n.
            D = self.config.num_directions
            context = np.concatenate(list(final[0][-D:]), axis=-1)  # (B, D*H)
            weights = None
        self._final_shape = final[0].shape
        return self.decoder(context), weights

    def backward(self, dlogits: np.ndarray) -> None:
        """``dlogits (B, R)`` -> every parameter's gradient, added into ``grads``."""
        dcontext = self.decoder.backward(dlogits)                   # (B, D*H)
        n_states = len(self.rnn.step.state_names)
        if self.attention is not None:
            dout = self.attention.backward(dcontext)                # (T, B, D*H)
            dstates: tuple[np.ndarray | None, ...] = (None,) * n_states
        else:
            dout = None
            D, H = self.config.num_directions, self.config.hidden_size
            dh_n = np.zeros(self._final_shape, self.dtype)          # (L*D, B, H)
            for d in range(D):
                dh_n[dh_n.shape[0] - D + d] = dcontext[:, d * H:(d + 1) * H]
            dstates = (dh_n,) + (None,) * (n_states - 1)
        dx, _ = Recurrent.backward(self.rnn, dout, dstates)
        if self._keep is not None:
            dx = dx * self._keep                                    # the same mask as forward
        self.encoder.backward(dx)

    def loss_and_backward(self, inputs: Any, targets: np.ndarray, state: State | None,
                          dropout_masks: Sequence[np.ndarray] | None
                          ) -> tuple[float, State | None]:
        """The mean binary cross-entropy of the logits against ``targets (B, R)`` (0/1)."""
        logits, _ = self(inputs.tokens, inputs.lengths, dropout_masks)
        loss, dlogits = binary_cross_entropy_with_logits(logits, targets)
        self.backward(dlogits)
        return loss, None

    def classify(self, tokens: np.ndarray,
                 lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Evaluation mode: float64 logits ``(B, R)`` and attention weights ``(B, T)``."""
        self.eval()
        logits, weights = self(tokens, lengths)
        return (logits.astype(np.float64, copy=False),
                None if weights is None else weights.T.astype(np.float64))


# --------------------------------------------------------------------------------------------
# Prediction: names in, probabilities (and attention) out
# --------------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    z = np.exp(-np.abs(x))
    result: np.ndarray = np.where(x >= 0, 1 / (1 + z), z / (1 + z))
    return result


def predict_names(model: Predictor, vocab: Vocabulary, names: Sequence[str]
                  ) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Each label's probability for each name, ``(N, R)`` float64, and each name's attention
    weights over its characters (``(len(name),)``, None without attention).

    Names are run in length-sorted batches of :data:`EVAL_BATCH`. Raises ``ValueError`` for an
    empty name or characters outside the vocabulary, naming the name.
    """
    encoded = []
    for name in names:
        if not name:
            raise ValueError("a name to classify is empty")
        try:
            encoded.append(vocab.encode(name))
        except ValueError as exc:
            raise ValueError(f"the name {name!r} has {exc}: the model knows only "
                             f"{''.join(c for c in vocab.chars if c.isprintable())!r}") from None
    probs = np.zeros((len(names), 0))
    weights: list[np.ndarray | None] = [None] * len(names)
    order = np.argsort([len(e) for e in encoded], kind="stable")
    for start in range(0, len(order), EVAL_BATCH):
        idx = order[start:start + EVAL_BATCH]
        tokens, lengths = pad([encoded[i] for i in idx])
        logits, w = model.infer("classify", tokens, lengths)
        if probs.shape[1] == 0:
            probs = np.zeros((len(names), logits.shape[1]))
        probs[idx] = _sigmoid(logits)
        for row, i in enumerate(idx):
            weights[i] = None if w is None else w[row, :lengths[row]].copy()
    return probs, weights


def text_colours(weights: np.ndarray, norm: Any, cmap: Any) -> np.ndarray:
    """The colour of the letter drawn on each cell of ``weights``: "white" where the cell's colour
    (``cmap(norm(weight))``, the scale the picture itself uses, shared by every row) is dark,
    "black" where it is light; "black" for NaN (padding, where no letter is drawn). Returns an
    array of strings shaped like ``weights``."""
    rgba = np.asarray(cmap(norm(np.ma.masked_invalid(weights))), dtype=np.float64)
    # Relative luminance of the sRGB colour (ITU-R BT.709 weights): below 0.5 is dark.
    luminance = rgba[..., :3] @ np.array([0.2126, 0.7152, 0.0722])
    return np.where(np.isfinite(weights) & (luminance < 0.5), "white", "black")


def plot_attention(names: Sequence[str], weights: Sequence[np.ndarray | None],
                   probs: np.ndarray, labels: Sequence[str], out: str | Path | BinaryIO,
                   top: int = 3) -> None:
    """Draw the attention weights over the characters of each name, a row per name, as a PNG
    into ``out`` (a path or a binary file); each row is titled with the name's ``top`` most
    likely labels. One colour scale for every row (0 to the largest weight drawn); names are
    drawn as written (a ``$`` is a dollar sign, not mathematics). Needs matplotlib."""
    if any(w is None for w in weights):
        raise ValueError("this classifier pools the last states: it has no attention to draw "
                         "(train it with --pooling attention)")
    try:
        # A Figure of its own, drawn straight to the file: no pyplot, so the backend a notebook
        # or a program chose (inline figures, a window) is left as it was.
        import matplotlib
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"--plot needs matplotlib: {install_hint('train')}") from exc
    width = max(len(n) for n in names)
    grid = np.full((len(names), width), np.nan)
    for i, w in enumerate(weights):
        assert w is not None
        grid[i, :len(w)] = w
    cmap = matplotlib.colormaps["viridis"]
    top_weight = float(np.nanmax(grid)) if np.isfinite(grid).any() else 1.0
    norm = Normalize(vmin=0.0, vmax=top_weight if top_weight > 0 else 1.0)
    colours = text_colours(grid, norm, cmap)
    # Fixed cell sizes (inches); the labels and the title lie outside the figure's own area,
    # and bbox_inches="tight" grows the saved picture to hold them, however long or short
    # the names are.
    ax_w, ax_h = 0.32 * width, max(1.0, 0.45 * len(names))
    fig_w = ax_w + 0.45
    fig = Figure(figsize=(fig_w, ax_h))
    ax = fig.add_axes((0.0, 0.0, ax_w / fig_w, 1.0))
    cax = fig.add_axes(((ax_w + 0.15) / fig_w, 0.0, 0.15 / fig_w, 1.0))
    image = ax.imshow(grid, aspect="auto", cmap=cmap, norm=norm)
    for i, name in enumerate(names):
        for j, ch in enumerate(name):
            ax.text(j, i, ch, ha="center", va="center", fontsize=9, color=colours[i, j],
                    parse_math=False)
    tops = [", ".join(f"{labels[j]} {probs[i, j]:.2f}" for j in np.argsort(-probs[i])[:top])
            for i in range(len(names))]
    ax.set_yticks(range(len(names)), [f"{n}  ({t})" for n, t in zip(names, tops)],
                  parse_math=False)
    ax.set_xticks([])
    ax.set_title("attention over the characters of each name (most likely regions)",
                 parse_math=False)
    fig.colorbar(image, cax=cax, label="weight")
    fig.savefig(out, dpi=110, format="png", bbox_inches="tight", pad_inches=0.1)


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The command line: the classifier's train flags and predict
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifyOptions(RecurrentOptions):
    """The classifier's own settings: the model's (with this task's recipe as defaults), its
    directions and its pooling."""

    hidden_size: int = changed(RecurrentOptions, "hidden_size", 128)
    num_layers: int = changed(RecurrentOptions, "num_layers", 1)
    dropout: float = changed(RecurrentOptions, "dropout", 0.0,
                             help="dropout on the embedded characters the stack reads and "
                                  "between its layers, in [0, 1) (default: {default})")
    bidirectional: bool = option(True, "read each name in both directions "
                                       "(default: {default})",
                                 action=argparse.BooleanOptionalAction)
    pooling: str = option("attention", "attention (learned weights over the characters, drawn "
                                       "by predict --plot) or last (the final states of both "
                                       "directions) (default: {default})", choices=POOLINGS)
    attention_size: int = option(64, "hidden width of the attention's scoring layer "
                                     "(default: {default})", type=positive_int)

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.bidirectional, bool):
            raise TypeError(f"bidirectional must be a bool, got {self.bidirectional!r}")
        require_choice("pooling", self.pooling, POOLINGS)
        require_int("attention_size", self.attention_size)


class TrainedClassifier(TrainedModel):
    """A trained classifier: the labels of names, ``numpy_rnn.load("best.npz").predict(names)``.
    For example::

        model = numpy_rnn.load("runs/classify/best.npz")
        probs = model.predict(["abies lasiocarpa"])[0]       # {region: probability}
        top3 = sorted(probs, key=probs.get, reverse=True)[:3]
    """

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels (regions), in the order of the model's outputs."""
        labels = self.vocabularies["labels"]
        assert isinstance(labels, tuple)
        return labels

    def probabilities(self, names: str | Sequence[str]
                      ) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Each label's probability for each name, ``(N, R)`` float64 (columns in
        :attr:`labels`' order), and each name's attention over its characters
        (``(len(name),)``, None with ``last`` pooling). ``ValueError`` naming an empty name or
        one with characters the model has never seen."""
        vocab = self.vocabularies["characters"]
        assert isinstance(vocab, Vocabulary)
        return predict_names(self.model, vocab, [names] if isinstance(names, str) else names)

    def predict(self, names: str | Sequence[str]) -> list[dict[str, float]]:
        """For each name, every label's probability (``{label: p}``, in :attr:`labels`'
        order); one name given as a string gives a list of one."""
        probs, _ = self.probabilities(names)
        return [{c: float(p) for c, p in zip(self.labels, row)} for row in probs]

    def attention(self, names: str | Sequence[str]) -> list[np.ndarray | None]:
        """Each name's attention weights over its characters (None with ``last`` pooling)."""
        return self.probabilities(names)[1]


def predict(args: Namespace, services: Services) -> int:
    """``predict``: each name with its most likely labels (or all, as JSON), and with
    ``--plot`` the attention over its characters."""
    names = read_names(args.names)
    if args.plot is not None and args.plot.exists() and not args.overwrite:
        raise ValueError(f"{args.plot} already exists: pass --overwrite to replace it")
    if args.plot is not None and len(names) > MAX_PLOT_ROWS:
        raise ValueError(f"--plot draws a row per name: give at most {MAX_PLOT_ROWS} names, "
                         f"got {len(names)}")
    classifier = services.load(args.checkpoint, args)
    assert isinstance(classifier, TrainedClassifier)
    codes = classifier.labels
    probs, weights = classifier.probabilities(names)  # checks every name
    if args.plot is not None:
        if any(w is None for w in weights):
            raise ValueError("this classifier pools the last states: it has no attention to "
                             "draw (train it with --pooling attention)")
        services.atomic_write(Path(args.plot), "wb",
                              lambda f: plot_attention(names, weights, probs, codes, f,
                                                       top=args.top))
    for name, row in zip(names, probs):
        if args.json:
            print(json.dumps({"name": name, "probabilities":
                              {c: float(p) for c, p in zip(codes, row)}}))
        else:
            top = np.argsort(-row, kind="stable")[:args.top]
            print(name + "\t" + "  ".join(f"{codes[j]} {row[j]:.3f}" for j in top))
    if args.plot is not None:
        n = len(names)
        print(f"attention of {n} name{'s' if n != 1 else ''} drawn in {args.plot}",
              file=sys.stderr)
    return 0


class ClassifyTask(LabelledTask):
    """Many-to-one: a name's labels (``train --task classify``)."""

    name = "classify"
    torch_model = "torch_ref.classify:Classifier"
    # The training loss and val_loss are both the mean over (name, region) pairs.
    loss_label = "binary cross-entropy (nats per name-region pair)"
    # classify(tokens (B, T), lengths (B,)) -> (logits (B, R), attention (B, T) or None)
    inference: ClassVar[dict[str, Rows]] = {"classify": Rows((0, 0), (0, 0))}
    options = ClassifyOptions
    resume_keys = ("batch_size",)
    summary = "a name -> the labels after it (many-to-one)"
    evaluation_help = ("mean binary cross-entropy, micro and macro average precision and a few "
                       "regions' AP")
    evaluation_json = '{"val_loss", "micro_ap", "macro_ap", "ap_hi", ...}'
    flag_help: ClassVar[dict[str, str]] = {
        "batch_size": "names per step, each padded to the longest of its batch "
                      "(default: {default})",
        "eval_every": "measure the validation metrics (the best checkpoint keeps the best "
                      "micro-AP) and save a checkpoint every N steps (and at the last) "
                      "(default: {default})",
        "sample_every": "print a few validation names with their predicted labels every N "
                        "steps (and at the last) (default: {default})",
        "data": "'plants' for the plant-name corpus with the regions where each grows, or the "
                "path of a UTF-8 file of 'name,label[,label...]' lines (default: {default})",
    }
    commands = (PREDICT,)
    trained = TrainedClassifier
    # The BCE is lowest early, while the ranking of (name, region) pairs still improves for
    # thousands of steps (measured, README): best.npz keeps the best micro-AP, the target.
    best_metric = "micro_ap"
    higher_is_better = True
    #: The recipe measured to train best in 20 minutes on the project's 2 cores (README).
    train_defaults: ClassVar[dict[str, Any]] = dict(
        batch_size=64, steps=16000, lr=1e-2, lr_decay="cosine", lr_final=0.05, lr_decay_steps=16000,
        optimizer="adamw", weight_decay=0.05, eval_every=2000, sample_every=4000,
        num_eval_samples=3)

    def config_class(self) -> type[ModelConfig]:
        return ClassifierConfig

    def add_command_arguments(self, name: str, parser: ArgumentParser) -> None:
        if name != PREDICT.name:
            return
        parser.add_argument("--top", type=positive_int, default=5,
                            help="how many of the most likely labels to print per name "
                                 "(default: 5)")
        parser.add_argument("--json", action="store_true",
                            help='one JSON object per line instead: {"name": ..., '
                                 '"probabilities": {code: p, ...}} with every label')
        parser.add_argument("--plot", type=png_file, default=None, metavar="FILE.png",
                            help="also draw the attention weights over the characters of the "
                                 "names, a row per name, into this PNG (attention pooling "
                                 f"only, at most {MAX_PLOT_ROWS} names)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace the --plot file if it exists (without it, it is "
                                 "refused)")

    def run_command(self, name: str, args: Namespace, services: Services) -> int:
        return predict(args, services)

    def refusal(self, command: str, path: str, served_by: str) -> str | None:
        if command != "sample":
            return None
        return (f"{path} is a classifier: it reads names and writes labels, it cannot sample; "
                f"use predict (or sample from {served_by} checkpoint)")

    def training_memory(self, config: ModelConfig, settings: TrainConfig,
                        corpus: Corpus) -> MemoryEstimate:
        """Batches of names padded to the longest training name (and the newline before it),
        run with their lengths; the head keeps the attention's batch-major copy of the outputs,
        its ``Z`` and ``tanh(Z)`` ``(B, T, A)`` (and with dropout the input's mask and the
        dropped input)."""
        assert isinstance(config, ClassifierConfig)
        B, T = settings.batch_size, longest_name(corpus.train_names) + 1
        n, D, H, A = np.dtype(config.dtype).itemsize, config.num_directions, \
            config.hidden_size, config.attention_size
        drop = 2 * config.input_size if config.dropout else 0
        return training_estimate(config, self.parameter_count(config), B, T, masked=True,
                                 directions=D, head_held=n * T * B * (D * H + 2 * A + drop),
                                 head_transient=n * T * B * (A + D * H),
                                 advice=names_advice(T - 1))

    def load(self, data: str, options: TaskOptions | None = None) -> Corpus:
        return load_labelled_corpus(data)

    def model_config(self, settings: TrainConfig, corpus: Corpus) -> ClassifierConfig:
        assert corpus.labels is not None
        o = settings.options
        assert isinstance(o, ClassifyOptions)
        return ClassifierConfig(vocab_size=len(corpus.vocab), hidden_size=o.hidden_size,
                                num_layers=o.num_layers, cell=o.cell,
                                embedding_dim=o.embedding_dim, dropout=o.dropout, dtype=o.dtype,
                                num_labels=len(corpus.labels), bidirectional=o.bidirectional,
                                pooling=o.pooling, attention_size=o.attention_size)

    def build(self, config: ModelConfig, seed: int | None) -> Classifier:
        assert isinstance(config, ClassifierConfig)
        return Classifier(config, seed=seed)

    def parameter_count(self, config: ModelConfig) -> int:
        assert isinstance(config, ClassifierConfig)
        return Classifier.parameter_count(config)

    def batches(self, settings: TrainConfig, corpus: Corpus) -> NameBatches:
        assert corpus.train_names is not None and corpus.train_targets is not None
        encoded = [corpus.vocab.encode(n) for n in corpus.train_names]
        assert isinstance(settings.options, ClassifyOptions)
        targets = corpus.train_targets.astype(settings.options.dtype)

        def make(indices: np.ndarray, epoch: int) -> Batch:
            tokens, lengths = pad([encoded[i] for i in indices])
            return Batch(NameInputs(tokens, lengths), targets[indices])

        return NameBatches(np.array([len(e) for e in encoded]), settings.batch_size,
                           settings.seed, make,
                           f"batches of {settings.batch_size} names (length-sorted pools), "
                           "with their labels")

    def reported_labels(self, corpus: Corpus) -> list[str]:
        """The labels whose own AP is reported: the plant regions, else the five most
        frequent."""
        assert corpus.labels is not None and corpus.train_targets is not None
        named = [c for c in REPORTED_LABELS if c in corpus.labels]
        if named:
            return named
        counts = corpus.train_targets.sum(axis=0)
        return [corpus.labels[j] for j in np.argsort(-counts, kind="stable")[:5]]

    def validate(self, model: Predictor, corpus: Corpus) -> dict[str, float]:
        """Mean BCE over every validation (name, label) pair, micro and macro average
        precision, and the AP of a few labels (``ap_hi``, ...)."""
        assert corpus.val_names is not None and corpus.val_targets is not None
        assert corpus.labels is not None
        probs, _ = predict_names(model, corpus.vocab, corpus.val_names)
        y = corpus.val_targets
        p = np.clip(probs, 1e-12, 1 - 1e-12)   # only where float64 itself rounds to 0 or 1
        bce = float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))
        per_label = label_average_precisions(probs, y)
        metrics = {"val_loss": bce, "micro_ap": micro_average_precision(probs, y),
                   "macro_ap": float(np.nanmean(per_label))}
        for code in self.reported_labels(corpus):
            metrics[f"ap_{code}"] = float(per_label[corpus.labels.index(code)])
        return metrics

    def describe_validation(self, metrics: dict[str, float]) -> str:
        return (f"validation BCE {metrics['val_loss']:.4f}, micro-AP {metrics['micro_ap']:.3f}, "
                f"macro-AP {metrics['macro_ap']:.3f}")

    def describe_evaluation(self, metrics: dict[str, float]) -> str:
        per = ", ".join(f"{k[3:]} {v:.3f}" for k, v in metrics.items() if k.startswith("ap_"))
        return (f"validation BCE {metrics['val_loss']:.4f}, micro-AP {metrics['micro_ap']:.4f}, "
                f"macro-AP {metrics['macro_ap']:.4f}; AP per region: {per}")

    def log_samples(self, model: Predictor, corpus: Corpus, settings: TrainConfig,
                    step: int) -> list[str]:
        """A few validation names with their most likely labels and their true ones."""
        assert corpus.val_names is not None and corpus.val_targets is not None
        assert corpus.labels is not None
        n = settings.num_eval_samples
        if not n:
            return []
        rng = np.random.default_rng([settings.seed, step])
        picks = rng.choice(len(corpus.val_names), size=min(n, len(corpus.val_names)),
                           replace=False)
        names = [corpus.val_names[i] for i in picks]
        probs, _ = predict_names(model, corpus.vocab, names)
        lines = [f"predictions at step {step}:"]
        for row, i in enumerate(picks):
            top = np.argsort(-probs[row])[:5]
            guess = " ".join(f"{corpus.labels[j]}:{probs[row, j]:.2f}" for j in top)
            truth = " ".join(c for c, t in zip(corpus.labels, corpus.val_targets[i]) if t)
            lines.append(f"  {names[row]!r:<32} {guess}   (true: {truth})")
        return lines
