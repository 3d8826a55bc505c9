"""Tests for the benchmark harness (``benchmarks/``): it runs, and it writes what it promises.

No timing is ever asserted: these tests run on shared CI machines. The end-to-end test runs
``python -m benchmarks --quick`` in a subprocess, as CI does, and checks the markdown table on
stdout, the JSON record's structure and the PNG; the others check the pieces that decide what is
measured (selection, the floor's products, the memory count, the round structure) on tiny inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("threadpoolctl")
pytest.importorskip("matplotlib")

from benchmarks import floor, harness, memory, report
from benchmarks.configs import (
    DEFAULT,
    QUICK_BASE,
    SEED,
    SEQ2SEQ,
    SEQ2SEQ_NO_FEED,
    Selection,
    select_configs,
)
from benchmarks.workloads import WORKLOADS, Workload, register

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


def test_quick_run_prints_timing_and_memory_tables(quick_run):
    proc, _ = quick_run
    lines = proc.stdout.splitlines()
    head = "| config | workload | threads | NumPy ms | torch ms"
    assert any(line.startswith(head) for line in lines)
    assert any(line.startswith("| config | held for backward MiB") for line in lines)
    for cell in ("lstm", "gru", "rnn"):
        for wl in ("forward", "forward-backward"):
            assert any(line.startswith(f"| quick-{cell}-b2-h16-f64 | {wl} | 1 |") for line in lines)
    assert "OPENBLAS_* variables" in proc.stdout
    for wl in ("train-step", "sample-latency", "sample-throughput"):
        assert any(line.startswith(f"| quick-lstm-b2-h16-f32 | {wl} | 1 |") for line in lines)
    for cfg in ("quick-seq2seq", "quick-seq2seq-no-feed"):
        assert any(line.startswith(f"| {cfg} | seq2seq-train-step | 1 |") for line in lines)
    # A workload runs on the configurations of its task only.
    assert not any(line.startswith("| quick-seq2seq | forward") for line in lines)
    assert not any(line.startswith("| quick-lstm-b2-h16-f32 | seq2seq") for line in lines)


def test_quick_run_json_records_environment_rounds_ratios_floor_and_memory(quick_run):
    _, out = quick_run
    record = json.loads((out / "quick.json").read_text())
    assert {"name", "command", "environment", "method", "configs", "workloads", "results",
            "memory", "notes"} <= record.keys()
    env = record["environment"]
    assert {"machine", "numpy", "blas", "torch", "env"} <= env.keys()
    assert any(b["owner"] == "numpy" and b["user_api"] == "blas" for b in env["blas"])
    per_task = {t: sum(w.task == t for w in WORKLOADS.values()) for t in ("charrnn", "seq2seq")}
    assert len(record["configs"]) == 8
    assert len(record["results"]) == 6 * per_task["charrnn"] + 2 * per_task["seq2seq"]
    rounds = record["method"]["rounds"]
    for r in record["results"]:
        with_floor = r["workload"] in ("forward", "forward-backward")
        for backend in ("numpy", "torch", "floor") if with_floor else ("numpy", "torch"):
            s = r["seconds_per_call"][backend]
            assert len(s["per_round"]) == rounds and s["calls"] >= 1
            assert s["min"] <= s["median"] <= s["max"]
        keys = ("ratio_numpy_torch", "floor_multiple") if with_floor else ("ratio_numpy_torch",)
        for key in keys:
            st = r[key]
            assert len(st["per_round"]) == rounds and st["min"] <= st["median"] <= st["max"]
        # Both backends computed the same thing (same weights and inputs): not a timing.
        assert all(d < 1e-3 for d in r["max_abs_diff_numpy_torch"].values())
    # The memory count is of a recurrent stack: the CharRNN configurations'.
    assert set(record["memory"]) == {c["name"] for c in record["configs"]
                                     if c["task"] == "charrnn"}
    for m in record["memory"].values():
        assert m["held"] > 0 and m["expected"] > 0 and m["torch_saved"] > 0


def test_quick_run_writes_png_and_markdown_and_no_temporaries(quick_run):
    _, out = quick_run
    assert (out / "quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "quick.md").read_text().startswith("### Benchmark `quick`")
    assert not list(out.glob("*.tmp"))


def test_help_explains_every_flag():
    from benchmarks.__main__ import build_parser
    parser = build_parser()
    flags = {opt for a in parser._actions for opt in a.option_strings}
    for flag in ("--config", "--cell", "--dtype", "--batch", "--hidden", "--seq-len",
                 "--workload", "--rounds", "--calls", "--threads", "--quick", "--name",
                 "--out-dir", "--no-chart"):
        assert flag in flags
    assert all(a.help for a in parser._actions)


def test_selection_keeps_seed_once_and_filters_the_grid():
    every = select_configs(Selection(config="all"))
    assert len(every) == 27 and every[0] == SEED            # the seed is a grid point, kept once
    assert every[1] == DEFAULT and every[-2:] == [SEQ2SEQ, SEQ2SEQ_NO_FEED]
    rows = select_configs(Selection(config="grid", hiddens=(512,)))
    assert len(rows) == 12 and {c.hidden_size for c in rows} == {512}
    assert select_configs(Selection(config="seed", dtypes=("float32",))) == []
    short = select_configs(Selection(config="seed", seq_len=10))
    assert short[0].seq_len == 10 and short[0].name == "seed-t10"


def test_default_config_is_the_drivers_default_charrnn():
    """``--config default`` measures what ``train`` with no flags trains."""
    from numpy_rnn.driver.train import TrainConfig
    t = TrainConfig()
    o = t.options
    assert (DEFAULT.cell, DEFAULT.num_layers, DEFAULT.hidden_size, DEFAULT.batch,
            DEFAULT.seq_len, DEFAULT.dtype) == (o.cell, o.num_layers, o.hidden_size,
                                                t.batch_size, o.seq_len, o.dtype)
    assert o.embedding_dim is None and DEFAULT.input_size == DEFAULT.vocab == 30  # plants' 30
    assert select_configs(Selection(config="default")) == [DEFAULT]
    assert select_configs(Selection(config="default", dtypes=("float64",))) == []
    with pytest.raises(ValueError, match="unknown config set"):
        select_configs(Selection(config="nope"))


def test_seq2seq_config_is_the_tasks_default_recipe():
    """``--config seq2seq`` measures what ``train --task seq2seq`` with no flags trains."""
    from benchmarks.workloads import _seq2seq_config
    from numpy_rnn.driver.config import TrainConfig
    d = TrainConfig.for_task("seq2seq")
    assert (SEQ2SEQ.cell, SEQ2SEQ.num_layers, SEQ2SEQ.hidden_size, SEQ2SEQ.batch,
            SEQ2SEQ.dtype) == (d.options.cell, d.options.num_layers, d.options.hidden_size,
                               d.batch_size, d.options.dtype)
    m = _seq2seq_config(SEQ2SEQ)
    assert (m.attention, m.input_feeding, m.input_size, m.target_input_size) == (
        "general", True, d.options.embedding_dim, d.options.target_embedding_dim)
    assert not _seq2seq_config(SEQ2SEQ_NO_FEED).input_feeding
    assert select_configs(Selection(config="seq2seq")) == [SEQ2SEQ, SEQ2SEQ_NO_FEED]
    assert select_configs(Selection(config="seq2seq", cells=("gru",))) == []
    assert [c.name for c in select_configs(Selection(quick=True, cells=("lstm",)))][-2:] == [
        "quick-seq2seq", "quick-seq2seq-no-feed"]


def test_seq2seq_batch_is_padded_like_a_cmudict_batch():
    from benchmarks.workloads import seq2seq_batch
    from numpy_rnn.nn.losses import IGNORE_INDEX
    inputs, targets = seq2seq_batch(SEQ2SEQ)
    B, n = SEQ2SEQ.batch, SEQ2SEQ.seq_len
    assert inputs.source.shape == inputs.target_in.shape == targets.shape == (B, n)
    assert inputs.source_lengths.max() == n and inputs.source_lengths.min() >= max(1, n - 12)
    for b in range(B):
        k = int(inputs.source_lengths[b])
        assert (inputs.source[b, :k] > 0).all() and (inputs.source[b, k:] == 0).all()
        valid = targets[b] != IGNORE_INDEX
        m = int(valid.sum())
        assert valid[:m].all() and m >= 2 and targets[b, m - 1] == 2 and inputs.target_in[b, 0] == 1
        assert (inputs.target_in[b, 1:m] == targets[b, :m - 1]).all()


def test_registry_refuses_duplicates_and_lists_pending_workloads():
    assert WORKLOADS["forward"].available and WORKLOADS["forward-backward"].available
    assert all(WORKLOADS[w].available for w in ("train-step", "sample-latency",
                                                 "sample-throughput"))
    pending = register(Workload(name="not-yet", description="x", pending="needs a model"))
    try:
        assert not pending.available and WORKLOADS["not-yet"].pending == "needs a model"
    finally:
        del WORKLOADS["not-yet"]
    with pytest.raises(ValueError):
        register(Workload(name="forward", description="again", pending="no"))
    with pytest.raises(ValueError):
        register(Workload(name="neither", description="x"))


def test_floor_runs_one_product_per_matmul_of_the_layer():
    cfg = replace(QUICK_BASE, num_layers=2, seq_len=5, hidden_size=4, input_size=3, batch=2)
    fwd = floor.recurrent_forward_floor(cfg)
    both = floor.recurrent_forward_backward_floor(cfg)
    L, T = cfg.num_layers, cfg.seq_len
    assert len(fwd) == L * (1 + T)               # input projection + one product per step
    assert len(both) == L * (1 + T) + L * (T + 3)  # + dh per step, dW_ih, dW_hh, dx
    G, H, B, F = 4, cfg.hidden_size, cfg.batch, cfg.input_size
    # 2*m*n*k per product: layer 0 reads F inputs, layer 1 reads H; each adds T (B, H) x (H, GH)
    assert fwd.flops == 2 * T * B * G * H * ((F + H) + (H + H))
    fwd.run()
    both.run()


def test_memory_counts_each_buffer_once_however_many_views():
    base = np.zeros((10, 4))
    other = np.zeros(3)
    ctx = dict(a=base, views=[base[1:], base[:, 0], base.T], t=(other, other[1:]), n=None)
    held, buffers = memory.held_bytes(ctx)
    assert (held, buffers) == (base.nbytes + other.nbytes, 2)
    assert memory.held_bytes(ctx, exclude=[other])[0] == base.nbytes


def test_memory_of_a_real_layer_is_measured_against_the_documented_count():
    for cell in ("lstm", "gru", "rnn"):
        m = memory.measure_memory(replace(QUICK_BASE, cell=cell))
        parts = m["expected_components"]
        assert m["expected"] == sum(parts.values())
        # The layer keeps exactly what recurrent.py documents: states, the step's cache and
        # the layer-0 input, and not the input projection (a forward-time transient).
        assert m["held"] == m["expected"] and m["unexplained"] == 0, cell
        assert m["peak_forward"] >= m["input_projection"] > 0


def test_rounds_time_every_backend_once_per_round_with_the_order_rotating():
    order = []
    backends = [harness.Backend(name, lambda name=name: order.append(name)) for name in "abc"]
    t = harness.measure(backends, rounds=3, calls=2, pause=0.0, target_block_s=0.0)
    assert all(len(v.per_round) == 3 and v.calls == 2 for v in t.values())
    firsts = [order[i * 9] for i in range(3)]      # 3 backends x (warm-up + 2 calls) per round
    assert firsts == ["a", "b", "c"]
    stats = harness.RatioStats.of(t["a"], t["b"])
    assert stats.min <= stats.median <= stats.max and len(stats.per_round) == 3


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    report.atomic_write_bytes(target, b"old")
    report.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and not list(tmp_path.glob("*.tmp"))


def test_g2p_decode_times_a_seq2seq_checkpoint_and_writes_json(tmp_path):
    """``python -m benchmarks.g2p_decode`` on a tiny freshly trained checkpoint (one step on a
    small file of pairs): the table, and the JSON record with every measurement."""
    import random

    from numpy_rnn.driver.cli import main as cli_main
    from numpy_rnn.tasks.pairs import split_of

    rng = random.Random(0)
    words: set[str] = set()
    while len(words) < 200:
        words.add("".join(rng.choice("abcdefg") for _ in range(rng.randint(2, 6))))
    assert sum(split_of(w) == "test" for w in words) >= 5
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{w}\t{' '.join(reversed(w.upper()))}\n" for w in sorted(words)),
                     encoding="utf-8")
    run = tmp_path / "run"
    assert cli_main(["train", "--task", "seq2seq", "--data", str(pairs), "--out", str(run),
                     "--hidden-size", "16", "--batch-size", "8", "--steps", "1",
                     "--eval-every", "1", "--quiet"]) == 0
    out = tmp_path / "decode.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.g2p_decode", "--checkpoint",
                           str(run / "checkpoint.npz"), "--words", "5", "--warmup", "2",
                           "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("| greedy, batch 1 | 5 |", "| greedy, batched | 5 |", "| beam 5, batched | 5 |"):
        assert row in proc.stdout
    record = json.loads(out.read_text())
    assert record["words"] == 5 and record["threads"] == 1 and record["step"] == 1
    g1 = record["greedy_batch1"]
    assert 0 < g1["median_ms"] <= g1["p90_ms"] and g1["same_as_batched"] <= 5
    assert record["greedy_batched"]["total_s"] > 0 and record["beam_batched"]["beam"] == 5
    assert 0 <= record["beam_batched"]["wer"] <= 1
    assert record["g2p_en"]["status"]           # timed, or why not (not installed here)
