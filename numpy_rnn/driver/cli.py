"""The command line: ``python -m numpy_rnn train | sample | evaluate | convert``.

Each command is a thin layer over the library (:func:`numpy_rnn.train.train`,
:func:`numpy_rnn.sampling.sample`, :func:`numpy_rnn.evaluate.evaluate_checkpoint`,
:mod:`numpy_rnn.checkpoint`). A user error (a bad flag value, a missing or unreadable file, a
checkpoint for another model) ends with ONE line ``error: ...`` on stderr and exit status 2, not
a traceback; a diverged training run exits with 1, one stopped by a signal with ``128 + signal``
(130 for Ctrl-C, 143 for SIGTERM) after saving the checkpoint of its last step.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import signal
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .._install import install_hint
from ..tasks import TASKS, get_task
from ..tasks.classify import POOLINGS, plot_attention, predict_names
from ..tasks.conditional import judge, sample_conditioned
from ..tasks.data import DataError, load_corpus
from ..tasks.lm import CELLS
from ..tasks.sampling import labels, sample
from .backend import BACKENDS
from .checkpoint import (
    CheckpointError,
    atomic_write,
    backend_from_checkpoint,
    check_weights,
    labels_of,
    load_checkpoint,
    make_meta,
    read_meta,
    save_checkpoint,
    task_of,
    vocab_of,
)
from .distributed import FollowerExit, get_engine
from .evaluate import evaluate_checkpoint
from .memory import check_fits, estimate_sampling_bytes
from .rundir import run_lock
from .stops import Interrupted, exit_status, output_gone, silence_stdout, tolerate_closed_output
from .train import (
    DTYPES,
    LR_DECAYS,
    NOTEBOOK,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    TrainingDiverged,
    resume_config,
    train,
)

PROG = "python -m numpy_rnn"
MAX_PLOT_ROWS = 60   # predict --plot: one row per name, readable up to about this many
D = TrainConfig()   # the defaults, shown in --help
SAMPLE_RULE = "-" * 20   # between samples in --stop length mode


class _UsageError(Exception):
    """A bad command line, raised by the parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# -- argument types: each refuses a bad value with a message that says what is allowed ------


def _number(text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def unit_interval(text: str) -> float:
    """A probability in (0, 1]."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def dropout_rate(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


# -- the parser -------------------------------------------------------------------------------


def _add_backend_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup, **kw: Any) -> None:
    p.add_argument("--backend", choices=sorted(BACKENDS), **kw,
                   help="numpy: this package's own layers; torch: the same model in torch.nn "
                        "(needs torch). Both read and write the same checkpoints"
                        + ("" if kw else " (default: numpy)"))
    p.add_argument("--device", choices=("cpu", "cuda"), **kw,
                   help="where the torch backend runs; the numpy backend runs on the CPU only"
                        + ("" if kw else " (default: cpu)"))


def _version() -> str:
    """The version of the numpy_rnn that runs (the package's ``__version__``, which
    setup.cfg's ``version`` matches)."""
    return str(importlib.import_module("numpy_rnn").__version__)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser of every command; ``prog`` is how the usage lines name the program
    (``python -m numpy_rnn``, or ``numpy-rnn`` for the installed console command)."""
    parser = _Parser(
        prog=prog,
        description="A character-level RNN in NumPy (or torch) that learns plant names and "
                    "invents new ones.",
        epilog="examples:\n"
               f"  {prog} train --out runs/plants\n"
               f"  {prog} train --out runs/plants --resume --steps 3000\n"
               f"  {prog} sample --checkpoint runs/plants/best.npz --num-samples 20 --label\n"
               f"  {prog} evaluate --checkpoint runs/plants/best.npz --json\n"
               "Run any command with --help for its flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"numpy_rnn {_version()}",
                        help="print the version of numpy_rnn and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # ---- train: every default is TrainConfig's; SUPPRESS tells explicit flags from defaults,
    # so that --resume takes the saved run's settings and only the flags given override them.
    S = argparse.SUPPRESS
    t = sub.add_parser("train", help="train a model (or continue one with --resume)",
                       description="Train a model of one of the three shapes on a corpus: the "
                                   "character language model (lm), the name classifier "
                                   "(classify) or the conditional name generator "
                                   "(conditional). Every N steps: the validation metrics, a "
                                   "checkpoint and a few examples. Writes OUT/checkpoint.npz, "
                                   "OUT/best.npz, OUT/metrics.jsonl, OUT/loss.png. The defaults "
                                   "shown are the lm's; each task has its own measured recipe "
                                   "(see README.md).")
    t.add_argument("--task", choices=tuple(TASKS), default=S,
                   help="lm: predict the next character of the text (many-to-many); "
                        "classify: a name -> the labels after it (many-to-one); conditional: "
                        "labels -> a name (one-to-many) (default: lm)")
    m = t.add_argument_group("model")
    m.add_argument("--cell", choices=CELLS, default=S,
                   help=f"recurrent cell: lstm, gru or a plain tanh rnn (default: {D.cell})")
    m.add_argument("--hidden-size", type=positive_int, default=S,
                   help=f"units per recurrent layer (default: {D.hidden_size})")
    m.add_argument("--num-layers", type=positive_int, default=S,
                   help=f"stacked recurrent layers (default: {D.num_layers})")
    m.add_argument("--embedding-dim", type=positive_int, default=S,
                   help="width of the character embedding (default: the vocabulary size, as "
                        "in the notebook)")
    m.add_argument("--dropout", type=dropout_rate, default=S,
                   help=f"dropout between recurrent layers, in [0, 1) (default: {D.dropout})")
    m.add_argument("--dtype", choices=DTYPES, default=S,
                   help=f"floating-point precision of weights and arithmetic; float32 is about "
                        f"twice as fast (default: {D.dtype})")
    m.add_argument("--pooling", choices=POOLINGS, default=S,
                   help="classify: attention (learned weights over the characters, drawn by "
                        "predict --plot) or last (the final states of both directions) "
                        f"(default: {D.pooling})")
    m.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=S,
                   help="classify: read each name in both directions (default: on)")
    m.add_argument("--attention-size", type=positive_int, default=S,
                   help=f"classify: hidden width of the attention's scoring layer "
                        f"(default: {D.attention_size})")
    d = t.add_argument_group("data and batching")
    d.add_argument("--data", default=S,
                   help="'plants' for the plant-name corpus (found in $NUMPY_RNN_DATA_DIR or "
                        "data/, downloaded once if missing), or the path of any UTF-8 text file "
                        f"(default: {D.data})")
    d.add_argument("--seq-len", type=positive_int, default=S,
                   help=f"characters per window: the length of backpropagation through time "
                        f"(default: {D.seq_len})")
    d.add_argument("--batch-size", type=positive_int, default=S,
                   help=f"windows per step (default: {D.batch_size})")
    d.add_argument("--schedule", choices=SCHEDULES, default=S,
                   help="random: windows at random offsets, each from a zero hidden state (the "
                        "notebook's, with batch 1); stream: the text as BATCH contiguous "
                        "streams, the hidden state carried from one batch to the next "
                        f"(truncated BPTT) (default: {D.schedule})")
    d.add_argument("--label-dropout", type=dropout_rate, default=S,
                   help="conditional: the share of training names shown with no labels each "
                        "epoch, so the model also generates with none given, in [0, 1) "
                        f"(default: {D.label_dropout})")
    d.add_argument("--stream-groups", type=positive_int, default=S,
                   help="stream schedule on plant names: each epoch deals the training names "
                        "into this many random groups, each kept in file order, and streams "
                        "the groups one after another, so consecutive names are about this "
                        "far apart in the sorted file, as in validation (one name in ten); 1 "
                        "streams the file order. A plain text file always streams in its own "
                        f"order (default: {D.stream_groups})")
    o = t.add_argument_group("optimisation")
    o.add_argument("--steps", type=positive_int, default=S,
                   help=f"total optimizer steps of the run; with --resume, the step to continue "
                        f"up to (default: {D.steps})")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default=S,
                   help=f"adam, adamw (decoupled weight decay) or sgd, as torch.optim's, in "
                        f"both backends (default: {D.optimizer})")
    o.add_argument("--weight-decay", type=nonnegative_float, default=S,
                   help=f"weight decay: an L2 term with adam and sgd, decoupled with adamw "
                        f"(default: {D.weight_decay})")
    o.add_argument("--lr", type=positive_float, default=S,
                   help=f"learning rate (default: {D.lr})")
    o.add_argument("--lr-decay", choices=LR_DECAYS, default=S,
                   help="learning-rate schedule from --lr at the first step to --lr x "
                        f"--lr-final at step --lr-decay-steps, constant after it: none, cosine "
                        f"or linear (default: {D.lr_decay})")
    o.add_argument("--lr-decay-steps", type=positive_int, default=S,
                   help="the step at which the decay reaches --lr x --lr-final; independent of "
                        f"the run length, so a run resumed to more steps stays exact "
                        f"(default: {D.lr_decay_steps})")
    o.add_argument("--lr-final", type=unit_interval, default=S,
                   help=f"final learning rate as a fraction of --lr, with --lr-decay "
                        f"(default: {D.lr_final})")
    o.add_argument("--clip", type=nonnegative_float, default=S,
                   help=f"clip the global gradient norm to this value; 0 turns clipping off "
                        f"(default: {D.clip})")
    o.add_argument("--grad-accum", type=positive_int, default=S, metavar="K",
                   help="cut each step's batch into K micro-batches of --batch-size / K, add "
                        "their gradients (each weighted by its share of the loss terms) and "
                        "take one step: the same step in less memory. Under mpiexec or "
                        "torchrun, micro-batches per process; a run saved by P processes "
                        "resumes in one with --grad-accum P (default: 1)")
    r = t.add_argument_group("run")
    _add_backend_flags(r, default=S)
    r.add_argument("--seed", type=nonnegative_int, default=S,
                   help="seed of the initial weights, the random windows and the sampled names; "
                        f"the same seed is the same start in both backends (default: {D.seed})")
    r.add_argument("--out", default=S,
                   help=f"output directory of the run (default: {D.out})")
    r.add_argument("--eval-every", type=positive_int, default=S,
                   help="measure the validation loss and save a checkpoint every N steps (and "
                        f"at the last) (default: {D.eval_every})")
    r.add_argument("--sample-every", type=positive_int, default=S,
                   help=f"print a few sampled names every N steps (and at the last) "
                        f"(default: {D.sample_every})")
    r.add_argument("--notebook", action="store_true", default=S,
                   help="start from the original notebook's settings instead of the defaults "
                        "(3 x 512 LSTM, float64, one random 150-character window per step, "
                        "Adam 0.002 without decay or clipping, 700 steps); flags given with it "
                        "still override them")
    r.add_argument("--resume", action="store_true", default=S,
                   help="continue the run in OUT from its checkpoint up to --steps, exactly as "
                        "if it had not stopped; its saved settings are used except the flags "
                        "given here (model and batching flags must match)")
    r.add_argument("--overwrite", action="store_true", default=S,
                   help="start a new run even if OUT already holds one (it is replaced)")
    r.add_argument("--quiet", action="store_true", default=S,
                   help="print nothing but errors (no progress bar, no log lines)")
    t.set_defaults(func=_cmd_train)

    # ---- sample
    s = sub.add_parser("sample", help="sample names (or text) from a checkpoint",
                       description="Sample from a language model or a conditional generator "
                                   "checkpoint and print the samples, one per line. Both "
                                   "backends print the same text for the same checkpoint and "
                                   "seed.")
    s.add_argument("--checkpoint", required=True, help="the checkpoint file (.npz)")
    _add_backend_flags(s, default=None)
    s.add_argument("--num-samples", type=positive_int, default=10,
                   help="how many samples, generated together as one batch (default: 10)")
    s.add_argument("--temperature", type=positive_float, default=1.0,
                   help="divide the logits by this (> 0): below 1 safer, above 1 wilder "
                        "(default: 1.0)")
    s.add_argument("--top-k", type=positive_int, default=None,
                   help="draw only from the K most likely characters (default: all)")
    s.add_argument("--top-p", type=unit_interval, default=None,
                   help="draw only from the most likely characters that together have "
                        "probability at least P, in (0, 1] (nucleus sampling; default: off)")
    prime = s.add_mutually_exclusive_group()
    prime.add_argument("--prime", default=None,
                       help="text to start from, e.g. 'ros' for names beginning with 'ros' "
                            "(default: a newline, i.e. a fresh name)")
    prime.add_argument("--prime-file", default=None,
                       help="read the prime text from this UTF-8 file instead")
    s.add_argument("--stop", choices=("auto", "newline", "length"), default="auto",
                   help="newline: a sample ends at the end of its line (a name); length: every "
                        "sample is --max-length characters, with a line of dashes between "
                        "samples; auto: newline for the plant corpus, length for other text "
                        "(default: auto)")
    s.add_argument("--max-length", type=positive_int, default=200,
                   help="the most characters generated per sample (default: 200)")
    s.add_argument("--seed", type=nonnegative_int, default=1337,
                   help="seed of the sampling generator (default: 1337)")
    s.add_argument("--label", action="store_true",
                   help="tag each name as train (in the training set), val (in validation) or "
                        "new, after a tab")
    s.add_argument("--data", default=None,
                   help="corpus for --label (default: the one the checkpoint was trained on)")
    s.add_argument("--condition", default=None, metavar="CODES",
                   help="conditional models: the regions to generate names for, as the corpus "
                        "spells them, comma-separated (hi, or ca,or,wa); without it the model "
                        "generates with no region given")
    s.set_defaults(func=_cmd_sample)

    # ---- predict
    p = sub.add_parser("predict", help="the labels a classifier gives names",
                       description="Run a classify checkpoint on names (from the arguments, or "
                                   "one per line from standard input when none are given or "
                                   "'-') and print each name with its most likely labels.")
    p.add_argument("names", nargs="*", metavar="NAME", help="the names to classify")
    p.add_argument("--checkpoint", required=True, help="the classifier's checkpoint (.npz)")
    _add_backend_flags(p, default=None)
    p.add_argument("--top", type=positive_int, default=5,
                   help="how many of the most likely labels to print per name (default: 5)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per line instead: {"name": ..., "probabilities": '
                        '{code: p, ...}} with every label')
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="also draw the attention weights over the characters of the names, a "
                        "row per name, into this PNG (attention pooling only, at most "
                        f"{MAX_PLOT_ROWS} names)")
    p.set_defaults(func=_cmd_predict)

    # ---- evaluate
    e = sub.add_parser("evaluate", help="validation metrics of a checkpoint",
                       description="Print the validation metrics of a checkpoint, measured as "
                                   "during training. lm: nats and bits per character of the "
                                   "validation text, as one stream cut into at most 16 "
                                   "segments run from a zero hidden state; classify: mean "
                                   "binary cross-entropy, micro and macro average precision "
                                   "and a few regions' AP; conditional: nats per character "
                                   "with the true regions and with none.")
    e.add_argument("--checkpoint", required=True, help="the checkpoint file (.npz)")
    _add_backend_flags(e, default=None)
    e.add_argument("--data", default=None,
                   help="'plants' or a UTF-8 text file; its vocabulary must be the checkpoint's "
                        "(default: the corpus the checkpoint was trained on)")
    e.add_argument("--json", action="store_true",
                   help='print one JSON object: lm {"val_loss": nats/char, "val_bpc": '
                        'bits/char, "chars": N}; classify {"val_loss", "micro_ap", "macro_ap", '
                        '"ap_hi", ...}; conditional {"val_loss", "val_loss_no_labels", ...}')
    e.add_argument("--judge", default=None, metavar="CLASSIFIER.npz",
                   help="conditional models: let this classify checkpoint judge the names "
                        "generated for hi, ak, pr, fl and ca against names generated with no "
                        "region (its mean probability of the region)")
    e.add_argument("--judge-samples", type=positive_int, default=200,
                   help="names generated per region for --judge (default: 200)")
    e.add_argument("--seed", type=nonnegative_int, default=1337,
                   help="seed of the names generated for --judge (default: 1337)")
    e.set_defaults(func=_cmd_evaluate)

    # ---- convert
    c = sub.add_parser("convert", help="turn the notebook's saved torch weights into a checkpoint",
                       description="Read a state dict saved by the original notebook "
                                   "(torch.save(rnn.state_dict(), FILE.pt)) and write it as a "
                                   "numpy_rnn checkpoint (step 0, no optimizer state). Needs "
                                   "torch.")
    c.add_argument("--notebook-state", required=True, help="the notebook's .pt file")
    c.add_argument("--data", default="plants",
                   help="the corpus the notebook was trained on; its sorted characters are the "
                        "vocabulary (default: plants)")
    c.add_argument("--out", default="checkpoint.npz",
                   help="the checkpoint to write (default: checkpoint.npz); never into the "
                        "directory of a training run that is running")
    c.add_argument("--overwrite", action="store_true",
                   help="replace --out if it exists (without it, an existing file is refused)")
    c.set_defaults(func=_cmd_convert)
    return parser


# -- the commands -----------------------------------------------------------------------------


#: TrainConfig fields that only some tasks read (each task lists its own in ``Task.reads``).
_TASK_FIELDS = frozenset().union(*(t.reads for t in TASKS.values())) | {"notebook"}


def _a(task: str) -> str:
    """"an lm", "a classify", "a conditional": the task's name with its article."""
    return ("an " if task == "lm" else "a ") + task


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _cmd_train(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    if overrides.get("clip") == 0:
        overrides["clip"] = None
    out = overrides.get("out", D.out)
    if overrides.get("notebook") and overrides.get("resume"):
        raise ValueError("--notebook picks the settings of a new run; --resume takes the "
                         "saved run's: give one of them")
    if overrides.get("resume") and overrides.get("overwrite"):
        raise ValueError("--resume continues the run in OUT; --overwrite replaces it: give one "
                         "of them")
    if overrides.get("resume") and "task" not in overrides:
        task = resume_config(out).task             # a resumed run keeps its task
    else:
        task = overrides.get("task", "lm")
    reads = get_task(task).reads | ({"notebook"} if task == "lm" else set())
    foreign = sorted(_flag(k) for k in overrides if k in _TASK_FIELDS - reads)
    if foreign:
        raise ValueError(f"{', '.join(foreign)} do{'es' if len(foreign) == 1 else ''} not "
                         f"apply to --task {task}")
    if overrides.pop("notebook", False):
        overrides = {**NOTEBOOK, **overrides}
    if overrides.get("resume"):
        config = resume_config(out, overrides)
    else:
        config = TrainConfig.for_task(**{"task": task, **overrides})
    engine = get_engine()
    # A closed standard output (train ... | head) or a hung-up terminal loses log lines, never
    # the run: training goes on and writes its checkpoints.
    with tolerate_closed_output():
        try:
            summary = train(config)
        except (TrainingDiverged, FollowerExit):
            engine.close()      # every process leaves together: a status, not an abort
            raise
    engine.close()
    return exit_status(summary.stop_signal) if summary.stop_signal else 0


def _load_for_inference(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    weights, meta = load_checkpoint(args.checkpoint)
    backend = backend_from_checkpoint(weights, meta, args.backend or "numpy",
                                      args.device or "cpu")
    return backend, meta


def _cmd_sample(args: argparse.Namespace) -> int:
    if args.prime_file is not None:
        try:
            prime = Path(args.prime_file).read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"prime file {args.prime_file} is not UTF-8 text (byte "
                             f"{exc.start}: {exc.reason})") from None
        except OSError as exc:
            what = ("does not exist" if isinstance(exc, FileNotFoundError) else
                    "is a directory" if isinstance(exc, IsADirectoryError) else
                    f"cannot be read ({exc.strerror or exc})")
            raise ValueError(f"prime file {args.prime_file} {what}") from None
        if not prime:
            raise ValueError(f"prime file {args.prime_file} is empty")
    else:
        prime = args.prime if args.prime is not None else "\n"
    task = task_of(read_meta(args.checkpoint))
    if task == "classify":
        raise ValueError(f"{args.checkpoint} is a classifier: it reads names and writes "
                         "labels, it cannot sample; use predict (or sample from an lm or a "
                         "conditional checkpoint)")
    if args.condition is not None and task != "conditional":
        raise ValueError(f"--condition needs a conditional checkpoint; {args.checkpoint} is "
                         f"{_a(task)} model")
    if task == "conditional" and args.stop == "length":
        raise ValueError("a conditional model generates names: it stops at the end of each "
                         "name (--stop newline)")
    backend, meta = _load_for_inference(args)
    check_fits(estimate_sampling_bytes(backend.config, args.num_samples, args.max_length,
                                       len(prime)), "choose a smaller --num-samples or "
                                                    "--max-length")
    stop = args.stop
    if stop == "auto":
        stop = "newline" if meta.get("data") == "plants" or task == "conditional" else "length"
    rng = np.random.default_rng(args.seed)
    options: dict[str, Any] = dict(temperature=args.temperature, top_k=args.top_k,
                                   top_p=args.top_p, prime=prime, max_length=args.max_length)
    if task == "conditional":
        codes = [c.strip() for c in (args.condition or "").split(",") if c.strip()]
        samples = sample_conditioned(backend, vocab_of(meta), labels_of(meta) or (), codes,
                                     args.num_samples, rng, backend.config.dtype, **options)
    else:
        samples = sample(backend, vocab_of(meta), args.num_samples, rng,
                         stop_at_newline=stop == "newline", **options)
    tags = None
    if args.label:
        source = args.data if args.data is not None else meta["data"]
        corpus = get_task(task).load(source) if task != "lm" else load_corpus(source)
        tags = labels(samples, corpus)
    # Names are one per line; texts contain newlines themselves, so a rule line separates them.
    sep = "\n" if stop == "newline" else "\n" + SAMPLE_RULE + "\n"
    lines = [f"{s}\t{t}" for s, t in zip(samples, tags)] if tags is not None else samples
    print(sep.join(lines))
    if tags is not None:
        counts = Counter(tags)
        print(f"{counts['new']} new, {counts['train']} in the training set, {counts['val']} in "
              "validation", file=sys.stderr)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    task = get_task(task_of(read_meta(args.checkpoint)))
    rows = None
    if args.judge is not None:
        if task.name != "conditional":
            raise ValueError(f"--judge needs a conditional checkpoint; {args.checkpoint} is "
                             f"{_a(task.name)} model")
        if task_of(read_meta(args.judge)) != "classify":
            raise ValueError(f"--judge needs a classify checkpoint; {args.judge} is not one")
    metrics: dict[str, Any] = dict(evaluate_checkpoint(
        args.checkpoint, backend=args.backend or "numpy", device=args.device or "cpu",
        data=args.data))
    if args.judge is not None:
        generator, meta = _load_for_inference(args)
        c_weights, c_meta = load_checkpoint(args.judge)
        if vocab_of(c_meta) != vocab_of(meta):
            raise CheckpointError(f"{args.judge} reads another vocabulary than "
                                  f"{args.checkpoint} writes: train both on one corpus")
        classifier = backend_from_checkpoint(c_weights, c_meta, args.backend or "numpy",
                                             args.device or "cpu")
        rows = judge(generator, classifier, vocab_of(meta), labels_of(meta) or (),
                     labels_of(c_meta) or (), generator.config.dtype,
                     num_samples=args.judge_samples, seed=args.seed)
        metrics["judge"] = rows
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(task.describe_evaluation(metrics))
    if rows is not None:
        print(f"classifier's mean probability of the region, {args.judge_samples} names each:")
        print(f"{'region':<8}{'--condition R':>15}{'no region':>12}")
        for row in rows:
            print(f"{row['region']:<8}{row['conditioned']:>15.3f}{row['unconditioned']:>12.3f}")
    return 0


def _read_stdin() -> str:
    """Standard input as UTF-8 text, whatever the locale's encoding; ``ValueError`` saying
    where it is not UTF-8."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:              # replaced by a text stream (tests, embedding programs)
        return sys.stdin.read()
    data = buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, start = data.count(b"\n", 0, exc.start) + 1, data.rfind(b"\n", 0, exc.start) + 1
        raise ValueError(f"standard input is not UTF-8 text (line {line}, byte "
                         f"{exc.start - start + 1}: {exc.reason})") from None


def _read_names(args: argparse.Namespace) -> list[str]:
    names = list(args.names)
    if not names or names == ["-"]:
        names = [n.rstrip("\r") for n in _read_stdin().split("\n") if n.strip()]
    if not names:
        raise ValueError("no names to classify: give them as arguments or one per line on "
                         "standard input")
    return names


def _cmd_predict(args: argparse.Namespace) -> int:
    task = task_of(read_meta(args.checkpoint))
    if task != "classify":
        what = "sample from it" if task in ("lm", "conditional") else "use its own command"
        raise ValueError(f"predict needs a classify checkpoint; {args.checkpoint} is "
                         f"{_a(task)} model ({what})")
    names = _read_names(args)
    if args.plot is not None and len(names) > MAX_PLOT_ROWS:
        raise ValueError(f"--plot draws a row per name: give at most {MAX_PLOT_ROWS} names, "
                         f"got {len(names)}")
    backend, meta = _load_for_inference(args)
    codes = labels_of(meta) or ()
    probs, weights = predict_names(backend, vocab_of(meta), names)   # checks every name first
    if args.plot is not None:
        if any(w is None for w in weights):
            raise ValueError("this classifier pools the last states: it has no attention to "
                             "draw (train it with --pooling attention)")
        atomic_write(Path(args.plot), "wb",
                     lambda f: plot_attention(names, weights, probs, codes, f, top=args.top))
    for name, row in zip(names, probs):
        if args.json:
            print(json.dumps({"name": name, "probabilities":
                              {c: float(p) for c, p in zip(codes, row)}}))
        else:
            top = np.argsort(-row, kind="stable")[:args.top]
            print(name + "\t" + "  ".join(f"{codes[j]} {row[j]:.3f}" for j in top))
    if args.plot is not None:
        print(f"attention of {len(names)} names drawn in {args.plot}", file=sys.stderr)
    return 0


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise ValueError(f"{out} is a directory: give --out the checkpoint file to write")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} already exists: pass --overwrite to replace it")


def _cmd_convert(args: argparse.Namespace) -> int:
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
        raise CheckpointError(f"{args.notebook_state} has a vocabulary of {config.vocab_size} "
                              f"characters but the corpus {args.data!r} has {len(vocab)}: "
                              "pass the corpus the notebook was trained on with --data")
    check_weights(state, config, where=str(args.notebook_state))
    data = args.data if args.data == "plants" else str(Path(args.data).resolve())
    # The lock of the directory written into: a training run there (whose checkpoint this
    # would replace) holds it, and gets the directory to itself.
    with run_lock(out.parent):
        _refuse_existing(out, args.overwrite)
        path = save_checkpoint(out, state, make_meta(config, vocab, step=0, data=data,
                                                     backend="notebook"))
    print(f"wrote {path}: {config.cell} {config.num_layers} x {config.hidden_size}, "
          f"vocabulary of {len(vocab)}, {config.dtype}")
    return 0


# -- the entry point --------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0 ok, 1 diverged, 2 user error,
    ``128 + signal`` when a signal stopped a run (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), 141
    when the reader of standard output left."""
    # The installed console command (setup.cfg) is the same CLI under its own name.
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    parser = build_parser("numpy-rnn" if invoked == "numpy-rnn" else PROG)
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:   # --help
        return exc.code if isinstance(exc.code, int) else 0
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except TrainingDiverged as exc:
        _error(_one_line(exc))
        return 1
    except OSError as exc:
        if output_gone(exc):
            # The reader of standard output left (sample ... | head -1): end quietly, with the
            # status of a process that SIGPIPE ended, as a Unix tool does.
            silence_stdout()
            return exit_status(signal.SIGPIPE)
        # OSError covers missing and unreadable files.
        _error(_one_line(exc))
        return 2
    except (ValueError, DataError, ImportError) as exc:   # CheckpointError is a ValueError
        _error(_one_line(exc))
        return 2
    except MemoryError as exc:
        _error("out of memory" + (f": {_one_line(exc)}" if str(exc) else "") + "; a smaller "
               "model, batch or --num-samples needs less")
        return 2
    except Interrupted as exc:      # a second stop signal: forced at once
        _error(f"stopped by {signal.Signals(exc.signum).name} at once (a second signal): the "
               "last checkpoint written stays as it was")
        return exit_status(exc.signum)
    except KeyboardInterrupt:
        _error("interrupted")
        return exit_status(signal.SIGINT)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning as one line, ``warning: ...``, as errors are (no source line under it)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"warning: {_one_line(Exception(message))}", file=sys.stderr)


def _error(message: str) -> None:
    """``error: message`` on standard error, if it is still there to read it."""
    with contextlib.suppress(OSError, ValueError):
        print(f"error: {message}", file=sys.stderr)
