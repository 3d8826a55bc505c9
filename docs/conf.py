"""Sphinx configuration of the numpy_rnn documentation site.

Build (from the repository root)::

    pip install "torch==2.13.0" -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

The tutorials train on the plant corpus, ``plants.data``, found or downloaded as the package
does it (:func:`numpy_rnn.tasks.corpus.ensure_plants`): in ``$NUMPY_RNN_DATA_DIR`` when it is
set (a folder holding a local copy), else in ``data/``, downloaded there once and checked
against its sha256. The build looks for it before anything else (:func:`_find_the_corpus`) and
stops at once, saying what to do, when it can neither find nor download it.

Sphinx with the pydata theme (numpy's and scipy's) and MyST: the pages are Markdown, the
tutorials are MyST-Markdown notebooks that myst-nb executes on every build, and autodoc reads
the API reference from the docstrings. MathJax is served from the site itself (the
sphinx-mathjax-offline package ships MathJax 3), so the site works offline.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))            # the checkout's numpy_rnn, even when not installed

project = "numpy_rnn"
author = "the numpy_rnn authors"
copyright = "the numpy_rnn authors"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
    "sphinx_design",
    "sphinx-mathjax-offline",            # MathJax 3 copied into _static/mathjax, no CDN
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["custom.css"]

# --- MyST and the executed tutorials ---------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"              # every build runs every tutorial: they cannot rot
nb_execution_timeout = 300
nb_execution_raise_on_error = True       # a failing cell fails the build
nb_execution_show_tb = True
nb_merge_streams = True
nb_kernel_rgx_aliases = {".*": "python3"}
# The tutorials run in the interpreter that runs Sphinx (the project's venv), with one BLAS
# thread each so the build's time does not depend on the machine's core count.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# --- API reference -----------------------------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "undoc-members": False,
    "show-inheritance": True,
    "member-order": "bysource",
}
# Sphinx 9.0.4 ignores an explicit ``:members: a, b`` list while these defaults set "members"
# (it documents them all): a directive that wants fewer says ``:exclude-members:``.
autodoc_typehints = "description"
autodoc_typehints_format = "fully-qualified"
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Type hints name aliases (Params, State, np.ndarray, ...) that have no page of their own; a
# missing cross-reference target is not a broken link in the site, so these stay quiet.
nitpicky = False
suppress_warnings = [
    "myst.header",                       # the moved README sections start at level 2
    "autosummary.import_cycle",
    # Annotations of instance attributes are unqualified (``self.attention: Attention | None``
    # in numpy_rnn.tasks.seq2seq and torch_ref.seq2seq) and both packages have an Attention:
    # Sphinx links the first and warns that the name is ambiguous.
    "ref.python",
]

# --- HTML ---------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "numpy_rnn"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": {
        "gate-math/*": [],               # the equation-beside-code pages need the width
    },
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_sidebars = {"index": [], "gate-math/*": []}
html_show_sourcelink = False
html_last_updated_fmt = None


# --- Docstrings that are plain text, not reStructuredText -----------------------------------
# These docstrings use indentation or ``*`` the way plain text does, which reStructuredText reads
# as markup and warns about (and the build treats warnings as errors). Until they are rewritten,
# the API reference shows them verbatim, as a literal block, exactly as ``help()`` does.
PLAIN_DOCSTRINGS = {
    "numpy_rnn.nn.dense.Embedding.forward",
    "numpy_rnn.nn.dense.Embedding.backward",
    "numpy_rnn.tasks.base.Batch",
    "numpy_rnn.tasks.corpus.Corpus",
    "numpy_rnn.tasks.lm_batches.StreamBatch",
    "numpy_rnn.tasks.metrics.SequenceErrorRates",
    "numpy_rnn.tasks.metrics.error_rates",
    "numpy_rnn.tasks.pairs.PairCorpus",
}


def _plain_docstring(app: object, what: str, name: str, obj: object, options: object,
                     lines: list[str]) -> None:
    if name in PLAIN_DOCSTRINGS:
        import inspect

        doc = inspect.getdoc(obj) or ""
        lines[:] = ["::", ""] + ["    " + line for line in doc.splitlines()] + [""]


# --- The trained models' page: what load returns, not how to construct it --------------------
# docs/api/load.md documents each task's trained model as ``numpy_rnn.load`` returns it; its
# directives give each class an empty signature (``Generator()``), and this drops the
# constructor's parameters that autodoc would list from its type hints (on that page only: the
# module pages keep them, for task authors). It runs before autodoc merges the hints (priority
# 500) and reads the hints where Sphinx (pinned) keeps them for the page being read.
NO_CONSTRUCTOR_PAGES = {"api/load"}


def _no_constructor_parameters(app: object, domain: str, objtype: str,
                               contentnode: object) -> None:
    env = app.env  # type: ignore[attr-defined]
    if domain != "py" or objtype != "class" or env.docname not in NO_CONSTRUCTOR_PAGES:
        return
    signature = contentnode.parent[0]  # type: ignore[attr-defined]
    fullname = ".".join(filter(None, (signature.get("module"), signature.get("fullname"))))
    env.current_document.autodoc_annotations.pop(fullname, None)


# --- The corpus the tutorials train on ------------------------------------------------------
def _find_the_corpus(app: object) -> None:
    """Find ``plants.data`` (or download it) before the tutorials run, so that a build without
    it stops at once with what to do instead of failing in its first training cell minutes
    later. Nothing to find when the tutorials are not executed (``-D nb_execution_mode=off``)."""
    if app.config.nb_execution_mode == "off":  # type: ignore[attr-defined]
        return
    from sphinx.util import logging

    from numpy_rnn.tasks.corpus import (
        DATA_DIR_ENV,
        PLANTS_URL,
        DataError,
        ensure_plants,
        plants_path,
    )

    try:
        ensure_plants()
    except DataError as exc:
        cause = exc.__cause__
        why = (f"{type(cause).__name__}: {getattr(cause, 'reason', None) or cause}"
               if cause is not None else str(exc))
        # One line that says what to do, and the build ends: a ConfigError would bury it in
        # Sphinx's crash report (versions, traceback, "please report this to Sphinx").
        logging.getLogger(__name__).error(
            f"the tutorials train on the plant corpus, plants.data, which is not in "
            f"{plants_path().parent} and could not be downloaded there ({why}). Download "
            f"{PLANTS_URL} into that folder, or point {DATA_DIR_ENV} at a folder that holds a "
            f"copy: {DATA_DIR_ENV}=/path/to/folder python -m sphinx ...")
        raise SystemExit(2) from exc


def setup(app: object) -> None:
    app.connect("autodoc-process-docstring", _plain_docstring,  # type: ignore[attr-defined]
                priority=900)
    app.connect("builder-inited", _find_the_corpus)  # type: ignore[attr-defined]
    app.connect("object-description-transform",  # type: ignore[attr-defined]
                _no_constructor_parameters, priority=400)
