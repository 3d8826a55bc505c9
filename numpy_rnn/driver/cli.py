"""The command line: ``python -m numpy_rnn train | evaluate`` and the tasks' own commands
(``sample``, ``predict``, ``convert``, ...).

``train`` and ``evaluate`` are the driver's (:func:`numpy_rnn.driver.train.train`,
:func:`numpy_rnn.driver.evaluate.evaluate_checkpoint`); every other command is a task's
(``Task.commands``), dispatched by the checkpoint's task, and ``train``'s flags and defaults are
those of the task it trains (``train --task NAME --help``). A user error (a bad flag value, a
missing or unreadable file, a checkpoint for another model) ends with ONE line ``error: ...`` on
stderr and exit status 2, not a traceback; a diverged training run exits with 1, one stopped by a
signal with ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM) after saving the checkpoint of its
last step.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..tasks import (
    DEFAULT_TASK,
    TASKS,
    Task,
    find_task,
    get_task,
    load_entry_points,
    with_article,
)
from ..tasks.commands import (
    Command,
    Option,
    dropout_rate,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from ..tasks.corpus import DataError, Vocabulary
from ..tasks.model import CELLS, ModelConfig
from .backend import BACKENDS
from .checkpoint import (
    CHECKPOINT_NAME,
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
    OPTIMIZERS,
    TrainConfig,
    TrainingDiverged,
    resume_config,
    train,
)

__all__ = ["PROG", "build_parser", "dropout_rate", "main", "nonnegative_float",
           "nonnegative_int", "positive_float", "positive_int", "unit_interval"]

PROG = "python -m numpy_rnn"
EVALUATE = "evaluate"   # the command every task serves (through Task.evaluate)


class _UsageError(Exception):
    """A bad command line, raised by the parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# -- the parser -------------------------------------------------------------------------------


def _version() -> str:
    """The version of the numpy_rnn that runs (the package's ``__version__``, which
    setup.cfg's ``version`` matches)."""
    return str(importlib.import_module("numpy_rnn").__version__)


def build_parser(prog: str = PROG, task: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of every command; ``prog`` is how the usage lines name the program
    (``python -m numpy_rnn``, or ``numpy-rnn`` for the installed console command); ``task``:
    the task whose flags and defaults ``train`` shows (default: :data:`DEFAULT_TASK`)."""
    load_entry_points()
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
    _add_train_parser(sub, get_task(task or DEFAULT_TASK))
    commands = sorted(_commands().values(), key=lambda c: c[0].position)
    for command, owners in [c for c in commands if c[0].position < _EVALUATE_POSITION]:
        _add_task_command(sub, command, owners)
    _add_evaluate_parser(sub)
    for command, owners in [c for c in commands if c[0].position >= _EVALUATE_POSITION]:
        _add_task_command(sub, command, owners)
    return parser


# ---- train: every default is TrainConfig's with the task's recipe on top; SUPPRESS tells
# explicit flags from defaults, so that --resume takes the saved run's settings and only the
# flags given override them.

#: The common flags of ``train``, by group: (flag, argparse keywords, help with ``{default}``).
_COMMON: dict[str, list[tuple[str, dict[str, Any], str]]] = {
    "model": [
        ("--cell", dict(choices=CELLS),
         "recurrent cell: lstm, gru or a plain tanh rnn (default: {default})"),
        ("--hidden-size", dict(type=positive_int),
         "units per recurrent layer (default: {default})"),
        ("--num-layers", dict(type=positive_int), "stacked recurrent layers (default: {default})"),
        ("--embedding-dim", dict(type=positive_int),
         "width of the character embedding (default: the vocabulary size, as in the notebook)"),
        ("--dropout", dict(type=dropout_rate),
         "dropout between recurrent layers, in [0, 1) (default: {default})"),
        ("--dtype", dict(choices=DTYPES),
         "floating-point precision of weights and arithmetic; float32 is about twice as fast "
         "(default: {default})"),
    ],
    "data and batching": [
        ("--data", {},
         "'plants' for the plant-name corpus (found in $NUMPY_RNN_DATA_DIR or data/, downloaded "
         "once if missing), or the path of any UTF-8 text file (default: {default})"),
        ("--batch-size", dict(type=positive_int), "windows per step (default: {default})"),
    ],
    "optimisation": [
        ("--steps", dict(type=positive_int),
         "total optimizer steps of the run; with --resume, the step to continue up to "
         "(default: {default})"),
        ("--optimizer", dict(choices=OPTIMIZERS),
         "adam, adamw (decoupled weight decay) or sgd, as torch.optim's, in both backends "
         "(default: {default})"),
        ("--weight-decay", dict(type=nonnegative_float),
         "weight decay: an L2 term with adam and sgd, decoupled with adamw (default: {default})"),
        ("--lr", dict(type=positive_float), "learning rate (default: {default})"),
        ("--lr-decay", dict(choices=LR_DECAYS),
         "learning-rate schedule from --lr at the first step to --lr x --lr-final at step "
         "--lr-decay-steps, constant after it: none, cosine or linear (default: {default})"),
        ("--lr-decay-steps", dict(type=positive_int),
         "the step at which the decay reaches --lr x --lr-final; independent of the run length, "
         "so a run resumed to more steps stays exact (default: {default})"),
        ("--lr-final", dict(type=unit_interval),
         "final learning rate as a fraction of --lr, with --lr-decay (default: {default})"),
        ("--clip", dict(type=nonnegative_float),
         "clip the global gradient norm to this value; 0 turns clipping off "
         "(default: {default})"),
        ("--grad-accum", dict(type=positive_int, metavar="K"),
         "cut each step's batch into K micro-batches of --batch-size / K, add their gradients "
         "(each weighted by its share of the loss terms) and take one step: the same step in "
         "less memory. Under mpiexec or torchrun, micro-batches per process; a run saved by P "
         "processes resumes in one with --grad-accum P (default: {default})"),
    ],
    "run": [
        ("--seed", dict(type=nonnegative_int),
         "seed of the initial weights, the random windows and the sampled names; the same seed "
         "is the same start in both backends (default: {default})"),
        ("--out", {}, "output directory of the run (default: {default})"),
        ("--eval-every", dict(type=positive_int),
         "measure the validation loss and save a checkpoint every N steps (and at the last) "
         "(default: {default})"),
        ("--sample-every", dict(type=positive_int),
         "print a few sampled names every N steps (and at the last) (default: {default})"),
    ],
}
#: The flags of how ``train`` runs, after every task's own ``run`` flags.
_RUN_LAST: list[tuple[str, dict[str, Any], str]] = [
    ("--resume", dict(action="store_true"),
     "continue the run in OUT from its checkpoint up to --steps, exactly as if it had not "
     "stopped; its saved settings are used except the flags given here (model and batching "
     "flags must match)"),
    ("--overwrite", dict(action="store_true"),
     "start a new run even if OUT already holds one (it is replaced)"),
    ("--quiet", dict(action="store_true"),
     "print nothing but errors (no progress bar, no log lines)"),
]
_EVALUATE_POSITION = 30


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _shown(value: Any) -> str:
    """A default as ``--help`` shows it: on/off for a switch, None as none."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _train_options() -> dict[str, tuple[Option, list[str]]]:
    """Every task's own ``train`` options by field: the first declaration, and the tasks that
    declare one of that name."""
    options: dict[str, tuple[Option, list[str]]] = {}
    for task in TASKS.values():
        for option in task.train_options:
            options.setdefault(option.dest, (option, []))[1].append(task.name)
    return options


def _task_fields() -> frozenset[str]:
    """``TrainConfig`` fields (and preset flags) that only some tasks read: a flag for one
    the run's task does not read is refused."""
    fields: set[str] = set(_train_options())
    for task in TASKS.values():
        fields |= task.reads
    return frozenset(fields)


def _add_train_parser(sub: Any, task: Task) -> None:
    S = argparse.SUPPRESS
    defaults = TrainConfig.for_task(task.name)

    def add(group: Any, flag: str, kwargs: dict[str, Any], text: str) -> None:
        text = task.flag_help.get(_dest(flag), text)
        value = getattr(defaults, _dest(flag), None)
        if _dest(flag) == "clip" and value is None:
            value = 0
        group.add_argument(flag, default=S, **kwargs, help=text.format(default=_shown(value)))

    tasks = "; ".join(f"{t.name}: {t.summary}" for t in TASKS.values())
    t = sub.add_parser("train", help="train a model (or continue one with --resume)",
                       description="Train a model of one of the tasks (--task) on a corpus. "
                                   "Every N steps: the validation metrics, a checkpoint and a "
                                   "few examples. Writes OUT/checkpoint.npz, OUT/best.npz, "
                                   "OUT/metrics.jsonl, OUT/loss.png. The defaults shown are "
                                   f"{task.name}'s: each task has its own measured recipe (see "
                                   f"README.md); train --task NAME --help shows NAME's.")
    t.add_argument("--task", choices=tuple(TASKS), default=S,
                   help=f"{tasks} (default: {DEFAULT_TASK})")
    own = {option.dest: option for option in task.train_options}
    groups = {}
    for title, flags in _COMMON.items():
        groups[title] = g = t.add_argument_group(title)
        if title == "run":
            _add_backend_flags(g, default=S)
        for flag, kwargs, text in flags:
            add(g, flag, kwargs, text)
        for option in own.values():
            if option.group == title:
                add(g, option.flag, option.kwargs, option.help)
    for option in own.values():
        if option.group not in groups:
            groups[option.group] = g = t.add_argument_group(option.group)
            add(g, option.flag, option.kwargs, option.help)
    for flag, kwargs, text in _RUN_LAST:
        add(groups["run"], flag, kwargs, text)
    # Other tasks' flags are parsed (and checked) too, unlisted: _cmd_train refuses them with
    # one line saying they do not apply to this task.
    for dest, (option, _) in _train_options().items():
        if dest not in own:
            t.add_argument(option.flag, default=S, **option.kwargs, help=S)
    t.set_defaults(func=_cmd_train)


def _add_backend_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup, **kw: Any) -> None:
    p.add_argument("--backend", choices=sorted(BACKENDS), **kw,
                   help="numpy: this package's own layers; torch: the same model in torch.nn "
                        "(needs torch). Both read and write the same checkpoints"
                        + ("" if kw else " (default: numpy)"))
    p.add_argument("--device", choices=("cpu", "cuda"), **kw,
                   help="where the torch backend runs; the numpy backend runs on the CPU only"
                        + ("" if kw else " (default: cpu)"))


# ---- the inference commands: each built from its Command and the tasks that serve it

#: Per command, the flags each task added of its own: dest -> (flag, the tasks that read it).
_EXTRAS: dict[str, dict[str, tuple[str, list[str]]]] = {}


def _commands() -> dict[str, tuple[Command, list[Task]]]:
    """Every inference command the registered tasks serve, with the tasks that serve it."""
    found: dict[str, tuple[Command, list[Task]]] = {}
    for task in TASKS.values():
        for command in task.commands:
            found.setdefault(command.name, (command, []))[1].append(task)
    return found


def _add_task_flags(p: argparse.ArgumentParser, name: str, tasks: Sequence[Task]) -> None:
    """Each task's own flags of command ``name``, once (the first task's of a name); those
    without a default are refused for the checkpoints of the tasks that do not read them."""
    extras = _EXTRAS.setdefault(name, {})
    extras.clear()
    for task in tasks:
        scratch = _Parser(add_help=False)
        task.add_command_arguments(name, scratch)
        for action in scratch._actions:
            if action.option_strings and any(o in p._option_string_actions
                                             for o in action.option_strings):
                if action.dest in extras:
                    extras[action.dest][1].append(task.name)
                continue
            p._add_action(action)
            if action.option_strings and action.default is None:   # None: not given
                extras[action.dest] = (action.option_strings[0], [task.name])


def _add_task_command(sub: Any, command: Command, owners: list[Task]) -> None:
    p = sub.add_parser(command.name, help=command.help, description=command.description)
    if command.checkpoint:
        p.add_argument("--checkpoint", required=True, help=command.checkpoint_help)
        _add_backend_flags(p, default=None)
    command.add_arguments(p)
    _add_task_flags(p, command.name, owners)
    p.set_defaults(func=_cmd_task, spec=command)


def _add_evaluate_parser(sub: Any) -> None:
    tasks = list(TASKS.values())
    e = sub.add_parser(EVALUATE, help="validation metrics of a checkpoint",
                       description="Print the validation metrics of a checkpoint, measured as "
                                   "during training. " + "; ".join(
                                       f"{t.name}: {t.evaluation_help}" for t in tasks
                                       if t.evaluation_help) + ".")
    e.add_argument("--checkpoint", required=True, help="the checkpoint file (.npz)")
    _add_backend_flags(e, default=None)
    e.add_argument("--data", default=None,
                   help="'plants' or a UTF-8 text file; its vocabulary must be the checkpoint's "
                        "(default: the corpus the checkpoint was trained on)")
    e.add_argument("--json", action="store_true",
                   help="print one JSON object: " + "; ".join(
                       f"{t.name} {t.evaluation_json}" for t in tasks if t.evaluation_json))
    _add_task_flags(e, EVALUATE, tasks)
    e.set_defaults(func=_cmd_evaluate)


# -- the commands -----------------------------------------------------------------------------


def _train_task(argv: Sequence[str]) -> str | None:
    """The task of a ``train`` command line, to build its parser with: ``--task``'s, or with
    ``--resume`` the saved run's, when it can be read (None: the default task's)."""
    if not argv or argv[0] != "train":
        return None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task")
    pre.add_argument("--resume", action="store_true")
    pre.add_argument("--out", default=TrainConfig().out)
    try:
        known, _ = pre.parse_known_args(list(argv[1:]))
    except SystemExit:
        return None
    if known.task is not None:
        return known.task if find_task(known.task) is not None else None
    if known.resume:
        with contextlib.suppress(Exception):   # the run reports an unreadable one itself
            saved = task_of(read_meta(Path(known.out) / CHECKPOINT_NAME))
            return saved if find_task(saved) is not None else None
    return None


def _cmd_train(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    if overrides.get("clip") == 0:
        overrides["clip"] = None
    out = overrides.get("out", TrainConfig().out)
    options = _train_options()
    if overrides.get("resume"):
        for dest in overrides:
            if dest in options and options[dest][0].new_run:
                raise ValueError(f"{_flag(dest)} picks the settings of a new run; --resume "
                                 "takes the saved run's: give one of them")
    if overrides.get("resume") and overrides.get("overwrite"):
        raise ValueError("--resume continues the run in OUT; --overwrite replaces it: give one "
                         "of them")
    if overrides.get("resume") and "task" not in overrides:
        task = get_task(resume_config(out).task)   # a resumed run keeps its task
    else:
        task = get_task(overrides.get("task", DEFAULT_TASK))
    reads = task.reads | {option.dest for option in task.train_options}
    foreign = sorted(_flag(k) for k in overrides if k in _task_fields() - reads)
    if foreign:
        raise ValueError(f"{', '.join(foreign)} do{'es' if len(foreign) == 1 else ''} not "
                         f"apply to --task {task.name}")
    for option in task.train_options:
        if option.preset is not None and overrides.pop(option.dest, False):
            overrides = {**option.preset, **overrides}
    if overrides.get("resume"):
        config = resume_config(out, overrides)
    else:
        config = TrainConfig.for_task(**{"task": task.name, **overrides})
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


class _Services:
    """What the driver lends a task's command (:class:`numpy_rnn.tasks.commands.Services`)."""

    read_meta = staticmethod(read_meta)
    task_of = staticmethod(task_of)
    vocab_of = staticmethod(vocab_of)
    labels_of = staticmethod(labels_of)
    atomic_write = staticmethod(atomic_write)

    @staticmethod
    def load(path: str | Path, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
        weights, meta = load_checkpoint(path)
        backend = backend_from_checkpoint(weights, meta, args.backend or "numpy",
                                          args.device or "cpu")
        return backend, meta

    @staticmethod
    def check_sampling_fits(config: ModelConfig, num_samples: int, max_length: int,
                            prime_length: int, advice: str) -> None:
        check_fits(estimate_sampling_bytes(config, num_samples, max_length, prime_length),
                   advice)

    @staticmethod
    def check_weights(state: dict[str, np.ndarray], config: ModelConfig, where: str) -> None:
        check_weights(state, config, where=where)

    @staticmethod
    def write_checkpoint(path: Path, state: dict[str, np.ndarray], config: ModelConfig,
                         vocab: Vocabulary, *, data: str, backend: str,
                         check: Callable[[], None]) -> Path:
        # The lock of the directory written into: a training run there (whose checkpoint this
        # would replace) holds it, and gets the directory to itself.
        with run_lock(path.parent):
            check()
            return save_checkpoint(path, state, make_meta(config, vocab, step=0, data=data,
                                                          backend=backend))

    @staticmethod
    def checkpoint_error(message: str) -> Exception:
        return CheckpointError(message)


def _refuse_other_tasks_flags(command: str, task: Task, args: argparse.Namespace) -> None:
    """A flag of ``command`` that only other tasks read, given for ``task``'s checkpoint."""
    for dest, (flag, readers) in _EXTRAS.get(command, {}).items():
        if task.name not in readers and getattr(args, dest, None) is not None:
            owners = " or ".join(with_article(name) for name in readers)
            raise ValueError(f"{flag} needs {owners} checkpoint; {args.checkpoint} is "
                             f"{with_article(task.name)} model")


def _cmd_task(args: argparse.Namespace) -> int:
    """An inference command: run by the task of its checkpoint, if that task serves it."""
    command: Command = args.spec
    owners = _commands()[command.name][1]
    if not command.checkpoint:
        return owners[0].run_command(command.name, args, _Services())
    task = get_task(task_of(read_meta(args.checkpoint)))
    if task not in owners:
        served_by = " or ".join(with_article(t.name) for t in owners)
        raise ValueError(task.refusal(command.name, args.checkpoint, served_by) or (
            f"{command.name} needs {served_by} checkpoint; {args.checkpoint} is "
            f"{with_article(task.name)} model (its commands: "
            f"{', '.join([c.name for c in task.commands] + [EVALUATE])})"))
    _refuse_other_tasks_flags(command.name, task, args)
    task.check_command_arguments(command.name, args, _Services())
    return task.run_command(command.name, args, _Services())


def _cmd_evaluate(args: argparse.Namespace) -> int:
    task = get_task(task_of(read_meta(args.checkpoint)))
    _refuse_other_tasks_flags(EVALUATE, task, args)
    task.check_command_arguments(EVALUATE, args, _Services())
    metrics: dict[str, Any] = dict(evaluate_checkpoint(
        args.checkpoint, backend=args.backend or "numpy", device=args.device or "cpu",
        data=args.data, options=task.evaluate_options(args)))
    lines = task.extend_evaluation(args, metrics, _Services())
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(task.describe_evaluation(metrics))
    for line in lines:
        print(line)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # Two phases: the task first (--task, or the saved run's with --resume), then the
        # parser with that task's flags and defaults.
        parser = build_parser("numpy-rnn" if invoked == "numpy-rnn" else PROG,
                              task=_train_task(argv))
    except ValueError as exc:   # a task entry point that does not load
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
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
