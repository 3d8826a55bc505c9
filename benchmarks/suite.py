"""One run of the suite: each selected (config, workload, thread count), timed, checked, recorded.

``run_suite(options)`` returns the record that ``report.py`` turns into the table, the JSON and
the chart. For each configuration it measures the memory once; for each workload it builds the
bench, checks that NumPy and torch compute the same numbers (the largest absolute difference is
recorded, so a fast but wrong backend shows up), then times NumPy, torch, the GEMM floor and,
where CUDA exists, torch on the GPU, at each thread count. A workload runs on the configurations
of its task only (``Workload.applies_to``: the seq2seq ones take ``seq2seq-train-step``), and
the memory count (of one recurrent stack) is taken for the CharRNN configurations.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import env as envmod
from .configs import Config, Selection, select_configs
from .harness import Backend, RatioStats, Timings, measure, thread_limit
from .memory import measure_memory
from .workloads import WORKLOADS, Bench

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Options:
    """Everything a run needs; the CLI fills it from its flags."""

    selection: Selection = field(default_factory=Selection)
    workloads: tuple[str, ...] | None = None     # None: every available workload
    rounds: int = 5
    calls: int | None = None                     # None: calibrate to target_block_s
    target_block_s: float = 0.5
    pause_s: float = 0.3
    threads: tuple[int, ...] = ()                # () : all usable cores
    gpu: bool = True
    memory: bool = True
    name: str = "seed"
    out_dir: Path = RESULTS_DIR
    chart: bool = True
    command: str = "python -m benchmarks"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _stats(t: Timings) -> dict:
    return dict(median=t.median, min=min(t.per_round), max=max(t.per_round),
                per_round=t.per_round, calls=t.calls)


def _backends(bench: Bench) -> list[Backend]:
    backends = [Backend("numpy", bench.numpy), Backend("torch", bench.torch)]
    if bench.floor is not None:
        backends.append(Backend("floor", bench.floor.run))
    if bench.torch_gpu is not None:
        backends.append(Backend("torch-gpu", bench.torch_gpu, bench.torch_gpu_sync))
    return backends


def time_bench(cfg: Config, workload: str, bench: Bench, threads: int, opts: Options,
               log: Callable[[str], None]) -> dict:
    """Time one bench at one thread count and summarise the per-round ratios."""
    with thread_limit(threads):
        t = measure(_backends(bench), opts.rounds, opts.calls, opts.pause_s, opts.target_block_s,
                    progress=lambda m: log(f"    {m}"))
    res = dict(config=cfg.name, workload=workload, threads=threads,
               unit=WORKLOADS[workload].unit, items_per_call=bench.items_per_call,
               seconds_per_call={name: _stats(v) for name, v in t.items()},
               ratio_numpy_torch=asdict(RatioStats.of(t["numpy"], t["torch"])))
    if "floor" in t:
        res["floor_multiple"] = asdict(RatioStats.of(t["numpy"], t["floor"]))
        res["floor_gflop_per_call"] = bench.floor.flops / 1e9
        res["floor_gemms_per_call"] = len(bench.floor)
        res["gflops"] = {name: bench.floor.flops / 1e9 / v.median for name, v in t.items()}
    if "torch-gpu" in t:
        res["ratio_numpy_torch_gpu"] = asdict(RatioStats.of(t["numpy"], t["torch-gpu"]))
    if bench.items_per_call > 1:
        res["items_per_second"] = {name: bench.items_per_call / v.median for name, v in t.items()}
    return res


def run_suite(opts: Options, log: Callable[[str], None] = _log) -> dict:
    """Run everything ``opts`` selects and return the record (see the module docstring)."""
    configs = select_configs(opts.selection)
    if not configs:
        raise SystemExit("no configuration matches the selection")
    names = opts.workloads or tuple(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {list(WORKLOADS)}")
    notes = []
    pending = [n for n in names if not WORKLOADS[n].available]
    for n in pending:
        notes.append(f"workload {n} not measured: {WORKLOADS[n].pending}.")
    runnable = [n for n in names if WORKLOADS[n].available]
    if not runnable:
        raise SystemExit("none of the selected workloads can run yet: " + "; ".join(notes))

    environment = envmod.environment()
    threads = opts.threads or (envmod.usable_cores(),)
    import torch
    gpu = opts.gpu and torch.cuda.is_available()
    if not torch.cuda.is_available():
        notes.append("torch GPU column skipped: torch sees no CUDA device on this machine.")
    elif not opts.gpu:
        notes.append("torch GPU column skipped: --no-gpu.")
    load = environment["machine"]["load_average"]
    if load and load[0] > 0.5:
        notes.append(f"the machine was not idle at the start (1-minute load average "
                     f"{load[0]:.2f}); per-round ratios absorb drift, absolute times less so.")

    pairs = [(cfg, [w for w in runnable if WORKLOADS[w].applies_to(cfg)]) for cfg in configs]
    if not any(ws for _, ws in pairs):
        raise SystemExit("none of the selected workloads runs on the selected configurations "
                         "(the seq2seq configurations take seq2seq-train-step only, the others "
                         "every other workload)")
    if opts.memory and any(ws and cfg.task != "charrnn" for cfg, ws in pairs):
        notes.append("no memory count for the seq2seq configurations: it counts the buffers of "
                     "one recurrent stack.")
    results, memory, checks = [], {}, {}
    for cfg, workloads in pairs:
        if not workloads:
            continue
        log(f"{cfg.name}: {cfg.describe()}")
        # The memory count is of one recurrent stack of the config's shape: the CharRNN's.
        if opts.memory and cfg.task == "charrnn":
            memory[cfg.name] = measure_memory(cfg)
        for wname in workloads:
            bench = WORKLOADS[wname].setup(cfg, gpu)
            checks[f"{cfg.name}/{wname}"] = bench.check()
            for n in threads:
                log(f"  {wname}, {n} thread(s)")
                res = time_bench(cfg, wname, bench, n, opts, log)
                res["max_abs_diff_numpy_torch"] = checks[f"{cfg.name}/{wname}"]
                results.append(res)
                log(f"  -> NumPy/torch {res['ratio_numpy_torch']['median']:.2f}"
                    + (f", NumPy/floor {res['floor_multiple']['median']:.2f}"
                       if "floor_multiple" in res else ""))
            del bench

    return dict(
        name=opts.name, command=opts.command, environment=environment,
        method=dict(rounds=opts.rounds, calls=opts.calls, target_block_s=opts.target_block_s,
                    pause_s=opts.pause_s, threads=list(threads),
                    order="per round: every backend in turn (order rotates), each with a pause, "
                          "one warm-up call and a timed block; ratios within a round"),
        configs=[asdict(c) for c, workloads in pairs if workloads],
        workloads={n: dict(description=WORKLOADS[n].description, unit=WORKLOADS[n].unit,
                           measured=WORKLOADS[n].available, pending=WORKLOADS[n].pending)
                   for n in names},
        results=results, memory=memory, notes=notes)
