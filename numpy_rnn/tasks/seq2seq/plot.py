"""The picture of where the decoder looked: ``translate --plot``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..._install import install_hint
from ...nn.module import ShapeError
from .data import SPECIALS
from .model import BOS, EOS, PAD

__all__ = ["MAX_PLOT_WORDS", "plot_translation_attention"]

#: translate --plot: one panel per word, readable up to about this many.
MAX_PLOT_WORDS = 20
#: How the plot names the steps of the special target ids (the end token's step is the last).
_SPECIAL_NAMES = {PAD: "<pad>", BOS: "<s>", EOS: "</s>"}


def plot_translation_attention(words: Sequence[str | Sequence[str]],
                               outputs: Sequence[Sequence[str]],
                               alphas: Sequence[np.ndarray], out: str | Path | BinaryIO) -> None:
    """Draw the attention of each translation as a PNG into ``out`` (a path or a binary file):
    one panel per word, its source characters across (``len(word)`` columns; a source of
    words given as its tuple of words has a column per word), the steps of
    its output down (``outputs[i]``, a name per step, the end token's included), and the
    weights ``alphas[i] (len(outputs[i]), len(word))`` as a heat map. One colour scale for
    every panel (0 to the largest weight drawn); characters and tokens are drawn as written
    (a ``$`` is a dollar sign, not mathematics); the figure grows to hold every label. Needs
    matplotlib."""
    if not (len(words) == len(outputs) == len(alphas)) or not words:
        raise ValueError(f"one output and one attention per word, got {len(words)} words, "
                         f"{len(outputs)} outputs and {len(alphas)} attentions")
    for word, steps, alpha in zip(words, outputs, alphas):
        if np.shape(alpha) != (len(steps), len(word)):
            raise ShapeError(f"the attention of {word!r} must have shape "
                             f"{(len(steps), len(word))}, got {np.shape(alpha)}")
    try:
        # A Figure of its own, drawn straight to the file: no pyplot, so the backend a notebook
        # or a program chose (inline figures, a window) is left as it was.
        import matplotlib
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"--plot needs matplotlib: {install_hint('train')}") from exc
    cmap = matplotlib.colormaps["viridis"]
    top_weight = max((float(np.max(a)) for a in alphas if np.size(a)), default=1.0)
    norm = Normalize(vmin=0.0, vmax=top_weight if top_weight > 0 else 1.0)
    # Fixed cell sizes (inches), panels stacked with room between them for a title and the
    # characters under each; labels outside the axes are held by bbox_inches="tight".
    cell_w, cell_h, gap = 0.32, 0.26, 0.75
    # a column wide enough for a word's label when the sources are words (0.32 for characters)
    widths = [len(w) * max(cell_w, 0.1 + 0.08 * max(map(len, w), default=1)) for w in words]
    heights = [cell_h * max(len(o), 1) for o in outputs]
    fig_w = max(widths) + 0.6
    fig_h = sum(heights) + gap * len(words)
    fig = Figure(figsize=(fig_w, fig_h))
    top = fig_h
    image = None
    for word, steps, alpha, w, h in zip(words, outputs, alphas, widths, heights):
        top -= gap * 0.45
        ax = fig.add_axes((0.0, (top - h) / fig_h, w / fig_w, h / fig_h))
        image = ax.imshow(np.asarray(alpha, dtype=np.float64).reshape(len(steps), len(word)),
                          aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_xticks(range(len(word)), list(word), parse_math=False)
        ax.set_yticks(range(len(steps)), list(steps), parse_math=False)
        ax.tick_params(length=0)
        shown = " ".join(t for t in steps if t not in _SPECIAL_NAMES.values())
        source = word if isinstance(word, str) else " ".join(word)
        ax.set_title(f"{source} -> {shown}", fontsize=10, loc="left", parse_math=False)
        top -= h + gap * 0.55
    bar = min(fig_h, 3.0)                  # the colour bar, beside the first panels
    cax = fig.add_axes(((max(widths) + 0.3) / fig_w, 1.0 - bar / fig_h, 0.15 / fig_w,
                        bar / fig_h))
    assert image is not None
    fig.colorbar(image, cax=cax, label="attention weight")
    fig.savefig(out, dpi=110, format="png", bbox_inches="tight", pad_inches=0.1)


def _step_names(ids: Sequence[int], steps: int, targets: Sequence[str]) -> list[str]:
    """A name for each of the ``steps`` scored steps of the output ``ids``: its token, then
    ``</s>`` for the end token's step (when the output has one)."""
    names = [targets[t - SPECIALS] if t >= SPECIALS else _SPECIAL_NAMES.get(t, str(t))
             for t in ids]
    return (names + [_SPECIAL_NAMES[EOS]])[:steps]
