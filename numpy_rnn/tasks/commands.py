"""What a task brings to the command line: its ``train`` flags, and its inference commands.

The driver's command line (:mod:`numpy_rnn.driver.cli`) names no task. It builds ``train``'s
parser from the loop's settings and the task's options dataclasses (:mod:`.options`, shown with
the task's recipe), and each inference command (``sample``, ``predict``,
``convert``, ...) from the :class:`Command` it is and from every task that serves it
(:attr:`Task.commands`, :meth:`Task.add_command_arguments`). It runs a command by handing it to
the task of the checkpoint (:meth:`Task.run_command`), with the driver's services
(:class:`Services`: loading checkpoints, the memory guard, writing files), since a task never
imports the driver.

This module also holds what several commands share: the argument types (each refuses a bad
value with a message that says what is allowed), ``sample``'s flags and body, and reading
names from the arguments or standard input.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from .base import Task
    from .model import ModelConfig
    from .sizes import MemoryEstimate

__all__ = ["PREDICT", "SAMPLE", "SAMPLE_RULE", "Command", "Services",
           "dropout_rate", "nonnegative_float", "nonnegative_int", "png_file",
           "positive_float", "positive_int", "read_names", "read_prime", "read_stdin",
           "run_sample", "unit_interval", "unit_interval_closed"]

SAMPLE_RULE = "-" * 20   # between samples in --stop length mode


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


def unit_interval_closed(text: str) -> float:
    """A number in [0, 1] (label smoothing)."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def dropout_rate(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def png_file(text: str) -> Path:
    """A PNG file to write (``--plot FILE.png``): its name ends in ``.png`` and its directory
    exists, so that a picture drawn after a long computation has somewhere to go. Checked
    when the command line is read, before anything is computed; the file is written whole or
    not at all (``Services.atomic_write``)."""
    path = Path(text)
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"must be a file name ending in .png, got {text!r}")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"the directory {str(parent)!r} of {text!r} {what}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")
    return path


# -- inference commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """An inference command that one or more tasks serve: its place in the command list
    (``position``), its one-line ``help``, its ``description``, and the flags every task that
    serves it reads (``add_arguments``; each task adds its own in
    :meth:`Task.add_command_arguments`). ``checkpoint``: whether it runs a checkpoint (given
    as ``--checkpoint``, whose task runs it); a command without one is run by its first task."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    position: int = 50
    checkpoint: bool = True
    checkpoint_help: str = "the checkpoint file (.npz)"


class Services(Protocol):
    """What the driver lends a task's command: checkpoints, the memory guard and file writing
    (a task never imports the driver). A task reads its own part of a checkpoint's metadata
    (``Task.read_record``)."""

    def read_meta(self, path: str | Path) -> dict[str, Any]:
        """A checkpoint's metadata, validated (``CheckpointError`` otherwise)."""
        ...

    def task_of(self, meta: dict[str, Any]) -> str:
        """The task a checkpoint's model is for."""
        ...

    def load(self, path: str | Path, args: argparse.Namespace) -> Any:
        """The trained model of a checkpoint (its task's :class:`TrainedModel`, as
        :func:`numpy_rnn.load` returns it) in the backend (and device) ``args`` ask for."""
        ...

    def check_fits(self, estimate: MemoryEstimate) -> None:
        """Refuse (``MemoryLimitError``, naming the estimate's advice) what cannot fit in
        memory."""
        ...

    def atomic_write(self, path: Path, mode: str, write: Callable[[Any], None]) -> None:
        """Write ``path`` whole or not at all."""
        ...

    def check_weights(self, state: dict[str, np.ndarray], config: ModelConfig,
                      where: str) -> None:
        """Refuse (``CheckpointError``) weights that are not ``config``'s model's."""
        ...

    def write_checkpoint(self, path: Path, state: dict[str, np.ndarray], config: ModelConfig,
                         data: Any, *, source: str, backend: str,
                         check: Callable[[], None]) -> Path:
        """Save a checkpoint of ``state`` (checked against ``config``; the vocabularies those of
        ``data``) at step 0, ``source`` its corpus, holding the run lock of its directory;
        ``check`` runs under the lock first (refusing, say, a file there). Returns the path
        written."""
        ...

    def checkpoint_error(self, message: str) -> Exception:
        """The driver's error for a checkpoint that does not fit (a ``ValueError``)."""
        ...


# -- sample: the flags and body the generating tasks share --------------------------------------


def _add_sample_arguments(s: argparse.ArgumentParser) -> None:
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


SAMPLE = Command(
    "sample", help="sample names (or text) from a checkpoint",
    description="Sample from a language model or a conditional generator checkpoint and print "
                "the samples, one per line. Both backends print the same text for the same "
                "checkpoint and seed.",
    add_arguments=_add_sample_arguments, position=10)


def read_prime(args: argparse.Namespace) -> str:
    """``sample``'s prime text: ``--prime-file``'s (UTF-8, not empty), ``--prime``, or a
    newline."""
    if args.prime_file is None:
        return args.prime if args.prime is not None else "\n"
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
    return prime


def run_sample(args: argparse.Namespace, services: Services, **options: Any) -> int:
    """``sample``'s body for a task that generates text: load the checkpoint's generator (its
    ``sample``, with the sampling flags and the task's own ``options``), print the samples, and
    with ``--label`` whether each is a training, a validation or a new name."""
    from .corpus import Corpus
    from .sampling import tag_names

    prime = read_prime(args)
    generator = services.load(args.checkpoint, args)
    sample = getattr(generator, "sample", None)
    if sample is None:                      # the driver refuses other tasks' checkpoints first
        raise ValueError(f"{args.checkpoint} is not a model that samples")
    samples = sample(args.num_samples, temperature=args.temperature, top_k=args.top_k,
                     top_p=args.top_p, prime=prime, max_length=args.max_length, stop=args.stop,
                     seed=args.seed, **options)
    task, record, meta = generator.task, generator.record, generator.meta
    tags = None
    if args.label:
        corpus = task.load_for(record, meta["data"] if args.data is None else args.data)
        task.check_data(record, corpus, args.checkpoint)
        assert isinstance(corpus, Corpus)
        tags = tag_names(samples, corpus)
    # Names are one per line; texts contain newlines themselves, so a rule line separates them.
    sep = "\n" if generator.stops_at_newline(args.stop) else "\n" + SAMPLE_RULE + "\n"
    lines = [f"{s}\t{t}" for s, t in zip(samples, tags)] if tags is not None else samples
    print(sep.join(lines))
    if tags is not None:
        counts = Counter(tags)
        print(f"{counts['new']} new, {counts['train']} in the training set, {counts['val']} in "
              "validation", file=sys.stderr)
    return 0


def with_article_of(task: Task) -> str:
    """"a conditional": the task's name with its article, capitalised at a sentence start
    by the caller if needed."""
    return f"{task.article} {task.name}"


# -- reading names ----------------------------------------------------------------------------


def read_stdin() -> str:
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


def read_names(names: Sequence[str], what: str = "classify") -> list[str]:
    """The names given as arguments, or one per line on standard input when there are none
    (or ``-``); ``ValueError`` when there are none there either."""
    names = list(names)
    if not names or names == ["-"]:
        names = [n.rstrip("\r") for n in read_stdin().split("\n") if n.strip()]
    if not names:
        raise ValueError(f"no names to {what}: give them as arguments or one per line on "
                         "standard input")
    return names


def _add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="the names to classify")


PREDICT = Command(
    "predict", help="the labels a classifier gives names",
    description="Run a classify checkpoint on names (from the arguments, or one per line from "
                "standard input when none are given or '-') and print each name with its most "
                "likely labels.",
    add_arguments=_add_predict_arguments, position=20,
    checkpoint_help="the classifier's checkpoint (.npz)")
