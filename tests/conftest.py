"""Shared test settings: hypothesis profiles and the torch-parity checker with its error log.

Hypothesis profiles (choose with ``HYPOTHESIS_PROFILE=<name>``, default ``ci``):

* ``ci``:        derandomized (the same examples on every run), a modest example count so the parity
  suites finish in well under a minute on two cores;
* ``dev``:       the same count, but a fresh random search on every run;
* ``thorough``:  ten times the examples, for a long local run before a release.

Every parity test checks through the session fixture ``parity``, which also keeps the largest error
seen per (suite, cell type, dtype). ``pytest_terminal_summary`` prints that table at the end of the
run (no ``-s`` needed); set ``NUMPY_RNN_PARITY_JSON=path`` to also write it as JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("ci", max_examples=30, derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=30, **_COMMON)
settings.register_profile("thorough", max_examples=300, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Tolerances of the scale-aware comparison below, per dtype of the module under test.
# float64: both sides round at 1.1e-16; the spec's own re-implementation agrees with torch to 8e-15
# over these sizes, so 1e-10 leaves four orders of margin for longer/deeper configs yet still
# catches any real bug (a wrong bias or gate is off by 1e-2 or more).
# float32: both sides round at 6e-8 and sum in different orders; 1e-4 is ~1000 ulp of the
# largest entry, generous for T, L <= 6 but far below any semantic error.
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


@dataclass
class ErrorStats:
    """Largest errors seen for one (suite, kind, dtype), scaled (``Parity.check``) and absolute."""

    fwd_scaled: float = 0.0
    fwd_abs: float = 0.0
    bwd_scaled: float = 0.0
    bwd_abs: float = 0.0
    checks: int = 0


class Parity:
    """Compare a NumPy result with torch's, assert-ready, and log the largest errors."""

    def __init__(self) -> None:
        self.stats: dict[tuple[str, str, str], ErrorStats] = {}

    def check(self, suite: str, kind: str, name: str, got: object, want: np.ndarray,
              dtype: type, stage: str) -> str | None:
        """Return None when ``got`` matches ``want``, else a one-line description of the mismatch.

        ``got`` must be an ndarray of exactly ``want``'s shape and of ``dtype`` (an fp32 module
        never upcasts). The values must satisfy

            max|got - want| <= rtol * max(1, max|want|)

        i.e. an absolute tolerance of ``rtol`` for arrays whose entries are at most 1 in size and a
        tolerance relative to the array's largest entry above that. Not elementwise-relative:
        gradients have entries near zero produced by cancellation, whose relative error is
        meaningless, while the rounding error of every entry scales with the magnitude of the terms
        summed into it, bounded by the largest entry (relu RNNs and sums over T*B can grow past 1).
        ``stage`` is ``"forward"`` or ``"backward"`` and selects the column the error is logged in.
        """
        dtype = np.dtype(dtype)
        if not isinstance(got, np.ndarray):
            return f"{name}: expected an ndarray, got {type(got).__name__}"
        if got.shape != want.shape:
            return f"{name}: shape {got.shape}, torch has {want.shape}"
        if got.dtype != dtype:
            return f"{name}: dtype {got.dtype}, expected {dtype}"
        want64 = want.astype(np.float64)
        abs_err = float(np.max(np.abs(got.astype(np.float64) - want64), initial=0.0))
        if not np.isfinite(abs_err):
            return f"{name}: non-finite values"
        scale = max(1.0, float(np.max(np.abs(want64), initial=0.0)))
        scaled = abs_err / scale
        st = self.stats.setdefault((suite, kind, dtype.name), ErrorStats())
        st.checks += 1
        if stage == "forward":
            st.fwd_scaled, st.fwd_abs = max(st.fwd_scaled, scaled), max(st.fwd_abs, abs_err)
        else:
            st.bwd_scaled, st.bwd_abs = max(st.bwd_scaled, scaled), max(st.bwd_abs, abs_err)
        if scaled > RTOL[dtype]:
            return (f"{name}: max|err| = {abs_err:.3e} > {RTOL[dtype]:.0e} * {scale:.3g} "
                    f"(scaled {scaled:.3e})")
        return None

    def summary_lines(self) -> list[str]:
        if not self.stats:
            return []
        head = (f"{'suite':<10} {'kind':<10} {'dtype':<8} {'fwd scaled':>11} {'fwd abs':>10} "
                f"{'bwd scaled':>11} {'bwd abs':>10} {'arrays':>7}")
        lines = [head, "-" * len(head)]
        for (suite, kind, dt), s in sorted(self.stats.items()):
            lines.append(f"{suite:<10} {kind:<10} {dt:<8} {s.fwd_scaled:>11.2e} {s.fwd_abs:>10.2e} "
                         f"{s.bwd_scaled:>11.2e} {s.bwd_abs:>10.2e} {s.checks:>7d}")
        return lines


_PARITY = Parity()


@pytest.fixture(scope="session")
def parity() -> Parity:
    """The session's parity checker; its error table is printed at the end of the run."""
    return _PARITY


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    lines = _PARITY.summary_lines()
    if not lines:
        return
    terminalreporter.write_sep("=", "max parity error vs torch (scaled = abs / max(1, max|torch|))")
    for line in lines:
        terminalreporter.write_line(line)
    path = os.environ.get("NUMPY_RNN_PARITY_JSON")
    if path:
        with open(path, "w") as f:
            json.dump({"/".join(k): vars(v) for k, v in sorted(_PARITY.stats.items())}, f, indent=1)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one intra-op thread for a module (``pytestmark = usefixtures(...)``): the ops
    of these tests are tiny, and with several threads on a busy machine torch spends its time
    in OpenMP barriers (up to 50x slower). One thread changes no result."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def labelled(tmp_path, monkeypatch):
    """A directory with the small labelled corpus of ``labelled.py`` as ``plants.data``, which
    ``NUMPY_RNN_DATA_DIR`` points at; training draws no loss plots."""
    from labelled import write_labelled_plants


    write_labelled_plants(tmp_path / "data")
    monkeypatch.setenv("NUMPY_RNN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
    return tmp_path / "data"


@pytest.fixture
def plants(tmp_path, monkeypatch):
    """A directory with a small plants.data (``helpers.write_plants``), which
    ``NUMPY_RNN_DATA_DIR`` points at."""
    from helpers import write_plants

    data_dir = tmp_path / "data"
    write_plants(data_dir)
    monkeypatch.setenv("NUMPY_RNN_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture
def cli_plants(tmp_path, monkeypatch):
    """The command-line tests' plants.data (``helpers.write_cli_plants``), which
    ``NUMPY_RNN_DATA_DIR`` points at; training draws no loss plots (~1 s per run)."""
    from helpers import write_cli_plants


    write_cli_plants(tmp_path / "data")
    monkeypatch.setenv("NUMPY_RNN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("numpy_rnn.driver.runfiles.plot_losses", lambda *a, **k: None)
    return tmp_path / "data"


@pytest.fixture
def run(capsys):
    """``run(*argv) -> (status, stdout, stderr)`` through the command line's ``main``."""
    from numpy_rnn.driver.cli import main

    def _run(*argv: object) -> tuple[int, str, str]:
        status = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err
    return _run


@pytest.fixture
def trained_lm(cli_plants, tmp_path, run):
    """A language model trained for 10 steps (``helpers.TINY``) from the command line: its
    output directory."""
    from helpers import TINY

    out = tmp_path / "run"
    status, _, err = run("train", *TINY, "--steps", "10", "--out", out)
    assert status == 0, err
    return out


@pytest.fixture
def cli(run):
    """``run``, under the name the task tests use."""
    return run


@pytest.fixture(scope="module")
def real_corpus():
    """The real plants corpus (``helpers.REAL_PLANTS``); the test is skipped without it."""
    from helpers import REAL_PLANTS

    from numpy_rnn.tasks.corpus import load_corpus

    if not REAL_PLANTS.is_file():
        pytest.skip(f"{REAL_PLANTS} not present")
    return load_corpus("plants", data_dir=REAL_PLANTS.parent, progress=False)
