"""``python -m numpy_rnn``: see :mod:`numpy_rnn.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
