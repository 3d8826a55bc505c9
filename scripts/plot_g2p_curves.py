"""Learning curves of seq2seq runs side by side: the dev WER and PER of each validation (greedy,
the first 1,000 dev words, as training measures them) against the run's wall-clock time.

    python scripts/plot_g2p_curves.py docs/g2p-curves.png runs/default:default runs/long:long

Each RUN argument is a run directory (its ``metrics.jsonl``, which records ``elapsed_s``) with an
optional ``:label``. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from matplotlib.figure import Figure


def curve(run: Path) -> tuple[list[float], list[float], list[float]]:
    """Minutes, WER and PER (percent) of every validation of the run in ``run``."""
    minutes, wer, per = [], [], []
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "wer" in record:
            if "elapsed_s" not in record:
                raise SystemExit(f"{run}: its metrics have no elapsed_s (a run of an older "
                                 "numpy_rnn): no clock to plot against")
            minutes.append(record["elapsed_s"] / 60)
            wer.append(100 * record["wer"])
            per.append(100 * record["per"])
    return minutes, wer, per


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("runs", nargs="+", metavar="RUN[:LABEL]", help="run directories")
    args = p.parse_args(argv)
    fig = Figure(figsize=(9, 4))
    axes = fig.subplots(1, 2)
    for spec in args.runs:
        path, _, label = spec.partition(":")
        minutes, wer, per = curve(Path(path))
        for ax, values in zip(axes, (wer, per)):
            ax.plot(minutes, values, "o-", label=label or Path(path).name)
    for ax, what in zip(axes, ("WER", "PER")):
        ax.set_xlabel("wall-clock minutes (training, validation and checkpoints)")
        ax.set_ylabel(f"dev {what}, % (greedy, 1,000 words)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
