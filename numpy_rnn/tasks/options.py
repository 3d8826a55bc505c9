"""A task's own settings: one frozen dataclass per task, its fields the task's ``train`` flags.

fairseq registers each task with the dataclass of its options (``register_task(name,
dataclass=...)``) and Joey NMT keeps its ``training``, ``model`` and ``data`` sections apart; here
the training loop's settings are the driver's ``TrainConfig`` and everything else a run decides
(the model's shape, how its data is read and batched, its loss) is the task's options: a
:class:`TaskOptions` dataclass the task names in :attr:`numpy_rnn.tasks.base.Task.options`.

Each field says, in its metadata (:func:`option`), everything the command line needs: its help
(``{default}`` stands for the default), the section of ``train --help`` it is listed in, the
argparse keywords that parse it, and whether it is a setting of a new run only (refused with
``--resume``). Its default is the task's measured recipe; its checks are the dataclass's
``__post_init__`` (:meth:`TaskOptions.validate`), so a value is checked the same way from the
command line and from Python::

    @dataclass(frozen=True)
    class TaggerOptions(RecurrentOptions):
        window: int = option(12, "characters per window", group="data and batching",
                             type=positive_int)

        def validate(self) -> None:
            super().validate()
            require_int("window", self.window, minimum=1)

The driver builds ``train``'s flags from the dataclass (:func:`flags`) and saves the options in
a checkpoint beside, not inside, the loop's settings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np

from .commands import dropout_rate, positive_int, unit_interval_closed
from .model import CELLS

__all__ = ["CELLS", "DTYPES", "Flag", "Preset", "RecurrentOptions", "TaskOptions", "changed",
           "flags", "label_smoothing_option", "option", "require_choice", "require_int",
           "require_number", "require_rate"]

#: The floating dtypes a model computes in (the cells are :data:`numpy_rnn.tasks.model.CELLS`).
DTYPES = ("float32", "float64")

_Options = TypeVar("_Options", bound="TaskOptions")


def option(default: Any, help: str, *, group: str = "model", new_run: bool = False,
           **argparse_kwargs: Any) -> Any:
    """A field of an options dataclass with what its flag needs: ``help`` (``{default}``
    stands for the default), ``group`` (the section of ``train --help``: ``model``, ``data and
    batching``, ``optimisation``, ``run`` or another), ``new_run`` (a setting of a new run
    only: ``--resume`` refuses it) and the keywords of argparse's ``add_argument`` (``type``,
    ``choices``, ``action``, ``metavar``). The flag is the field's name with dashes."""
    return field(default=default, metadata={
        "help": help, "group": group, "new_run": new_run, "argparse": dict(argparse_kwargs)})


def changed(owner: type, name: str, default: Any, help: str | None = None) -> Any:
    """The field ``name`` of the dataclass ``owner`` with another ``default`` (and ``help``):
    how a task's options take a base class's field with its own recipe."""
    base = owner.__dataclass_fields__[name]    # type: ignore[attr-defined]
    metadata = dict(base.metadata)
    if help is not None:
        metadata["help"] = help
    return field(default=default, metadata=metadata)


class Flag(NamedTuple):
    """One flag of an options dataclass: the field's name and default, and its metadata."""

    name: str
    default: Any
    help: str
    group: str
    new_run: bool
    argparse: dict[str, Any]

    @property
    def flag(self) -> str:
        """``--hidden-size`` for ``hidden_size``."""
        return "--" + self.name.replace("_", "-")


class Preset(NamedTuple):
    """A flag that stands for several settings at once, of the loop's and the task's
    (``--notebook``: the original notebook's run; ``--stress``: ``--data cmudict:stress``):
    a setting of a new run (``--resume`` refuses it); flags given with it still override it,
    but those of the ``fixed`` settings, which it is about (``--stress`` with another
    ``--data`` is refused)."""

    flag: str
    help: str
    settings: dict[str, Any]
    group: str = "run"
    fixed: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def flags(options: type) -> list[Flag]:
    """The flags of the dataclass ``options`` (its fields that have a help), in field order."""
    found = []
    for f in dataclasses.fields(options):
        if "help" not in f.metadata:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        found.append(Flag(f.name, default, f.metadata["help"], f.metadata["group"],
                          f.metadata["new_run"], dict(f.metadata["argparse"])))
    return found


# -- checks: one place for the message of each kind of value --------------------------------


def require_int(name: str, value: Any, minimum: int = 1) -> None:
    """``ValueError`` unless ``value`` is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def require_number(name: str, value: Any, *, low: float, high: float = math.inf,
                   low_open: bool = False, high_open: bool = True) -> None:
    """``ValueError`` unless ``value`` is a finite real number in the interval from ``low`` to
    ``high`` (each end open or closed as asked; an infinite ``high`` is no bound)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if v < low or (low_open and v == low) or (math.isfinite(high) and (
            v > high or (high_open and v == high))):
        left, right = "(" if low_open else "[", ")" if high_open or math.isinf(high) else "]"
        raise ValueError(f"{name} must be in {left}{low:g}, {high:g}{right}, got {value!r}")


def require_rate(name: str, value: Any) -> None:
    """``ValueError`` unless ``value`` is a dropout probability in ``[0, 1)``."""
    require_number(name, value, low=0.0, high=1.0)


def require_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        shown = ", ".join(str(c) for c in choices)
        raise ValueError(f"{name} must be one of {shown}, got {value!r}")


def label_smoothing_option(default: float = 0.0) -> Any:
    """The ``--label-smoothing`` field of a task whose loss is a cross-entropy (its check:
    :func:`require_number` in [0, 1])."""
    return option(default, "smooth the training loss's targets: (1 - eps) on the right token "
                           "and eps spread over every token, as torch's "
                           "cross_entropy(label_smoothing=eps); validation and evaluation "
                           "measure the plain loss, in [0, 1] (default: {default})",
                  group="regularisation", type=unit_interval_closed)


# -- the options every task has, and the recurrent model's -------------------------------------


@dataclass(frozen=True)
class TaskOptions:
    """The base of every task's options: a frozen dataclass whose fields are the task's own
    settings, checked by :meth:`validate` when it is made."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` (or ``TypeError``) naming the first setting that is not
        allowed. Subclasses check their fields and call ``super().validate()``."""

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (what a checkpoint saves)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls: type[_Options], saved: dict[str, Any],
                  ignore: Sequence[str] = ()) -> _Options:
        """The options a checkpoint saved; ``ValueError`` naming an unknown setting (those in
        ``ignore`` are dropped: another task's settings in a checkpoint written before the
        tasks had options of their own), and the checks of :meth:`validate`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - names - set(ignore))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} settings: {', '.join(unknown)}")
        return cls(**{k: v for k, v in saved.items() if k in names})


@dataclass(frozen=True)
class RecurrentOptions(TaskOptions):
    """The model settings every built-in task shares: a stack of ``num_layers`` recurrent
    layers of ``hidden_size`` units of one ``cell``, over an embedding of ``embedding_dim``,
    ``dropout`` between the layers, in ``dtype``. A task's options extend it, with its own
    defaults (:func:`changed`) and fields."""

    cell: str = option("lstm", "recurrent cell: lstm, gru or a plain tanh rnn "
                               "(default: {default})", choices=CELLS)
    hidden_size: int = option(256, "units per recurrent layer (default: {default})",
                              type=positive_int)
    num_layers: int = option(2, "stacked recurrent layers (default: {default})",
                             type=positive_int)
    embedding_dim: int | None = option(
        None, "width of the character embedding (default: the vocabulary size, as in the "
              "notebook)", type=positive_int)
    dropout: float = option(0.1, "dropout between recurrent layers, in [0, 1) "
                                 "(default: {default})", type=dropout_rate)
    dtype: str = option("float32", "floating-point precision of weights and arithmetic; "
                                   "float32 is about twice as fast (default: {default})",
                        choices=DTYPES)

    def validate(self) -> None:
        super().validate()
        require_choice("cell", self.cell, CELLS)
        require_int("hidden_size", self.hidden_size)
        require_int("num_layers", self.num_layers)
        if self.embedding_dim is not None:
            require_int("embedding_dim", self.embedding_dim)
        require_rate("dropout", self.dropout)
        require_choice("dtype", self.dtype, DTYPES)
