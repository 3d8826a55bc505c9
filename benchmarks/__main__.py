"""Command line: ``python -m benchmarks [flags]``; ``--help`` explains every flag.

Prints the markdown report on stdout (progress goes to stderr) and writes
``<out-dir>/<name>.json``, ``<name>.md`` and ``<name>.png``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from numpy_rnn.tasks.commands import positive_int

from .configs import CELLS, CONFIG_SETS, DTYPES, Selection, select_configs
from .env import summary_lines
from .report import markdown, write_chart, write_json, write_markdown
from .suite import RESULTS_DIR, Options, run_suite
from .workloads import WORKLOADS

_DTYPE_ALIASES = {"f32": "float32", "f64": "float64", "float32": "float32", "float64": "float64"}


def _csv(kind, choices=None):
    """An argparse type: a comma-separated list of ``kind`` values, each among ``choices``."""
    def parse(text: str) -> tuple:
        values = []
        for item in filter(None, (s.strip() for s in text.split(","))):
            try:
                v = kind(item)
            except (ValueError, KeyError):
                raise argparse.ArgumentTypeError(f"bad value {item!r}") from None
            if choices is not None and v not in choices:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(choices)}")
            values.append(v)
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return tuple(values)
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time numpy_rnn against torch.nn (same weights, same inputs, same thread "
                    "count), against the floor of its own matrix products, and count the memory "
                    "it holds for backward. Lists take comma-separated values.",
        epilog="Examples: python -m benchmarks --quick | python -m benchmarks --config grid "
               "--hidden 512 | python -m benchmarks --config all --threads 1,2. "
               "Where OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE select slower kernels, run "
               "'env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks ...'.")
    sel = p.add_argument_group("what to run")
    sel.add_argument("--config", choices=CONFIG_SETS, default="seed",
                     help="seed: the original notebook's model (LSTM, 3 layers, H=512, F=30, "
                          "T=150, B=1, float64); default: the README's default CharRNN (LSTM, 2 "
                          "layers, H=256, F=30, T=150, B=32, float32); grid: cell x batch (1,32) "
                          "x hidden (128,512) x dtype, other fields as the seed's; seq2seq: "
                          "the seq2seq task's default recipe (LSTM, 1 layer, H=256, general "
                          "attention, B=64, S=T=14, float32), with and without input feeding, "
                          "for the seq2seq-train-step workload; all: every one "
                          "(default: %(default)s)")
    sel.add_argument("--cell", type=_csv(str, CELLS),
                     help=f"cells to run, from {','.join(CELLS)} (replaces the grid's axis; "
                          "filters the seed)")
    sel.add_argument("--dtype", type=_csv(lambda s: _DTYPE_ALIASES[s], DTYPES),
                     help="dtypes, from float32,float64 (or f32,f64)")
    sel.add_argument("--batch", type=_csv(positive_int), help="batch sizes B, e.g. 1,32")
    sel.add_argument("--hidden", type=_csv(positive_int), help="hidden sizes H, e.g. 128,512")
    sel.add_argument("--seq-len", type=positive_int, help="override the sequence length T of every "
                                                       "configuration (default: 150, quick: 8)")
    sel.add_argument("--layers", type=positive_int, help="override the number of layers of every "
                                                      "configuration (default: 3, quick: 2)")
    sel.add_argument("--workload", type=_csv(str, tuple(WORKLOADS)),
                     help="workloads, from " + ", ".join(
                         f"{n}{'' if w.available else ' (pending)'}" for n, w in WORKLOADS.items())
                     + " (default: every one that can run)")
    sel.add_argument("--quick", action="store_true",
                     help="tiny shapes (L=2, F=8, H=16, B=2, T=8) for every cell and dtype, "
                          "and a tiny seq2seq (H=16, B=2, S=T=8, with and without input "
                          "feeding), "
                          "2 rounds, short blocks and pauses, 1 thread: proves the harness "
                          "works in seconds; its times mean little. One thread because on a "
                          "busy shared runner torch's OpenMP barriers make its tiny LSTM/GRU up "
                          "to 300x slower with 2 threads, and the run's length unpredictable")
    sel.add_argument("--list", action="store_true",
                     help="list the selected configurations and the workloads, then exit")

    m = p.add_argument_group("method")
    m.add_argument("--rounds", type=positive_int,
                   help="rounds; each times every backend once and yields one ratio "
                        "(default: 5, quick: 2)")
    m.add_argument("--calls", type=positive_int,
                   help="timed calls per block (default: calibrated so a block lasts about "
                        "--block seconds)")
    m.add_argument("--block", type=float,
                   help="target length of a timed block in seconds when --calls is not given "
                        "(default: 0.5, quick: 0.02)")
    m.add_argument("--pause", type=float,
                   help="seconds of sleep before each backend's warm-up call, so the other "
                        "backend's spinning threads go to sleep (default: 0.3, quick: 0.01)")
    m.add_argument("--threads", type=_csv(positive_int),
                   help="thread counts for both NumPy's BLAS (threadpoolctl) and torch "
                        "(set_num_threads), e.g. 1,2; each is a separate measurement "
                        "(default: all usable cores; quick: 1, see below)")
    m.add_argument("--no-gpu", action="store_true",
                   help="skip the torch-on-GPU column even where CUDA exists")
    m.add_argument("--no-memory", action="store_true",
                   help="skip the memory measurement (bytes held for backward)")

    o = p.add_argument_group("output")
    o.add_argument("--name", help="base name of the result files (default: quick, or the "
                                  "--config value)")
    o.add_argument("--out-dir", type=Path, default=RESULTS_DIR,
                   help="directory for <name>.json, <name>.md and <name>.png "
                        "(default: benchmarks/results)")
    o.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    return p


def options_from_args(args: argparse.Namespace, argv: list[str]) -> Options:
    quick = args.quick

    def pick(value, default, quick_default):
        return value if value is not None else (quick_default if quick else default)

    selection = Selection(config=args.config, quick=quick, cells=args.cell, dtypes=args.dtype,
                          batches=args.batch, hiddens=args.hidden, seq_len=args.seq_len,
                          num_layers=args.layers)
    return Options(
        selection=selection, workloads=args.workload,
        rounds=pick(args.rounds, 5, 2), calls=args.calls,
        target_block_s=pick(args.block, 0.5, 0.02), pause_s=pick(args.pause, 0.3, 0.01),
        threads=args.threads or ((1,) if quick else ()),
        gpu=not args.no_gpu, memory=not args.no_memory,
        name=args.name or ("quick" if quick else args.config), out_dir=args.out_dir,
        chart=not args.no_chart,
        command=" ".join(["python -m benchmarks", *map(shlex.quote, argv)]).strip())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    opts = options_from_args(args, argv)
    if args.list:
        for c in select_configs(opts.selection):
            print(f"{c.name}: {c.describe()}")
        for n, w in WORKLOADS.items():
            print(f"workload {n}: {w.description}" + ("" if w.available else f" [{w.pending}]"))
        return 0
    record = run_suite(opts)
    text = markdown(record, summary_lines(record["environment"]))
    out = Path(opts.out_dir)
    write_json(out / f"{opts.name}.json", record)
    write_markdown(out / f"{opts.name}.md", text)
    if opts.chart and record["results"]:
        write_chart(out / f"{opts.name}.png", record)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
