"""Output: the markdown tables, the JSON record and the PNG chart of the ratios.

Files are written atomically (to ``<name>.tmp`` next to the target, then renamed), so a reader or
an interrupted run never sees half a file.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

MiB = 1024.0 ** 2


def _fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 1000 else f"{ms:.0f}"


def _fmt_ratio(stats: dict | None) -> str:
    if not stats:
        return "–"
    return f"{stats['median']:.2f} ({stats['min']:.2f}–{stats['max']:.2f})"


def timing_table(results: list[dict]) -> list[str]:
    """One row per (config, workload, threads): medians and per-round ratio statistics."""
    head = ("| config | workload | threads | NumPy ms | torch ms | NumPy/torch median (min–max) "
            "| floor ms | NumPy/floor median (min–max) | torch GPU ms |")
    lines = [head, "|" + "---|" * 9]
    for r in results:
        s = r["seconds_per_call"]
        gpu = s.get("torch-gpu")
        lines.append(
            f"| {r['config']} | {r['workload']} | {r['threads']} "
            f"| {_fmt_ms(s['numpy']['median'])} | {_fmt_ms(s['torch']['median'])} "
            f"| {_fmt_ratio(r['ratio_numpy_torch'])} "
            f"| {_fmt_ms(s['floor']['median']) if 'floor' in s else '–'} "
            f"| {_fmt_ratio(r.get('floor_multiple'))} "
            f"| {_fmt_ms(gpu['median']) if gpu else '–'} |")
    return lines


def memory_table(memory: dict[str, dict]) -> list[str]:
    """One row per config: bytes held for backward against the documented count, and peaks."""
    head = ("| config | held for backward MiB | documented MiB | held/documented "
            "| forward peak MiB | backward peak MiB | torch saved MiB |")
    lines = [head, "|" + "---|" * 7]
    for name, m in memory.items():
        lines.append(f"| {name} | {m['held'] / MiB:.2f} | {m['expected'] / MiB:.2f} "
                     f"| {m['held_over_expected']:.2f} | {m['peak_forward'] / MiB:.2f} "
                     f"| {m['peak_backward'] / MiB:.2f} | {m['torch_saved'] / MiB:.2f} |")
    return lines


def config_table(configs: list[dict]) -> list[str]:
    lines = ["| config | cell | layers | F | H | B | T | dtype |", "|" + "---|" * 8]
    for c in configs:
        lines.append(f"| {c['name']} | {c['cell']} | {c['num_layers']} | {c['input_size']} "
                     f"| {c['hidden_size']} | {c['batch']} | {c['seq_len']} | {c['dtype']} |")
    return lines


def markdown(record: dict, env_lines: list[str]) -> str:
    """The whole report: machine, command, timings, memory, configurations, notes."""
    out = [f"### Benchmark `{record['name']}`", ""]
    out += [f"- {line}" for line in env_lines]
    m = record["method"]
    block = (f"{m['calls']} calls per block" if m["calls"]
             else f"blocks of ≈ {m['target_block_s']} s (at least one call)")
    out += [f"- command: `{record['command']}`",
            f"- method: {m['rounds']} rounds, pause {m['pause_s']} s and one warm-up call before "
            f"each block, {block}; ratios taken per round, shown as median (min–max)", ""]
    if record["results"]:
        out += timing_table(record["results"]) + [""]
    if record["memory"]:
        out += memory_table(record["memory"]) + [""]
    out += config_table(record["configs"]) + [""]
    for note in record["notes"]:
        out.append(f"> {note}")
    return "\n".join(out).rstrip() + "\n"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, record: dict) -> None:
    atomic_write_bytes(path, (json.dumps(record, indent=1, sort_keys=False) + "\n").encode())


def write_markdown(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_chart(path: Path, record: dict) -> None:
    """Horizontal bars: NumPy/torch (left) and NumPy/floor (right), median with min–max whiskers,
    one bar per (config, workload, threads), on a log axis with 1 marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    results = record["results"]
    labels = [f"{r['config']} {r['workload']} t{r['threads']}" for r in results]
    panels = [("ratio_numpy_torch", "NumPy time / torch time"),
              ("floor_multiple", "NumPy time / GEMM floor time")]
    fig, axes = plt.subplots(1, 2, sharey=True, figsize=(12, 1.0 + 0.32 * max(len(results), 1)))
    y = list(range(len(results)))
    for ax, (key, title) in zip(axes, panels):
        med = [r[key]["median"] if r.get(key) else float("nan") for r in results]
        lo = [m - r[key]["min"] if r.get(key) else 0.0 for m, r in zip(med, results)]
        hi = [r[key]["max"] - m if r.get(key) else 0.0 for m, r in zip(med, results)]
        # NumPy slower than torch in red, faster in green; the floor multiple is never below 1.
        colors = (["tab:red" if m > 1 else "tab:green" for m in med]
                  if key == "ratio_numpy_torch" else ["tab:blue"] * len(med))
        ax.barh(y, med, xerr=[lo, hi], color=colors, alpha=0.75, capsize=2)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        # Plain numbers on the log axis (0.2, 0.5, 1, 2), not 2x10^-1: ratios are read as such.
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0)))
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].set_ylim(len(results) - 0.5, -0.5)     # first result on top, no empty margins
    fig.suptitle(f"numpy_rnn benchmark '{record['name']}' (median over rounds, whiskers min–max)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
