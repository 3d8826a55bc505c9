"""``import numpy_rnn`` loads the library (numpy_rnn.nn) only; the old flat module paths
(``numpy_rnn.recurrent``, ``numpy_rnn.train``, ...) are lazy aliases of the new ones."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout


def test_import_numpy_rnn_loads_the_library_only():
    out = run_python("import numpy_rnn, sys; "
                     "print(sorted(m for m in sys.modules if m.startswith('numpy_rnn.')))")
    loaded = eval(out)
    assert loaded and all(m == "numpy_rnn.nn" or m.startswith("numpy_rnn.nn.") for m in loaded), \
        loaded


def test_importtime_shows_no_driver_or_task_module():
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import numpy_rnn"],
                         capture_output=True, text=True, check=True).stderr
    assert "numpy_rnn" in err
    assert not [line for line in err.splitlines() if "driver" in line or "tasks" in line]


# Every old path the package keeps (tests/test_layout.py checks some of them by name).
OLD_PATHS: dict[str, str] = importlib.import_module("numpy_rnn")._MOVED


@pytest.mark.parametrize("old, new", sorted(OLD_PATHS.items()))
def test_an_old_path_imports_as_the_same_module_on_demand(old, new):
    code = (f"import sys, importlib, numpy_rnn\n"
            f"assert 'numpy_rnn.{new}' not in sys.modules or '{new}'.startswith('nn.')\n"
            f"import numpy_rnn.{old}\n"
            f"m = sys.modules['numpy_rnn.{old}']\n"
            f"assert m is importlib.import_module('numpy_rnn.{new}')\n"
            f"assert importlib.import_module('numpy_rnn.{old}') is m\n"
            f"assert m.__name__ == 'numpy_rnn.{new}'\n"
            f"assert callable(numpy_rnn.gradcheck)\n"
            f"print('ok')\n")
    assert run_python(code).strip() == "ok"


@pytest.mark.parametrize("old, new", sorted(OLD_PATHS.items()))
def test_an_old_path_as_an_attribute_is_the_new_module(old, new):
    import numpy_rnn
    got = getattr(numpy_rnn, old)
    if old == "gradcheck":                     # the function, exported by the library
        assert callable(got) and got is importlib.import_module("numpy_rnn.nn").gradcheck
    else:
        assert got is importlib.import_module(f"numpy_rnn.{new}")


def test_from_old_path_import_name_works_and_gradcheck_stays_the_function():
    import numpy_rnn
    from numpy_rnn.gradcheck import check_function  # noqa: F401
    from numpy_rnn.train import TrainConfig, train  # noqa: F401
    assert train is importlib.import_module("numpy_rnn.driver.train").train
    assert callable(numpy_rnn.gradcheck)
    from numpy_rnn import gradcheck
    assert callable(gradcheck)


def test_an_unknown_attribute_is_an_attribute_error():
    import numpy_rnn
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        numpy_rnn.nonesuch  # noqa: B018
