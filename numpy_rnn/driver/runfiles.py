"""What process 0 of a training run writes: the output directory's lock, ``metrics.jsonl``, the
checkpoints, ``loss.png``, the log lines and the progress bar (:class:`RunFiles`; the other
processes of a data-parallel job hold a :class:`NoFiles`, which does nothing).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._install import install_hint
from .checkpoint import BEST_NAME, CHECKPOINT_NAME, atomic_write, save_checkpoint
from .rundir import run_lock

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["METRICS_NAME", "PLOT_NAME", "NoFiles", "RunFiles", "plot_losses"]

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"


class RunFiles:
    """Process 0's side of a run: the output directory's lock, ``metrics.jsonl``, the
    checkpoints, ``loss.png``, the log lines and the progress bar. A context manager: the
    lock and the metrics file are released on exit, however the run ends."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None] | None = None) -> None:
        self.t_start = time.perf_counter()
        self.config = config
        self.out = Path(config.out)
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        self.log: Callable[[str], None] = (_no_log if log is None and config.quiet
                                           else log or print)
        self._stack = contextlib.ExitStack()
        self._metrics: _MetricsLog | None = None
        self._bar: Any = None

    def __enter__(self) -> RunFiles:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def lock(self) -> None:
        """Hold the output directory's lock until the run ends."""
        self._stack.enter_context(run_lock(self.out, self.log))

    def begin(self, resumed_at: int | None) -> None:
        """Open the metrics log (kept up to ``resumed_at`` when resuming) and the progress
        bar. A new run (with --overwrite) first removes the old one's files rather than leaving
        its checkpoints beside the new metrics."""
        if resumed_at is None:
            for name in (CHECKPOINT_NAME, BEST_NAME, PLOT_NAME):
                with contextlib.suppress(FileNotFoundError):
                    (self.out / name).unlink()
        self._metrics = self._stack.enter_context(
            _MetricsLog(self.out / METRICS_NAME, keep_through=resumed_at))
        self._bar = _progress_bar(self.config, resumed_at or 0)
        if self._bar is not None:
            self._stack.callback(self._bar.close)

    def log_setup(self, lines: list[str]) -> None:
        for line in lines:
            self.log(line)

    def say(self, line: str) -> None:
        """A log line, above the progress bar when there is one."""
        (self._bar.write if self._bar is not None else self.log)(line)

    def say_lines(self, lines: Callable[[], list[str]]) -> None:
        """The lines ``lines()`` makes (computed on process 0 only)."""
        for line in lines():
            self.say(line)

    def write_metrics(self, record: dict[str, Any], loss: float, chars_per_s: float) -> None:
        assert self._metrics is not None
        self._metrics.write(record)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.3f}", chars_s=f"{chars_per_s:,.0f}",
                                  refresh=False)
            self._bar.update(1)

    def save(self, checkpoint: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
             best: bool) -> None:
        """Write ``checkpoint()`` (weights, metadata) to checkpoint.npz, and best.npz."""
        weights, meta = checkpoint()
        save_checkpoint(self.checkpoint_path, weights, meta)
        if best:
            save_checkpoint(self.out / BEST_NAME, weights, meta)

    def finish(self, stepped: bool, ylabel: str) -> None:
        """Close the progress bar; draw the loss curve of the whole run (resumed parts
        included) when this run took a step."""
        if self._bar is not None:
            self._bar.close()
        if stepped:
            try:
                plot_losses(self.out / METRICS_NAME, self.out / PLOT_NAME, log=self.log,
                            ylabel=ylabel)
            except Exception as exc:  # a plotting problem must not hide the run's own outcome
                self.log(f"could not draw the loss curve: {exc}")


class NoFiles(RunFiles):
    """The other processes' side: nothing to write, nothing to say."""

    def __init__(self) -> None:
        self.t_start = time.perf_counter()
        self.checkpoint_path = Path(".")     # named in messages only process 0 prints
        self.log = _no_log

    def __exit__(self, *exc: Any) -> None:
        pass

    def lock(self) -> None:
        pass

    def begin(self, resumed_at: int | None) -> None:
        pass

    def log_setup(self, lines: list[str]) -> None:
        pass

    def say(self, line: str) -> None:
        pass

    def say_lines(self, lines: Callable[[], list[str]]) -> None:
        pass

    def write_metrics(self, record: dict[str, Any], loss: float, chars_per_s: float) -> None:
        pass

    def save(self, checkpoint: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
             best: bool) -> None:
        pass

    def finish(self, stepped: bool, ylabel: str) -> None:
        pass


def _no_log(msg: str) -> None:
    pass


class _MetricsLog:
    """``metrics.jsonl``: one JSON object per step, appended and flushed as it happens.

    A fresh run starts the file empty. A resumed run keeps the lines up to the checkpoint's step
    and drops the later ones (steps taken after the last checkpoint of an interrupted run),
    which the resumed run logs again.
    """

    def __init__(self, path: Path, keep_through: int | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep_through is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line)["step"] <= keep_through:
                        kept.append(line + "\n")
                except (ValueError, KeyError, TypeError):
                    continue   # a line cut short by a kill: dropped
        atomic_write(path, "w", lambda f: f.write("".join(kept)))
        self.path = path
        # Held open for the run and closed by __exit__: this class is the context manager.
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def __enter__(self) -> _MetricsLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()


def _progress_bar(config: TrainConfig, start_step: int) -> Any:
    """A tqdm bar on stderr (loss and characters/s), or None when quiet, when stderr is not a
    terminal (logs and CI get the per-evaluation lines instead) or without tqdm."""
    if config.quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=config.steps, initial=start_step, desc="train", unit="step",
                file=sys.stderr, dynamic_ncols=True)


def plot_losses(metrics_path: Path, png_path: Path,
                log: Callable[[str], None] = print,
                ylabel: str = "cross-entropy (nats/char)") -> Path | None:
    """Draw the training loss per step (and its running mean) and the validation loss from
    ``metrics.jsonl`` into a PNG, the y axis labelled ``ylabel`` (the task's ``loss_label``).
    Returns the path, or None without matplotlib."""
    try:
        # A Figure of its own, drawn straight to the file: no pyplot, so the backend a notebook
        # or a program chose (inline figures, a window) is left as it was.
        from matplotlib.figure import Figure
    except ImportError:
        log(f"matplotlib is not installed: no loss curve ({install_hint('train')})")
        return None
    steps, losses, val_steps, val_losses = [], [], [], []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        steps.append(rec["step"])
        losses.append(rec["loss"])
        if "val_loss" in rec:
            val_steps.append(rec["step"])
            val_losses.append(rec["val_loss"])
    if not steps:
        return None
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="training (step)")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="tab:blue",
                label=f"training (mean of {window})")
    if val_steps:
        ax.plot(val_steps, val_losses, "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return png_path
