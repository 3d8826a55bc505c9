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
from ..tasks.base import TrainedModel
from ..tasks.commands import (
    Command,
    dropout_rate,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from ..tasks.corpus import DataError
from ..tasks.model import ModelConfig
from ..tasks.options import Flag, Preset, flags
from ..tasks.sizes import MemoryEstimate
from .backend import BACKENDS
from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    atomic_write,
    check_weights,
    make_meta,
    read_meta,
    save_checkpoint,
    task_of,
)
from .config import LOOP_FIELDS, TrainConfig
from .distributed import FollowerExit, get_engine
from .evaluate import evaluate_checkpoint
from .inference import load
from .memory import check_fits
from .resume import resume_config
from .rundir import run_lock
from .stops import Interrupted, exit_status, output_gone, silence_stdout, tolerate_closed_output
from .train import TrainingDiverged, train

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
        description="Recurrent networks (RNN, GRU, LSTM) written in NumPy, with a torch twin: "
                    "train a task (--task: a character language model of plant names, a "
                    "classifier, a conditional generator, sequence to sequence), evaluate it and "
                    "use it (sample, predict, translate).",
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


# ---- train: every default is the task's recipe (TrainConfig's fields with Task.train_defaults
# on top, the task's options dataclass); SUPPRESS tells explicit flags from defaults, so that
# --resume takes the saved run's settings and only the flags given override them.

#: The sections of ``train --help``, in order (a task's options may add their own after them).
_GROUPS = ("model", "regularisation", "data and batching", "optimisation", "run")
#: The flags of how ``train`` runs, after every other ``run`` flag.
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


def _shown(value: Any) -> str:
    """A default as ``--help`` shows it: on/off for a switch, None as none."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _other_tasks_flags(task: Task) -> dict[str, tuple[Flag | Preset, list[str]]]:
    """Every flag of the other tasks' options and presets that ``task`` does not have, by
    dest: the first declaration, and the tasks that have it."""
    own = {f.name for f in flags(task.options)} | {p.dest for p in task.presets}
    found: dict[str, tuple[Flag | Preset, list[str]]] = {}
    for other in TASKS.values():
        if other is task:
            continue
        theirs: list[tuple[str, Flag | Preset]] = [(f.name, f) for f in flags(other.options)]
        theirs += [(p.dest, p) for p in other.presets]
        for name, f in theirs:
            if name not in own:
                found.setdefault(name, (f, []))[1].append(other.name)
    return found


def _add_train_parser(sub: Any, task: Task) -> None:
    S = argparse.SUPPRESS
    loop = TrainConfig.for_task(task.name)

    def add(group: Any, f: Flag, default: Any) -> None:
        text = task.flag_help.get(f.name, f.help) if f.name in LOOP_FIELDS else f.help
        if f.name == "clip" and default is None:
            default = 0
        group.add_argument(f.flag, default=S, **f.argparse,
                           help=text.format(default=_shown(default)))

    tasks = "; ".join(f"{t.name}: {t.summary}" for t in TASKS.values())
    t = sub.add_parser("train", help="train a model (or continue one with --resume)",
                       description="Train a model of one of the tasks (--task) on a corpus. "
                                   "Every N steps: the validation metrics, a checkpoint and a "
                                   "few examples. Writes OUT/checkpoint.npz, OUT/best.npz, "
                                   "OUT/metrics.jsonl, OUT/loss.png. The defaults shown are "
                                   f"{task.name}'s: each task has its own measured recipe (see "
                                   f"README.md) and its own flags (its options, "
                                   f"{task.options.__name__}); train --task NAME --help shows "
                                   "NAME's.")
    t.add_argument("--task", choices=tuple(TASKS), default=S,
                   help=f"{tasks} (default: {DEFAULT_TASK})")
    own = flags(task.options)
    groups: dict[str, Any] = {}
    for title in _GROUPS + tuple(f.group for f in own) + tuple(p.group for p in task.presets):
        if title not in groups:
            groups[title] = t.add_argument_group(title)
    _add_backend_flags(groups["run"], default=S)
    for f in own:                                  # the task's own, with its defaults
        add(groups[f.group], f, getattr(loop.options, f.name))
    for f in flags(TrainConfig):                   # the loop's, with the task's recipe
        add(groups[f.group], f, getattr(loop, f.name))
    for preset in task.presets:
        groups[preset.group].add_argument(preset.flag, action="store_true", default=S,
                                          help=preset.help)
    for flag, kwargs, text in _RUN_LAST:
        groups["run"].add_argument(flag, default=S, **kwargs, help=text)
    # Other tasks' flags are parsed (and checked) too, unlisted: _cmd_train refuses them with
    # one line saying which tasks they belong to.
    for other, _ in _other_tasks_flags(task).values():
        if isinstance(other, Flag):
            t.add_argument(other.flag, default=S, **other.argparse, help=S)
        else:
            t.add_argument(other.flag, action="store_true", default=S, help=S)
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
    settings = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    if settings.get("clip") == 0:
        settings["clip"] = None
    out = settings.get("out", TrainConfig().out)
    resume = settings.get("resume", False)
    if resume and settings.get("overwrite"):
        raise ValueError("--resume continues the run in OUT; --overwrite replaces it: give one "
                         "of them")
    if resume:
        # Settings of a new run (any task's), refused before the checkpoint is read.
        new_run = {f.name for f in flags(TrainConfig) if f.new_run}
        for other in TASKS.values():
            new_run |= {f.name for f in flags(other.options) if f.new_run}
            new_run |= {p.dest for p in other.presets}
        for dest in settings:
            if dest in new_run:
                raise ValueError(f"{_flag(dest)} picks the settings of a new run; --resume "
                                 "takes the saved run's: give one of them")
    if resume and "task" not in settings:
        task = get_task(resume_config(out).task)   # a resumed run keeps its task
    else:
        task = get_task(settings.get("task", DEFAULT_TASK))
    foreign = _other_tasks_flags(task)
    given = sorted(k for k in settings if k in foreign)
    if given:
        owners = sorted({name for k in given for name in foreign[k][1]})
        raise ValueError(f"{', '.join(_flag(k) for k in given)} "
                         f"do{'es' if len(given) == 1 else ''} not apply to --task {task.name} "
                         f"(an option of {' and '.join(owners)})")
    for preset in task.presets:
        if settings.pop(preset.dest, False):
            for name in preset.fixed:
                if name in settings and settings[name] != preset.settings[name]:
                    raise ValueError(f"{preset.flag} means {_flag(name)} "
                                     f"{preset.settings[name]}; it does not go with "
                                     f"{_flag(name)} {settings[name]}")
            settings = {**preset.settings, **settings}
    if resume:
        config = resume_config(out, settings)
    else:
        config = TrainConfig.for_task(**{"task": task.name, **settings})
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
    atomic_write = staticmethod(atomic_write)

    @staticmethod
    def load(path: str | Path, args: argparse.Namespace) -> TrainedModel:
        return load(path, backend=args.backend or "numpy", device=args.device or "cpu")

    @staticmethod
    def check_fits(estimate: MemoryEstimate) -> None:
        check_fits(estimate)

    @staticmethod
    def check_weights(state: dict[str, np.ndarray], config: ModelConfig, where: str) -> None:
        check_weights(state, config, where=where)

    @staticmethod
    def write_checkpoint(path: Path, state: dict[str, np.ndarray], config: ModelConfig,
                         data: Any, *, source: str, backend: str,
                         check: Callable[[], None]) -> Path:
        # The lock of the directory written into: a training run there (whose checkpoint this
        # would replace) holds it, and gets the directory to itself.
        task = get_task(config.task)
        with run_lock(path.parent):
            check()
            return save_checkpoint(path, state, make_meta(task, config, data, step=0,
                                                          source=source, backend=backend))

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
            f"{', '.join([c.name for c in task.commands if c.checkpoint] + [EVALUATE])})"))
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
        _error("out of memory" + (f": {_one_line(exc)}" if str(exc) else "") + "; "
               + _less(args))
        return 2
    except Interrupted as exc:      # a second stop signal: forced at once
        _error(f"stopped by {signal.Signals(exc.signum).name} at once (a second signal): the "
               "last checkpoint written stays as it was")
        return exit_status(exc.signum)
    except KeyboardInterrupt:
        _error("interrupted")
        return exit_status(signal.SIGINT)


def _less(args: argparse.Namespace) -> str:
    """What a command that ran out of memory can ask for less of: its own flags that size it."""
    sizing = [flag for dest, flag in (("hidden_size", "--hidden-size"),
                                      ("batch_size", "--batch-size"), ("beam", "--beam"),
                                      ("num_samples", "--num-samples"),
                                      ("max_length", "--max-length"))
              if getattr(args, dest, None) is not None]
    if args.command == "train":
        sizing = ["--hidden-size", "--batch-size"]
    return (f"a smaller {' or '.join(sizing)} needs less" if sizing
            else "it needs a machine with more memory")


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning as one line, ``warning: ...``, as errors are (no source line under it)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"warning: {_one_line(Exception(message))}", file=sys.stderr)


def _error(message: str) -> None:
    """``error: message`` on standard error, if it is still there to read it."""
    with contextlib.suppress(OSError, ValueError):
        print(f"error: {message}", file=sys.stderr)
