"""The package's folders show its parts, and the parts depend on each other one way only:
the library (numpy_rnn.nn) on NumPy alone, the tasks on the library, the driver on both."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "numpy_rnn"


def runtime_imports(path: Path) -> set[str]:
    """The modules a file imports when it runs (imports under ``if TYPE_CHECKING:`` left out),
    resolved to absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module or "")
    return names


@pytest.mark.parametrize("part, forbidden", [
    ("nn", ("numpy_rnn.tasks", "numpy_rnn.driver", "torch")),
    ("tasks", ("numpy_rnn.driver", "torch")),
    ("driver", ("torch",)),
])
def test_each_part_depends_only_on_the_parts_below_it(part, forbidden):
    for path in sorted((PACKAGE / part).glob("*.py")):
        for name in runtime_imports(path):
            assert not name.startswith(forbidden), f"{path.name} imports {name}"


@pytest.mark.parametrize("old, new", [
    ("numpy_rnn.recurrent", "numpy_rnn.nn.recurrent"), ("numpy_rnn.steps", "numpy_rnn.nn.steps"),
    ("numpy_rnn.model", "numpy_rnn.tasks.lm"), ("numpy_rnn.data", "numpy_rnn.tasks.corpus"),
    ("numpy_rnn.train", "numpy_rnn.driver.train"),
    ("numpy_rnn.backend", "numpy_rnn.driver.backend"),
    ("numpy_rnn.checkpoint", "numpy_rnn.driver.checkpoint"),
])
def test_the_old_module_paths_still_import_as_the_same_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


def test_the_public_names_stay_where_they_were():
    import numpy_rnn as nr
    from numpy_rnn.train import TrainConfig, train  # noqa: F401 - the old spelling works
    assert nr.LSTM is importlib.import_module("numpy_rnn.nn.recurrent").LSTM
    assert callable(nr.gradcheck)                        # the function, not its module


#: What the driver may import of the tasks: the registry (the package) and the interfaces and
#: shared parts every task is built on, never a task's own module.
DRIVER_MAY_IMPORT = {"numpy_rnn.tasks", "numpy_rnn.tasks.base", "numpy_rnn.tasks.commands",
                     "numpy_rnn.tasks.corpus", "numpy_rnn.tasks.model",
                     "numpy_rnn.tasks.options", "numpy_rnn.tasks.sizes"}


def all_imports(path: Path, package: str = "numpy_rnn.driver") -> set[str]:
    """Every module a file of ``package`` imports, at run time or for annotations, inside
    functions too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            # "from ..tasks import lm" imports the module numpy_rnn.tasks.lm
            names.update(f"{module}.{alias.name}" for alias in node.names
                         if importlib.util.find_spec(module) is not None
                         and _is_module(f"{module}.{alias.name}"))
    return names


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_the_driver_imports_the_task_registry_and_interfaces_only():
    """Read from the syntax tree: the driver knows the tasks through ``numpy_rnn.tasks`` (the
    registry) and the interfaces (``tasks/base.py`` and the like), never a task's module."""
    hits = [f"{path.name} imports {name}"
            for path in sorted((PACKAGE / "driver").glob("*.py"))
            for name in sorted(all_imports(path, "numpy_rnn.driver"))
            if name.startswith("numpy_rnn.tasks") and name not in DRIVER_MAY_IMPORT]
    assert not hits, "\n".join(hits)


def test_the_layout_check_sees_a_task_module_imported_any_way(tmp_path):
    probe = tmp_path / "probe.py"
    for line in ("from ..tasks.lm import NOTEBOOK", "from ..tasks import lm",
                 "import numpy_rnn.tasks.seq2seq.model",
                 "def f():\n    from ..tasks.classify import POOLINGS"):
        probe.write_text(line + "\n", encoding="utf-8")
        found = {n for n in all_imports(probe) if n.startswith("numpy_rnn.tasks")}
        assert found - DRIVER_MAY_IMPORT, (line, found)


def test_the_driver_names_no_task():
    """A task is one module in numpy_rnn/tasks: the driver spells out no task's name (comments
    and docstrings included); it reads what it needs from the Task interface."""
    pattern = re.compile(r"[\"'](lm|classify|conditional|seq2seq)[\"']")
    hits = [f"{path.name}:{number}: {line.strip()}"
            for path in sorted((PACKAGE / "driver").glob("*.py"))
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]
    assert not hits, "\n".join(hits)


def test_register_task_refuses_a_duplicate_name():
    from numpy_rnn.tasks import DEFAULT_TASK, TASKS, TaskRegistryError, register_task

    with pytest.raises(TaskRegistryError, match="registered already"):
        register_task(type(TASKS[DEFAULT_TASK]))
