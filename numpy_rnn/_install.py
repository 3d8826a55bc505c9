"""How to install an optional extra, said the same way in every message that needs one.

A clone is installed with ``pip install -e ".[extra]"`` from its root; an installed package
with ``pip install "numpy_rnn[extra]"``. No imports: every module (``torch_ref`` too) can use it.
"""

from __future__ import annotations

__all__ = ["install_hint"]


def install_hint(extra: str) -> str:
    """The install command of the optional extra ``extra`` (``torch``, ``train``, ``mpi``,
    ``g2p``), for a clone and for an installed package."""
    return f'pip install -e ".[{extra}]" (or pip install "numpy_rnn[{extra}]" when installed)'
