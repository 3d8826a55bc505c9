"""Benchmarks of numpy_rnn against torch.nn: ``python -m benchmarks --help``.

One job per module:

* ``configs``   the seed model, the grid, the quick set, and selecting from them;
* ``workloads`` the registry of what one timed call does, per backend (add new workloads there);
* ``floor``     the same matrix products without the elementwise work: NumPy's lower bound;
* ``harness``   rounds of timed blocks, thread limits, per-round ratio statistics;
* ``memory``    bytes numpy_rnn holds for backward, against the count from the shapes;
* ``env``       machine, BLAS and its kernel, torch build, kernel-selecting variables;
* ``report``    markdown tables, JSON, the PNG chart, written atomically;
* ``suite``     one run over the selection; ``__main__`` the command line.

torch, threadpoolctl and matplotlib are needed here (``pip install -e .[torch,bench]``);
numpy_rnn itself never imports them.
"""
