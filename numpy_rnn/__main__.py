"""``python -m numpy_rnn``: see :mod:`numpy_rnn.cli`."""

import sys

from .driver.cli import main

if __name__ == "__main__":
    sys.exit(main())
