"""The configurations the suite measures: the seed model, the grid, the quick set, and selection.

A configuration is the shape of one recurrent stack: cell, layers, input size ``F``, hidden size
``H``, batch ``B``, sequence length ``T`` and dtype. Workloads (``workloads.py``) decide what is
run on it; ``vocab`` is there for the CharRNN workloads (embedding and decoder of that size).

* ``seed``: the original notebook's model, LSTM, 3 layers, hidden 512, vocabulary and embedding
  30 (so ``F = 30``), ``T = 150``, batch 1, float64.
* ``grid``: cell (lstm, gru, rnn) x batch (1, 32) x hidden (128, 512) x dtype (float32, float64),
  every other field as the seed's. The seed is one point of the grid; ``all`` keeps it once,
  under the name ``seed``.
* ``default``: the README's default CharRNN (``train`` with no flags): LSTM, 2 layers, hidden
  256, embedding 30, ``T = 150``, batch 32, float32 (``tests/test_benchmarks.py`` keeps it equal
  to the driver's defaults). ``all`` has it too.
* ``quick``: tiny shapes for CI, so the whole suite runs in seconds.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace

CELLS = ("lstm", "gru", "rnn")
DTYPES = ("float32", "float64")
DTYPE_TAGS = {"float32": "f32", "float64": "f64"}


@dataclass(frozen=True)
class Config:
    """One recurrent stack to benchmark; torch's shapes: ``x (T, B, F)``, states ``(L, B, H)``."""

    name: str
    cell: str            # "lstm", "gru" or "rnn" (tanh)
    num_layers: int      # L
    input_size: int      # F (the embedding size for the CharRNN workloads)
    hidden_size: int     # H
    batch: int           # B
    seq_len: int         # T
    dtype: str           # "float32" or "float64"
    vocab: int = 30      # CharRNN vocabulary (embedding rows, decoder outputs)

    @property
    def shape_key(self) -> tuple:
        """Everything but the name: two configs with equal keys measure the same thing."""
        d = asdict(self)
        d.pop("name")
        return tuple(sorted(d.items()))

    def describe(self) -> str:
        """``lstm L3 F30 H512 B1 T150 float64``: the shape in one line."""
        return (f"{self.cell} L{self.num_layers} F{self.input_size} H{self.hidden_size} "
                f"B{self.batch} T{self.seq_len} {self.dtype}")


SEED = Config(name="seed", cell="lstm", num_layers=3, input_size=30, hidden_size=512, batch=1,
              seq_len=150, dtype="float64", vocab=30)

DEFAULT = Config(name="default", cell="lstm", num_layers=2, input_size=30, hidden_size=256,
                 batch=32, seq_len=150, dtype="float32", vocab=30)

CONFIG_SETS = ("seed", "default", "grid", "all")

GRID_AXES = dict(cell=CELLS, batch=(1, 32), hidden_size=(128, 512), dtype=DTYPES)

# Small enough that torch's and NumPy's fixed per-call costs dominate; what matters in CI is that
# every code path of the harness runs, not the numbers.
QUICK_BASE = Config(name="quick", cell="lstm", num_layers=2, input_size=8, hidden_size=16,
                    batch=2, seq_len=8, dtype="float64", vocab=8)
QUICK_AXES = dict(cell=CELLS, batch=(2,), hidden_size=(16,), dtype=DTYPES)


def grid_name(c: Config) -> str:
    """``lstm-b32-h512-f32``: the axes of the grid in a config's name."""
    return f"{c.cell}-b{c.batch}-h{c.hidden_size}-{DTYPE_TAGS[c.dtype]}"


def _product(base: Config, axes: dict, prefix: str = "") -> list[Config]:
    keys = list(axes)
    out = []
    for values in itertools.product(*(axes[k] for k in keys)):
        c = replace(base, **dict(zip(keys, values)))
        out.append(replace(c, name=prefix + grid_name(c)))
    return out


@dataclass
class Selection:
    """What the command line asked for. ``None`` in a filter means "every value"."""

    config: str = "seed"                 # one of CONFIG_SETS
    quick: bool = False
    cells: tuple[str, ...] | None = None
    dtypes: tuple[str, ...] | None = None
    batches: tuple[int, ...] | None = None
    hiddens: tuple[int, ...] | None = None
    seq_len: int | None = None           # overrides T of every config
    num_layers: int | None = None        # overrides L of every config


def select_configs(sel: Selection) -> list[Config]:
    """The configurations to run, in a stable order, without duplicates.

    ``--cell/--dtype/--batch/--hidden`` replace the values of the grid's axes (so ``--batch 8``
    adds a batch the default grid does not have) and filter the seed and the default, which are
    fixed points: ``--config seed --dtype float32`` selects nothing. ``--seq-len`` and
    ``--layers`` override those fields of every configuration, the seed's too (its name then
    says so).
    """
    def axes_for(default_axes: dict) -> dict:
        axes = dict(default_axes)
        for key, given in (("cell", sel.cells), ("dtype", sel.dtypes), ("batch", sel.batches),
                           ("hidden_size", sel.hiddens)):
            if given is not None:
                axes[key] = tuple(given)
        return axes

    if sel.quick:
        configs = _product(QUICK_BASE, axes_for(QUICK_AXES), prefix="quick-")
    else:
        if sel.config not in CONFIG_SETS:
            raise ValueError(f"unknown config set {sel.config!r}: use {', '.join(CONFIG_SETS)}")
        configs = []
        for fixed, sets in ((SEED, ("seed", "all")), (DEFAULT, ("default", "all"))):
            if sel.config in sets and all(
                    given is None or getattr(fixed, key) in given
                    for key, given in (("cell", sel.cells), ("dtype", sel.dtypes),
                                       ("batch", sel.batches), ("hidden_size", sel.hiddens))):
                configs.append(fixed)
        if sel.config in ("grid", "all"):
            configs += _product(SEED, axes_for(GRID_AXES))

    overrides = {}
    if sel.seq_len is not None:
        overrides["seq_len"] = sel.seq_len
    if sel.num_layers is not None:
        overrides["num_layers"] = sel.num_layers
    if overrides:
        configs = [replace(c, **overrides) for c in configs]
        suffix = "".join(f"-{'t' if k == 'seq_len' else 'l'}{v}" for k, v in overrides.items())
        configs = [replace(c, name=c.name + suffix) for c in configs]

    seen, unique = set(), []
    for c in configs:                      # the seed comes first, so it keeps its name
        if c.shape_key not in seen:
            seen.add(c.shape_key)
            unique.append(c)
    return unique
